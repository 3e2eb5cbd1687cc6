//! How xtask runs things: the async runtime, cargo with plain output off a
//! terminal, this binary's path, and the handler that stops everything on
//! Ctrl-C or SIGTERM.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};
use rig::say;

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// pids of the running test processes (`cargo test`, or the e2e binaries
/// `suite` runs), so a termination signal reaches them too (a terminal's
/// Ctrl-C does anyway; `kill` or a CI timeout does not).
static TEST_PIDS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Lets a termination signal reach a test process from now until
/// [`wait_for_test`] has waited for it: for processes started side by
/// side, where one is waited for while the others run.
pub(crate) fn track_test(child: &std::process::Child) {
    let pid = child.id() as i32;
    let mut pids = TEST_PIDS.lock().unwrap_or_else(|p| p.into_inner());
    if !pids.contains(&pid) {
        pids.push(pid);
    }
}

/// Waits for a test process, which Ctrl-C stops meanwhile.
pub(crate) fn wait_for_test(
    child: &mut std::process::Child,
) -> std::io::Result<std::process::ExitStatus> {
    let pid = child.id() as i32;
    track_test(child);
    let status = child.wait();
    TEST_PIDS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|p| *p != pid);
    status
}

/// Process groups of background work ([`crate::background`]), stopped
/// whole on a termination signal: they run in groups of their own, so a
/// terminal's Ctrl-C does not reach them, and signalling only the cargo at
/// their head would leave its compilers running.
static BACKGROUND_GROUPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

pub(crate) fn register_group(group: i32) {
    BACKGROUND_GROUPS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(group);
}

/// SIGTERM to every process of `group` (the cargo at its head and the
/// compilers under it); one already gone is no error.
pub(crate) fn stop_group(group: i32) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(group),
        nix::sys::signal::Signal::SIGTERM,
    );
}

pub(crate) fn unregister_group(group: i32) {
    BACKGROUND_GROUPS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|g| *g != group);
}

/// On SIGINT/SIGTERM: stop every component this process started, and exit
/// 130. Components run in their own process groups, so they never see the
/// terminal's Ctrl-C themselves and are stopped in order here.
pub(crate) fn stop_on_interrupt() -> Result<()> {
    // Once per process: `e2e` runs once per delivery mode.
    static INSTALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    ctrlc::set_handler(|| {
        eprintln!("[keyrig] interrupted: stopping what this run started");
        let pids = TEST_PIDS.lock().map(|p| p.clone()).unwrap_or_default();
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let groups = BACKGROUND_GROUPS
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default();
        for group in groups {
            stop_group(group);
        }
        rig::process::supervisor::stop_all_registered();
        std::process::exit(130);
    })
    .context("installing the Ctrl-C handler")
}

fn cargo_program() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// What `cargo run` sets for the program it runs (here: xtask) and a
/// nested cargo must not see: build scripts that read one of them
/// (ring's reads `CARGO_MANIFEST_DIR`) would be rebuilt each time cargo
/// runs from inside xtask and again when it runs from a shell, with every
/// crate above them (ring, rustls, hyper-rustls, keygate: a minute on two
/// cores, per build, per mode).
const SET_BY_CARGO_RUN: [&str; 6] = [
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_RUSTC_CURRENT_DIR",
];

/// A cargo command as a shell would start it: without the variables
/// `cargo run` gave xtask (`SET_BY_CARGO_RUN`, `CARGO_PKG_*`), so its
/// builds share their fingerprints with the developer's own `cargo build`
/// and `cargo test`.
pub(crate) fn cargo() -> Command {
    let mut command = Command::new(cargo_program());
    clear_cargo_run_env(&mut command);
    command
}

/// [`cargo`] on another rustup toolchain (`rustup run <toolchain> cargo`):
/// `CARGO` names this toolchain's cargo binary, which takes no `+nightly`.
pub(crate) fn cargo_on(toolchain: &str) -> Command {
    let mut command = Command::new("rustup");
    command.args(["run", toolchain, "cargo"]);
    clear_cargo_run_env(&mut command);
    // The other toolchain's cargo sets it for what it starts (cargo-fuzz).
    command.env_remove("CARGO");
    command
}

