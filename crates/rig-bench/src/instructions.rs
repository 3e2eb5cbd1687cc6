//! Envoy's instructions per request, counted by callgrind: how much work a
//! variant's Envoy does per request, as a count that does not move from
//! run to run. Requests/s and CPU time on two shared cores swing by more
//! than the differences they are asked about (one round's ratio of the
//! module's warm variant to the native filter ranged 0.72-1.16 in one run);
//! a count under callgrind repeats within ~0.3 %.
//!
//! Per variant, after the auth-overhead rounds: its Envoy is stopped and
//! started again under `valgrind --tool=callgrind --instr-atstart=no` (same
//! config, ports, environment and readiness probe, a longer deadline),
//! warmed with a burst (for the module: keygate's answer in its table),
//! then callgrind's instrumentation is switched on for a fixed number of
//! requests and its counts dumped (`callgrind_control -i on`, `-d`).
//!
//! What it counts: Envoy's user-space instructions, all its threads (the
//! module's feed thread included), not the kernel's, not keygate's. Not
//! time: a cache miss costs one instruction here. And valgrind's virtual
//! CPU offers no SHA extensions, so the module's SHA-256 runs in software
//! under it (~3.5k instructions per request, a few hundred with SHA-NI):
//! the count overstates the module's cost by that much.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use rig::process::supervisor::{StopMode, Supervisor};
use rig::process::tools::ToolEnv;
use rig::say;

use crate::load::{Burst, Keys, LoadGenerator};
use crate::variants::Variant;

/// Requests before the count: connections open, Envoy's first-request
/// costs paid, the module's table filled.
const WARM_REQUESTS: u64 = 200;
const CONNECTIONS: usize = 4;
/// Envoy under valgrind takes ~5-10 s to start here.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
const BURST_TIMEOUT: Duration = Duration::from_secs(300);

/// valgrind and its `callgrind_control`, found on `PATH`.
pub struct Callgrind {
    valgrind: PathBuf,
    control: PathBuf,
}

impl Callgrind {
    /// Both tools, or why the count is left out.
    pub fn find(env: &ToolEnv) -> std::result::Result<Self, String> {
        let find = |name: &str| {
            env.which(name).ok_or_else(|| {
                format!(
                    "instructions per request: {name} is not on PATH (install valgrind: Debian's package `valgrind`)"
                )
            })
        };
        Ok(Self {
            valgrind: find("valgrind")?,
            control: find("callgrind_control")?,
        })
    }

