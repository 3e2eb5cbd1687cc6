//! What a bench run reports, as data: the plan it ran and `bench.json`'s
//! types. Apart from the code that measures, so the report and the plot read
//! them without importing the bench itself.

use std::time::Duration;

use serde::Serialize;

use crate::variants::Variant;
use crate::{fixed_rate, instructions, propagation, scale, stats};

/// How much to measure.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Plan {
    pub quick: bool,
    /// Rounds of the auth-overhead step, each running every variant once.
    pub rounds: usize,
    /// Per variant and round: at most this many requests, for at most `window`.
    pub requests_per_round: u64,
    pub window: Duration,
    pub connections: usize,
    /// Fresh keys for each cold variant (each used once).
    pub cold_pool: usize,
    /// Keys per round for the module-miss variant, put in keygate's cache
    /// just before its turn (they must be used within keygate's positive
    /// TTL, 5 s here).
    pub miss_chunk: usize,
    /// API keys issued and revoked through the keys-file side (each waits
    /// for a render: about a second).
    pub revocations: usize,
    /// API keys issued and revoked directly (milliseconds each): more of
    /// them, so that p99 is not simply the slowest of twenty.
    pub direct_revocations: usize,
    pub secret_id_rotations: usize,
    pub scale_sizes: &'static [usize],
    pub scale_window: Duration,
    pub suite: bool,
    /// Requests counted under callgrind per Envoy (`instructions`).
    pub instruction_requests: u64,
    /// Rounds of the latency at a common rate (`fixed_rate`), after the
    /// closed-loop ones, each running every warm variant once ...
    pub fixed_rate_rounds: usize,
    /// ... for this long at that rate.
    pub fixed_rate_window: Duration,
}

impl Plan {
    pub fn full() -> Self {
        Self {
            quick: false,
            rounds: 8,
            requests_per_round: 20_000,
            window: Duration::from_secs(3),
            connections: 8,
            // Enough for 8 rounds of 3 s at ~1 200 req/s (the optimized
            // load generator's cold rate on 2 cores), with room.
            cold_pool: 32_000,
            // ~1.4 s to put in keygate's cache at its cold rate.
            miss_chunk: 1_500,
            revocations: 20,
            direct_revocations: 200,
            secret_id_rotations: 20,
            scale_sizes: &[100, 10_000, 100_000],
            scale_window: Duration::from_secs(3),
            suite: true,
            instruction_requests: 2_000,
            fixed_rate_rounds: 3,
            fixed_rate_window: Duration::from_secs(3),
        }
    }

    /// The same plan with `rounds` rounds of the auth-overhead step; the
    /// cold variants' pools of fresh keys grow or shrink with them, so
    /// more rounds do not run them dry.
    pub fn with_rounds(self, rounds: usize) -> Self {
        let rounds = rounds.max(1);
        Self {
            rounds,
            cold_pool: (self.cold_pool * rounds).div_ceil(self.rounds.max(1)),
            ..self
        }
    }

