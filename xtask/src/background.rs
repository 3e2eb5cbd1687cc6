//! Work that runs beside the foreground stages of `cargo xtask test`, at
//! the lowest CPU priority (nice 19), so it takes only the CPU the
//! foreground leaves idle: the e2e suite waits out real clocks (token
//! lifetimes, certificate rotations, an outage's resurrect window) and
//! leaves about a quarter of two cores unused, which is where the fuzz
//! targets' sanitizer build fits. With both runnable, the kernel gives a
//! nice-19 process about 1.5 % of a nice-0 one's share, so the suite's
//! processes are barely delayed.
//!
//! Each step runs in its own process group with its output in one log
//! file; the group is stopped when this is dropped (an error or a panic
//! in the foreground) and by the Ctrl-C/SIGTERM handler
//! ([`crate::runner::stop_on_interrupt`]), so nothing is left running.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rig::say;

/// The lowest scheduling priority (`nice -n 19`).
const NICE: i32 = 19;

/// A sequence of commands running in a thread of their own.
pub(crate) struct Background {
    what: String,
    log: PathBuf,
    started: Instant,
    /// The process group of the step running now.
    running: Arc<Mutex<Option<i32>>>,
    stopped: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Background {
    /// Starts `steps` one after another, each at nice 19 in its own process
    /// group, stdout and stderr appended to `log`; a step that fails ends
    /// the sequence.
    pub(crate) fn spawn(what: &str, log: &Path, steps: Vec<Command>) -> Result<Self> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let running = Arc::new(Mutex::new(None));
        let stopped = Arc::new(AtomicBool::new(false));
        let thread = {
            let (running, stopped, log) = (running.clone(), stopped.clone(), log.to_owned());
            std::thread::Builder::new()
                .name(format!("background: {what}"))
                .spawn(move || run_steps(steps, &log, &running, &stopped))
                .context("starting a background thread")?
        };
        say!(
            "{what}: started in the background at nice {NICE}, log {}",
            log.display()
        );
        Ok(Self {
            what: what.to_owned(),
            log: log.to_owned(),
            started: Instant::now(),
            running,
            stopped,
            thread: Some(thread),
        })
    }

    /// Waits for the sequence to end; an error names the failed step and
    /// shows the log's last lines.
    pub(crate) fn wait(mut self) -> Result<()> {
        let thread = self.thread.take().expect("waited once");
        if !thread.is_finished() {
            say!("{}: waiting for the background work to end", self.what);
        }
        let outcome = thread
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the background thread panicked")));
        match outcome {
            Ok(()) => {
                say!(
                    "{}: background work done, {} after it started",
                    self.what,
                    rig::base::progress::secs(self.started.elapsed())
                );
                Ok(())
            }
            Err(err) => {
                let text = std::fs::read_to_string(&self.log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(30)..].join("\n");
                bail!(
                    "{}: {err:#}; the last lines of {}:\n{tail}",
                    self.what,
                    self.log.display()
                )
            }
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stopped.store(true, Ordering::SeqCst);
        if let Some(group) = *self.running.lock().unwrap_or_else(|p| p.into_inner()) {
            crate::runner::stop_group(group);
        }
        let _ = thread.join();
    }
}

fn run_steps(
    steps: Vec<Command>,
    log: &Path,
    running: &Mutex<Option<i32>>,
    stopped: &AtomicBool,
) -> Result<()> {
    for mut step in steps {
        if stopped.load(Ordering::SeqCst) {
            bail!("stopped");
        }
        let described = describe(&step);
        let out = File::options()
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone()?;
        step.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // Builds and fuzz runs: no use for a Vault credential of xtask's.
        rig::process::supervisor::remove_secret_vars(&mut step);
        // SAFETY: setpriority is a single system call, async-signal-safe,
        // and touches no memory of the parent.
        unsafe {
            step.pre_exec(|| {
                if nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, NICE) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = step
            .spawn()
            .with_context(|| format!("starting {described}"))?;
        let group = child.id() as i32;
        *running.lock().unwrap_or_else(|p| p.into_inner()) = Some(group);
        crate::runner::register_group(group);
        // Stopped between the check above and the spawn: the drop saw no
        // running step to stop, so this one is stopped here.
        if stopped.load(Ordering::SeqCst) {
            crate::runner::stop_group(group);
        }
        let status = child.wait();
        crate::runner::unregister_group(group);
        *running.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let status = status.with_context(|| format!("waiting for {described}"))?;
        if !status.success() {
            bail!("{described} failed ({status})");
        }
    }
    Ok(())
}

/// `program arg arg ...`, as the log and an error name a step.
fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn sh(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    }

    #[test]
    fn steps_run_in_order_at_low_priority_into_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("work.log");
        let job = Background::spawn(
            "test",
            &log,
            vec![
                sh("echo one; cut -d' ' -f19 /proc/self/stat"),
                sh("echo two"),
            ],
        )
        .unwrap();
        job.wait().unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        // Field 19 of /proc/<pid>/stat is the nice value.
        assert_eq!(text, "one\n19\ntwo\n");
    }

    /// A step (a build, a fuzz run) runs without the Vault credentials
    /// xtask may hold, even one set on its command.
    #[test]
    fn a_step_gets_no_vault_credential() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("work.log");
        let mut step = sh("echo token=${VAULT_TOKEN-none} bao=${BAO_TOKEN-none}");
        step.env("VAULT_TOKEN", "hvs.admin-of-a-shared-vault")
            .env("BAO_TOKEN", "hvs.another");
        Background::spawn("test", &log, vec![step])
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "token=none bao=none\n"
        );
    }

    #[test]
    fn a_failed_step_ends_the_sequence_and_the_error_shows_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("work.log");
        let job = Background::spawn(
            "test",
            &log,
            vec![sh("echo about to fail; exit 3"), sh("echo never")],
        )
        .unwrap();
        let err = format!("{:#}", job.wait().unwrap_err());
        assert!(err.contains("failed"), "{err}");
        assert!(err.contains("about to fail"), "{err}");
        assert!(!std::fs::read_to_string(&log).unwrap().contains("never"));
    }

    #[test]
    fn dropping_it_stops_the_running_step_and_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("work.log");
        let pid_file = dir.path().join("child.pid");
        let job = Background::spawn(
            "test",
            &log,
            vec![sh(&format!(
                "sleep 60 & echo $! > {}; wait",
                pid_file.display()
            ))],
        )
        .unwrap();
        let pid = rig::base::wait::wait_until_blocking(
            "the step's child pid",
            Duration::from_secs(10),
            || {
                Ok(match std::fs::read_to_string(&pid_file) {
                    Ok(text) if text.ends_with('\n') => {
                        rig::base::wait::Probe::Ready(text.trim().parse::<i32>()?)
                    }
                    _ => rig::base::wait::Probe::Pending("no pid file yet".into()),
                })
            },
        )
        .unwrap();
        let started = Instant::now();
        drop(job);
        assert!(started.elapsed() < Duration::from_secs(30));
        rig::base::wait::wait_until_blocking(
            "the step's child to be gone",
            Duration::from_secs(10),
            || {
                let alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
                    && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .unwrap_or_default()
                        .contains(") Z ");
                Ok(if alive {
                    rig::base::wait::Probe::Pending(format!("pid {pid} alive"))
                } else {
                    rig::base::wait::Probe::Ready(())
                })
            },
        )
        .unwrap();
    }
}
