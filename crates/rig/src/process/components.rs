//! The processes keyrig starts, as values (the shape of testcontainers-rs,
//! for processes): each is a small struct with what it needs, `with_*`
//! builders for what may vary, its readiness condition, and `start`, which
//! runs it under a [`Supervisor`]. Stopping is the Supervisor's: on its
//! `Drop` (so at the end of a run, a failed test, a panic) and on Ctrl-C.
//!
//! The local profile's `up` is a sequence of these starts; a test or the
//! bench starts one component without copying its launch code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::base::run::RunDir;
use crate::process::supervisor::{Component, Readiness, Supervisor};
use crate::vault::client::{Secret, VaultClient};

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `bao server -dev`: an in-memory Vault, unsealed, with a root token
/// generated here. The token reaches bao through its environment, never
/// argv; dev mode prints it (and the unseal key) on stdout, so stdout goes
/// to a 0600 file under `secrets/` and only stderr (the log) to `logs/`.
#[derive(Debug, Clone)]
pub struct DevVault {
    name: String,
    listen: Option<SocketAddr>,
    config_file: Option<PathBuf>,
}

impl Default for DevVault {
    /// Component `bao` on a free loopback port, no config file.
    fn default() -> Self {
        Self {
            name: "bao".into(),
            listen: None,
            config_file: None,
        }
    }
}

/// A started [`DevVault`].
#[derive(Debug)]
pub struct RunningVault {
    /// `http://127.0.0.1:<port>`.
    pub addr: String,
    /// A client with the root token.
    pub root: VaultClient,
    /// The root token's 0600 file.
    pub root_token_file: PathBuf,
    /// bao's stdout (0600, under `secrets/`): the unseal key is there.
    pub stdout: PathBuf,
}

impl DevVault {
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn with_listen(mut self, listen: SocketAddr) -> Self {
        self.listen = Some(listen);
        self
    }

    /// A server config to add, e.g. the file audit device (OpenBao takes
    /// audit devices only from a config file).
    pub fn with_config_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.config_file = Some(file.into());
        self
    }

    /// Starts it; ready once `sys/health` answers 200 (initialized,
    /// unsealed, active). The root token is registered for redaction.
    pub async fn start(
        self,
        bao: &Path,
        run: &RunDir,
        supervisor: &mut Supervisor,
    ) -> Result<RunningVault> {
        let listen = match self.listen {
            Some(listen) => listen,
            None => loopback(crate::base::ports::free_port_pair()?),
        };
        let addr = format!("http://{listen}");
        let token = apikey::ApiKey::generate().expose().to_owned();
        // `root-token` for the run's (first) Vault, as env.json has always
        // named it; another one's is prefixed with its name.
        let token_file = match self.name.as_str() {
            "bao" => "root-token".to_owned(),
            other => format!("{other}-root-token"),
        };
        let root_token_file = run.write_secret(&token_file, &token)?;
        crate::base::redact::register_in_run(run.path(), &token)?;
        let stdout = run.secrets_dir().join(format!("{}-stdout", self.name));
        let mut component = Component::new(&self.name, bao)
            .args(["server", "-dev", "-dev-no-store-token"])
            .arg(format!("-dev-listen-address={listen}"));
        if let Some(config) = &self.config_file {
            component = component.arg(format!("-config={}", config.display()));
        }
        let component = component
            .env("BAO_DEV_ROOT_TOKEN_ID", &token)
            .stdout_file(&stdout)
            .current_dir(run.path());
        supervisor
            .start(
                component,
                Readiness::http(format!("{addr}/v1/sys/health"), 200),
            )
            .await?;
        let root = VaultClient::new(&addr)?.with_token(Secret::new(token));
        Ok(RunningVault {
            addr,
            root,
            root_token_file,
            stdout,
        })
    }
}

/// `bao server` with raft storage instead of `-dev`, for tests that
/// restart or seal Vault and expect its data to survive: started, then
/// initialized (root token and unseal key into 0600 files) and unsealed.
#[derive(Debug, Clone)]
pub struct RaftVault {
    listen_port: u16,
    extra_config: String,
}

