//! The retry schedule of failed Vault logins: exponential, capped, with
//! jitter. A leaf module (imports nothing from the crate), so `vault` and
//! `watch` share it without a loop.

use std::time::Duration;

/// How much of a delay jitter may take off: delays fall in
/// `[(1 - JITTER) * nominal, nominal]`, so keygates that failed together
/// (one Secret rotated under many pods) do not retry in lockstep, and no
/// delay exceeds its cap.
pub const JITTER: f64 = 0.2;

/// The delay before retry number `failures` (1 after the first failure):
/// `base * 2^(failures - 1)`, at most `cap`, less up to [`JITTER`] of it
/// by `jitter` (in `[0, 1)`, e.g. `rand::random()`).
pub fn retry_delay(failures: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    let nominal = base.saturating_mul(1 << doublings).min(cap);
    nominal.mul_f64(1.0 - JITTER * jitter.clamp(0.0, 1.0))
}

/// A random jitter for [`retry_delay`].
pub fn jitter() -> f64 {
    rand::random::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn doubles_from_the_base_up_to_the_cap() {
        let schedule: Vec<u64> = (1..=9)
            .map(|n| retry_delay(n, S, 60 * S, 0.0).as_secs())
            .collect();
        assert_eq!(schedule, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        // Far past the cap, nothing overflows.
        assert_eq!(retry_delay(u32::MAX, S, 60 * S, 0.0), 60 * S);
        assert_eq!(retry_delay(0, S, 60 * S, 0.0), S);
    }

    #[test]
    fn jitter_only_shortens_and_by_at_most_a_fifth() {
        for n in 1..=10 {
            let nominal = retry_delay(n, S, 60 * S, 0.0);
            let shortest = retry_delay(n, S, 60 * S, 0.999_999);
            assert!(
                shortest <= nominal && shortest >= nominal.mul_f64(0.8),
                "{n}: {shortest:?}"
            );
        }
        assert_eq!(retry_delay(7, S, 60 * S, 0.5), Duration::from_secs(54));
        // Out-of-range jitter is clamped, never lengthens the delay.
        assert_eq!(retry_delay(1, S, 60 * S, -3.0), S);
        assert_eq!(retry_delay(1, S, 60 * S, 7.0), S.mul_f64(0.8));
    }

    #[test]
    fn sixty_seconds_of_failures_cost_a_handful_of_attempts() {
        // The point of the schedule: a credential that keeps failing is
        // tried about log2(elapsed) times, not once per second. Attempts
        // at 0 s, then after each (shortest, fully jittered) delay.
        let mut at = Duration::ZERO;
        let mut attempts = 0;
        while at < 60 * S {
            attempts += 1;
            at += retry_delay(attempts, S, 60 * S, 0.999_999);
        }
        assert!(attempts <= 7, "{attempts} attempts in a minute");
    }
}
