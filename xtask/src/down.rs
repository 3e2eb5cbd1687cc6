//! `cargo xtask down`: stop everything `up` started, from the runs'
//! `pids.json`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rig::process::supervisor::StopOutcome;
use rig::say;

pub(crate) fn down() -> Result<()> {
    let rig_dir = rig::base::paths::rig_dir();
    let mut pid_files: Vec<PathBuf> = match std::fs::read_dir(&rig_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path().join("pids.json"))
            .filter(|p| p.is_file())
            .collect(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => return Err(err).with_context(|| format!("reading {}", rig_dir.display())),
    };
    // Runs that a test started for itself live one level down (target/rig/faults/<run>).
    pid_files.extend(nested_pid_files(&rig_dir));
    pid_files.sort();
    if pid_files.is_empty() {
        say!(
            "nothing to stop: no run under {} has a pids.json",
            rig_dir.display()
        );
        return Ok(());
    }
    for file in pid_files {
        let run = file
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (record, outcome) in rig::process::supervisor::stop_from_pid_file(&file)? {
            let (name, pid) = (&record.name, record.pid);
            match outcome {
                StopOutcome::Stopped => say!("run {run}: stopped {name} (pid {pid})"),
                StopOutcome::Killed => {
                    say!("run {run}: killed {name} (pid {pid}), which ignored SIGTERM")
                }
                StopOutcome::AlreadyGone => {
                    say!("run {run}: {name} (pid {pid}) had already exited")
                }
                StopOutcome::NotOurs => {
                    say!("run {run}: pid {pid} no longer runs {name}: left alone")
                }
            }
        }
    }
    Ok(())
}

/// `pids.json` of runs under `target/rig/<dir>/<run>/` (test-owned runs).
pub(crate) fn nested_pid_files(rig_dir: &Path) -> Vec<PathBuf> {
    let dirs = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    };
    dirs(rig_dir)
        .iter()
        .flat_map(|d| dirs(d))
        .map(|run| run.join("pids.json"))
        .filter(|p| p.is_file())
        .collect()
}
