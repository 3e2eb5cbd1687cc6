//! How xtask runs things: the async runtime, cargo with plain output off a
//! terminal, this binary's path, and the handler that stops everything on
//! Ctrl-C or SIGTERM.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rig::say;

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Child processes a termination signal must reach, in xtask's own process
/// group (so a terminal's Ctrl-C reaches them anyway; `kill` or a CI timeout
/// does not): test processes (`cargo test`, the e2e binaries `suite` runs),
/// nested runs of this binary (the self-checks of `cargo xtask test`) and
/// what a self-check starts by hand. The handler sends each SIGTERM and
/// waits, bounded, for them to exit: a test process that owns an
/// environment stops it first (rig's handler in that process).
static CHILDREN: Mutex<Children> = Mutex::new(Children {
    pids: Vec::new(),
    stopping: false,
});

struct Children {
    pids: Vec<i32>,
    /// Set by the handler under the lock: nothing is started after it
    /// took its list.
    stopping: bool,
}

fn children() -> std::sync::MutexGuard<'static, Children> {
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts `command` and tracks it (see [`CHILDREN`]) until
/// [`wait_for_test`] or [`untrack`]: under the lock, so a termination
/// signal either finds it or comes before it and nothing is started.
pub(crate) fn spawn_tracked(command: &mut Command) -> Result<std::process::Child> {
    let mut children = children();
    if children.stopping {
        anyhow::bail!("not started: interrupted, stopping what this run started");
    }
    let child = command
        .spawn()
        .with_context(|| format!("starting {}", command.get_program().to_string_lossy()))?;
    children.pids.push(child.id() as i32);
    Ok(child)
}

/// Stops tracking a child this process has waited for.
pub(crate) fn untrack(pid: i32) {
    children().pids.retain(|p| *p != pid);
}

/// Waits for a tracked child, which a termination signal stops meanwhile,
/// then stops tracking it.
pub(crate) fn wait_for_test(
    child: &mut std::process::Child,
) -> std::io::Result<std::process::ExitStatus> {
    let status = child.wait();
    untrack(child.id() as i32);
    status
}

/// How long the handler waits for the children it signalled: a test
/// process stops its components (up to their grace) before it exits, and
/// a nested xtask stops its own children meanwhile; a few seconds more for
/// SIGKILL and reaping.
const CHILDREN_EXIT_WAIT: Duration =
    Duration::from_secs(rig::process::supervisor::STOP_GRACE.as_secs() + 5);

