//! The bench's output: a plain-text table on stdout and `bench.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::cpu::CpuUse;
use super::load::Outcome;
use super::stats::{Latency, ratio};
use super::variants::Variant;
use crate::results::{BenchReport, RoundResult, VariantResult};

/// The percentiles the plot draws (and bench.json keeps) per variant.
const PLOT_PERCENTILES: [f64; 12] = [
    1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99, 100.0,
];

/// One result per variant, in the order of `Variant::ALL`, with ratios to
/// the native filter and to no auth.
/// `rounds`: every burst, for the per-round ratios.
pub fn variant_results(
    totals: &BTreeMap<Variant, Outcome>,
    cpu: &BTreeMap<Variant, CpuUse>,
    rounds: &[RoundResult],
) -> Vec<VariantResult> {
    let round_median_vs_native = |variant: Variant| {
        crate::stats::median_of_ratios(paired_by_round(rounds, variant, Variant::Native))
    };
    let round_interval_vs_native = |variant: Variant| {
        let ratios: Vec<f64> = paired_by_round(rounds, variant, Variant::Native)
            .iter()
            .map(|(v, n)| v / n)
            .collect();
        crate::stats::median_interval(&ratios)
    };
    let rps = Outcome::rps;
    let per_request = |time: Option<Duration>, o: &Outcome| {
        let requests = o.requests();
        time.filter(|_| requests > 0)
            .map(|t| t.as_secs_f64() * 1e6 / requests as f64)
    };
    let envoy_cpu = |v: Variant| {
        let o = totals.get(&v)?;
        per_request(cpu.get(&v).map(|c| c.envoy), o)
    };
    let native_envoy_cpu = envoy_cpu(Variant::Native);
    let base = |v: Variant| totals.get(&v);
    let native_rps = base(Variant::Native).map(rps);
    let no_auth_rps = base(Variant::NoAuth).map(rps);
    let p99 = |o: &Outcome| o.latencies_us.value_at_quantile(0.99);
    let native_p99_us = base(Variant::Native).map(p99);
    let native_p99 = native_p99_us.map(|p| p as f64);
    let no_auth_p99 = base(Variant::NoAuth).map(p99);
    Variant::ALL
        .iter()
        .filter_map(|v| totals.get(v).map(|o| (*v, o)))
        .map(|(variant, o)| {
            let r = rps(o);
            let latency = Latency::of(&o.latencies_us);
            VariantResult {
                variant,
                description: variant.describe().to_owned(),
                requests: o.requests(),
                ok: o.ok,
                failed: o.failed,
                seconds: o.elapsed.as_secs_f64(),
                rps: r,
                latency,
                rps_vs_native: ratio(r, native_rps),
                rps_vs_native_round_median: round_median_vs_native(variant),
                rps_vs_native_round_interval: round_interval_vs_native(variant),
                rps_vs_no_auth: ratio(r, no_auth_rps),
                p99_vs_native: ratio(latency.p99_us as f64, native_p99),
                p99_vs_no_auth: ratio(latency.p99_us as f64, no_auth_p99.map(|p| p as f64)),
                p99_added_us: no_auth_p99.map(|b| latency.p99_us as i64 - b as i64),
                p99_added_vs_native_us: native_p99_us.map(|b| latency.p99_us as i64 - b as i64),
                envoy_cpu_us_per_request: envoy_cpu(variant),
                envoy_cpu_vs_native: envoy_cpu(variant).and_then(|c| ratio(c, native_envoy_cpu)),
                keygate_cpu_us_per_request: per_request(
                    cpu.get(&variant).and_then(|c| c.keygate),
                    o,
                ),
                last_failure: o.last_failure.clone(),
                distribution: PLOT_PERCENTILES
                    .iter()
                    .map(|p| (*p, o.latencies_us.value_at_quantile(p / 100.0)))
                    .collect(),
            }
        })
        .collect()
}

