//! Supervised processes. Each component runs in its own process group (so a
//! terminal's Ctrl-C reaches only xtask, which then stops the components in
//! order, and so stopping a component also stops anything it forked), logs to
//! `logs/<name>.log`, is probed for readiness, and is listed in the run's
//! `pids.json` so `cargo xtask down` can stop what a detached `up` left.
//!
//! Stopping happens on `stop_all`, on `Drop` (which covers `?` and panics),
//! and on SIGINT/SIGTERM/SIGHUP through the handler [`stop_on_signal`]
//! installs (every `Supervisor` installs it): a signal ends the process
//! without unwinding, so no `Drop` would run, and the components, in groups
//! of their own, never see a terminal's Ctrl-C themselves.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::base::run::RunDir;
use crate::base::wait::{Probe, Timeout, wait_until};
use crate::say;

/// How long a component may take to get ready unless told otherwise.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a component gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// Lines of a component's log shown when it fails to start.
const TAIL_LINES: usize = 20;

/// What every component gets from the harness's own environment; nothing
/// else passes unless the component asks for it by name
/// ([`Component::inherit_env`]) or is given a value ([`Component::env`]).
/// The harness may hold secrets there (the cluster profile's admin
/// `VAULT_TOKEN`), and a child that does not need one must not have it.
pub const BASE_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "LC_ALL",
    "TZ",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "CARGO_TARGET_DIR",
    // Where the system's CA bundle is (rustls-native-certs and OpenSSL read
    // them): a component speaking https to a Vault keeps trusting it.
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// Variables that hold a Vault credential: removed from the environment of
/// the children the harness starts without clearing it (cargo running the
/// tests, which read the root token from its 0600 file instead).
pub const SECRET_VARS: &[&str] = &[
    "VAULT_TOKEN",
    "BAO_TOKEN",
    "VAULT_ROLE_ID",
    "VAULT_SECRET_ID",
    "BAO_ROLE_ID",
    "BAO_SECRET_ID",
    "VAULT_UNSEAL_KEY",
];

/// Removes [`SECRET_VARS`] from a child's inherited environment.
pub fn remove_secret_vars(command: &mut std::process::Command) {
    for var in SECRET_VARS {
        command.env_remove(var);
    }
}

/// The environment of a child: from `parent`, the [`BASE_ENV`] variables
/// and those named in `inherit` (a trailing `*` names a prefix, e.g.
/// `HELM_*`), then `explicit`, which wins.
pub fn child_env<I>(
    parent: I,
    inherit: &[OsString],
    explicit: &[(OsString, OsString)],
) -> Vec<(OsString, OsString)>
where
    I: IntoIterator<Item = (OsString, OsString)>,
{
    let wanted = |key: &OsStr| {
        let key = key.to_string_lossy();
        BASE_ENV.iter().any(|name| *name == key)
            || inherit.iter().any(|pattern| {
                let pattern = pattern.to_string_lossy();
                match pattern.strip_suffix('*') {
                    Some(prefix) => key.starts_with(prefix),
                    None => pattern == key,
                }
            })
    };
    let mut env: Vec<(OsString, OsString)> = parent
        .into_iter()
        .filter(|(key, _)| wanted(key))
        .filter(|(key, _)| !explicit.iter().any(|(k, _)| k == key))
        .collect();
    env.extend(explicit.iter().cloned());
    env
}

/// A process to start.
#[derive(Debug, Clone)]
pub struct Component {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    inherit: Vec<OsString>,
    current_dir: Option<PathBuf>,
    stdout_file: Option<PathBuf>,
}

impl Component {
    /// The same process under another name (its log is `logs/<name>.log`),
    /// e.g. a second Envoy planned by the gateway module.
    pub fn renamed(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            inherit: Vec::new(),
            current_dir: None,
            stdout_file: None,
        }
    }

    /// Passes these variables of the harness's environment on (beside
    /// [`BASE_ENV`]); `NAME_*` passes every variable with that prefix.
    pub fn inherit_env<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, names: I) -> Self {
        self.inherit
            .extend(names.into_iter().map(|n| n.as_ref().to_owned()));
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// An environment variable for the child: the way to hand it a secret,
    /// since the command line is visible to every user of the machine.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// Sends stdout to this file (created 0600) instead of the log, for a
    /// program that prints secrets on stdout (`bao server -dev` prints its
    /// root token and unseal key there) while its log lines go to stderr.
    pub fn stdout_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.stdout_file = Some(path.into());
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// This process run under `wrapper` (valgrind, a profiler): the
    /// wrapper's arguments, then this component's program and arguments;
    /// environment and directory unchanged.
    pub fn wrapped<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(
        mut self,
        wrapper: impl Into<PathBuf>,
        wrapper_args: I,
    ) -> Self {
        let mut args: Vec<OsString> = wrapper_args
            .into_iter()
            .map(|a| a.as_ref().to_owned())
            .collect();
        args.push(std::mem::replace(&mut self.program, wrapper.into()).into_os_string());
        args.append(&mut self.args);
        self.args = args;
        self
    }

    /// Program and arguments, space-separated, for messages and tests (the
    /// command line never holds a secret: those go through [`Self::env`]).
    pub fn describe(&self) -> String {
        std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The value this component sets for `key` (the last one set).
    pub fn env_value(&self, key: &str) -> Option<&OsStr> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_os_str())
    }
}