/// A started [`RaftVault`].
#[derive(Debug)]
pub struct RunningRaftVault {
    pub addr: String,
    pub root_token: Secret,
    pub root_token_file: PathBuf,
    pub unseal_key_file: PathBuf,
}

impl RaftVault {
    /// On `listen_port` (and the next port, raft's cluster address).
    pub fn new(listen_port: u16) -> Self {
        Self {
            listen_port,
            extra_config: String::new(),
        }
    }

    /// More server config, e.g. the file audit device.
    pub fn with_config(mut self, hcl: impl Into<String>) -> Self {
        self.extra_config = hcl.into();
        self
    }

    /// Starts it as component `bao`; up (any seal state) once
    /// `sys/seal-status` answers, then initialized and unsealed.
    pub async fn start(
        self,
        bao: &Path,
        run: &RunDir,
        supervisor: &mut Supervisor,
    ) -> Result<RunningRaftVault> {
        let data_dir = run.path().join("bao-data");
        std::fs::create_dir_all(&data_dir).context("creating bao's raft data directory")?;
        let config_file = run.path().join("bao.hcl");
        std::fs::write(
            &config_file,
            format!(
                "{}\n{}",
                crate::vault::raft::server_config(self.listen_port, &data_dir),
                self.extra_config
            ),
        )
        .context("writing bao's server config")?;
        let addr = format!("http://{}", loopback(self.listen_port));
        supervisor
            .start(
                Component::new("bao", bao)
                    .args(["server", "-config"])
                    .arg(&config_file)
                    .current_dir(run.path()),
                Readiness::http(format!("{addr}/v1/sys/seal-status"), 200),
            )
            .await?;
        let client = VaultClient::with_timeout(&addr, std::time::Duration::from_secs(60))?;
        let secrets = crate::vault::raft::init(&client, run).await?;
        crate::vault::raft::unseal(&client, &secrets.unseal_key_file).await?;
        crate::say!(
            "bao: raft storage initialized and unsealed (root token and unseal key in secrets/)"
        );
        Ok(RunningRaftVault {
            addr,
            root_token: secrets.root_token,
            root_token_file: secrets.root_token_file,
            unseal_key_file: secrets.unseal_key_file,
        })
    }
}

/// A `bao agent` rendering templates from Vault: ready once it has logged in
/// since this start and `ready` holds (its first render published, usually).
/// The login is part of it because rendered files outlive a stopped agent:
/// a restarted one would otherwise be "ready" before it did anything.
#[derive(Debug, Clone)]
pub struct BaoAgent {
    name: String,
    config_file: PathBuf,
    ready: Readiness,
}

impl BaoAgent {
    /// Component `name` with this agent config; ready once `ready` holds.
    pub fn new(name: impl Into<String>, config_file: impl Into<PathBuf>, ready: Readiness) -> Self {
        Self {
            name: name.into(),
            config_file: config_file.into(),
            ready,
        }
    }

    pub async fn start(self, bao: &Path, run: &RunDir, supervisor: &mut Supervisor) -> Result<()> {
        supervisor
            .start(
                Component::new(&self.name, bao)
                    .arg("agent")
                    .arg(format!("-config={}", self.config_file.display()))
                    .current_dir(run.path()),
                Readiness::All(vec![Readiness::LogLine(AGENT_LOGGED_IN.into()), self.ready]),
            )
            .await?;
        Ok(())
    }
}

/// What `bao agent` (OpenBao 2.7) logs at INFO once auto-auth has a token:
/// `agent.auth.handler: authentication successful, sending token to sinks`.
pub const AGENT_LOGGED_IN: &str = "authentication successful";

/// keygate with a config file: ready once its `/readyz` answers 200 (its
/// Vault login, or its keys files, loaded).
#[derive(Debug, Clone)]
pub struct Keygate {
    name: String,
    binary: PathBuf,
    config: Option<(PathBuf, SocketAddr)>,
}