/// Every measurement of the report that had failed requests (every request
/// of the bench expects 200), as lines for `left_out` and the bench's error:
/// its numbers are not the path's, whatever they look like.
pub fn failures(report: &BenchReport) -> Vec<String> {
    let variants = report.variants.iter().filter(|v| v.failed > 0).map(|v| {
        format!(
            "{}: {} of {} requests failed (last: {}); its req/s counts only the 200s, its latencies include the failures",
            v.variant.name(),
            v.failed,
            v.requests,
            v.last_failure.as_deref().unwrap_or("not recorded")
        )
    });
    let scale = report.scale.iter().filter(|s| s.failed > 0).map(|s| {
        format!(
            "scale {} keys: {} warm requests failed; its req/s counts only the 200s",
            s.keys, s.failed
        )
    });
    let fixed_rate = report
        .fixed_rate
        .iter()
        .flat_map(|f| &f.variants)
        .filter(|v| v.failed > 0)
        .map(|v| {
            format!(
                "latency at a common rate, {}: {} of {} requests failed (last: {}); its latencies include the failures",
                v.variant.name(),
                v.failed,
                v.requests,
                v.last_failure.as_deref().unwrap_or("not recorded")
            )
        });
    variants.chain(fixed_rate).chain(scale).collect()
}

/// The latency-at-a-common-rate table, with its one-line explanation, a
/// line on whether the rate was held, and the module's p99 over the native
/// filter's per round.
fn fixed_rate_table(f: &crate::fixed_rate::FixedRate) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nlatency at a common rate (open loop): {:.0} req/s through every warm variant (half the slowest's closed-loop {:.0} req/s, {}), {} round{} of {} interleaved, {} connections",
        f.choice.rate_per_s,
        f.choice.slowest_rps,
        f.choice.slowest.name(),
        f.rounds,
        if f.rounds == 1 { "" } else { "s" },
        rig::base::progress::secs(Duration::from_millis(f.window_ms)),
        f.connections
    );
    let _ = writeln!(
        out,
        "  each request sent when due whatever the answers and timed from then, at a rate none is saturated by: the p99s compare at equal load, not queues at each one's own saturation (late: sent over {} ms after due)",
        f.late_after_us as f64 / 1000.0
    );
    let rows: Vec<Vec<String>> = f
        .variants
        .iter()
        .map(|v| {
            vec![
                v.variant.name().to_owned(),
                v.requests.to_string(),
                v.failed.to_string(),
                v.late.to_string(),
                ms(v.latency.p50_us),
                ms(v.latency.p99_us),
                ms(v.latency.p999_us),
                ms(v.latency.max_us),
                v.p99_added_vs_native_us
                    .map_or("-".into(), |us| format!("{:+.2}", us as f64 / 1000.0)),
            ]
        })
        .collect();
    out.push_str(&table(
        1,
        &[
            "variant",
            "requests",
            "failed",
            "late",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "p99 vs native ms",
        ],
        &rows,
    ));
    let unheld: Vec<String> = f
        .variants
        .iter()
        .filter(|v| v.requests > 0 && v.late as f64 / v.requests as f64 > RATE_NOT_HELD)
        .map(|v| {
            format!(
                "{} ({} of {} late, {} of them by the generator's pacing, at worst {} ms)",
                v.variant.name(),
                v.late,
                v.requests,
                v.late_pacing,
                ms(v.max_late_us)
            )
        })
        .collect();
    if unheld.is_empty() {
        let _ = writeln!(
            out,
            "  rate held: at most {:.0} % of any variant's requests late",
            RATE_NOT_HELD * 100.0
        );
    } else {
        let _ = writeln!(
            out,
            "  rate not held for {}: their latencies include the wait (for a free connection, or for the generator's pacing thread when the machine ran it late)",
            unheld.join(", ")
        );
    }
    for v in &f.variants {
        if let Some(last) = &v.last_failure {
            let _ = writeln!(out, "  {}: last failure {last}", v.variant.name());
        }
    }
    let module = crate::fixed_rate::p99_added_by_round(&f.bursts, Variant::ModuleWarm);
    if !module.is_empty() {
        let each: Vec<String> = module
            .iter()
            .map(|us| format!("{:+.2}", *us as f64 / 1000.0))
            .collect();
        let _ = writeln!(
            out,
            "  {} p99 over {} per round, ms: {}",
            Variant::ModuleWarm.name(),
            Variant::Native.name(),
            each.join(" ")
        );
    }
    out
}