/// How to tell that a started component is ready.
#[derive(Debug, Clone)]
pub enum Readiness {
    /// GET `url` answers `status`.
    Http { url: String, status: u16 },
    /// A TCP connection to the address succeeds.
    Tcp(SocketAddr),
    /// The path exists (e.g. the first file an agent renders); a symlink
    /// counts once it exists, dangling or not.
    Path(PathBuf),
    /// Every file exists: a Vault Agent has rendered its templates once.
    Files(Vec<PathBuf>),
    /// The component's log, from where it stood at this start, has a line
    /// containing the text: for what only the process can say (an agent's
    /// login), and what a restart must not find already done (files the
    /// previous run left behind).
    LogLine(String),
    /// Every condition holds (checked in order; the first that does not is
    /// what the wait reports).
    All(Vec<Readiness>),
}

impl Readiness {
    pub fn http(url: impl Into<String>, status: u16) -> Self {
        Readiness::Http {
            url: url.into(),
            status,
        }
    }

    /// What progress lines say is awaited, e.g. `/v1/sys/health`.
    fn what(&self) -> String {
        match self {
            Readiness::Http { url, .. } => match reqwest::Url::parse(url) {
                Ok(parsed) => parsed.path().to_owned(),
                Err(_) => url.clone(),
            },
            Readiness::Tcp(addr) => format!("a TCP connection to {addr}"),
            Readiness::Path(path) => path.display().to_string(),
            Readiness::Files(files) => format!("{} rendered file(s)", files.len()),
            Readiness::LogLine(text) => format!("{text:?} in its log"),
            Readiness::All(all) => all
                .iter()
                .map(Readiness::what)
                .collect::<Vec<_>>()
                .join(" and "),
        }
    }

    /// `Ok` when ready, else what was seen. `log` is the component's log and
    /// `log_from` its length when this start began.
    async fn check(&self, http: &reqwest::Client, log: &Path, log_from: u64) -> Result<(), String> {
        match self {
            Readiness::Http { url, status } => match http.get(url).send().await {
                Ok(response) if response.status().as_u16() == *status => Ok(()),
                Ok(response) => Err(format!("status {}", response.status().as_u16())),
                Err(err) => Err(describe_request_error(&err)),
            },
            Readiness::Tcp(addr) => match tokio::net::TcpStream::connect(addr).await {
                Ok(_) => Ok(()),
                Err(err) => Err(err.to_string()),
            },
            Readiness::Path(path) => match std::fs::symlink_metadata(path) {
                Ok(_) => Ok(()),
                Err(_) => Err("no such file yet".into()),
            },
            Readiness::Files(files) => match files.iter().find(|f| !f.is_file()) {
                None => Ok(()),
                Some(missing) => Err(format!("no file {} yet", missing.display())),
            },
            Readiness::LogLine(text) => {
                let written = std::fs::read(log).unwrap_or_default();
                let since = written.get(log_from as usize..).unwrap_or_default();
                if String::from_utf8_lossy(since).contains(text.as_str()) {
                    Ok(())
                } else {
                    Err(format!("no {text:?} in its log yet"))
                }
            }
            Readiness::All(all) => {
                for each in all {
                    Box::pin(each.check(http, log, log_from)).await?;
                }
                Ok(())
            }
        }
    }
}

/// A short reason for a failed request ("connection refused"), without the
/// nested chain reqwest produces.
pub fn describe_request_error(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "no answer (timeout)".into();
    }
    let mut source: Option<&dyn std::error::Error> = Some(err);
    let mut deepest = err.to_string();
    while let Some(current) = source {
        deepest = current.to_string();
        source = current.source();
    }
    deepest.to_lowercase()
}

/// One line of `pids.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidRecord {
    pub name: String,
    /// Also the process group id: each component leads its own group.
    pub pid: i32,
    pub program: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct PidFile {
    components: Vec<PidRecord>,
}

/// Process groups started by this process and not stopped yet, for the
/// Ctrl-C handler, which cannot reach the `Supervisor`s on other stacks.
/// Stopping takes entries out under this lock, so a component is stopped by
/// exactly one of `stop_all` and `stop_all_registered`.
static REGISTRY: Mutex<BTreeMap<i32, Registered>> = Mutex::new(BTreeMap::new());

#[derive(Debug, Clone)]
struct Registered {
    name: String,
    pids_file: PathBuf,
    /// Start order, so the handler stops the last started first.
    seq: u64,
}

static NEXT_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Set by [`stop_all_registered`] and read by `spawn`, both under the
/// registry lock: once this process stops everything it started, a `spawn`
/// that was waiting for the lock (it is held for up to [`STOP_GRACE`])
/// must not start a component after the registry was emptied, which nobody
/// would stop before the process exits.
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

fn registry() -> MutexGuard<'static, BTreeMap<i32, Registered>> {
    // A panic while holding the lock must not stop the cleanup after it.
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Running {
    record: PidRecord,
    child: Child,
    log: PathBuf,
    /// How it was started, so [`Supervisor::restart`] can start it again.
    spec: Option<(Component, Readiness)>,
}

/// How [`Supervisor::stop`] ends one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// SIGTERM, then SIGKILL after [`STOP_GRACE`]: a clean shutdown.
    Graceful,
    /// SIGKILL at once: a crash, as fault tests want it.
    Kill,
}

