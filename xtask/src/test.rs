//! `cargo xtask test`: the test command (`.ci/run` runs exactly this): tools,
//! unit and integration tests, the e2e suite in every mode, the harness
//! self-check, the gateway catalog and external gateway checks, fuzz and `bench --quick`.

use std::process::ExitCode;

use anyhow::Result;
use rig::say;

use crate::bench::bench_smoke;
use crate::e2e::{E2eOptions, e2e_modes};
use crate::flags::{Profile, ToolsProfile};
use crate::runner::run_cargo;
use crate::tools::tools;

pub(crate) fn test() -> Result<ExitCode> {
    // The local profile's tools, every gateway's, and the offline checks'
    // (the kind profile's manifests render with the pinned kubectl).
    tools(ToolsProfile::All)?;
    let unit_ok = run_cargo(
        &["test", "--workspace", "--exclude", "keyrig-e2e"],
        "unit and integration tests",
    )?;
    let e2e = e2e_modes(
        &E2eOptions {
            profile: Profile::Local,
            filter: None,
            keep: false,
            report_dir: None,
            include_ignored: false,
            gateways: Vec::new(),
            jobs: crate::e2e::default_jobs(),
        },
        &rig::contract::modes::Mode::ALL,
    )?;
    let e2e_ok = e2e == ExitCode::SUCCESS;
    let selfcheck_ok = crate::selfcheck::run()?;
    // A gateway added as data only, with one row declared falsely.
    let catalog_ok = crate::catalog_check::run()?;
    // A gateway started by hand, tested through `e2e --gateway-url`.
    let external_ok = crate::external_check::run()?;
    // A few seconds per fuzz target: a smoke run; longer runs are in README.
    // It leaves fuzz/corpus/ as committed (the work tree stays clean), and
    // uses AddressSanitizer where a nightly toolchain is installed (it says
    // which build it picked).
    let fuzz_ok = crate::fuzz::run(
        5,
        None,
        crate::fuzz::NewInputs::Discard,
        crate::fuzz::FuzzProfile::Dev,
    )? == ExitCode::SUCCESS;
    // The bench runs and writes bench.json; its timings are not judged here.
    let bench_ok = bench_smoke();
    let word = |ok: bool| if ok { "passed" } else { "FAILED" };
    say!(
        "unit and integration tests: {}; e2e: {}; harness self-check: {}; gateway catalog check: {}; external gateway check: {}; fuzz: {}; bench --quick: {}",
        word(unit_ok),
        word(e2e_ok),
        word(selfcheck_ok),
        word(catalog_ok),
        word(external_ok),
        word(fuzz_ok),
        word(bench_ok)
    );
    Ok(
        if unit_ok && e2e_ok && selfcheck_ok && catalog_ok && external_ok && fuzz_ok && bench_ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}
