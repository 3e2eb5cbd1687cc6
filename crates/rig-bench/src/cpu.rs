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

/// The whole machine's CPU time from `/proc/stat`'s `cpu` line, in the
/// kernel's ticks: all of it, and what the hypervisor stole (time a virtual
/// CPU wanted to run and the host ran something else). A burst run while
/// the host steals is slower for reasons no variant controls; the report
/// says how much was stolen so a reader can tell such a run from a slow
/// filter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineTicks {
    pub total: u64,
    pub steal: u64,
}

impl MachineTicks {
    pub fn now() -> Result<Self> {
        let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        Self::parse(&text).with_context(
            || "/proc/stat has no \"cpu user nice system idle iowait irq softirq steal\" line",
        )
    }

    fn parse(text: &str) -> Option<Self> {
        let line = text.lines().find(|l| l.starts_with("cpu "))?;
        // user nice system idle iowait irq softirq steal (guest time is
        // already inside user and nice).
        let ticks: Vec<u64> = line
            .split_ascii_whitespace()
            .skip(1)
            .take(8)
            .map(|t| t.parse().ok())
            .collect::<Option<_>>()?;
        (ticks.len() == 8).then(|| Self {
            total: ticks.iter().sum(),
            steal: ticks[7],
        })
    }

    /// The share of the machine's CPU time stolen since `before` (0..=1);
    /// `None` when no tick passed.
    pub fn steal_share_since(self, before: Self) -> Option<f64> {
        let total = self.total.checked_sub(before.total)?;
        let steal = self.steal.checked_sub(before.steal)?;
        (total > 0).then(|| steal as f64 / total as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_read_from_the_cpu_line() {
        let text = "cpu  100 10 50 800 20 0 5 15 0 0\ncpu0 50 5 25 400 10 0 2 8 0 0\n";
        let before = MachineTicks::parse(text).unwrap();
        assert_eq!(
            before,
            MachineTicks {
                total: 1000,
                steal: 15
            }
        );
        let after = MachineTicks {
            total: 1200,
            steal: 65,
        };
        assert_eq!(after.steal_share_since(before), Some(0.25));
        assert_eq!(before.steal_share_since(before), None);
        assert_eq!(before.steal_share_since(after), None);
        // Old kernels' shorter line, or none at all.
        assert_eq!(MachineTicks::parse("cpu  1 2 3 4\n"), None);
        assert_eq!(MachineTicks::parse("intr 5\n"), None);
        // This machine's.
        let now = MachineTicks::now().unwrap();
        assert!(now.total > 0 && now.steal <= now.total);
    }

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
