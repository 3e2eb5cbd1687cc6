//! `cargo xtask up`: start the local profile and leave it running.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use rig::say;

use crate::flags::Profile;
use crate::runner::{runtime, stop_on_interrupt, this_binary};

/// Builds keygate (unless `$KEYRIG_KEYGATE` names a binary) and says how
/// to run the echo upstream: this very binary, hidden subcommand.
pub(crate) fn local_options(mode: rig::contract::modes::Mode) -> Result<rig::local::LocalOptions> {
    local_options_with(mode, build_keygate()?)
}

/// The keygate binary runs use: `$KEYRIG_KEYGATE`, else the debug build,
/// built now (cargo says what it compiles; a no-op when fresh).
pub(crate) fn build_keygate() -> Result<PathBuf> {
    Ok(
        match std::env::var_os("KEYRIG_KEYGATE").filter(|v| !v.is_empty()) {
            Some(path) => {
                say!(
                    "keygate: using KEYRIG_KEYGATE={}",
                    Path::new(&path).display()
                );
                PathBuf::from(path)
            }
            None => {
                // `-p xtask` beside keygate: the same package set as
                // xtask's own build (and its workspace-hack), so keygate's
                // dependencies are the ones already compiled for xtask
                // rather than a second copy with keygate's own, narrower
                // feature set. xtask itself is up to date (it is running).
                let built = crate::build::cargo_build(
                    &["build", "-p", "keygate", "-p", "xtask", "--bin", "keygate"],
                    "building keygate",
                )?;
                built
                    .bin("keygate", "keygate")
                    .unwrap_or_else(|| rig::base::paths::target_dir().join("debug/keygate"))
            }
        },
    )
}

/// The local profile's options for `mode` with this keygate binary; the
/// echo upstream and the publish hook are this very binary's hidden
/// subcommands.
pub(crate) fn local_options_with(
    mode: rig::contract::modes::Mode,
    keygate: PathBuf,
) -> Result<rig::local::LocalOptions> {
    let xtask = this_binary()?;
    let echo = rig::local::EchoCommand {
        program: xtask.clone(),
        args: vec!["echo-upstream".into()],
    };
    let mut opts = rig::local::LocalOptions::new(keygate, echo);
    opts.mode = mode;
    opts.publish = Some(rig::local::delivery::PublishCommand {
        program: xtask,
        args: vec!["publish-secret".into()],
    });
    Ok(opts)
}

pub(crate) fn up(profile: Profile, mode: rig::contract::modes::Mode) -> Result<()> {
    profile.require_local()?;
    stop_on_interrupt()?;
    let opts = local_options(mode)?;
    let started = Instant::now();
    // On error, `local::up` has already stopped what it started.
    let run = runtime()?
        .block_on(rig::local::up(&opts))
        .context("the local profile did not come up")?;
    let env = &run.environment;
    println!(
        "keyrig local environment {} is up ({}):",
        env.run_id,
        rig::base::progress::secs(started.elapsed())
    );
    println!("  gateway   {}", env.gateway_url);
    for (group, prefix) in &env.groups {
        println!("              {prefix}  ({group})");
    }
    println!(
        "  vault     {}  (root token in {})",
        env.vault_addr,
        env.root_token_file.display()
    );
    println!(
        "  keygate   {}  (/readyz, /healthz, /metrics)",
        env.keygate_url
    );
    println!("  upstream  {}", env.upstream_url);
    if let Some(delivery) = &env.delivery {
        println!(
            "  delivery  {} mode, Secret {} at {}",
            delivery.mode,
            delivery.secret_name,
            delivery.secret_dir.display()
        );
    }
    if let Some(side) = &env.keys_file {
        println!(
            "  keys-file gateway {} (keygate {}; bao agent renders every {} ms)",
            side.gateway_url, side.keygate_url, side.render_interval_ms
        );
    }
    if let Some(tls) = &env.tls {
        println!(
            "  tls       {}  (certificate from Vault {}/issue/{}, ttl {} ms; CA {})",
            tls.url,
            tls.pki_mount,
            tls.pki_role,
            tls.cert_ttl_ms,
            tls.ca_cert_file.display()
        );
    }
    println!("  env.json  {}", run.run.env_file().display());
    println!("  logs      {}", env.logs_dir.display());
    println!("stop with `cargo xtask down`");
    run.supervisor.detach();
    Ok(())
}