/// Owns the started components of one run; stops them when dropped unless
/// [`Supervisor::detach`] handed them over to `cargo xtask down`.
pub struct Supervisor {
    logs_dir: PathBuf,
    pids_file: PathBuf,
    running: Vec<Running>,
    /// Components stopped by name, kept for `restart`.
    stopped: BTreeMap<String, (Component, Readiness)>,
    ready_timeout: Duration,
    http: reqwest::Client,
}

impl Supervisor {
    pub fn new(run: &RunDir) -> Self {
        // Whatever process starts components stops them on a termination
        // signal: xtask, and the test processes that own environments
        // (the faults cases, rig's integration tests), which xtask, nextest
        // or a CI timeout signal and which had no handler of their own.
        install_signal_handler_or_warn();
        Self {
            logs_dir: run.logs_dir(),
            pids_file: run.pids_file(),
            running: Vec::new(),
            stopped: BTreeMap::new(),
            ready_timeout: DEFAULT_READY_TIMEOUT,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(1))
                .no_proxy()
                .build()
                .expect("a plain HTTP client always builds"),
        }
    }

    pub fn with_ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// The started components, in start order.
    pub fn components(&self) -> Vec<PidRecord> {
        self.running.iter().map(|r| r.record.clone()).collect()
    }

    /// Starts a component and waits until `ready` holds. If the process exits
    /// first, or the deadline passes, the error carries the end of its log.
    /// A component that failed to get ready is still stopped by `stop_all`.
    pub async fn start(&mut self, component: Component, ready: Readiness) -> Result<i32> {
        let spec = (component.clone(), ready.clone());
        // Where this start's lines begin: a restart appends to the same log.
        let log_from = std::fs::metadata(self.logs_dir.join(format!("{}.log", component.name)))
            .map(|m| m.len())
            .unwrap_or(0);
        let pid = self.spawn(component)?;
        let running = self.running.last_mut().expect("just started");
        running.spec = Some(spec);
        let name = running.record.name.clone();
        let started = Instant::now();
        let what = ready.what();
        let mut waiting = crate::base::progress::Waiting::start(&name, &what);
        let http = &self.http;
        let log = running.log.clone();
        let child = &mut running.child;
        // An early exit ends the wait at once (an error from the probe);
        // anything else the check saw is the wait's last observation.
        let outcome = wait_until(&what, self.ready_timeout, async || {
            match child
                .try_wait()
                .with_context(|| format!("watching {name}"))?
            {
                Some(status) => bail!(
                    "{name} exited ({status}) before it was ready; the last lines of {}:\n{}",
                    log.display(),
                    crate::base::redact::redact(&log_tail(&log, TAIL_LINES))
                ),
                None => Ok(match ready.check(http, &log, log_from).await {
                    Ok(()) => Probe::Ready(()),
                    Err(seen) => {
                        waiting.still(&seen);
                        Probe::Pending(seen)
                    }
                }),
            }
        })
        .await;
        match outcome {
            Ok(()) => {
                waiting.done(&format!("ready (pid {pid})"));
                Ok(pid)
            }
            Err(err) => {
                waiting.failed();
                match err.downcast_ref::<Timeout>() {
                    Some(timeout) => bail!(
                        "{name} was not ready after {}: {what} still gave {}; the last lines of {}:\n{}",
                        crate::base::progress::secs(started.elapsed()),
                        timeout.last_seen,
                        log.display(),
                        crate::base::redact::redact(&log_tail(&log, TAIL_LINES))
                    ),
                    None => Err(err),
                }
            }
        }
    }

    /// Starts the process, registers it and records it in `pids.json`.
    fn spawn(&mut self, component: Component) -> Result<i32> {
        let Component {
            name,
            program,
            args,
            env,
            inherit,
            current_dir,
            stdout_file,
        } = component;
        std::fs::create_dir_all(&self.logs_dir)
            .with_context(|| format!("creating the logs directory {}", self.logs_dir.display()))?;
        let log_path = self.logs_dir.join(format!("{name}.log"));
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let stdout = match &stdout_file {
            Some(path) => {
                use std::os::unix::fs::OpenOptionsExt;
                File::options()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?
            }
            None => log.try_clone().context("duplicating the log file handle")?,
        };
        let mut command = Command::new(&program);
        command
            .args(&args)
            // A cleared environment plus what this component needs.
            .env_clear()
            .envs(child_env(std::env::vars_os(), &inherit, &env))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            // Its own group: terminal signals skip it, and killpg reaches
            // whatever it forks.
            .process_group(0);
        if let Some(dir) = current_dir {
            command.current_dir(dir);
        }

        // Spawn under the registry lock so a Ctrl-C handler running now
        // either sees this process or runs after it is registered; and not
        // at all once the handler has begun (it emptied the registry).
        let mut registry = registry();
        if SHUTTING_DOWN.load(Ordering::SeqCst) {
            bail!(
                "{name} not started: this process is stopping what it started (a termination signal)"
            );
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        let pid = i32::try_from(child.id()).context("a pid fits in i32")?;
        let seq = NEXT_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        registry.insert(
            pid,
            Registered {
                name: name.clone(),
                pids_file: self.pids_file.clone(),
                seq,
            },
        );
        drop(registry);

        say!("{name}: started (pid {pid}), log {}", log_path.display());
        self.running.push(Running {
            record: PidRecord { name, pid, program },
            child,
            log: log_path,
            spec: None,
        });
        self.write_pids_file()?;
        Ok(pid)
    }

    fn write_pids_file(&self) -> Result<()> {
        if self.running.is_empty() {
            return match std::fs::remove_file(&self.pids_file) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    Err(err).with_context(|| format!("removing {}", self.pids_file.display()))
                }
                _ => Ok(()),
            };
        }
        let file = PidFile {
            components: self.components(),
        };
        let text = serde_json::to_string_pretty(&file)?;
        // Written whole and renamed, so `down` never reads half a file.
        let tmp = self.pids_file.with_extension("json.tmp");
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.pids_file)
            .with_context(|| format!("writing {}", self.pids_file.display()))
    }

    /// Leaves the components running for `cargo xtask down` (which finds them
    /// in `pids.json`) and forgets them here.
    pub fn detach(mut self) -> Vec<PidRecord> {
        let mut registry = registry();
        let records = self.components();
        for record in &records {
            registry.remove(&record.pid);
        }
        drop(registry);
        // Dropping a `Child` neither kills nor waits for it.
        self.running.clear();
        records
    }

    /// Stops every component: SIGTERM to each group, up to [`STOP_GRACE`]
    /// to exit, then SIGKILL; reaps them and empties `pids.json`.
    pub fn stop_all(&mut self) {
        if self.running.is_empty() {
            return;
        }
        let started = Instant::now();
        let mut registry = registry();
        let mut running = std::mem::take(&mut self.running);
        // Stop in reverse start order (gateway before what it depends on),
        // but signal everyone first so the grace periods overlap.
        running.reverse();
        let mut stopping = Vec::new();
        for component in running {
            // Not registered any more: the Ctrl-C handler already stopped it.
            if registry.remove(&component.record.pid).is_some() {
                stopping.push(component);
            }
        }
        let pids: Vec<i32> = stopping.iter().map(|c| c.record.pid).collect();
        let killed = end_groups(&pids, None, |pid| {
            let component = stopping.iter_mut().find(|c| c.record.pid == pid);
            component.is_none_or(|c| !matches!(c.child.try_wait(), Ok(None)))
        });
        let mut forced = Vec::new();
        for (component, killed) in stopping.iter_mut().zip(killed) {
            if killed {
                forced.push(component.record.name.clone());
            }
            let _ = component.child.wait();
        }
        drop(registry);
        if let Err(err) = self.write_pids_file() {
            say!("warning: {err:#}");
        }
        let names: Vec<_> = stopping.iter().map(|c| c.record.name.as_str()).collect();
        if !names.is_empty() {
            say!(
                "stopped {} in {}",
                names.join(", "),
                crate::base::progress::secs(started.elapsed())
            );
        }
        if !forced.is_empty() {
            say!(
                "warning: {} ignored SIGTERM for {} s and got SIGKILL",
                forced.join(", "),
                STOP_GRACE.as_secs()
            );
        }
    }
}

