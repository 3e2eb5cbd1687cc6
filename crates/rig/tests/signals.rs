//! A process that started components under a `Supervisor` and then gets a
//! termination signal stops them before it exits. The processes here are
//! this test binary run again as a helper (`helper_process`, ignored and
//! idle unless `HELPER_VAR` names what to do), since the handler ends the
//! process it runs in, and `stop_all_registered` stops every component of
//! its process (a test's neighbours under `cargo test` included).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use rig::base::wait::{Probe, wait_until_blocking};
use rig::process::supervisor::{Component, Readiness, STOP_GRACE, Supervisor};

/// What the helper does: `component` or `spawn-after-stop`.
const HELPER_VAR: &str = "KEYRIG_SIGNALS_HELPER";
/// The helper's directory: its run, and the files it reports through.
const DIR_VAR: &str = "KEYRIG_SIGNALS_DIR";

/// The helper's side: starts a component (its pid into `component.pid`)
/// and waits to be signalled; or stops everything first and then tries to
/// start one (what it got into `spawn.result`).
#[test]
#[ignore = "a helper process for the tests of this file, idle when run by hand"]
fn helper_process() {
    let (Some(what), Some(dir)) = (std::env::var_os(HELPER_VAR), std::env::var_os(DIR_VAR)) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let run = rig::base::run::RunDir::create_in(&dir.join("runs")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut supervisor = Supervisor::new(&run);
    // Ready at once: the directory exists.
    let ready = Readiness::Path(dir.clone());
    match what.to_str() {
        Some("component") => {
            let pid = rt
                .block_on(supervisor.start(Component::new("sleeper", "sleep").arg("300"), ready))
                .unwrap();
            write_atomically(&dir.join("component.pid"), &pid.to_string());
            // The test signals this process now; Drop never runs.
            std::thread::sleep(Duration::from_secs(300));
        }
        Some("spawn-after-stop") => {
            rig::process::supervisor::stop_all_registered();
            let outcome =
                rt.block_on(supervisor.start(Component::new("late", "sleep").arg("300"), ready));
            let text = match outcome {
                Ok(pid) => format!("started {pid}"),
                Err(err) => format!("refused: {err:#}"),
            };
            write_atomically(&dir.join("spawn.result"), &text);
        }
        other => panic!("unknown helper action {other:?}"),
    }
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn helper(what: &str, dir: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper_process", "--ignored", "--nocapture"])
        .env(HELPER_VAR, what)
        .env(DIR_VAR, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn read_when_there(path: &Path, deadline: Duration) -> String {
    wait_until_blocking(&format!("{}", path.display()), deadline, || {
        anyhow::Ok(match std::fs::read_to_string(path) {
            Ok(text) => Probe::Ready(text),
            Err(_) => Probe::seen("no file yet"),
        })
    })
    .unwrap()
}

/// The live members of process group `group`, as `pid (state)`; zombies
/// have exited and are left out.
fn group_members(group: i32) -> Vec<String> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|at| &stat[at + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(group) && fields[0] != "Z" {
            members.push(format!("{pid} ({})", fields[0]));
        }
    }
    members
}

/// Kills what a failed assertion would otherwise leave running.
struct Cleanup {
    group: Option<i32>,
    helper: Child,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(group) = self.group {
            let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
        }
        let _ = self.helper.kill();
        let _ = self.helper.wait();
    }
}

/// SIGTERM to a test process holding a running component (what xtask's
/// handler, nextest or a CI timeout sends): the component's whole process
/// group is gone soon after, and the process exits 130. Without a handler
/// in the test process the signal ended it at once and the component,
/// in a group of its own, ran on.
#[test]
fn a_signalled_process_stops_its_components_before_it_exits() {
    let dir = tempfile::tempdir().unwrap();
    let mut cleanup = Cleanup {
        group: None,
        helper: helper("component", dir.path()),
    };
    let component: i32 =
        read_when_there(&dir.path().join("component.pid"), Duration::from_secs(30))
            .trim()
            .parse()
            .unwrap();
    cleanup.group = Some(component);
    assert!(!group_members(component).is_empty(), "the component runs");

    kill(Pid::from_raw(cleanup.helper.id() as i32), Signal::SIGTERM).unwrap();
    // The stop's grace and a margin: `sleep` exits at SIGTERM at once.
    wait_until_blocking(
        "the component's process group to be gone",
        STOP_GRACE + Duration::from_secs(5),
        || {
            let members = group_members(component);
            anyhow::Ok(if members.is_empty() {
                Probe::Ready(())
            } else {
                Probe::seen(format!("group {component}: {}", members.join(", ")))
            })
        },
    )
    .unwrap();
    let status = cleanup.helper.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status}");
}

/// Once the process has stopped everything it started (the termination
/// handler), a start that comes after is refused rather than leaving a
/// component nobody would stop.
#[test]
fn no_component_starts_once_the_process_stopped_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut cleanup = Cleanup {
        group: None,
        helper: helper("spawn-after-stop", dir.path()),
    };
    let result = read_when_there(&dir.path().join("spawn.result"), Duration::from_secs(30));
    if let Some(pid) = result.strip_prefix("started ") {
        cleanup.group = pid.parse().ok();
    }
    assert!(
        result.starts_with("refused: late not started: this process is stopping"),
        "{result}"
    );
    let status = cleanup.helper.wait().unwrap();
    assert!(status.success(), "{status}");
}
