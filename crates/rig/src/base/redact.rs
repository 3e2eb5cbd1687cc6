//! Secret redaction and the end-of-run secret scan.
//!
//! Every secret a run creates (root token, unseal key, secret-ids, tokens
//! and API keys the tests mint) is *registered*: kept in this process's
//! memory and, for the run's other processes, written as a 0600 file under
//! `<run>/secrets/registry/`. Every line the harness prints, and every
//! report and diagnostic it writes, goes through [`redact`]. After the run,
//! [`scan_run`] reads every file of the run directory except `secrets/`
//! and reports each file that still holds a registered secret, by path only.
//! [`scan_uploads`] does the same for all of `target/rig/` as CI uploads it
//! (every run, `kind-logs/`, everything but any `secrets/` directory), with
//! the secrets of every run's registry, nested runs' included.
//!
//! The registry holds the literal secrets, not hashes, because the scan has
//! to find the literal; that is why it lives in the 0600 `secrets/` corner,
//! which the scan skips.
//!
//! ```no_run
//! // In an e2e test, right after minting a token:
//! rig::base::redact::register_secret("s.Xq3...");
//! ```

use std::collections::BTreeSet;
use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, Once};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a secret is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Shorter values are not registered: they would match ordinary text and
/// turn every log into "<redacted>" soup (no secret of ours is this short).
pub const MIN_SECRET_LEN: usize = 8;

/// `<run>/secrets/registry/`: one 0600 file per registered secret.
pub const REGISTRY_DIR: &str = "secrets/registry";

static SECRETS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn secrets() -> MutexGuard<'static, BTreeSet<String>> {
    SECRETS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Registers a secret in this process only: later [`redact`] calls hide it.
pub fn register(secret: &str) {
    let secret = secret.trim();
    if secret.len() >= MIN_SECRET_LEN {
        secrets().insert(secret.to_owned());
    }
}

/// Registers a secret in this process and in the run's registry, so the
/// harness's other processes redact it and the final scan looks for it.
pub fn register_in_run(run_dir: &Path, secret: &str) -> Result<()> {
    register(secret);
    write_to_registry(run_dir, secret)
}

/// The registry's part of [`register_in_run`]: the 0600 file, not this
/// process's memory.
fn write_to_registry(run_dir: &Path, secret: &str) -> Result<()> {
    let secret = secret.trim();
    if secret.len() < MIN_SECRET_LEN {
        return Ok(());
    }
    let dir = run_dir.join(REGISTRY_DIR);
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating the secret registry {}", dir.display()))?;
    // Named by a hash so registering the same secret twice is one file.
    let name = hex::encode(&Sha256::digest(secret.as_bytes())[..12]);
    crate::base::run::write_secret_file(&dir.join(name), secret)?;
    Ok(())
}

/// Registers a secret for the run named by `$KEYRIG_RUN_DIR` (set by
/// `cargo xtask e2e` for the tests), or in this process only without one.
/// Tests call this for every token, secret-id and API key they create.
/// Never fails the caller: a registry that cannot be written is reported.
pub fn register_secret(secret: &str) {
    match crate::base::run::current_run_dir() {
        Some(run_dir) => {
            if let Err(err) = register_in_run(&run_dir, secret) {
                eprintln!("[keyrig] warning: could not register a secret: {err:#}");
            }
        }
        None => register(secret),
    }
}

/// The secrets registered in a run's registry.
pub fn load_registry(run_dir: &Path) -> Result<Vec<String>> {
    let dir = run_dir.join(REGISTRY_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", dir.display())),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        // Skip write_secret_file's temporary files, and anything but a
        // regular file: a symlink would read a file outside the registry.
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            || !entry.file_type()?.is_file()
        {
            continue;
        }
        let secret = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        found.push(secret.trim().to_owned());
    }
    Ok(found)
}

