//! A warning that can come once per request (Vault unreachable, keygate
//! unreachable, a policy that refuses a read) is written at most once per
//! interval, and the line that is written says how many were left out
//! since the one before: an outage under load would otherwise put a line
//! per request into the log, burying what came before it.
//!
//! Lock-free: every thread warns through the same `Throttle`; the one that
//! wins the compare-and-swap on the last line's time writes. No crate of
//! the ones we use does this for both `tracing` (keygate) and a plain
//! callback (keygate-envoy, inside Envoy); the logic is twenty lines.
//!
//! [`Throttle::overdue`] gives the count no later warning came to carry,
//! for a caller that checks periodically (keygate, every 10 s).
//! [`Repeats`] is one retry loop's own: a line whenever the text changes,
//! else once per interval.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// No line written yet.
const NEVER: u64 = u64::MAX;

pub struct Throttle {
    every: Duration,
    epoch: Instant,
    /// Milliseconds since `epoch` of the last line written, or `NEVER`.
    last_ms: AtomicU64,
    /// Warnings left out since the last line.
    left_out: AtomicU64,
}

/// Whether to write this warning's line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Write it, and say that `left_out` more came since the last line.
    Write { left_out: u64 },
    /// Counted, not written.
    Skip,
}

impl Throttle {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            epoch: Instant::now(),
            last_ms: AtomicU64::new(NEVER),
            left_out: AtomicU64::new(0),
        }
    }

    /// Whether a warning at `now` gets its line: the first one does, then
    /// one per `every`; the others are counted for the next line.
    pub fn admit(&self, now: Instant) -> Admit {
        match self.admit_due(now) {
            Some(left_out) => Admit::Write { left_out },
            None => {
                self.left_out.fetch_add(1, Ordering::Relaxed);
                Admit::Skip
            }
        }
    }

    /// If a line is due at `now` and this caller wins it: the count left
    /// out before it (taken, so the next line starts from 0).
    fn admit_due(&self, now: Instant) -> Option<u64> {
        let now_ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(NEVER - 1);
        let every_ms = u64::try_from(self.every.as_millis()).unwrap_or(NEVER - 1);
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == NEVER || now_ms.saturating_sub(last) >= every_ms;
        if !due
            || self
                .last_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return None;
        }
        Some(self.left_out.swap(0, Ordering::Relaxed))
    }

    /// The count of warnings left out since the last line, if that line is
    /// at least `every` old: for a line of their own, written by whoever
    /// calls this periodically, since the stretch that caused them may be
    /// over (an outage's last seconds) and no later warning will come to
    /// carry the count. Such a line counts as one for [`admit`](Self::admit).
    pub fn overdue(&self, now: Instant) -> Option<u64> {
        if self.left_out.load(Ordering::Relaxed) == 0 {
            return None;
        }
        match self.admit_due(now) {
            Some(0) | None => None,
            Some(left_out) => Some(left_out),
        }
    }

    /// What a written line appends for `left_out` warnings left out before
    /// it (empty for none).
    pub fn left_out_note(&self, left_out: u64) -> String {
        if left_out == 0 {
            return String::new();
        }
        format!(
            " ({left_out} more warning{} since the last one, left out: at most one line per {} s)",
            if left_out == 1 { "" } else { "s" },
            self.every.as_secs()
        )
    }
}

/// One caller's repeated warning, a retry loop's: its line is written the
/// first time, whenever its text changes, and once per `every` while the
/// same text repeats. Not shared (`&mut self`): the loop owns it.
#[derive(Debug)]
pub struct Repeats {
    every: Duration,
    /// The last line written: its text and when.
    last: Option<(String, Instant)>,
    left_out: u64,
}