fn clear_cargo_run_env(command: &mut Command) {
    for name in SET_BY_CARGO_RUN {
        command.env_remove(name);
    }
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CARGO_PKG_") {
            command.env_remove(name);
        }
    }
}

/// Runs cargo with inherited output, in the workspace root.
/// The packages `cargo xtask test`'s unit and integration tests build
/// (all but the e2e crate, whose tests need a running environment). A
/// later cargo over a part of them passes these too, so features resolve
/// the same way and it reuses those builds (`-p rig` alone resolves
/// another feature set, and compiled rig and its dependencies again:
/// 88 s in a CI run).
pub(crate) const WORKSPACE_TESTS: [&str; 3] = ["--workspace", "--exclude", "keyrig-e2e"];

/// Whether `cargo nextest` runs here (these machines have it; without it
/// the tests run through `cargo test`).
pub(crate) fn nextest_installed() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub(crate) fn run_cargo(args: &[&str], what: &str) -> Result<bool> {
    say!("{what}: cargo {}", args.join(" "));
    let mut command = cargo();
    plain_output_unless_interactive(&mut command);
    let status = command
        .args(args)
        .current_dir(rig::base::paths::workspace_root())
        .status()
        .with_context(|| format!("running cargo for {what}"))?;
    Ok(status.success())
}

/// Off a terminal (or in CI), cargo and the tests print no colour codes
/// either, so the whole output is plain text.
pub(crate) fn plain_output_unless_interactive(command: &mut Command) {
    if !rig::base::progress::is_interactive() {
        command.env("CARGO_TERM_COLOR", "never");
    }
}

/// This binary's path. `cargo test --workspace` rebuilds target/debug/xtask
/// (xtask's integration tests run it, with dev-dependency features), so
/// while `cargo xtask test` runs, Linux reports the running file as
/// "<path> (deleted)": the rebuilt file at the path is the one to start.
pub(crate) fn this_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the xtask binary")?;
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(path) if Path::new(path).is_file() => PathBuf::from(path),
        _ => exe,
    })
}

/// A nested run of this xtask binary (the self-checks of `cargo xtask
/// test`): whether it succeeded, and what it printed, stdout then stderr.
pub(crate) struct Nested {
    pub(crate) ok: bool,
    pub(crate) text: String,
}

/// Runs this xtask binary with what `setup` adds (arguments, variables),
/// stdin closed and output captured; `what` names the run in an error.
pub(crate) fn run_nested(what: &str, setup: impl FnOnce(&mut Command)) -> Result<Nested> {
    let mut command = Command::new(this_binary()?);
    command.stdin(std::process::Stdio::null());
    setup(&mut command);
    let output = command
        .output()
        .with_context(|| format!("running {what}"))?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Ok(Nested {
        ok: output.status.success(),
        text,
    })
}

/// A self-check's verdict: `passed` when nothing was wrong, else the run's
/// output and each problem, each line prefixed with `name`.
pub(crate) fn verdict(name: &str, passed: &str, output: &str, problems: &[String]) -> bool {
    if problems.is_empty() {
        say!("{name} passed: {passed}");
        return true;
    }
    say!("{name} FAILED; the run's output was:");
    eprintln!("{output}");
    for problem in problems {
        say!("{name}: {problem}");
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracked(pid: i32) -> bool {
        TEST_PIDS.lock().unwrap().contains(&pid)
    }

    /// A test process started side by side is reachable by a termination
    /// signal from when it is tracked until it has been waited for, once.
    #[test]
    fn a_tracked_test_process_is_signalled_until_waited_for() {
        let mut child = Command::new("/bin/sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        assert!(!tracked(pid));
        track_test(&child);
        track_test(&child);
        assert_eq!(
            TEST_PIDS
                .lock()
                .unwrap()
                .iter()
                .filter(|p| **p == pid)
                .count(),
            1
        );
        let status = wait_for_test(&mut child).unwrap();
        assert_eq!(status.code(), Some(3));
        assert!(!tracked(pid));
    }
}