    /// `callgrind_control <args> <pid>`; it prints "OK." when valgrind took
    /// the command.
    async fn control(&self, pid: i32, args: &[&str]) -> Result<()> {
        let output = tokio::process::Command::new(&self.control)
            .args(args)
            .arg(pid.to_string())
            .output()
            .await
            .with_context(|| format!("running {}", self.control.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() || !stdout.contains("OK") {
            bail!(
                "callgrind_control {} {pid} did not reach valgrind: {} {}",
                args.join(" "),
                stdout.trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }
}

/// One variant's count.
#[derive(Debug, Clone, Serialize)]
pub struct InstructionCount {
    pub variant: Variant,
    /// The Envoy counted (the component's name).
    pub envoy: String,
    pub requests: u64,
    pub instructions_per_request: f64,
    /// Over the native filter's Envoy: 1.05 is 5 % more instructions per
    /// request than `api_key_auth` costs.
    pub vs_native: Option<f64>,
}

/// What [`count`] needs of one variant.
pub struct Counted<'a> {
    pub variant: Variant,
    /// The Envoy component to count (stopped and left stopped: the copy
    /// under valgrind takes its ports).
    pub envoy: &'a str,
    pub url: &'a str,
    pub key: Arc<str>,
    /// How many requests to count (2 000 take ~5 s under callgrind here).
    pub requests: u64,
}

/// Counts each variant's Envoy in turn (leaving each stopped), with the
/// ratios to the native filter's. What cannot be counted (no valgrind, a
/// failed count) goes to `left_out`: the rest of the bench stands without it.
pub async fn count_each(
    counted: &[Counted<'_>],
    supervisor: &mut Supervisor,
    generator: &LoadGenerator,
    out_dir: &Path,
    left_out: &mut Vec<String>,
) -> Vec<InstructionCount> {
    let callgrind = match Callgrind::find(&ToolEnv::from_process()) {
        Ok(callgrind) => callgrind,
        Err(why) => {
            left_out.push(why);
            return Vec::new();
        }
    };
    let mut counts = Vec::new();
    for each in counted {
        let name = each.variant.name();
        say!(
            "bench: {name}: counting its Envoy's instructions per request under callgrind ({} requests)",
            each.requests
        );
        match count(&callgrind, supervisor, generator, each, out_dir).await {
            Ok(count) => {
                say!(
                    "bench: {name}: {:.0} instructions per request",
                    count.instructions_per_request
                );
                counts.push(count);
            }
            Err(err) => left_out.push(format!("instructions per request of {name}: {err:#}")),
        }
    }
    with_ratios(counts)
}

/// Counts one variant's Envoy under callgrind; the counts file stays in
/// `out_dir` (`callgrind_annotate` reads it).
pub async fn count(
    callgrind: &Callgrind,
    supervisor: &mut Supervisor,
    generator: &LoadGenerator,
    counted: &Counted<'_>,
    out_dir: &Path,
) -> Result<InstructionCount> {
    let envoy = counted.envoy;
    supervisor.stop(envoy, StopMode::Graceful)?;
    let (component, ready) = supervisor
        .stopped_spec(envoy)
        .with_context(|| format!("{envoy} was not started by the bench's supervisor"))?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let out = out_dir.join(format!("{envoy}.callgrind"));
    let name = format!("{envoy}-callgrind");
    let wrapped = component
        .wrapped(
            &callgrind.valgrind,
            [
                "--tool=callgrind".to_owned(),
                "--instr-atstart=no".to_owned(),
                format!("--callgrind-out-file={}", out.display()),
            ],
        )
        .renamed(&name);
    let pid = supervisor
        .start_with_ready_timeout(wrapped, ready, READY_TIMEOUT)
        .await
        .with_context(|| format!("starting {envoy} under callgrind"))?;
    let burst = |max_requests| Burst {
        url: counted.url,
        keys: Keys::One(counted.key.clone()),
        connections: CONNECTIONS,
        max_requests,
        max_time: BURST_TIMEOUT,
        rate: None,
    };
    let warm = generator.run(burst(WARM_REQUESTS)).await?;
    check_burst(&name, "warm-up", &warm, WARM_REQUESTS)?;
    callgrind.control(pid, &["-i", "on"]).await?;
    let measured = generator.run(burst(counted.requests)).await?;
    // Dumped to `<out>.1`: the instructions since instrumentation went on.
    callgrind.control(pid, &["-d"]).await?;
    supervisor.stop(&name, StopMode::Graceful)?;
    check_burst(&name, "counted burst", &measured, counted.requests)?;
    let dump = PathBuf::from(format!("{}.1", out.display()));
    let text = std::fs::read_to_string(&dump)
        .with_context(|| format!("reading callgrind's dump {}", dump.display()))?;
    let instructions = total_instructions(&text).with_context(|| {
        format!(
            "{}: no `summary:` or `totals:` line (not a callgrind dump?)",
            dump.display()
        )
    })?;
    Ok(InstructionCount {
        variant: counted.variant,
        envoy: envoy.to_owned(),
        requests: measured.requests(),
        instructions_per_request: instructions as f64 / measured.requests() as f64,
        vs_native: None,
    })
}

fn check_burst(name: &str, what: &str, outcome: &crate::load::Outcome, wanted: u64) -> Result<()> {
    if outcome.failed > 0 || outcome.requests() < wanted {
        bail!(
            "{name}: the {what} got {} of {wanted} requests answered 200 ({} failed, last: {}): a count over failures would not be the variant's",
            outcome.ok,
            outcome.failed,
            outcome.last_failure.as_deref().unwrap_or("none")
        );
    }
    Ok(())
}

/// The event total of a callgrind dump: its `summary:` line (or
/// `totals:`, which newer dumps write as well), the first event (`Ir`).
pub fn total_instructions(dump: &str) -> Option<u64> {
    dump.lines()
        .filter_map(|line| {
            line.strip_prefix("summary:")
                .or_else(|| line.strip_prefix("totals:"))
        })
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .max()
}

/// Each count over the native filter's.
pub fn with_ratios(mut counts: Vec<InstructionCount>) -> Vec<InstructionCount> {
    let native = counts
        .iter()
        .find(|c| c.variant == Variant::Native)
        .map(|c| c.instructions_per_request);
    for count in &mut counts {
        count.vs_native = native
            .filter(|n| *n > 0.0)
            .map(|n| count.instructions_per_request / n);
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_total_of_a_callgrind_dump() {
        let dump = "# callgrind format\nversion: 1\nevents: Ir\nfl=x\nfn=y\n3 10\nsummary: 354212\ntotals: 354212\n";
        assert_eq!(total_instructions(dump), Some(354_212));
        assert_eq!(total_instructions("events: Ir\n"), None);
        assert_eq!(total_instructions("summary: many\n"), None);
    }

    #[test]
    fn ratios_are_over_the_native_filter() {
        let count = |variant, per_request| InstructionCount {
            variant,
            envoy: "e".into(),
            requests: 2_000,
            instructions_per_request: per_request,
            vs_native: None,
        };
        let counts = with_ratios(vec![
            count(Variant::NoAuth, 160_000.0),
            count(Variant::Native, 166_000.0),
            count(Variant::ModuleWarm, 174_300.0),
        ]);
        let ratio = |v| counts.iter().find(|c| c.variant == v).unwrap().vs_native;
        assert_eq!(ratio(Variant::Native), Some(1.0));
        assert!((ratio(Variant::ModuleWarm).unwrap() - 1.05).abs() < 1e-9);
        assert!(
            with_ratios(vec![count(Variant::NoAuth, 1.0)])[0]
                .vs_native
                .is_none()
        );
    }
}
