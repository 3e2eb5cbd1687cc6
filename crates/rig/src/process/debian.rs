//! Tools that come from Debian rather than PyPI (nginx): installed
//! system-wide with apt-get, which only root may do. Anyone else gets the
//! command to run instead.

use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::say;

/// What a person runs to install one of `packages` (first preferred).
pub fn install_hint(packages: &[String]) -> String {
    let first = packages.first().map(String::as_str).unwrap_or("?");
    if is_root() {
        format!("run `cargo xtask tools`, which installs the Debian package {first} with apt-get")
    } else {
        format!(
            "install the Debian package {first} as root (`sudo apt-get install -y {first}`), keyrig installs it only when it runs as root"
        )
    }
}

/// The effective user is root: `/proc/self` belongs to the process's
/// effective uid (no extra nix feature needed for one check).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `apt-get update`, then `apt-get install -y` of the first of `packages`
/// the archive has. Services the package would start stay the system's
/// business: Debian images without an init system (or with a policy-rc.d
/// that returns 101, as container images ship) start none. `apt_get` is
/// where the caller's PATH has apt-get, if anywhere (the caller resolves
/// tools; this module only knows Debian).
pub fn install(name: &str, packages: &[String], apt_get: Option<&std::path::Path>) -> Result<()> {
    if !is_root() {
        bail!("{name} is missing: {}", install_hint(packages));
    }
    if apt_get.is_none() {
        bail!(
            "{name} is missing and this machine has no apt-get: install {} with the system's package manager, or set the tool's env override",
            packages.join(" or ")
        );
    }
    let started = Instant::now();
    say!("{name}: apt-get update, then installing one of {packages:?}");
    run_apt(&["update", "-q"]).context("apt-get update failed: see its output above")?;
    let mut tried = Vec::new();
    for package in packages {
        match run_apt(&["install", "-y", "-q", "--no-install-recommends", package]) {
            Ok(()) => {
                say!(
                    "{name}: installed the Debian package {package} in {}",
                    crate::base::progress::secs(started.elapsed())
                );
                return Ok(());
            }
            Err(err) => tried.push(format!("{package}: {err:#}")),
        }
    }
    bail!(
        "apt-get could not install {name} ({}): see its output above",
        tried.join("; ")
    )
}

fn run_apt(args: &[&str]) -> Result<()> {
    // apt's lines go to stderr with ours, keeping stdout for reports.
    let stdout: Stdio = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::inherit());
    let mut command = Command::new("apt-get");
    command
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(stdout);
    // Run as root, with its maintainer scripts: no Vault credential.
    crate::process::supervisor::remove_secret_vars(&mut command);
    let status = command.status().context("apt-get does not run")?;
    if !status.success() {
        bail!("apt-get {} exited with {status}", args.join(" "));
    }
    Ok(())
}
