//! Latency at a common rate: the warm variants sent the same fixed rate
//! of requests (open loop), after the closed-loop rounds.
//!
//! Why: the rounds are closed loop (8 connections, one request in flight
//! on each, every variant as fast as it goes), so their latencies are at
//! saturation: by Little's law the mean is about 8 / req/s, and "p99 added
//! over the native filter" there compares queues at different
//! throughputs. Here every warm variant gets the same requests per second,
//! half the slowest warm variant's closed-loop req/s in this run, so none
//! is saturated and a p99 difference is what the auth path adds at equal
//! load. The load generator sends each request when it is due whatever
//! the answers (`bench_peer::protocol::BurstSpec::rate_per_s`) and times it
//! from then, so a stall shows in the tail instead of pausing the load;
//! `late` counts requests that went out more than 1 ms after they were due
//! (all connections busy, or the generator itself behind): many of them
//! and the rate was not held.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::load::Outcome;
use crate::stats::Latency;
use crate::variants::Variant;

/// The variants measured at the common rate: every warm one (no Vault
/// read, no callout per request), the rate's choice among them; also the
/// ones the warm-up burst goes through.
pub const VARIANTS: [Variant; 7] = [
    Variant::NoAuth,
    Variant::Native,
    Variant::NativeForwarding,
    Variant::ModuleFloor,
    Variant::KeygateGrpc,
    Variant::KeygateHttp,
    Variant::ModuleWarm,
];

/// The common rate is this share of the slowest warm variant's req/s.
pub const SHARE_OF_SLOWEST: f64 = 0.5;

/// The rate, and what it was chosen from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Choice {
    pub rate_per_s: f64,
    /// The warm variant with the lowest closed-loop req/s in this run ...
    pub slowest: Variant,
    /// ... and that req/s (its ratio of totals over the rounds).
    pub slowest_rps: f64,
}

/// Half the lowest closed-loop req/s among [`VARIANTS`] (`rps`: each
/// variant's over the run's rounds), or why there is none: a warm variant
/// not measured, or with no request answered.
pub fn choose(rps: &BTreeMap<Variant, f64>) -> Result<Choice, String> {
    let mut slowest: Option<(Variant, f64)> = None;
    for variant in VARIANTS {
        let Some(&r) = rps.get(&variant) else {
            return Err(format!(
                "{} has no closed-loop req/s to choose the rate from",
                variant.name()
            ));
        };
        if r.is_nan() || r <= 0.0 {
            return Err(format!(
                "{} answered no request 200 in the rounds, so no rate is below its",
                variant.name()
            ));
        }
        if slowest.is_none_or(|(_, s)| r < s) {
            slowest = Some((variant, r));
        }
    }
    let (slowest, slowest_rps) = slowest.expect("VARIANTS is not empty");
    Ok(Choice {
        rate_per_s: (slowest_rps * SHARE_OF_SLOWEST).floor().max(1.0),
        slowest,
        slowest_rps,
    })
}

/// What the step measured: bench.json's `fixed_rate`.
#[derive(Debug, Clone, Serialize)]
pub struct FixedRate {
    #[serde(flatten)]
    pub choice: Choice,
    /// Rounds, each running every variant once (interleaved as the
    /// closed-loop rounds are, the module's comparisons back to back).
    pub rounds: usize,
    /// Each variant's window per round.
    pub window_ms: u64,
    pub connections: usize,
    /// A request that went out more than this after it was due is late.
    pub late_after_us: u64,
    pub variants: Vec<FixedRateVariant>,
    /// Every burst, in the order run.
    pub bursts: Vec<FixedRateBurst>,
}

/// One variant over the step's rounds.
#[derive(Debug, Clone, Serialize)]
pub struct FixedRateVariant {
    pub variant: Variant,
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    /// Requests that went out more than `late_after_us` after they were due.
    pub late: u64,
    /// Of those, the ones the generator's pacing thread handed over late
    /// (the machine, not the variant, was behind); the rest waited for a
    /// free connection.
    pub late_pacing: u64,
    /// The latest one went out after it was due, µs.
    pub max_late_us: u64,
    /// From when each request was due to its answer.
    pub latency: Latency,
    /// p99 over the native filter's at the same rate, µs (issue 16's
    /// target for the module: at most 300).
    pub p99_added_vs_native_us: Option<i64>,
    pub last_failure: Option<String>,
}

/// One variant's burst in one round.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FixedRateBurst {
    /// From 1.
    pub round: usize,
    pub variant: Variant,
    pub requests: u64,
    pub late: u64,
    pub p99_us: u64,
}

impl FixedRateBurst {
    pub fn of(round: usize, variant: Variant, outcome: &Outcome) -> Self {
        Self {
            round,
            variant,
            requests: outcome.requests(),
            late: outcome.late,
            p99_us: outcome.latencies_us.value_at_quantile(0.99),
        }
    }
}

/// Adds a burst's outcome to a variant's total.
pub fn add(totals: &mut BTreeMap<Variant, Outcome>, variant: Variant, outcome: Outcome) {
    match totals.get_mut(&variant) {
        Some(total) => {
            // Both histograms have the generator's bounds.
            let _ = total.latencies_us.add(&outcome.latencies_us);
            total.ok += outcome.ok;
            total.failed += outcome.failed;
            total.elapsed += outcome.elapsed;
            total.late += outcome.late;
            total.late_pacing += outcome.late_pacing;
            total.max_late = total.max_late.max(outcome.max_late);
            if outcome.last_failure.is_some() {
                total.last_failure = outcome.last_failure;
            }
        }
        None => {
            totals.insert(variant, outcome);
        }
    }
}

