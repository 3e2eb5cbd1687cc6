//! Warnings that can come once per request (keygate unreachable, a callout
//! that could not start, keygate and Envoy disagreeing about a route's
//! group), written at most once per interval per filter config, each line
//! saying how many were left out since the one before: an outage under load
//! would otherwise put a line per request into Envoy's log.
//!
//! Lock-free: every worker thread warns through the same `Warnings`; the
//! one that wins the compare-and-swap on the last line's time writes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// At most one line per this long (per filter config).
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// No line written yet.
const NEVER: u64 = u64::MAX;

pub struct Warnings {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last line written, or `NEVER`.
    last_ms: AtomicU64,
    /// Warnings left out since the last line.
    left_out: AtomicU64,
}

impl Default for Warnings {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(NEVER),
            left_out: AtomicU64::new(0),
        }
    }
}

impl Warnings {
    /// The line to write for a warning at `now`, or `None` when one was
    /// written less than `WARN_EVERY` ago (then it is counted). `message`
    /// runs only for a line that is written.
    pub fn line(&self, now: Instant, message: impl FnOnce() -> String) -> Option<String> {
        let now_ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(NEVER - 1);
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == NEVER || now_ms.saturating_sub(last) >= WARN_EVERY.as_millis() as u64;
        if !due
            || self
                .last_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.left_out.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let left_out = self.left_out.swap(0, Ordering::Relaxed);
        let mut line = message();
        if left_out > 0 {
            line.push_str(&format!(
                " ({left_out} more warning{} since the last one, left out: at most one line per {} s)",
                if left_out == 1 { "" } else { "s" },
                WARN_EVERY.as_secs()
            ));
        }
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_saying_how_many_were_left_out() {
        let warnings = Warnings::default();
        let start = warnings.epoch;
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert_eq!(warnings.line(at(5), || "a".into()).as_deref(), Some("a"));
        let mut built = 0;
        for ms in [6, 100, 9_999] {
            let line = warnings.line(at(ms), || {
                built += 1;
                "b".into()
            });
            assert_eq!(line, None);
        }
        assert_eq!(built, 0, "a line left out is not even built");
        assert_eq!(
            warnings.line(at(10_005), || "c".into()).as_deref(),
            Some("c (3 more warnings since the last one, left out: at most one line per 10 s)")
        );
        assert_eq!(warnings.line(at(10_006), || "d".into()), None);
        assert_eq!(
            warnings.line(at(20_005), || "e".into()).as_deref(),
            Some("e (1 more warning since the last one, left out: at most one line per 10 s)")
        );
        assert_eq!(
            warnings.line(at(40_000), || "f".into()).as_deref(),
            Some("f")
        );
    }
}