/// Over this share of a variant's requests late, the common rate was not
/// held for it.
const RATE_NOT_HELD: f64 = 0.01;

/// (`variant`'s req/s, `baseline`'s) in each round where both ran and
/// neither is zero.
fn paired_by_round(rounds: &[RoundResult], variant: Variant, baseline: Variant) -> Vec<(f64, f64)> {
    rounds
        .iter()
        .filter(|r| r.variant == variant)
        .filter_map(|r| {
            let base = rounds
                .iter()
                .find(|o| o.round == r.round && o.variant == baseline)?;
            Some((r.rps, base.rps))
        })
        .filter(|(value, base)| *value > 0.0 && *base > 0.0)
        .collect()
}

/// Under the table: each round's ratio of the paired variants to the
/// native filter (they ran back to back), and the host's steal during the
/// bursts, so a reader can tell a slow machine from a slow filter.
fn rounds_summary(rounds: &[RoundResult]) -> String {
    let mut out = String::new();
    if rounds.is_empty() {
        return out;
    }
    let paired: Vec<&str> = Variant::PAIRED.iter().map(|v| v.name()).collect();
    let _ = writeln!(
        out,
        "per round ({} back to back in each round, their order turning):",
        paired.join(", ")
    );
    // Each against the native filter, and the module against the native
    // filter doing part of its work (forwarding one identity header).
    let comparisons = Variant::PAIRED
        .iter()
        .filter(|v| **v != Variant::Native)
        .map(|v| (*v, Variant::Native))
        .chain([(Variant::ModuleWarm, Variant::NativeForwarding)]);
    for (variant, baseline) in comparisons {
        let pairs = paired_by_round(rounds, variant, baseline);
        if pairs.is_empty() {
            continue;
        }
        let ratios: Vec<f64> = pairs.iter().map(|(v, b)| v / b).collect();
        let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        let interval = crate::stats::median_interval(&ratios).map_or(String::new(), |i| {
            format!(
                "; between {} and {} with {:.0} % confidence",
                x(Some(i.low)),
                x(Some(i.high)),
                i.confidence * 100.0
            )
        });
        let _ = writeln!(
            out,
            "  {} / {}: {} (median {}{interval})",
            variant.name(),
            baseline.name(),
            each.join(" "),
            x(crate::stats::median_of_ratios(pairs.iter().copied()))
        );
    }
    let stolen: Vec<(&RoundResult, f64)> = rounds
        .iter()
        .filter_map(|r| r.steal_share.map(|s| (r, s)))
        .collect();
    match stolen.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
        None => {
            let _ = writeln!(out, "host steal during the bursts: not read (/proc/stat)");
        }
        Some((worst, max)) => {
            let mean = stolen.iter().map(|(_, s)| s).sum::<f64>() / stolen.len() as f64;
            let _ = writeln!(
                out,
                "host steal during the bursts: {:.1} % of the machine's CPU time on average, at most {:.1} % (round {}, {}){}",
                mean * 100.0,
                max * 100.0,
                worst.round,
                worst.variant.name(),
                if *max > STEAL_WORTH_SAYING {
                    ": the host ran other work on these CPUs, and every variant's burst in such a stretch is slower for it"
                } else {
                    ""
                }
            );
        }
    }
    out
}