    /// About a minute and a half on 2 cores once built.
    pub fn quick() -> Self {
        Self {
            quick: true,
            rounds: 3,
            requests_per_round: 3_000,
            window: Duration::from_millis(800),
            connections: 8,
            cold_pool: 3_000,
            miss_chunk: 300,
            revocations: 6,
            direct_revocations: 20,
            secret_id_rotations: 3,
            scale_sizes: &[100, 1_000],
            scale_window: Duration::from_millis(800),
            suite: false,
            // A smoke run of the count (native filter and module only).
            instruction_requests: 300,
            // ~9 s: seven variants for 1 s each, the pause before each.
            fixed_rate_rounds: 1,
            fixed_rate_window: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub loadavg_at_start: String,
    pub kernel: String,
    pub envoy: String,
    pub bao: String,
    pub keygate: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct VariantResult {
    pub variant: Variant,
    pub description: String,
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    pub seconds: f64,
    pub rps: f64,
    pub latency: stats::Latency,
    pub rps_vs_native: Option<f64>,
    /// The median over rounds of this variant's req/s over the native
    /// filter's in the same round (`stats::median_of_ratios`).
    pub rps_vs_native_round_median: Option<f64>,
    /// Where that median lies, from the rounds' order statistics
    /// (`stats::median_interval`): eight rounds pin it only so far.
    pub rps_vs_native_round_interval: Option<stats::MedianInterval>,
    pub rps_vs_no_auth: Option<f64>,
    pub p99_vs_native: Option<f64>,
    pub p99_vs_no_auth: Option<f64>,
    /// p99 over the no-auth ceiling's, in µs.
    pub p99_added_us: Option<i64>,
    /// p99 over the native filter's, in µs (issue 16's target for the
    /// module: at most 300).
    pub p99_added_vs_native_us: Option<i64>,
    /// CPU time the variant's Envoy process spent per request, in µs
    /// (`cpu`: every thread, read around each burst).
    pub envoy_cpu_us_per_request: Option<f64>,
    /// That over the native filter's Envoy: 1.05 is 5 % more Envoy CPU per
    /// request than `api_key_auth` costs.
    pub envoy_cpu_vs_native: Option<f64>,
    /// keygate's CPU time per request, for the variants that go through
    /// keygate's process (ext_authz, the module's callouts).
    pub keygate_cpu_us_per_request: Option<f64>,
    pub last_failure: Option<String>,
    /// Latency percentiles for the plot: (percentile, µs).
    pub distribution: Vec<(f64, u64)>,
}

/// One variant's burst in one round of the auth-overhead step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundResult {
    /// From 1, as the progress lines count.
    pub round: usize,
    pub variant: Variant,
    pub rps: f64,
    /// The share of the machine's CPU time the host stole during the burst
    /// (`cpu::MachineTicks`); `None` when it could not be read.
    pub steal_share: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SuiteSpeed {
    /// The environment of this bench (external-secret mode, gateways
    /// envoy-grpc, envoy-http and envoy-module) up and ready, ms.
    pub up_ms: u64,
    /// The scale environment (inline mode, envoy-grpc) up and ready, ms.
    pub scale_up_ms: Option<u64>,
    /// `cargo xtask e2e` wall time (full bench only: three modes, every
    /// gateway, keys-file passes, faults, TLS; warm build), ms.
    pub e2e_ms: Option<u64>,
    pub e2e_ok: Option<bool>,
    pub e2e_command: Option<String>,
    /// From that run's report.json: its environment up, and the tests
    /// alone (every test binary of every mode, side by side), ms.
    pub e2e_report_up_ms: Option<u64>,
    pub e2e_report_tests_ms: Option<u64>,
    pub e2e_report_wall_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub started_at: String,
    pub wall_ms: u64,
    pub plan: Plan,
    pub machine: Machine,
    pub load_generator: String,
    pub connections: usize,
    pub path: String,
    pub native_keys: usize,
    pub variants: Vec<VariantResult>,
    /// Every burst of the auth-overhead step, in the order run.
    pub rounds: Vec<RoundResult>,
    /// The warm variants' latency at one fixed rate, open loop (`None`
    /// when no rate could be chosen: `left_out` says why).
    pub fixed_rate: Option<fixed_rate::FixedRate>,
    /// Envoy's instructions per request under callgrind (full runs, with
    /// valgrind on PATH; else `left_out` says why).
    pub instructions: Vec<instructions::InstructionCount>,
    pub propagation: Vec<propagation::PropagationResult>,
    pub scale: Vec<scale::ScaleResult>,
    pub suite: SuiteSpeed,
    /// What was not measured and why.
    pub left_out: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_rounds_bring_more_fresh_keys() {
        let full = Plan::full();
        let twenty = full.with_rounds(20);
        assert_eq!(twenty.rounds, 20);
        assert_eq!(twenty.cold_pool, full.cold_pool * 20 / full.rounds);
        // The miss variant's pool is a chunk per round already.
        assert_eq!(twenty.miss_chunk, full.miss_chunk);
        assert_eq!(twenty.requests_per_round, full.requests_per_round);
        // The common-rate step keeps its own rounds.
        assert_eq!(twenty.fixed_rate_rounds, full.fixed_rate_rounds);
        let one = Plan::quick().with_rounds(1);
        assert_eq!((one.rounds, one.cold_pool), (1, 1_000));
        assert_eq!(Plan::quick().with_rounds(0).rounds, 1);
    }
}