impl Repeats {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            left_out: 0,
        }
    }

    /// Whether `text` at `now` gets its line; `Some` carries how many were
    /// left out since the last one.
    pub fn admit(&mut self, text: &str, now: Instant) -> Option<u64> {
        let due = match &self.last {
            None => true,
            Some((last, at)) => last != text || now.saturating_duration_since(*at) >= self.every,
        };
        if !due {
            self.left_out += 1;
            return None;
        }
        self.last = Some((text.to_owned(), now));
        Some(std::mem::take(&mut self.left_out))
    }

    /// The warnings stopped (the loop succeeded): the next one is written.
    pub fn reset(&mut self) {
        self.last = None;
        self.left_out = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_warning_is_written_once_per_interval_and_when_it_changes() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut repeats = Repeats::new(Duration::from_secs(60));
        assert_eq!(repeats.admit("403 permission denied", at(0)), Some(0));
        for s in [5, 10, 59] {
            assert_eq!(repeats.admit("403 permission denied", at(s)), None);
        }
        assert_eq!(repeats.admit("403 permission denied", at(60)), Some(3));
        assert_eq!(repeats.admit("connection refused", at(61)), Some(0));
        assert_eq!(repeats.admit("connection refused", at(62)), None);
        repeats.reset();
        assert_eq!(repeats.admit("connection refused", at(63)), Some(0));
    }

    #[test]
    fn one_line_per_interval_counting_the_ones_left_out() {
        let throttle = Throttle::new(Duration::from_secs(10));
        let at = |ms: u64| throttle.epoch + Duration::from_millis(ms);
        assert_eq!(throttle.admit(at(5)), Admit::Write { left_out: 0 });
        for ms in [6, 100, 9_999] {
            assert_eq!(throttle.admit(at(ms)), Admit::Skip);
        }
        assert_eq!(throttle.admit(at(10_005)), Admit::Write { left_out: 3 });
        assert_eq!(throttle.admit(at(10_006)), Admit::Skip);
        assert_eq!(throttle.admit(at(20_005)), Admit::Write { left_out: 1 });
        assert_eq!(throttle.admit(at(40_000)), Admit::Write { left_out: 0 });
    }

    #[test]
    fn overdue_counts_come_out_once_the_interval_has_passed() {
        let throttle = Throttle::new(Duration::from_secs(10));
        let at = |ms: u64| throttle.epoch + Duration::from_millis(ms);
        // Nothing left out: nothing to write, whenever.
        assert_eq!(throttle.overdue(at(0)), None);
        assert_eq!(throttle.admit(at(5)), Admit::Write { left_out: 0 });
        assert_eq!(throttle.overdue(at(50_000)), None);
        // Left out, then the warnings stop: the count comes out once the
        // last line is `every` old, and only once.
        assert_eq!(throttle.admit(at(50_001)), Admit::Write { left_out: 0 });
        for ms in [50_002, 52_000] {
            assert_eq!(throttle.admit(at(ms)), Admit::Skip);
        }
        assert_eq!(throttle.overdue(at(59_999)), None);
        assert_eq!(throttle.overdue(at(60_001)), Some(2));
        assert_eq!(throttle.overdue(at(90_000)), None);
        // That line counts against the interval.
        assert_eq!(throttle.admit(at(60_002)), Admit::Skip);
        assert_eq!(throttle.admit(at(70_001)), Admit::Write { left_out: 1 });
    }

    #[test]
    fn a_time_before_the_throttle_was_made_counts_as_its_start() {
        let throttle = Throttle::new(Duration::from_secs(1));
        let before = throttle.epoch.checked_sub(Duration::from_secs(5));
        if let Some(before) = before {
            assert_eq!(throttle.admit(before), Admit::Write { left_out: 0 });
            assert_eq!(throttle.admit(throttle.epoch), Admit::Skip);
        }
    }

    #[test]
    fn the_note_says_how_many_and_the_interval() {
        let throttle = Throttle::new(Duration::from_secs(10));
        assert_eq!(throttle.left_out_note(0), "");
        assert_eq!(
            throttle.left_out_note(1),
            " (1 more warning since the last one, left out: at most one line per 10 s)"
        );
        assert_eq!(
            throttle.left_out_note(3),
            " (3 more warnings since the last one, left out: at most one line per 10 s)"
        );
    }

    #[test]
    fn threads_racing_write_one_line_and_count_the_rest() {
        let throttle = Throttle::new(Duration::from_secs(3600));
        let written = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        if let Admit::Write { .. } = throttle.admit(Instant::now()) {
                            written.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(written.load(Ordering::Relaxed), 1);
        assert_eq!(throttle.left_out.load(Ordering::Relaxed), 3999);
    }
}
