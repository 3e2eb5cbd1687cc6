//! CPU time spent by a process, for the auth-overhead step's "CPU per
//! request" columns.
//!
//! Requests/s through an Envoy on a 2-core machine move with everything
//! else that runs (the load generator, the upstream, Vault, keygate, the
//! other gateways idling), so two variants a few per cent apart swap places
//! from one run to the next. The CPU time the Envoy process spends per
//! request is what the auth path costs it, and barely moves: read before and
//! after every burst, summed over the rounds.
//!
//! The source is each thread's `/proc/<pid>/task/<tid>/schedstat` (time on a
//! CPU in nanoseconds; `/proc/<pid>/stat` counts in 10 ms ticks, too coarse
//! for a burst of a few seconds). A thread that ends during a burst takes
//! its time with it; Envoy's and keygate's threads live as long as they do.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

/// CPU time spent during a variant's bursts: its Envoy's, and keygate's
/// when the variant goes through keygate's process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuUse {
    pub envoy: Duration,
    pub keygate: Option<Duration>,
}

impl CpuUse {
    pub fn add(&mut self, other: CpuUse) {
        self.envoy += other.envoy;
        self.keygate = match (self.keygate, other.keygate) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or_default() + b.unwrap_or_default()),
        };
    }
}

/// The CPU time of every live thread of `pid`, summed.
pub fn process_cpu(pid: i32) -> Result<Duration> {
    process_cpu_in(Path::new("/proc"), pid)
}

fn process_cpu_in(proc_dir: &Path, pid: i32) -> Result<Duration> {
    let tasks = proc_dir.join(pid.to_string()).join("task");
    let entries = std::fs::read_dir(&tasks)
        .with_context(|| format!("listing the threads of process {pid} ({})", tasks.display()))?;
    let mut total = 0u64;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", tasks.display()))?;
        // A thread gone between the listing and the read counts nothing.
        let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        total += parse_schedstat(&text).with_context(|| {
            format!(
                "{}/schedstat is not \"<ns on cpu> <ns waiting> <slices>\": {text:?}",
                entry.path().display()
            )
        })?;
    }
    Ok(Duration::from_nanos(total))
}

fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_ascii_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_gives_the_time_on_cpu() {
        assert_eq!(parse_schedstat("670829 12 1\n"), Some(670_829));
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("x 1 2"), None);
    }

    #[test]
    fn threads_are_summed_and_vanished_ones_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let tasks = dir.path().join("42/task");
        for (tid, line) in [("42", "1000 5 1\n"), ("43", "2500 0 3\n")] {
            std::fs::create_dir_all(tasks.join(tid)).unwrap();
            std::fs::write(tasks.join(tid).join("schedstat"), line).unwrap();
        }
        // A thread listed but gone before its file was read.
        std::fs::create_dir_all(tasks.join("44")).unwrap();
        assert_eq!(
            process_cpu_in(dir.path(), 42).unwrap(),
            Duration::from_nanos(3500)
        );
        assert!(process_cpu_in(dir.path(), 7).is_err());
    }

    #[test]
    fn a_busy_process_accumulates_cpu_time() {
        let mut busy = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let pid = busy.id() as i32;
        let before = process_cpu(pid).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let after = process_cpu(pid);
        busy.kill().unwrap();
        busy.wait().unwrap();
        let after = after.unwrap();
        assert!(after > before, "{before:?} -> {after:?}");
    }
}