/// Steal above this share in any burst is called out under the table.
const STEAL_WORTH_SAYING: f64 = 0.05;

pub(crate) fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn x(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}x"))
}

/// The first `left` columns left-aligned, the others right-aligned.
fn table(left: usize, headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: Vec<&str>| {
        let mut text = String::from(" ");
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i < left {
                let _ = write!(text, " {cell:<w$}");
            } else {
                let _ = write!(text, "  {cell:>w$}");
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(&mut out, headers.to_vec());
    for row in rows {
        line(&mut out, row.iter().map(String::as_str).collect());
    }
    out
}

pub fn render(r: &BenchReport) -> String {
    let mut out = String::new();
    let m = &r.machine;
    let _ = writeln!(
        out,
        "keyrig bench{} ({}): {} cores ({}), load {} at start; envoy {}, bao {}, {}",
        if r.plan.quick { " --quick" } else { "" },
        r.started_at,
        m.nproc,
        m.cpu,
        m.loadavg_at_start,
        m.envoy,
        m.bao,
        m.keygate
    );
    let _ = writeln!(
        out,
        "\nauth overhead: GET {} through each variant to the same upstream (keyrig-bench-peer); {} rounds interleaved; load generator {}, {} connections",
        r.path, r.plan.rounds, r.load_generator, r.connections
    );
    let rows: Vec<Vec<String>> = r
        .variants
        .iter()
        .map(|v| {
            vec![
                v.variant.name().to_owned(),
                v.requests.to_string(),
                v.failed.to_string(),
                format!("{:.0}", v.rps),
                ms(v.latency.p50_us),
                ms(v.latency.p99_us),
                ms(v.latency.p999_us),
                x(v.rps_vs_native),
                x(v.rps_vs_native_round_median),
                x(v.rps_vs_no_auth),
                v.p99_added_us
                    .map_or("-".into(), |us| format!("{:+.2}", us as f64 / 1000.0)),
                v.p99_added_vs_native_us
                    .map_or("-".into(), |us| format!("{:+.2}", us as f64 / 1000.0)),
                v.envoy_cpu_us_per_request
                    .map_or("-".into(), |us| format!("{us:.1}")),
                x(v.envoy_cpu_vs_native),
                v.keygate_cpu_us_per_request
                    .map_or("-".into(), |us| format!("{us:.1}")),
            ]
        })
        .collect();
    out.push_str(&table(
        1,
        &[
            "variant",
            "requests",
            "failed",
            "req/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "req/s vs native",
            "round median vs native",
            "req/s vs no-auth",
            "p99 added ms",
            "p99 vs native ms",
            "Envoy CPU us/req",
            "Envoy CPU vs native",
            "keygate CPU us/req",
        ],
        &rows,
    ));
    for v in &r.variants {
        if let Some(last) = &v.last_failure {
            let _ = writeln!(out, "  {}: last failure {last}", v.variant.name());
        }
    }
    out.push_str(&rounds_summary(&r.rounds));
    if let Some(f) = &r.fixed_rate {
        out.push_str(&fixed_rate_table(f));
    }

    if !r.instructions.is_empty() {
        let _ = writeln!(
            out,
            "\nEnvoy's instructions per request under callgrind (user space, every thread; {} requests each after a warm-up; valgrind hides SHA-NI, so the module's SHA-256 counts ~3.5k instructions it does not take on this CPU):",
            r.plan.instruction_requests
        );
        let rows: Vec<Vec<String>> = r
            .instructions
            .iter()
            .map(|c| {
                vec![
                    c.variant.name().to_owned(),
                    format!("{:.0}", c.instructions_per_request),
                    x(c.vs_native),
                ]
            })
            .collect();
        out.push_str(&table(
            1,
            &["variant", "instructions/req", "vs native"],
            &rows,
        ));
    }

    let _ = writeln!(
        out,
        "\npropagation (Vault write -> first effect observed at the gateway / keygate):"
    );
    let rows: Vec<Vec<String>> = r
        .propagation
        .iter()
        .map(|p| {
            let d = p.distribution;
            vec![
                p.mode.clone(),
                p.what.clone(),
                d.map_or("0".into(), |d| d.n.to_string()),
                d.map_or("-".into(), |d| d.p50_ms.to_string()),
                d.map_or("-".into(), |d| d.p99_ms.to_string()),
                d.map_or("-".into(), |d| d.max_ms.to_string()),
            ]
        })
        .collect();
    out.push_str(&table(
        2,
        &["mode", "what", "n", "p50 ms", "p99 ms", "max ms"],
        &rows,
    ));
    let mut said = std::collections::BTreeSet::new();
    for p in &r.propagation {
        for line in std::iter::once(format!("{}: {}", p.mode, p.intervals))
            .chain(p.note.iter().map(|n| format!("{}: {n}", p.mode)))
        {
            if said.insert(line.clone()) {
                let _ = writeln!(out, "  {line}");
            }
        }
    }

    if !r.scale.is_empty() {
        let _ = writeln!(
            out,
            "\nscale (keys in Vault, all cached by keygate; warm throughput round robin over all of them):"
        );
        let rows: Vec<Vec<String>> = r
            .scale
            .iter()
            .map(|s| {
                vec![
                    s.keys.to_string(),
                    format!("{} in {} ms", s.written, s.write_ms),
                    format!("{:.0}", s.write_per_s),
                    format!("{}", s.fill_ms),
                    format!("{:.1}", s.rss_kib as f64 / 1024.0),
                    format!("{:.0}", s.bytes_per_key),
                    format!("{:.0}", s.warm_rps),
                    ms(s.warm.p99_us),
                    s.failed.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            1,
            &[
                "keys",
                "written",
                "writes/s",
                "fill ms",
                "keygate RSS MiB",
                "bytes/key",
                "warm req/s",
                "p99 ms",
                "failed",
            ],
            &rows,
        ));
        if let Some(first) = r.scale.first() {
            let _ = writeln!(
                out,
                "  keygate RSS before any key was cached: {:.1} MiB",
                first.baseline_rss_kib as f64 / 1024.0
            );
        }
    }

    let s = &r.suite;
    let _ = writeln!(
        out,
        "\nsuite speed: environment up {} ms (external-secret mode: envoy-grpc, envoy-http, envoy-module, the keys-file side){}{}",
        s.up_ms,
        s.scale_up_ms.map_or(String::new(), |ms| format!(
            ", {ms} ms (inline mode, envoy-grpc, the keys-file side)"
        )),
        match (s.e2e_ms, s.e2e_ok) {
            (Some(ms), Some(ok)) => format!(
                "; whole local e2e suite, all modes (`{}`): {ms} ms ({})",
                s.e2e_command.as_deref().unwrap_or("?"),
                if ok { "passed" } else { "FAILED" }
            ),
            _ => String::new(),
        }
    );
    if let (Some(up), Some(tests), Some(wall)) = (
        s.e2e_report_up_ms,
        s.e2e_report_tests_ms,
        s.e2e_report_wall_ms,
    ) {
        let _ = writeln!(
            out,
            "  that e2e run's own report: wall {wall} ms (includes building the e2e tests if needed), environment up {up} ms, tests {tests} ms"
        );
    }
    for note in &r.left_out {
        let _ = writeln!(out, "not measured: {note}");
    }
    let _ = writeln!(out, "bench wall time {} ms", r.wall_ms);
    out
}

pub fn save_json(r: &BenchReport, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(r)?)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(requests: u64, secs: u64, latency_us: u64) -> Outcome {
        let mut h = crate::stats::latency_histogram();
        for _ in 0..requests {
            h.record(latency_us).unwrap();
        }
        Outcome {
            latencies_us: h,
            ok: requests,
            failed: 0,
            elapsed: Duration::from_secs(secs),
            last_failure: None,
            late: 0,
            late_pacing: 0,
            max_late: Duration::ZERO,
        }
    }

    #[test]
    fn rounds_show_the_paired_ratios_and_the_hosts_steal() {
        let burst = |round, variant, rps, steal| RoundResult {
            round,
            variant,
            rps,
            steal_share: steal,
        };
        let rounds = [
            burst(1, Variant::NoAuth, 1100.0, Some(0.0)),
            burst(1, Variant::Native, 1000.0, Some(0.01)),
            burst(1, Variant::ModuleWarm, 950.0, Some(0.02)),
            burst(1, Variant::ModuleFloor, 1010.0, Some(0.0)),
            burst(1, Variant::NativeForwarding, 990.0, Some(0.0)),
            burst(2, Variant::ModuleWarm, 480.0, Some(0.30)),
            burst(2, Variant::Native, 500.0, Some(0.25)),
            burst(2, Variant::ModuleFloor, 500.0, None),
        ];
        let text = rounds_summary(&rounds);
        assert!(
            text.contains(
                "keygate-envoy-module-warm / envoy-api-key-auth: 0.95 0.96 (median 0.95x; between 0.95x and 0.96x with 50 % confidence)"
            ),
            "{text}"
        );
        assert!(
            text.contains("envoy-module-passthrough / envoy-api-key-auth: 1.01 1.00"),
            "{text}"
        );
        // A baseline missing from a round leaves that round out.
        assert!(
            text.contains("envoy-api-key-auth-forwarding / envoy-api-key-auth: 0.99 (median 0.99x"),
            "{text}"
        );
        assert!(
            text.contains(
                "keygate-envoy-module-warm / envoy-api-key-auth-forwarding: 0.96 (median 0.96x"
            ),
            "{text}"
        );
        // Mean over the bursts read (seven), the worst named and explained.
        assert!(
            text.contains("8.3 % of the machine's CPU time on average, at most 30.0 % (round 2, keygate-envoy-module-warm): the host ran"),
            "{text}"
        );
        let quiet = rounds_summary(&rounds[..4]);
        assert!(
            quiet.contains("at most 2.0 % (round 1, keygate-envoy-module-warm)\n"),
            "{quiet}"
        );
        assert!(rounds_summary(&[]).is_empty());
    }

    #[test]
    fn ratios_are_against_native_and_no_auth() {
        let totals: BTreeMap<Variant, Outcome> = [
            (Variant::NoAuth, outcome(2000, 1, 500)),
            (Variant::Native, outcome(1000, 1, 1000)),
            (Variant::KeygateGrpc, outcome(800, 1, 1500)),
        ]
        .into();
        let cpu: BTreeMap<Variant, CpuUse> = [
            (
                Variant::Native,
                CpuUse {
                    envoy: Duration::from_millis(100),
                    keygate: None,
                },
            ),
            (
                Variant::KeygateGrpc,
                CpuUse {
                    envoy: Duration::from_millis(120),
                    keygate: Some(Duration::from_millis(40)),
                },
            ),
        ]
        .into();
        // Per round: gRPC at 0.8x, 0.9x and (a starved turn) 0.3x the
        // native filter; round 3 has no native turn, so it pairs nothing.
        let rounds: Vec<RoundResult> = [
            (1, Variant::Native, 1000.0),
            (1, Variant::KeygateGrpc, 800.0),
            (2, Variant::Native, 1000.0),
            (2, Variant::KeygateGrpc, 900.0),
            (3, Variant::Native, 1000.0),
            (3, Variant::KeygateGrpc, 300.0),
            (4, Variant::KeygateGrpc, 5.0),
        ]
        .into_iter()
        .map(|(round, variant, rps)| RoundResult {
            round,
            variant,
            rps,
            steal_share: None,
        })
        .collect();
        let results = variant_results(&totals, &cpu, &rounds);
        assert!((results[2].rps_vs_native_round_median.unwrap() - 0.8).abs() < 1e-9);
        assert_eq!(results[1].rps_vs_native_round_median, Some(1.0));
        assert_eq!(results[0].rps_vs_native_round_median, None);
        assert_eq!(
            results.iter().map(|r| r.variant).collect::<Vec<_>>(),
            [Variant::NoAuth, Variant::Native, Variant::KeygateGrpc]
        );
        let grpc = &results[2];
        assert!((grpc.rps - 800.0).abs() < 1e-9);
        assert!((grpc.rps_vs_native.unwrap() - 0.8).abs() < 1e-9);
        assert!((grpc.rps_vs_no_auth.unwrap() - 0.4).abs() < 1e-9);
        // 1500 µs vs 500 µs, within the histogram's 3 significant digits.
        assert!((grpc.p99_added_us.unwrap() - 1000).abs() <= 2);
        assert!((grpc.p99_added_vs_native_us.unwrap() - 500).abs() <= 2);
        assert!((grpc.p99_vs_no_auth.unwrap() - 3.0).abs() < 0.01);
        assert_eq!(results[0].rps_vs_no_auth, Some(1.0));
        // 100 ms over 1000 requests; 120 ms and 40 ms over 800.
        assert!((results[1].envoy_cpu_us_per_request.unwrap() - 100.0).abs() < 1e-9);
        assert!((grpc.envoy_cpu_us_per_request.unwrap() - 150.0).abs() < 1e-9);
        assert!((grpc.envoy_cpu_vs_native.unwrap() - 1.5).abs() < 1e-9);
        assert!((grpc.keygate_cpu_us_per_request.unwrap() - 50.0).abs() < 1e-9);
        assert_eq!(results[1].keygate_cpu_us_per_request, None);
        // No CPU read for no-auth: no column, no ratio.
        assert_eq!(results[0].envoy_cpu_us_per_request, None);
        assert_eq!(results[0].envoy_cpu_vs_native, None);
    }

    #[test]
    fn no_baseline_no_ratio() {
        let totals: BTreeMap<Variant, Outcome> =
            [(Variant::KeygateGrpc, outcome(10, 1, 100))].into();
        let results = variant_results(&totals, &BTreeMap::new(), &[]);
        assert_eq!(results[0].rps_vs_native, None);
        assert_eq!(results[0].p99_added_us, None);
    }

    fn fixed_rate(late: u64, failed: u64) -> crate::fixed_rate::FixedRate {
        use crate::fixed_rate::{self, Choice, FixedRateBurst};
        let mut totals = BTreeMap::new();
        let mut bursts = Vec::new();
        for (round, variant, p99_us) in [
            (1, Variant::Native, 400),
            (1, Variant::ModuleWarm, 550),
            (2, Variant::ModuleWarm, 500),
            (2, Variant::Native, 480),
        ] {
            let mut o = outcome(1000, p99_us, p99_us);
            if variant == Variant::ModuleWarm && round == 1 {
                o.late = late;
                o.late_pacing = late / 3;
                o.max_late = Duration::from_millis(40);
                o.ok -= failed;
                o.failed = failed;
                if failed > 0 {
                    o.last_failure = Some("HTTP 503".into());
                }
            }
            bursts.push(FixedRateBurst::of(round, variant, &o));
            fixed_rate::add(&mut totals, variant, o);
        }
        fixed_rate::FixedRate {
            choice: Choice {
                rate_per_s: 1750.0,
                slowest: Variant::KeygateGrpc,
                slowest_rps: 3501.0,
            },
            rounds: 2,
            window_ms: 3000,
            connections: 8,
            late_after_us: 1000,
            variants: fixed_rate::variant_results(&totals),
            bursts,
        }
    }

    fn report_with(fixed_rate: Option<crate::fixed_rate::FixedRate>) -> BenchReport {
        BenchReport {
            started_at: String::new(),
            wall_ms: 0,
            plan: crate::results::Plan::quick(),
            machine: crate::results::Machine {
                nproc: 2,
                cpu: String::new(),
                loadavg_at_start: String::new(),
                kernel: String::new(),
                envoy: String::new(),
                bao: String::new(),
                keygate: String::new(),
            },
            load_generator: String::new(),
            connections: 8,
            path: "/".into(),
            native_keys: 100,
            variants: Vec::new(),
            rounds: Vec::new(),
            fixed_rate,
            instructions: Vec::new(),
            propagation: Vec::new(),
            scale: Vec::new(),
            suite: crate::results::SuiteSpeed {
                up_ms: 0,
                scale_up_ms: None,
                e2e_ms: None,
                e2e_ok: None,
                e2e_command: None,
                e2e_report_up_ms: None,
                e2e_report_tests_ms: None,
                e2e_report_wall_ms: None,
            },
            left_out: Vec::new(),
        }
    }

    #[test]
    fn the_common_rate_table_says_the_rate_and_whether_it_held() {
        let text = render(&report_with(Some(fixed_rate(3, 0))));
        assert!(
            text.contains("latency at a common rate (open loop): 1750 req/s through every warm variant (half the slowest's closed-loop 3501 req/s, keygate-grpc-warm), 2 rounds of 3.0 s interleaved, 8 connections"),
            "{text}"
        );
        assert!(text.contains("p99 vs native ms"), "{text}");
        // 3 of 2000 late: held.
        assert!(
            text.contains("rate held: at most 1 % of any variant's requests late"),
            "{text}"
        );
        // Round 1: 550 - 400 µs; round 2: 500 - 480.
        assert!(
            text.contains(
                "keygate-envoy-module-warm p99 over envoy-api-key-auth per round, ms: +0.15 +0.02"
            ),
            "{text}"
        );
        let text = render(&report_with(Some(fixed_rate(300, 0))));
        assert!(
            text.contains(
                "rate not held for keygate-envoy-module-warm (300 of 2000 late, 100 of them by the generator's pacing, at worst 40.00 ms)"
            ),
            "{text}"
        );
        // No step, no table.
        assert!(!render(&report_with(None)).contains("common rate"));
    }

    #[test]
    fn failures_at_the_common_rate_fail_the_bench() {
        assert!(failures(&report_with(Some(fixed_rate(0, 0)))).is_empty());
        let lines = failures(&report_with(Some(fixed_rate(0, 7))));
        assert_eq!(
            lines,
            [
                "latency at a common rate, keygate-envoy-module-warm: 7 of 2000 requests failed (last: HTTP 503); its latencies include the failures"
            ]
        );
    }

    /// A variant answering fast errors is not fast: its req/s counts the
    /// 200s only, and the failures are named for `left_out` and the error.
    #[test]
    fn failed_requests_are_no_throughput_and_are_named() {
        let mut failing = outcome(1000, 1, 100);
        failing.ok = 600;
        failing.failed = 400;
        failing.last_failure = Some("403 no-route".into());
        let totals: BTreeMap<Variant, Outcome> = [
            (Variant::Native, outcome(1000, 1, 100)),
            (Variant::ModuleWarm, failing),
        ]
        .into();
        let results = variant_results(&totals, &BTreeMap::new(), &[]);
        let module = &results[1];
        assert_eq!(
            (module.requests, module.ok, module.failed),
            (1000, 600, 400)
        );
        assert!((module.rps - 600.0).abs() < 1e-9);
        assert!((module.rps_vs_native.unwrap() - 0.6).abs() < 1e-9);
        let lines: Vec<String> = results
            .iter()
            .filter(|v| v.failed > 0)
            .map(|v| v.variant.name().to_owned())
            .collect();
        assert_eq!(lines, ["keygate-envoy-module-warm"]);
    }
}