impl Default for Keygate {
    /// Component `keygate`, the binary [`Keygate::default_binary`] names,
    /// no config yet ([`Keygate::with_config`] gives one).
    fn default() -> Self {
        Self {
            name: "keygate".into(),
            binary: Self::default_binary(),
            config: None,
        }
    }
}

impl Keygate {
    /// `$KEYRIG_KEYGATE`, else the debug build in this workspace's target
    /// directory (what `cargo build -p keygate` and `cargo test --workspace`
    /// produce, and what `cargo xtask up` builds).
    pub fn default_binary() -> PathBuf {
        std::env::var_os("KEYRIG_KEYGATE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::base::paths::target_dir().join("debug/keygate"))
    }

    /// An error that says how to build it when `binary` is not a file.
    pub fn check_binary(binary: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        // Which fix applies depends on where the path came from.
        let fix = if std::env::var_os("KEYRIG_KEYGATE").is_some_and(|v| !v.is_empty()) {
            "fix or unset KEYRIG_KEYGATE"
        } else {
            "build it with `cargo build -p keygate`, or point KEYRIG_KEYGATE at one"
        };
        let why = match binary.metadata() {
            Err(_) => "there is nothing",
            Ok(m) if m.is_dir() => "that is a directory",
            Ok(m) if m.permissions().mode() & 0o111 == 0 => "that file is not executable",
            Ok(_) => return Ok(()),
        };
        anyhow::bail!("no keygate binary at {}: {why}; {fix}", binary.display())
    }

    /// Also the name its secret references report
    /// (`contract::references::GATEWAY_NAME_VAR`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn with_binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.binary = binary.into();
        self
    }

    /// keygate's config file, whose HTTP listener is `http` (the probe's).
    pub fn with_config(mut self, file: impl Into<PathBuf>, http: SocketAddr) -> Self {
        self.config = Some((file.into(), http));
        self
    }

    /// Starts it; returns its HTTP URL.
    pub async fn start(self, run: &RunDir, supervisor: &mut Supervisor) -> Result<String> {
        let (config_file, http) = self
            .config
            .context("keygate has no config file: give one with Keygate::with_config")?;
        Self::check_binary(&self.binary)?;
        let url = format!("http://{http}");
        supervisor
            .start(
                Component::new(&self.name, &self.binary)
                    .arg("--config")
                    .arg(&config_file)
                    .env(crate::contract::references::GATEWAY_NAME_VAR, &self.name)
                    .current_dir(run.path()),
                Readiness::http(format!("{url}/readyz"), 200),
            )
            .await?;
        Ok(url)
    }
}

/// The echo upstream (`process::echo`), run by a program that serves it
/// (xtask's hidden `echo-upstream`): ready once `/healthz` answers.
#[derive(Debug, Clone)]
pub struct EchoUpstream {
    program: PathBuf,
    args: Vec<String>,
    listen: SocketAddr,
}

impl EchoUpstream {
    /// `program args... --listen <listen>`.
    pub fn new(program: impl Into<PathBuf>, args: &[String], listen: SocketAddr) -> Self {
        Self {
            program: program.into(),
            args: args.to_vec(),
            listen,
        }
    }

    /// Starts it as component `echo`; returns its URL.
    pub async fn start(self, run: &RunDir, supervisor: &mut Supervisor) -> Result<String> {
        let url = format!("http://{}", self.listen);
        supervisor
            .start(
                Component::new("echo", &self.program)
                    .args(&self.args)
                    .args(["--listen".to_owned(), self.listen.to_string()])
                    .current_dir(run.path()),
                Readiness::http(format!("{url}/healthz"), 200),
            )
            .await?;
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_keygate_path_that_cannot_run_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let runs = dir.path().join("runs");
        std::fs::write(&runs, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&runs, std::fs::Permissions::from_mode(0o755)).unwrap();
        for (path, why) in [
            (dir.path().join("nowhere"), "there is nothing"),
            (dir.path().to_path_buf(), "that is a directory"),
            (plain, "that file is not executable"),
        ] {
            let err = Keygate::check_binary(&path).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
        Keygate::check_binary(&runs).unwrap();
    }
}