impl Supervisor {
    /// Stops one component by name (for fault tests: a crash with
    /// [`StopMode::Kill`], a shutdown with `Graceful`), reaps it, and keeps
    /// how it was started for [`Supervisor::restart`].
    pub fn stop(&mut self, name: &str, mode: StopMode) -> Result<()> {
        let index = self
            .running
            .iter()
            .position(|r| r.record.name == name)
            .with_context(|| format!("no running component named {name:?} to stop"))?;
        let mut component = self.running.remove(index);
        let pid = Pid::from_raw(component.record.pid);
        registry().remove(&component.record.pid);
        let first = match mode {
            StopMode::Graceful => None,
            StopMode::Kill => Some(Signal::SIGKILL),
        };
        end_groups(&[pid.as_raw()], first, |_| {
            !matches!(component.child.try_wait(), Ok(None))
        });
        let _ = component.child.wait();
        say!("{name}: stopped ({mode:?}, pid {})", component.record.pid);
        if let Some(spec) = component.spec.take() {
            self.stopped.insert(name.to_owned(), spec);
        }
        self.write_pids_file()
    }

    /// Starts again a component stopped by [`Supervisor::stop`] (or stops a
    /// running one gracefully first), with the same command and readiness
    /// probe; its log continues in the same file.
    pub async fn restart(&mut self, name: &str) -> Result<i32> {
        if self.running.iter().any(|r| r.record.name == name) {
            self.stop(name, StopMode::Graceful)?;
        }
        let (component, ready) = self.stopped.remove(name).with_context(|| {
            format!("{name:?} was not started by this supervisor, so it cannot be restarted")
        })?;
        self.start(component, ready).await
    }

    /// How a component stopped by [`Supervisor::stop`] was started, to
    /// start a changed copy of it (e.g. under a profiler, renamed).
    pub fn stopped_spec(&self, name: &str) -> Option<(Component, Readiness)> {
        self.stopped.get(name).cloned()
    }

    /// [`Supervisor::start`] with another readiness deadline for this one
    /// component (a process under valgrind starts tens of times slower).
    pub async fn start_with_ready_timeout(
        &mut self,
        component: Component,
        ready: Readiness,
        timeout: Duration,
    ) -> Result<i32> {
        let usual = std::mem::replace(&mut self.ready_timeout, timeout);
        let started = self.start(component, ready).await;
        self.ready_timeout = usual;
        started
    }