/// Registers in this process every secret of `run_dir`'s registry, so its
/// [`redact`] hides what the run's other processes registered (tokens and
/// API keys the tests minted): for xtask, which prints the tests' output,
/// their case messages and the summary, and which, unlike the tests, has no
/// `$KEYRIG_RUN_DIR` of its own. Call it again after more was registered;
/// returns how many secrets the registry holds.
pub fn load_run_registry(run_dir: &Path) -> Result<usize> {
    let found = load_registry(run_dir)?;
    for secret in &found {
        register(secret);
    }
    Ok(found.len())
}

/// Loads the run registry of `$KEYRIG_RUN_DIR` into this process, once, so
/// a test process also hides what xtask registered (the root token, ...).
fn load_env_registry_once() {
    static LOAD: Once = Once::new();
    LOAD.call_once(|| {
        if let Some(run_dir) = crate::base::run::current_run_dir() {
            for secret in load_registry(&run_dir).unwrap_or_default() {
                register(&secret);
            }
        }
    });
}

/// `text` with every registered secret replaced by [`REDACTED`].
pub fn redact(text: &str) -> String {
    load_env_registry_once();
    redact_with(text, secrets().iter())
}

fn redact_with<'a>(text: &str, secrets: impl Iterator<Item = &'a String>) -> String {
    // Longest first, so a secret containing another is hidden whole.
    let mut sorted: Vec<&String> = secrets.collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_owned();
    for secret in sorted {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), REDACTED);
        }
    }
    out
}

/// What the final scan of a run found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanResult {
    pub files_scanned: usize,
    pub secrets_checked: usize,
    /// Files (relative to the run directory) holding a registered secret.
    pub hits: Vec<PathBuf>,
}

/// Reads every file under `run_dir` except `secrets/` and names each one
/// that holds any of `secrets` (registry plus this process's). Symlinks are
/// not followed: the run's own files are what is checked.
pub fn scan_run(run_dir: &Path) -> Result<ScanResult> {
    scan_dir(run_dir, &all_secrets(run_dir)?)
}

/// The run's registry plus what this process registered.
pub fn all_secrets(run_dir: &Path) -> Result<BTreeSet<String>> {
    let mut all: BTreeSet<String> = load_registry(run_dir)?.into_iter().collect();
    all.extend(secrets().iter().cloned());
    Ok(all)
}

/// [`scan_run`] with an explicit set of secrets; also scans copies of a
/// run's reports elsewhere (`--report-dir`).
pub fn scan_dir(root: &Path, secrets: &BTreeSet<String>) -> Result<ScanResult> {
    let own_secrets = root.join("secrets");
    scan_tree(root, secrets, |dir| dir == own_secrets)
}

/// The directory name CI's uploads leave out wherever it is
/// (`!target/rig/**/secrets/**`), and [`scan_uploads`] with them.
pub const UPLOAD_EXCLUDED_DIR: &str = "secrets";

/// What CI uploads of `base` (`target/rig/`: every run directory, the kind
/// cluster's exported logs, anything else there), scanned for the secrets of
/// every run's registry under `base`, at any depth, plus this process's.
/// Directories named `secrets`, at any depth, are skipped as the upload
/// skips them; symlinks (`latest`) are not followed, as the upload archives
/// the runs themselves. A missing `base` has nothing to upload and nothing
/// to find.
pub fn scan_uploads(base: &Path) -> Result<ScanResult> {
    if !base.exists() {
        return Ok(ScanResult::default());
    }
    let mut secrets: BTreeSet<String> = self::secrets().iter().cloned().collect();
    for run in runs_with_registry(base)? {
        secrets.extend(load_registry(&run)?);
    }
    scan_tree(base, &secrets, |dir| {
        dir.file_name()
            .is_some_and(|name| name == UPLOAD_EXCLUDED_DIR)
    })
}

/// The directories under `root` (itself included, at any depth) that hold a
/// registry (`secrets/registry`): the runs `up` and `e2e` make at the top,
/// and those one or two levels down that register secrets of their own
/// (the faults cases' `faults/<run>`, the bench's `bench/runs/<run>`).
/// Symlinks are not followed, so nothing outside `root` is read; nor is a
/// registry that is a symlink.
fn runs_with_registry(root: &Path) -> Result<Vec<PathBuf>> {
    let is_real_dir =
        |path: &Path| std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_dir());
    let mut runs = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        let secrets = dir.join(UPLOAD_EXCLUDED_DIR);
        if is_real_dir(&secrets) && is_real_dir(&dir.join(REGISTRY_DIR)) {
            runs.push(dir.clone());
        }
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            // A secrets/ directory holds no run; its registry was found above.
            if entry.file_type()?.is_dir() && entry.file_name() != UPLOAD_EXCLUDED_DIR {
                pending.push(entry.path());
            }
        }
    }
    runs.sort();
    Ok(runs)
}

