//! `cargo xtask bench`: everything is rig-bench; this builds keygate, runs it
//! and writes `bench.json` and the plot.

use anyhow::{Context, Result, bail};
use rig::say;

use crate::runner::{
    cargo, plain_output_unless_interactive, run_cargo, runtime, spawn_tracked, stop_on_interrupt,
    wait_for_test,
};
use crate::up::local_options;

/// `cargo xtask bench`: everything is rig_bench; this builds keygate,
/// says how to run the suite as a child, and writes the outputs.
/// `release`: measure an optimized keygate (`test`'s smoke run uses the
/// debug build the e2e suite already made).
/// `rounds`: the auth-overhead step's rounds instead of the plan's.
pub(crate) fn bench(quick: bool, rounds: Option<usize>, release: bool) -> Result<()> {
    stop_on_interrupt()?;
    let mut local = local_options(rig::contract::modes::Mode::ExternalSecret)?;
    // Measure the keygate users deploy: an optimized build (the e2e suite
    // runs the debug one), unless KEYRIG_KEYGATE names a binary; its Envoy
    // module and the bench's load generator and upstream from the same
    // invocation (crates/bench-peer: always optimized in a release run, so
    // the peers of what is measured cost little). (run_cargo, not
    // build::cargo_build: a release build's dependencies are never the
    // debug ones xtask compiled, so its "compiled again" count would only
    // mislead.)
    let bench_build = if release {
        if !run_cargo(
            &crate::up::keygate_build_args(true),
            "building keygate, its Envoy module and the bench's load generator and upstream (release)",
        )? {
            bail!(
                "keygate or the bench peer does not build in release mode: see cargo's output above"
            );
        }
        if std::env::var_os("KEYRIG_KEYGATE").is_none_or(|v| v.is_empty()) {
            local.keygate_bin = rig::base::paths::target_dir().join("release/keygate");
            if std::env::var_os(rig::process::envoy_module::MODULE_VAR).is_none_or(|v| v.is_empty())
            {
                local.keygate_envoy_module = rig::local::module_beside(&local.keygate_bin);
            }
        }
        let release = rig::base::paths::target_dir().join("release");
        crate::up::BenchBuild {
            peer: release.join("keyrig-bench-peer"),
            passthrough_module: release.join(crate::up::BENCH_MODULE_FILE),
        }
    } else {
        crate::up::bench_debug_build()?
    };
    let out_dir = rig::base::paths::rig_dir().join("bench");
    let mut suite = cargo();
    suite
        .args(["xtask", "e2e"])
        .current_dir(rig::base::paths::workspace_root())
        .stdout(std::process::Stdio::null())
        // The child's summary is not the bench's to append to the job's.
        .env_remove("GITHUB_STEP_SUMMARY");
    plain_output_unless_interactive(&mut suite);
    let suite = rig_bench::SuiteRunner {
        shown: "cargo xtask e2e".into(),
        // Tracked, so a termination signal reaches it and its environments.
        run: Box::new(move || {
            let mut child = spawn_tracked(&mut suite)?;
            wait_for_test(&mut child).context("waiting for the e2e suite")
        }),
    };
    let report = runtime()?.block_on(rig_bench::run(rig_bench::BenchOptions {
        plan: {
            let plan = if quick {
                rig_bench::Plan::quick()
            } else {
                rig_bench::Plan::full()
            };
            match rounds {
                Some(rounds) => plan.with_rounds(rounds),
                None => plan,
            }
        },
        local,
        peer: bench_build.peer,
        passthrough_module: bench_build.passthrough_module,
        suite: Some(suite),
        out_dir: out_dir.clone(),
    }))?;
    let json = out_dir.join("bench.json");
    rig_bench::report::save_json(&report, &json)?;
    let svg = out_dir.join("latency.svg");
    rig_bench::plot::latency_svg(&report.variants, &svg)?;
    println!();
    print!("{}", rig_bench::report::render(&report));
    println!("numbers: {}\nplot:    {}", json.display(), svg.display());
    // Every request of the bench expects 200: one that did not is a defect
    // of what is measured (or of the bench), never a number to compare.
    let failures = rig_bench::report::failures(&report);
    if !failures.is_empty() {
        bail!(
            "requests failed during the bench, so these numbers are not the paths':\n  {}",
            failures.join("\n  ")
        );
    }
    Ok(())
}

/// `bench --quick` with the debug keygate: it must run to the end and
/// leave a bench.json that reads back with every variant in it, and every
/// warm one at the common rate.
pub(crate) fn bench_smoke() -> bool {
    let json = rig::base::paths::rig_dir().join("bench/bench.json");
    let _ = std::fs::remove_file(&json);
    let checked = bench(true, None, false).and_then(|()| {
        let text = std::fs::read_to_string(&json)
            .with_context(|| format!("bench --quick wrote no {}", json.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", json.display()))?;
        let variants = value["variants"].as_array().map_or(0, Vec::len);
        if variants != rig_bench::variants::Variant::ALL.len() {
            bail!(
                "{} holds {variants} variants, not {}",
                json.display(),
                rig_bench::variants::Variant::ALL.len()
            );
        }
        let at_rate = value["fixed_rate"]["variants"]
            .as_array()
            .map_or(0, Vec::len);
        if at_rate != rig_bench::fixed_rate::VARIANTS.len() {
            bail!(
                "{} holds {at_rate} variants at a common rate, not {}",
                json.display(),
                rig_bench::fixed_rate::VARIANTS.len()
            );
        }
        Ok(())
    });
    match checked {
        Ok(()) => true,
        Err(err) => {
            say!("bench --quick failed: {err:#}");
            false
        }
    }
}