    /// The pid of a running component.
    pub fn pid(&self, name: &str) -> Option<i32> {
        self.running
            .iter()
            .find(|r| r.record.name == name)
            .map(|r| r.record.pid)
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Stops every component started by this process and not yet stopped, then
/// removes their `pids.json`. For Ctrl-C and termination handlers, which
/// then exit; it does not return components to their `Supervisor`s, and no
/// `Supervisor` of this process starts a component after it (`spawn` fails).
pub fn stop_all_registered() {
    let mut registry = registry();
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
    let mut entries: Vec<(i32, Registered)> = std::mem::take(&mut *registry).into_iter().collect();
    if entries.is_empty() {
        return;
    }
    entries.sort_by_key(|(_, entry)| std::cmp::Reverse(entry.seq));
    let pids: Vec<i32> = entries.iter().map(|(pid, _)| *pid).collect();
    // Exited (and reaped here), or not our child to wait for.
    let killed = end_groups(&pids, None, |pid| {
        !matches!(
            waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)),
            Ok(WaitStatus::StillAlive)
        )
    });
    for ((pid, entry), killed) in entries.iter().zip(killed) {
        if killed {
            let _ = waitpid(Pid::from_raw(*pid), None);
        }
        say!("stopped {}", entry.name);
    }
    let files: std::collections::BTreeSet<_> =
        entries.iter().map(|(_, e)| e.pids_file.clone()).collect();
    for file in files {
        let _ = std::fs::remove_file(file);
    }
}

/// What a process adds to the termination handler [`stop_on_signal`]
/// installs (ctrlc allows one handler per process, and the supervisor's
/// must be it, since any process may start components): `before` runs
/// first (signal child processes, so their own stopping overlaps this
/// one's), `after` once this process's components are stopped (wait,
/// bounded, for those children). Neither may block without a bound.
#[derive(Debug, Clone, Copy)]
pub struct SignalHook {
    pub before: fn(),
    pub after: fn(),
}

static SIGNAL_HOOKS: Mutex<Vec<SignalHook>> = Mutex::new(Vec::new());

/// Adds `hook` to what the termination handler runs (see [`SignalHook`]).
pub fn on_signal(hook: SignalHook) {
    SIGNAL_HOOKS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(hook);
}

/// Installs, once per process, the handler of SIGINT, SIGTERM and SIGHUP:
/// it runs the [`SignalHook`]s' `before`, stops every registered component
/// ([`stop_all_registered`]), runs their `after`, and exits 130. Idempotent;
/// an error only when another handler was installed without it.
pub fn stop_on_signal() -> Result<()> {
    static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| ctrlc::set_handler(on_termination).map_err(|err| err.to_string()))
        .clone()
        .map_err(|err| anyhow::anyhow!("installing the termination handler: {err}"))
}

fn on_termination() {
    eprintln!("[keyrig] interrupted: stopping what this process started");
    let hooks = SIGNAL_HOOKS
        .lock()
        .map(|hooks| hooks.clone())
        .unwrap_or_else(|poisoned| poisoned.into_inner().clone());
    for hook in &hooks {
        (hook.before)();
    }
    stop_all_registered();
    for hook in &hooks {
        (hook.after)();
    }
    std::process::exit(130);
}

/// [`stop_on_signal`] for `Supervisor::new`, which cannot fail: a handler
/// that cannot be installed is said once.
fn install_signal_handler_or_warn() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    if let Err(err) = stop_on_signal() {
        WARNED.call_once(|| {
            say!("warning: {err:#}; components are not stopped on Ctrl-C or SIGTERM");
        });
    }
}

/// Ends process groups, the one way every stop path does it: `first`
/// (SIGTERM unless given) to every group at once, so the grace periods
/// overlap; up to [`STOP_GRACE`] for each leader to be `exited`; then
/// SIGKILL to whatever is left of each group (a stubborn leader, helpers
/// it forked). Returns, per pid, whether the leader needed that SIGKILL.
fn end_groups(
    pids: &[i32],
    first: Option<Signal>,
    mut exited: impl FnMut(i32) -> bool,
) -> Vec<bool> {
    for pid in pids {
        let _ = killpg(Pid::from_raw(*pid), first.unwrap_or(Signal::SIGTERM));
    }
    let deadline = Instant::now() + STOP_GRACE;
    pids.iter()
        .map(|&pid| {
            let gone = loop {
                if exited(pid) {
                    break true;
                }
                if Instant::now() >= deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(25));
            };
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            !gone
        })
        .collect()
}

/// The components a run's `pids.json` lists (none if there is no file),
/// for `cargo xtask status`.
pub fn read_pid_file(pids_file: &Path) -> Result<Vec<PidRecord>> {
    Ok(parse_pid_file(pids_file)?
        .map(|file| file.components)
        .unwrap_or_default())
}

/// `pids.json`, or `None` when there is none.
fn parse_pid_file(pids_file: &Path) -> Result<Option<PidFile>> {
    let text = match std::fs::read_to_string(pids_file) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("reading {}", pids_file.display())),
    };
    let file: PidFile = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a pids.json written by keyrig",
            pids_file.display()
        )
    })?;
    Ok(Some(file))
}

/// What `stop_from_pid_file` did with one recorded component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// Exited after SIGTERM.
    Stopped,
    /// Needed SIGKILL.
    Killed,
    /// Was not running any more.
    AlreadyGone,
    /// The pid now belongs to another program: left alone.
    NotOurs,
}

