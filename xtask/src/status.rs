//! `cargo xtask status`: what keyrig has running, from each run's
//! `pids.json` (components, pids, alive or not) and `env.json` (addresses).

use std::path::PathBuf;

use anyhow::{Context, Result};

pub fn print() -> Result<()> {
    let rig_dir = rig::base::paths::rig_dir();
    let mut runs: Vec<PathBuf> = match std::fs::read_dir(&rig_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .filter(|dir| dir.join("pids.json").is_file())
            .collect(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => return Err(err).with_context(|| format!("reading {}", rig_dir.display())),
    };
    runs.sort();
    if runs.is_empty() {
        println!(
            "nothing running: no run under {} has a pids.json (start one with `cargo xtask up`)",
            rig_dir.display()
        );
        return Ok(());
    }
    for run in runs {
        println!("run {}", run.display());
        let env = rig::contract::env::Environment::load(&run.join("env.json")).ok();
        if let Some(env) = &env {
            println!("  profile   {}", env.profile);
            if env.keygate_url.is_empty() {
                println!("  gateway   none, no keygate (--no-keygate: for your validator)");
            } else {
                println!("  gateway   {}", env.gateway_url);
            }
            println!("  vault     {}", env.vault_addr);
            if let Some(token) = &env.validator_token_file {
                println!("  validator token in {}", token.display());
            } else {
                println!("  keygate   {}", env.keygate_url);
            }
            if let Some(admin) = &env.envoy_admin_url {
                println!("  envoy     {admin} (admin)");
            }
            println!("  upstream  {}", env.upstream_url);
        } else {
            println!("  (no readable env.json: the run did not finish starting)");
        }
        let records = rig::process::supervisor::read_pid_file(&run.join("pids.json"))?;
        let width = records
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(0)
            .max(9);
        println!("  {:<width$} {:>8}  state", "component", "pid");
        for record in records {
            let state = if rig::process::supervisor::is_alive(record.pid) {
                "alive"
            } else {
                "gone"
            };
            println!("  {:<width$} {:>8}  {state}", record.name, record.pid);
        }
    }
    println!("stop with `cargo xtask down`");
    Ok(())
}