/// Every regular file under `root` except in directories `skip` names,
/// checked for each of `secrets`.
fn scan_tree(
    root: &Path,
    secrets: &BTreeSet<String>,
    skip: impl Fn(&Path) -> bool,
) -> Result<ScanResult> {
    let mut result = ScanResult {
        secrets_checked: secrets.len(),
        ..ScanResult::default()
    };
    // One automaton for all of them: a run registers every key it issues
    // (thousands), and `contains` per secret per file made the scan of a
    // 50 MB run directory take most of a minute.
    let matcher = aho_corasick::AhoCorasick::new(secrets.iter().filter(|s| !s.is_empty()))
        .context("building the secret scan's matcher")?;
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                if !skip(&path) {
                    pending.push(path);
                }
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                // A log rotated or removed while scanning has nothing to find.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
            };
            result.files_scanned += 1;
            if matcher.is_match(&bytes) {
                result
                    .hits
                    .push(path.strip_prefix(root).unwrap_or(&path).to_owned());
            }
        }
    }
    result.hits.sort();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use std::os::unix::fs::PermissionsExt;

    #[rstest]
    fn redacts_longest_first_and_ignores_short_values() {
        let secrets = ["abcdefgh".to_string(), "abcdefgh-and-more".to_string()];
        let text = "token abcdefgh-and-more then abcdefgh";
        assert_eq!(
            redact_with(text, secrets.iter()),
            "token <redacted> then <redacted>"
        );
        register("short");
        assert_eq!(redact("short stays"), "short stays");
    }

    #[rstest]
    fn registry_is_0600_and_the_scan_names_files_not_secrets() {
        let base = tempfile::tempdir().unwrap();
        let run = crate::base::run::RunDir::create_in(base.path()).unwrap();
        let secret = "s.0123456789abcdef-scan-test";
        register_in_run(run.path(), secret).unwrap();
        register_in_run(run.path(), secret).unwrap();
        let registry: Vec<_> = std::fs::read_dir(run.path().join(REGISTRY_DIR))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(registry.len(), 1, "one file per secret");
        let mode = std::fs::metadata(&registry[0])
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_registry(run.path()).unwrap(), [secret]);

        // A secret inside secrets/ is where it belongs; in logs/ it is a leak.
        run.write_secret("root-token", secret).unwrap();
        std::fs::write(run.logs_dir().join("clean.log"), "nothing here").unwrap();
        assert!(scan_run(run.path()).unwrap().hits.is_empty());
        std::fs::write(
            run.logs_dir().join("leaky.log"),
            format!("login with {secret}\n"),
        )
        .unwrap();
        let scan = scan_run(run.path()).unwrap();
        assert_eq!(scan.hits, [PathBuf::from("logs/leaky.log")]);
        assert_eq!(scan.files_scanned, 2);
        assert!(!format!("{scan:?}").contains(secret));

        assert_eq!(redact(&format!("x {secret} y")), "x <redacted> y");
    }

    /// CI uploads all of target/rig/ but its secrets/ directories: the
    /// upload scan reads every run (with every run's registry), the kind
    /// logs beside them, and skips secrets/ wherever it is.
    #[rstest]
    fn the_upload_scan_covers_every_run_and_the_kind_logs() {
        let base = tempfile::tempdir().unwrap();
        let first = crate::base::run::RunDir::create_in(base.path()).unwrap();
        let second = crate::base::run::RunDir::create_in(base.path()).unwrap();
        let one = "first-run-secret-0123456789";
        let two = "second-run-secret-9876543210";
        register_in_run(first.path(), one).unwrap();
        register_in_run(second.path(), two).unwrap();
        run_secret_files(&first, one);
        assert!(scan_uploads(base.path()).unwrap().hits.is_empty());

        // The second run's secret in the first run's log, and the first's in
        // the kind logs, which belong to no run.
        std::fs::write(first.logs_dir().join("cross.log"), format!("{two}\n")).unwrap();
        let kind_logs = base.path().join("kind-logs/keyrig-control-plane/pods");
        std::fs::create_dir_all(&kind_logs).unwrap();
        std::fs::write(kind_logs.join("openbao-0.log"), format!("token {one}\n")).unwrap();
        // A nested secrets/ directory is not uploaded, so not a leak.
        let nested = base.path().join("kind-logs/secrets");
        std::fs::create_dir_all(&nested).unwrap();
        std::fs::write(nested.join("kubeconfig"), one).unwrap();

        let scan = scan_uploads(base.path()).unwrap();
        let first_id = first.path().file_name().unwrap();
        assert_eq!(
            scan.hits,
            [
                Path::new(first_id).join("logs/cross.log"),
                PathBuf::from("kind-logs/keyrig-control-plane/pods/openbao-0.log"),
            ]
        );
        assert!(scan.secrets_checked >= 2);
        assert!(!format!("{scan:?}").contains(one));
        assert!(
            scan_uploads(&base.path().join("absent"))
                .unwrap()
                .hits
                .is_empty()
        );
    }

    /// A fault case's run (`faults/<run>`) and a bench run
    /// (`bench/runs/<run>`) register their own root tokens and secret-ids:
    /// their secrets in their own logs are leaks too. A registry reached
    /// only through a symlink is not read (nothing outside the tree is).
    #[rstest]
    fn the_upload_scan_reads_the_registries_of_nested_runs() {
        let base = tempfile::tempdir().unwrap();
        let fault = crate::base::run::RunDir::create_in(&base.path().join("faults")).unwrap();
        let bench = crate::base::run::RunDir::create_in(&base.path().join("bench/runs")).unwrap();
        // Written by other processes (the test process, the bench): in the
        // registries, not in this process's memory, as `xtask
        // scan-uploads` finds them.
        let fault_secret = "fault-run-root-token-0123456789";
        let bench_secret = "bench-run-secret-id-9876543210";
        write_to_registry(fault.path(), fault_secret).unwrap();
        write_to_registry(bench.path(), bench_secret).unwrap();
        run_secret_files(&fault, fault_secret);
        assert!(scan_uploads(base.path()).unwrap().hits.is_empty());

        std::fs::write(
            fault.logs_dir().join("keygate.log"),
            format!("{fault_secret}\n"),
        )
        .unwrap();
        std::fs::write(
            bench.logs_dir().join("bao.log"),
            format!("{bench_secret}\n"),
        )
        .unwrap();
        let scan = scan_uploads(base.path()).unwrap();
        let in_run = |run: &crate::base::run::RunDir, log: &str| {
            run.path()
                .strip_prefix(base.path())
                .unwrap()
                .join("logs")
                .join(log)
        };
        assert_eq!(
            scan.hits,
            [in_run(&bench, "bao.log"), in_run(&fault, "keygate.log")]
        );

        // Outside the tree, reached through a symlink: neither scanned nor
        // a source of secrets.
        let outside = tempfile::tempdir().unwrap();
        let elsewhere = crate::base::run::RunDir::create_in(outside.path()).unwrap();
        let outside_secret = "outside-secret-abcdefghijk";
        write_to_registry(elsewhere.path(), outside_secret).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), base.path().join("linked")).unwrap();
        std::fs::write(fault.logs_dir().join("mention.log"), outside_secret).unwrap();
        assert_eq!(scan_uploads(base.path()).unwrap().hits.len(), 2);
    }

    /// A run's secrets where they belong: the 0600 files of secrets/.
    fn run_secret_files(run: &crate::base::run::RunDir, secret: &str) {
        run.write_secret("root-token", secret).unwrap();
        std::fs::write(run.logs_dir().join("clean.log"), "nothing here").unwrap();
    }
}