/// Stops the components a detached `up` recorded in `pids_file`, then
/// removes the file. A pid is signalled only if it still runs the recorded
/// program and leads its own process group, since pids get reused.
/// A missing file means nothing to stop.
pub fn stop_from_pid_file(pids_file: &Path) -> Result<Vec<(PidRecord, StopOutcome)>> {
    let Some(file) = parse_pid_file(pids_file)? else {
        return Ok(Vec::new());
    };
    let mut outcomes = Vec::new();
    for record in file.components.into_iter().rev() {
        let outcome = if !is_alive(record.pid) {
            StopOutcome::AlreadyGone
        } else if !is_ours(&record) {
            StopOutcome::NotOurs
        } else {
            StopOutcome::Stopped
        };
        outcomes.push((record, outcome));
    }
    let ours: Vec<i32> = outcomes
        .iter()
        .filter(|(_, outcome)| *outcome == StopOutcome::Stopped)
        .map(|(record, _)| record.pid)
        .collect();
    // Not our children (`up` has exited): gone is all we can see.
    let killed = end_groups(&ours, None, |pid| !is_alive(pid));
    for (pid, killed) in ours.iter().zip(killed) {
        if killed && let Some((_, outcome)) = outcomes.iter_mut().find(|(r, _)| r.pid == *pid) {
            *outcome = StopOutcome::Killed;
        }
    }
    // Exited processes stay zombies until their parent (init, since `up`
    // has exited) reaps them, and `pgrep` still lists zombies. Give init a
    // moment so "nothing left running" is what a person checking sees too.
    let reaped_by = Instant::now() + Duration::from_secs(3);
    let me = std::process::id() as i32;
    for (record, _) in &outcomes {
        while proc_stat(record.pid).is_some_and(|(state, _)| state == 'Z')
            && proc_ppid(record.pid).is_some_and(|ppid| ppid != me)
            && Instant::now() < reaped_by
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    std::fs::remove_file(pids_file).with_context(|| format!("removing {}", pids_file.display()))?;
    Ok(outcomes)
}

fn proc_ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Running, i.e. in /proc and not a zombie (a zombie has exited; only its
/// parent's bookkeeping is left).
pub fn is_alive(pid: i32) -> bool {
    match proc_stat(pid) {
        Some((state, _)) => state != 'Z' && state != 'X',
        None => false,
    }
}

/// (state, process group) from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

fn is_ours(record: &PidRecord) -> bool {
    let Some(program) = record.program.file_name() else {
        return false;
    };
    let Ok(cmdline) = std::fs::read(format!("/proc/{}/cmdline", record.pid)) else {
        return false;
    };
    let runs_program = cmdline
        .split(|b| *b == 0)
        .filter_map(|arg| {
            Path::new(OsStr::new(std::str::from_utf8(arg).ok()?))
                .file_name()
                .map(|n| n.to_owned())
        })
        .any(|name| name == program)
        // nginx rewrites its argv ("nginx: master process ..."), so the
        // executable itself counts too.
        || std::fs::read_link(format!("/proc/{}/exe", record.pid))
            .is_ok_and(|exe| exe.file_name() == Some(program));
    let leads_group = proc_stat(record.pid).is_some_and(|(_, pgrp)| pgrp == record.pid);
    runs_program && leads_group
}

/// The last `lines` lines of a log, indented, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return format!("    (no log at {})", path.display());
    };
    let all: Vec<&str> = text.lines().collect();
    if all.is_empty() {
        return "    (the log is empty)".into();
    }
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("    {l}\n"))
        .collect::<String>()
        .trim_end()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn run_dir() -> (tempfile::TempDir, RunDir) {
        let base = tempfile::tempdir().unwrap();
        let run = RunDir::create_in(base.path()).unwrap();
        (base, run)
    }

    fn sleeper(name: &str) -> Component {
        Component::new(name, "/bin/sh").args(["-c", "echo started; exec sleep 30"])
    }

    /// A stopped component's spec starts again under a wrapper (here
    /// `env`, which runs the rest of its command line), renamed: the
    /// wrapper leads, the original command follows, readiness is kept.
    #[rstest]
    #[tokio::test]
    async fn a_stopped_component_starts_again_under_a_wrapper() {
        let (_base, run) = run_dir();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut supervisor = Supervisor::new(&run);
        supervisor
            .start(sleeper("plain"), Readiness::Tcp(addr))
            .await
            .unwrap();
        supervisor.stop("plain", StopMode::Graceful).unwrap();
        assert!(supervisor.stopped_spec("absent").is_none());
        let (component, ready) = supervisor.stopped_spec("plain").unwrap();
        let wrapped = component
            .wrapped("/usr/bin/env", ["KEYRIG_WRAPPED=1"])
            .renamed("wrapped");
        assert_eq!(
            wrapped.describe(),
            "/usr/bin/env KEYRIG_WRAPPED=1 /bin/sh -c echo started; exec sleep 30"
        );
        let pid = supervisor
            .start_with_ready_timeout(wrapped, ready, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(supervisor.pid("wrapped"), Some(pid));
        assert_eq!(supervisor.pid("plain"), None);
        supervisor.stop_all();
        assert!(!is_alive(pid));
    }

    /// A log line from a previous start does not make a restart ready: the
    /// restarted component must write it again (as a restarted bao agent
    /// must log in again, though its rendered files are still there).
    #[rstest]
    #[tokio::test]
    async fn a_log_line_counts_only_from_this_start() {
        let (base, run) = run_dir();
        let mark = base.path().join("may-log-in");
        let component = Component::new("agent", "/bin/sh").args([
            "-c".to_owned(),
            format!(
                "if [ -e {} ]; then echo logged in; fi; exec sleep 30",
                mark.display()
            ),
        ]);
        let ready = Readiness::All(vec![
            Readiness::Path(base.path().to_owned()),
            Readiness::LogLine("logged in".into()),
        ]);
        let mut supervisor = Supervisor::new(&run);
        std::fs::write(&mark, "").unwrap();
        supervisor.start(component, ready).await.unwrap();
        supervisor.stop("agent", StopMode::Graceful).unwrap();

        std::fs::remove_file(&mark).unwrap();
        let (component, ready) = supervisor.stopped_spec("agent").unwrap();
        let err = supervisor
            .start_with_ready_timeout(component, ready, Duration::from_secs(1))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("no \"logged in\" in its log yet"), "{err}");
        supervisor.stop_all();

        std::fs::write(&mark, "").unwrap();
        let (component, ready) = supervisor
            .stopped_spec("agent")
            .unwrap_or_else(|| panic!("the failed start left no spec to start again"));
        supervisor.start(component, ready).await.unwrap();
        let log = std::fs::read_to_string(run.logs_dir().join("agent.log")).unwrap();
        assert_eq!(log.matches("logged in").count(), 2, "{log}");
    }

    fn read_pids(run: &RunDir) -> PidFile {
        serde_json::from_str(&std::fs::read_to_string(run.pids_file()).unwrap()).unwrap()
    }

    #[rstest]
    #[tokio::test]
    async fn starts_logs_records_and_stops_on_drop() {
        let (_base, run) = run_dir();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let pid;
        {
            let mut supervisor = Supervisor::new(&run);
            pid = supervisor
                .start(sleeper("sleeper"), Readiness::Tcp(addr))
                .await
                .unwrap();
            assert!(is_alive(pid));
            assert_eq!(read_pids(&run).components[0].pid, pid);
            assert_eq!(
                proc_stat(pid).unwrap().1,
                pid,
                "leads its own process group"
            );
            let log = run.logs_dir().join("sleeper.log");
            crate::base::wait::wait_until_blocking("the log line", Duration::from_secs(5), || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                anyhow::Ok(if text.is_empty() {
                    crate::base::wait::Probe::seen("an empty log")
                } else {
                    crate::base::wait::Probe::Ready(())
                })
            })
            .unwrap();
        }
        assert!(!is_alive(pid), "dropping the supervisor stops the process");
        assert!(!run.pids_file().exists());
        let log = std::fs::read_to_string(run.logs_dir().join("sleeper.log")).unwrap();
        assert_eq!(log, "started\n");
    }

    /// A component that ignores SIGTERM, with a helper it forked, is gone
    /// (leader and helper) once `stop_all` returns: the grace period, then
    /// SIGKILL to the whole group.
    #[tokio::test]
    async fn a_component_ignoring_sigterm_is_killed_with_its_group_after_the_grace() {
        let (_base, run) = run_dir();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let helper_file = run.path().join("helper.pid");
        let script = format!(
            "trap '' TERM; sleep 60 & echo $! > {}; while :; do sleep 1; done",
            helper_file.display()
        );
        let mut supervisor = Supervisor::new(&run);
        let pid = supervisor
            .start(
                Component::new("stubborn", "/bin/sh").args(["-c", &script]),
                Readiness::Tcp(addr),
            )
            .await
            .unwrap();
        let helper: i32 = crate::base::wait::wait_until_blocking(
            "the helper's pid",
            Duration::from_secs(5),
            || {
                let text = std::fs::read_to_string(&helper_file).unwrap_or_default();
                anyhow::Ok(match text.trim().parse::<i32>() {
                    Ok(pid) => crate::base::wait::Probe::Ready(pid),
                    Err(_) => crate::base::wait::Probe::seen("no pid file yet"),
                })
            },
        )
        .unwrap();
        let started = Instant::now();
        supervisor.stop_all();
        assert!(
            started.elapsed() >= STOP_GRACE,
            "SIGTERM is ignored: the grace is waited out"
        );
        assert!(!is_alive(pid), "the leader got SIGKILL");
        // Killed, the helper is at most init's zombie.
        crate::base::wait::wait_until_blocking("the helper gone", Duration::from_secs(5), || {
            anyhow::Ok(match proc_stat(helper) {
                Some((state, _)) if state != 'Z' => {
                    crate::base::wait::Probe::seen(format!("state {state}"))
                }
                _ => crate::base::wait::Probe::Ready(()),
            })
        })
        .unwrap();
    }

    #[test]
    fn a_child_gets_the_base_what_it_names_and_what_it_is_given() {
        let os = |k: &str, v: &str| (OsString::from(k), OsString::from(v));
        let parent = vec![
            os("PATH", "/usr/bin"),
            os("HOME", "/root"),
            os("VAULT_TOKEN", "hvs.admin"),
            os("HELM_CACHE_HOME", "/c"),
            os("KUBECONFIG", "/k"),
            os("OTHER", "x"),
        ];
        let env = child_env(
            parent,
            &["HELM_*".into(), "KUBECONFIG".into()],
            &[os("PATH", "/bin"), os("BAO_DEV_ROOT_TOKEN_ID", "t")],
        );
        let mut keys: Vec<String> = env
            .iter()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "BAO_DEV_ROOT_TOKEN_ID=t",
                "HELM_CACHE_HOME=/c",
                "HOME=/root",
                "KUBECONFIG=/k",
                "PATH=/bin",
            ]
        );
    }

    /// Through a real process: cargo gives this test process CARGO_PKG_NAME;
    /// the child sees it only when it asks, and always its PATH.
    #[rstest]
    #[tokio::test]
    async fn a_started_component_does_not_inherit_the_harness_environment() {
        assert!(
            std::env::var_os("CARGO_PKG_NAME").is_some(),
            "cargo sets it for tests"
        );
        let (_base, run) = run_dir();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut supervisor = Supervisor::new(&run);
        for (name, component) in [
            ("plain", Component::new("plain", "/bin/sh")),
            (
                "asks",
                Component::new("asks", "/bin/sh").inherit_env(["CARGO_PKG_*"]),
            ),
        ] {
            supervisor
                .start(
                    component
                        .env("GIVEN", "yes")
                        .args(["-c", "env; exec sleep 30"]),
                    Readiness::Tcp(addr),
                )
                .await
                .unwrap();
            let log = run.logs_dir().join(format!("{name}.log"));
            let text = crate::base::wait::wait_until_blocking(
                "env in the log",
                Duration::from_secs(5),
                || {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    anyhow::Ok(if text.contains("GIVEN=yes") {
                        crate::base::wait::Probe::Ready(text)
                    } else {
                        crate::base::wait::Probe::seen(format!("{} bytes", text.len()))
                    })
                },
            )
            .unwrap();
            assert!(
                text.lines().any(|l| l.starts_with("PATH=")),
                "{name}: no PATH"
            );
            assert_eq!(
                text.lines().any(|l| l.starts_with("CARGO_PKG_NAME=")),
                name == "asks",
                "{name}"
            );
        }
    }

    #[rstest]
    #[tokio::test]
    async fn a_component_that_exits_early_fails_with_its_log() {
        let (_base, run) = run_dir();
        let mut supervisor = Supervisor::new(&run);
        let component = Component::new("broken", "/bin/sh")
            .args(["-c", "echo 'bad config: no listen'; exit 3"]);
        let err = supervisor
            .start(component, Readiness::http("http://127.0.0.1:9/ready", 200))
            .await
            .unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.starts_with("broken exited (exit status: 3) before it was ready"),
            "{message}"
        );
        assert!(message.contains("bad config: no listen"), "{message}");
    }

    #[rstest]
    #[tokio::test]
    async fn readiness_timeout_says_what_was_seen() {
        let (_base, run) = run_dir();
        let mut supervisor = Supervisor::new(&run).with_ready_timeout(Duration::from_millis(300));
        let err = supervisor
            .start(
                sleeper("slow"),
                Readiness::http("http://127.0.0.1:9/ready", 200),
            )
            .await
            .unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.starts_with("slow was not ready after "),
            "{message}"
        );
        assert!(message.contains("/ready still gave"), "{message}");
    }

    #[rstest]
    #[tokio::test]
    async fn pid_file_stop_stops_ours_and_spares_a_reused_pid() {
        let (_base, run) = run_dir();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ready = Readiness::Tcp(listener.local_addr().unwrap());
        let mut supervisor = Supervisor::new(&run);
        // `sleep` itself, not a shell that execs it: the recorded program
        // must be what /proc/<pid>/cmdline shows.
        let ours = supervisor
            .start(Component::new("ours", "sleep").arg("30"), ready.clone())
            .await
            .unwrap();
        let records = supervisor.detach();
        assert_eq!(records.len(), 1);
        assert!(is_alive(ours), "detach leaves it running");

        // A pid whose program is not the recorded one, as after pid reuse.
        let mut stranger = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let stranger_pid = stranger.id() as i32;
        let mut file = read_pids(&run);
        file.components.push(PidRecord {
            name: "bao".into(),
            pid: stranger_pid,
            program: "/opt/bao".into(),
        });
        file.components.push(PidRecord {
            name: "gone".into(),
            pid: i32::MAX - 1,
            program: "/bin/gone".into(),
        });
        std::fs::write(run.pids_file(), serde_json::to_string(&file).unwrap()).unwrap();

        let outcomes = stop_from_pid_file(&run.pids_file()).unwrap();
        let by_name: BTreeMap<_, _> = outcomes
            .iter()
            .map(|(r, o)| (r.name.as_str(), *o))
            .collect();
        assert_eq!(by_name["ours"], StopOutcome::Stopped);
        assert_eq!(by_name["bao"], StopOutcome::NotOurs);
        assert_eq!(by_name["gone"], StopOutcome::AlreadyGone);
        assert!(!is_alive(ours));
        assert!(is_alive(stranger_pid));
        assert!(!run.pids_file().exists());
        // Idempotent: a second `down` finds nothing to do.
        assert!(stop_from_pid_file(&run.pids_file()).unwrap().is_empty());
        stranger.kill().unwrap();
        stranger.wait().unwrap();
    }

    #[rstest]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        std::fs::write(
            &path,
            (1..=30).map(|n| format!("line {n}\n")).collect::<String>(),
        )
        .unwrap();
        let tail = log_tail(&path, 20);
        assert!(tail.starts_with("    line 11\n"), "{tail}");
        assert!(tail.ends_with("line 30"));
    }
}
