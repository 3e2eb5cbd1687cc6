//! The short-lived commands of the Kubernetes profiles (kind, helm, kubectl,
//! docker build): each runs to completion with its output appended to
//! `logs/<name>.log` (the caller names it: `helm`, `docker-build`,
//! `check-job`), KUBECONFIG pointing at the profile's kubeconfig, and a
//! failure that quotes the end of that log. The ones that take minutes
//! (`run_long`: docker build, kind create, helm install) write their log as
//! they go and say every 20 s what its last line is. Long-running ones (port-forwards)
//! go through the Supervisor instead (`profile`).
//!
//! No command here is given a secret: tokens reach Vault over HTTP, and the
//! kubeconfig (which holds a client key) is only ever named by path.

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result};

use rig::say;

/// What kind, helm, kubectl and docker get from the harness's environment
/// besides `process::BASE_ENV`: their own settings (Docker's daemon and
/// config, Helm's and XDG's directories, proxies and CA bundles for chart and
/// image downloads) and what a kubeconfig's exec credential plugin reads
/// (`aws eks get-token`, `gke-gcloud-auth-plugin`, `kubelogin`). Never
/// `VAULT_TOKEN`: Vault is spoken to over HTTP by the harness itself.
pub const KUBE_TOOL_ENV: &[&str] = &[
    "KUBECONFIG",
    "DOCKER_*",
    "KIND_*",
    "HELM_*",
    "XDG_*",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "AWS_*",
    "GOOGLE_*",
    "CLOUDSDK_*",
    "USE_GKE_GCLOUD_AUTH_PLUGIN",
    "AZURE_*",
    "AAD_*",
];

/// How often a command that takes minutes (docker build, kind create,
/// helm install: [`Commands::run_long`]) says it is still running.
pub const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(20);

/// Runs commands for one run of a profile.
#[derive(Debug, Clone)]
pub struct Commands {
    logs_dir: PathBuf,
    /// `None`: the default kubeconfig (the cluster profile).
    kubeconfig: Option<PathBuf>,
    /// `None`: the kubeconfig's current context.
    context: Option<String>,
}

impl Commands {
    pub fn new(logs_dir: PathBuf, kubeconfig: Option<PathBuf>, context: Option<String>) -> Self {
        Self {
            logs_dir,
            kubeconfig,
            context,
        }
    }

    pub fn kubeconfig(&self) -> Option<&Path> {
        self.kubeconfig.as_deref()
    }

    /// `--context <ctx>` for kubectl and `--kube-context <ctx>` for helm.
    pub fn context_args(&self, flag: &str) -> Vec<String> {
        match &self.context {
            Some(context) => vec![flag.to_owned(), context.clone()],
            None => Vec::new(),
        }
    }

    /// The command for `program args...` with the tools' environment, and
    /// how it is shown (said, and written into its log).
    fn command<I, S>(&self, program: &Path, args: I) -> Result<(tokio::process::Command, String)>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let shown = format!(
            "{} {}",
            program.file_name().unwrap_or_default().to_string_lossy(),
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        say!("{shown}");
        std::fs::create_dir_all(&self.logs_dir)
            .with_context(|| format!("creating {}", self.logs_dir.display()))?;
        let inherit: Vec<std::ffi::OsString> = KUBE_TOOL_ENV.iter().map(Into::into).collect();
        let mut command = tokio::process::Command::new(program);
        command
            .args(&args)
            .env_clear()
            .envs(rig::process::supervisor::child_env(
                std::env::vars_os(),
                &inherit,
                &[],
            ))
            .stdin(Stdio::null())
            // Ctrl-C or a panic drops the future: the command goes with it.
            .kill_on_drop(true)
            .current_dir(rig::base::paths::workspace_root());
        if let Some(kubeconfig) = &self.kubeconfig {
            command.env("KUBECONFIG", kubeconfig);
        }
        Ok((command, shown))
    }

    /// Runs a command that takes minutes (`docker build` of keygate, a
    /// Helm install that waits), its output written into `logs/<log>.log`
    /// as it comes, and a line every `every` with the log's last line, so
    /// a slow step shows what it is doing. Never for one that prints a
    /// secret.
    pub async fn run_long<I, S>(
        &self,
        log: &str,
        program: &Path,
        args: I,
        every: std::time::Duration,
    ) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (mut command, shown) = self.command(program, args)?;
        let (log_file, mut log_handle) = self.open_log(log, &shown)?;
        command
            .stdout(Stdio::from(log_handle.try_clone()?))
            .stderr(Stdio::from(log_handle.try_clone()?));
        let started = std::time::Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("running {}", program.display()))?;
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let status = loop {
            tokio::select! {
                status = child.wait() => break status.with_context(|| format!("waiting for {}", program.display()))?,
                _ = ticks.tick() => {
                    let last = rig::process::supervisor::log_tail(&log_file, 1);
                    let last: String = last.trim().chars().take(160).collect();
                    say!(
                        "{}: still running after {}; {log}.log ends: {last}",
                        program.file_name().unwrap_or_default().to_string_lossy(),
                        rig::base::progress::secs(started.elapsed())
                    );
                }
            }
        };
        writeln!(log_handle, "# exit: {status}")?;
        if !status.success() {
            return Err(failed(&shown, status, &log_file));
        }
        Ok(())
    }

    /// `logs/<log>.log`, opened to append, with the command's line written.
    fn open_log(&self, log: &str, shown: &str) -> Result<(PathBuf, std::fs::File)> {
        let log_file = self.logs_dir.join(format!("{log}.log"));
        let mut handle = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_file)
            .with_context(|| format!("opening {}", log_file.display()))?;
        writeln!(handle, "$ {shown}")?;
        Ok((log_file, handle))
    }

    /// Runs `program args...`; `log` names the log file (`helm` -> logs/helm.log).
    /// Returns stdout; never call it for a command that prints a secret.
    pub async fn run<I, S>(&self, log: &str, program: &Path, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (mut command, shown) = self.command(program, args)?;
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let output = command
            .output()
            .await
            .with_context(|| format!("running {}", program.display()))?;
        let (log_file, mut log_handle) = self.open_log(log, &shown)?;
        log_handle.write_all(&output.stdout)?;
        log_handle.write_all(&output.stderr)?;
        writeln!(log_handle, "# exit: {}", output.status)?;
        if !output.status.success() {
            return Err(failed(&shown, output.status, &log_file));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// A command that exited unsuccessfully: what ran, how it ended, and the
/// end of its log.
fn failed(shown: &str, status: std::process::ExitStatus, log_file: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "`{shown}` failed ({status}); the end of {}:\n{}",
        log_file.display(),
        rig::process::supervisor::log_tail(log_file, 15)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_long_command_writes_its_log_as_it_goes_and_fails_with_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let cmds = Commands::new(dir.path().to_owned(), None, None);
        let sh = Path::new("/bin/sh");
        cmds.run_long(
            "slow",
            sh,
            ["-c", "echo first; sleep 0.3; echo second"],
            Duration::from_millis(100),
        )
        .await
        .unwrap();
        let log = std::fs::read_to_string(dir.path().join("slow.log")).unwrap();
        assert!(log.starts_with("$ sh -c echo first"), "{log}");
        assert!(
            log.contains("first\nsecond\n# exit: exit status: 0"),
            "{log}"
        );

        let err = cmds
            .run_long(
                "broken",
                sh,
                ["-c", "echo 'step 3/9 failed'; exit 3"],
                Duration::from_secs(30),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.contains("step 3/9 failed"), "{err}");
        assert!(err.contains("broken.log"), "{err}");
    }
}