/// Each variant's summary, in the order of [`VARIANTS`], with its p99
/// over the native filter's.
pub fn variant_results(totals: &BTreeMap<Variant, Outcome>) -> Vec<FixedRateVariant> {
    let native_p99 = totals
        .get(&Variant::Native)
        .map(|o| o.latencies_us.value_at_quantile(0.99));
    VARIANTS
        .iter()
        .filter_map(|v| totals.get(v).map(|o| (*v, o)))
        .map(|(variant, o)| {
            let latency = Latency::of(&o.latencies_us);
            FixedRateVariant {
                variant,
                requests: o.requests(),
                ok: o.ok,
                failed: o.failed,
                late: o.late,
                late_pacing: o.late_pacing,
                max_late_us: o.max_late.as_micros() as u64,
                latency,
                p99_added_vs_native_us: native_p99
                    .filter(|_| o.requests() > 0)
                    .map(|n| latency.p99_us as i64 - n as i64),
                last_failure: o.last_failure.clone(),
            }
        })
        .collect()
}

/// Per round, `variant`'s p99 minus the native filter's (µs), for the
/// rounds where both ran.
pub fn p99_added_by_round(bursts: &[FixedRateBurst], variant: Variant) -> Vec<i64> {
    bursts
        .iter()
        .filter(|b| b.variant == variant && b.requests > 0)
        .filter_map(|b| {
            let native = bursts
                .iter()
                .find(|n| n.round == b.round && n.variant == Variant::Native && n.requests > 0)?;
            Some(b.p99_us as i64 - native.p99_us as i64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn outcome(requests: u64, latency_us: u64, late: u64) -> Outcome {
        let mut h = crate::stats::latency_histogram();
        for _ in 0..requests {
            h.record(latency_us).unwrap();
        }
        Outcome {
            latencies_us: h,
            ok: requests,
            failed: 0,
            elapsed: Duration::from_secs(1),
            last_failure: None,
            late,
            late_pacing: late / 2,
            max_late: Duration::from_micros(late * 100),
        }
    }

    #[test]
    fn the_rate_is_half_the_slowest_warm_variants() {
        let mut rps: BTreeMap<Variant, f64> = VARIANTS
            .iter()
            .enumerate()
            .map(|(i, v)| (*v, 7000.0 - 500.0 * i as f64))
            .collect();
        // Cold variants are slower still, and not the rate's business.
        rps.insert(Variant::KeygateCold, 800.0);
        rps.insert(Variant::ModuleMiss, 3000.0);
        rps.insert(Variant::KeygateGrpc, 3501.0);
        let choice = choose(&rps).unwrap();
        assert_eq!(choice.slowest, Variant::KeygateGrpc);
        assert_eq!(choice.slowest_rps, 3501.0);
        assert_eq!(choice.rate_per_s, 1750.0);

        // A warm variant missing or answering nothing: no rate, and why.
        let mut missing = rps.clone();
        missing.remove(&Variant::ModuleWarm);
        assert!(
            choose(&missing)
                .unwrap_err()
                .contains("keygate-envoy-module-warm")
        );
        let mut failing = rps;
        failing.insert(Variant::Native, 0.0);
        assert!(choose(&failing).unwrap_err().contains("envoy-api-key-auth"));
    }

    #[test]
    fn rounds_add_up_and_p99_is_over_the_native_filters() {
        let mut totals = BTreeMap::new();
        add(&mut totals, Variant::Native, outcome(100, 400, 0));
        add(&mut totals, Variant::ModuleWarm, outcome(100, 500, 2));
        add(&mut totals, Variant::ModuleWarm, outcome(100, 700, 3));
        let mut failing = outcome(100, 300, 0);
        failing.ok = 90;
        failing.failed = 10;
        failing.last_failure = Some("HTTP 403".into());
        add(&mut totals, Variant::NoAuth, failing);
        let results = variant_results(&totals);
        assert_eq!(
            results.iter().map(|r| r.variant).collect::<Vec<_>>(),
            [Variant::NoAuth, Variant::Native, Variant::ModuleWarm]
        );
        let module = &results[2];
        assert_eq!(
            (module.requests, module.late, module.late_pacing),
            (200, 5, 2)
        );
        assert_eq!(module.max_late_us, 300);
        // 700 µs against 400, within the histogram's 3 digits.
        assert!((module.p99_added_vs_native_us.unwrap() - 300).abs() <= 2);
        assert_eq!(results[1].p99_added_vs_native_us, Some(0));
        let no_auth = &results[0];
        assert_eq!((no_auth.ok, no_auth.failed), (90, 10));
        assert_eq!(no_auth.last_failure.as_deref(), Some("HTTP 403"));

        // Without the native filter, no difference to it.
        totals.remove(&Variant::Native);
        assert!(
            variant_results(&totals)
                .iter()
                .all(|r| r.p99_added_vs_native_us.is_none())
        );
    }

    #[test]
    fn per_round_p99_differences_pair_rounds() {
        let bursts: Vec<FixedRateBurst> = [
            (1, Variant::Native, 400),
            (1, Variant::ModuleWarm, 450),
            (2, Variant::ModuleWarm, 600),
            (2, Variant::Native, 500),
            (3, Variant::ModuleWarm, 900),
        ]
        .into_iter()
        .map(|(round, variant, p99_us)| FixedRateBurst {
            round,
            variant,
            requests: 10,
            late: 0,
            p99_us,
        })
        .collect();
        assert_eq!(p99_added_by_round(&bursts, Variant::ModuleWarm), [50, 100]);
        assert_eq!(p99_added_by_round(&bursts, Variant::NoAuth), [] as [i64; 0]);
    }
}