/// When the handler signalled the children: their deadline counts from it.
static SIGNALLED_AT: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// The handler's first step: no child starts from now on; SIGTERM to each.
fn signal_children() {
    SIGNALLED_AT.get_or_init(Instant::now);
    let pids = {
        let mut children = children();
        children.stopping = true;
        children.pids.clone()
    };
    for pid in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// The handler's last step: waits until every signalled child has exited
/// (or was waited for), at most [`CHILDREN_EXIT_WAIT`] after the signal;
/// names those still running then.
fn wait_for_children() {
    let deadline = *SIGNALLED_AT.get_or_init(Instant::now) + CHILDREN_EXIT_WAIT;
    let left = wait_until_exited(|| children().pids.clone(), deadline);
    if !left.is_empty() {
        eprintln!(
            "[keyrig] still running {} s after the signal, left behind: pids {left:?}",
            CHILDREN_EXIT_WAIT.as_secs()
        );
    }
}

/// Polls until none of `pids()` is running (a zombie has exited: its
/// waiter has not reaped it yet) or `deadline` passes; returns those
/// still running.
fn wait_until_exited(pids: impl Fn() -> Vec<i32>, deadline: Instant) -> Vec<i32> {
    loop {
        let running: Vec<i32> = pids()
            .into_iter()
            .filter(|pid| rig::process::supervisor::is_alive(*pid))
            .collect();
        if running.is_empty() || Instant::now() >= deadline {
            return running;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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

/// On SIGINT/SIGTERM/SIGHUP: SIGTERM to the tracked children and the
/// background groups, stop nested runs' environments, then every component
/// this process started (rig's handler, which every `Supervisor` installs
/// and this adds to), wait for the children, and exit 130. Components run
/// in their own process groups, so they never see the terminal's Ctrl-C
/// themselves and are stopped in order here.
pub(crate) fn stop_on_interrupt() -> Result<()> {
    // Once per process: `e2e` runs once per delivery mode.
    static HOOKED: std::sync::Once = std::sync::Once::new();
    HOOKED.call_once(|| {
        rig::process::supervisor::on_signal(rig::process::supervisor::SignalHook {
            before: || {
                signal_children();
                let groups = BACKGROUND_GROUPS
                    .lock()
                    .map(|g| g.clone())
                    .unwrap_or_default();
                for group in groups {
                    stop_group(group);
                }
                stop_nested_environments();
            },
            after: wait_for_children,
        });
    });
    rig::process::supervisor::stop_on_signal()
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
/// and `cargo test`; and without a Vault credential xtask was given (the
/// cluster profile's admin `VAULT_TOKEN` of a shared Vault), which every
/// build script, rustc and test under it would otherwise inherit.
pub(crate) fn cargo() -> Command {
    let mut command = Command::new(cargo_program());
    clear_cargo_run_env(&mut command);
    rig::process::supervisor::remove_secret_vars(&mut command);
    command
}

/// [`cargo`] on another rustup toolchain (`rustup run <toolchain> cargo`):
/// `CARGO` names this toolchain's cargo binary, which takes no `+nightly`.
pub(crate) fn cargo_on(toolchain: &str) -> Command {
    let mut command = Command::new("rustup");
    command.args(["run", toolchain, "cargo"]);
    clear_cargo_run_env(&mut command);
    rig::process::supervisor::remove_secret_vars(&mut command);
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
    command
        .args(args)
        .current_dir(rig::base::paths::workspace_root());
    // Tracked: the unit and integration tests run under it, and a SIGTERM
    // to xtask reaches cargo (nextest passes it on to the tests, whose
    // handlers stop the components they started).
    let mut child =
        spawn_tracked(&mut command).with_context(|| format!("running cargo for {what}"))?;
    let status = wait_for_test(&mut child).with_context(|| format!("running cargo for {what}"))?;
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
/// stdin closed and output captured; `what` names the run in an error. The
/// nested run is tracked (see [`CHILDREN`]): a termination signal reaches
/// it, and this process waits for it to stop what it started.
pub(crate) fn run_nested(what: &str, setup: impl FnOnce(&mut Command)) -> Result<Nested> {
    Ok(run_nested_with(what, setup, |_| ())?.0)
}

/// [`run_nested`] of a `cargo xtask up`, which detaches and leaves its
/// environment running after it exits: also the guard that stops that
/// environment, known from the moment the nested `up` starts.
pub(crate) fn run_nested_up(
    what: &str,
    setup: impl FnOnce(&mut Command),
) -> Result<(Nested, NestedEnvironment)> {
    // Before the start: the run's id carries a time no earlier than this.
    let since = time::OffsetDateTime::now_utc();
    run_nested_with(what, setup, |pid| NestedEnvironment::register(pid, since))
}

fn run_nested_with<T>(
    what: &str,
    setup: impl FnOnce(&mut Command),
    started: impl FnOnce(u32) -> T,
) -> Result<(Nested, T)> {
    let mut command = Command::new(this_binary()?);
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // The self-checks run the local profile, which needs no credential of
    // the caller's: its own Vault's root token is in its run directory.
    rig::process::supervisor::remove_secret_vars(&mut command);
    setup(&mut command);
    let child = spawn_tracked(&mut command).with_context(|| format!("running {what}"))?;
    let pid = child.id();
    let extra = started(pid);
    // Reads both pipes at once, as `output()` does, then reaps it.
    let output = child.wait_with_output();
    untrack(pid as i32);
    let output = output.with_context(|| format!("running {what}"))?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Ok((
        Nested {
            ok: output.status.success(),
            text,
        },
        extra,
    ))
}

/// The environment a nested `cargo xtask up` (pid, started at or after
/// `since`) left running: it detaches, so once it has exited neither its
/// process nor this one's registry knows the components; its run's
/// `pids.json` does. Stopped from there when dropped (after the check's
/// own `down`, on an error or a panic) and by the termination handler
/// ([`stop_nested_environments`]) while it lives.
pub(crate) struct NestedEnvironment {
    key: (u32, time::OffsetDateTime),
}

static NESTED_ENVIRONMENTS: Mutex<Vec<(u32, time::OffsetDateTime)>> = Mutex::new(Vec::new());

impl NestedEnvironment {
    fn register(pid: u32, since: time::OffsetDateTime) -> Self {
        NESTED_ENVIRONMENTS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((pid, since));
        Self { key: (pid, since) }
    }
}

impl Drop for NestedEnvironment {
    fn drop(&mut self) {
        NESTED_ENVIRONMENTS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k| *k != self.key);
        for (run, record, outcome) in stop_runs_of(&rig::base::paths::rig_dir(), self.key) {
            if outcome != rig::process::supervisor::StopOutcome::AlreadyGone {
                say!(
                    "nested run {}: {} (pid {}) {outcome:?}",
                    run.file_name().unwrap_or_default().to_string_lossy(),
                    record.name,
                    record.pid
                );
            }
        }
    }
}

/// Stops what the runs of the nested `up` `(pid, since)` under `rig_dir`
/// still list in their `pids.json` (nothing once its `down` ran).
fn stop_runs_of(
    rig_dir: &Path,
    (pid, since): (u32, time::OffsetDateTime),
) -> Vec<(
    PathBuf,
    rig::process::supervisor::PidRecord,
    rig::process::supervisor::StopOutcome,
)> {
    let mut stopped = Vec::new();
    for run in rig::base::run::runs_created_by(rig_dir, pid, since) {
        let file = run.join("pids.json");
        match rig::process::supervisor::stop_from_pid_file(&file) {
            Ok(outcomes) => stopped.extend(
                outcomes
                    .into_iter()
                    .map(|(record, outcome)| (run.clone(), record, outcome)),
            ),
            Err(err) => say!(
                "warning: stopping the nested run {}: {err:#}",
                run.display()
            ),
        }
    }
    stopped
}

/// For the termination handler: every live [`NestedEnvironment`] stopped.
fn stop_nested_environments() {
    let keys = NESTED_ENVIRONMENTS
        .lock()
        .map(|k| k.clone())
        .unwrap_or_default();
    for key in keys {
        stop_runs_of(&rig::base::paths::rig_dir(), key);
    }
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
        children().pids.contains(&pid)
    }

    /// A child started side by side is reachable by a termination signal
    /// from its start until it has been waited for.
    #[test]
    fn a_tracked_child_is_signalled_until_waited_for() {
        let mut child = spawn_tracked(Command::new("/bin/sh").args(["-c", "exit 3"])).unwrap();
        let pid = child.id() as i32;
        assert!(tracked(pid));
        let status = wait_for_test(&mut child).unwrap();
        assert_eq!(status.code(), Some(3));
        assert!(!tracked(pid));
    }

    /// Every cargo xtask starts (builds, tests, fuzz), and nested runs of
    /// xtask, drop the Vault credentials of xtask's environment.
    #[test]
    fn cargo_runs_without_vault_credentials() {
        for command in [cargo(), cargo_on("nightly")] {
            let removed: Vec<String> = command
                .get_envs()
                .filter(|(_, value)| value.is_none())
                .map(|(name, _)| name.to_string_lossy().into_owned())
                .collect();
            for var in rig::process::supervisor::SECRET_VARS {
                assert!(removed.iter().any(|r| r == var), "{var}: {removed:?}");
            }
        }
    }

    /// The handler's wait ends when the children have exited (a zombie
    /// not yet reaped by its waiter counts as exited), and at the deadline
    /// otherwise, naming who is left.
    #[test]
    fn the_wait_for_children_ends_when_they_exit_or_at_the_deadline() {
        let mut quick = Command::new("sleep").arg("0.3").spawn().unwrap();
        let mut slow = Command::new("sleep").arg("30").spawn().unwrap();
        let (quick_pid, slow_pid) = (quick.id() as i32, slow.id() as i32);
        let started = Instant::now();
        let left = wait_until_exited(|| vec![quick_pid], started + Duration::from_secs(10));
        assert!(left.is_empty(), "{left:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let left = wait_until_exited(
            || vec![quick_pid, slow_pid],
            Instant::now() + Duration::from_millis(300),
        );
        assert_eq!(left, [slow_pid]);
        slow.kill().unwrap();
        slow.wait().unwrap();
        quick.wait().unwrap();
    }

    /// What a nested `up` left running (its run found by its pid, here
    /// this process's) is stopped from its `pids.json`; a second stop, as
    /// after the check's own `down`, finds nothing.
    #[test]
    fn a_nested_runs_environment_is_stopped_from_its_pids_file() {
        let rig_dir = tempfile::tempdir().unwrap();
        let since = time::OffsetDateTime::now_utc();
        let run = rig::base::run::RunDir::create_in(rig_dir.path()).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ready = rig::process::supervisor::Readiness::Tcp(listener.local_addr().unwrap());
        let mut supervisor = rig::process::supervisor::Supervisor::new(&run);
        let pid = runtime()
            .unwrap()
            .block_on(supervisor.start(
                rig::process::supervisor::Component::new("left", "sleep").arg("30"),
                ready,
            ))
            .unwrap();
        supervisor.detach();
        assert!(rig::process::supervisor::is_alive(pid));

        let key = (std::process::id(), since);
        let stopped = stop_runs_of(rig_dir.path(), key);
        assert_eq!(stopped.len(), 1, "{stopped:?}");
        assert_eq!(stopped[0].1.name, "left");
        assert_eq!(stopped[0].2, rig::process::supervisor::StopOutcome::Stopped);
        assert!(!rig::process::supervisor::is_alive(pid));
        assert!(stop_runs_of(rig_dir.path(), key).is_empty());
    }
}
