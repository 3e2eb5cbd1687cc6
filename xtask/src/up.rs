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
    local_options_with(mode, &build_keygate()?)
}

/// What runs take from the keygate build: the binary and keygate's Envoy
/// module (the `envoy-module` gateway's `libkeygate_envoy.so`).
#[derive(Debug, Clone)]
pub(crate) struct KeygateBuild {
    pub(crate) keygate: PathBuf,
    pub(crate) module: PathBuf,
}

/// The cargo arguments of the one build that makes keygate and its Envoy
/// module: `--bin keygate --lib` selects keygate's binary and the module's
/// cdylib (`xtask` has no library, `keygate`'s is built for its binary
/// anyway).
///
/// Debug (what runs use): `-p xtask --bin xtask` beside them, the same
/// package set and targets as xtask's own build (and its workspace-hack),
/// so their dependencies are the ones already compiled for xtask rather
/// than a second copy; xtask itself is up to date (it is running). Without
/// xtask's binary among the targets, cargo built the host copy of
/// `either` apart from the target one, and with it itertools, prost-derive,
/// prost and tonic-prost (then also envoy-types, since replaced by
/// keygate's own ext_authz messages) a second time on a cold machine.
/// Release (the bench): keygate and the module alone, as a user builds
/// what they deploy.
pub(crate) fn keygate_build_args(release: bool) -> Vec<&'static str> {
    let mut args = vec!["build"];
    if release {
        args.push("--release");
    }
    args.extend(["-p", "keygate", "-p", "keygate-envoy"]);
    if release {
        // The bench's load generator and upstream, built like what they
        // measure (crates/bench-peer), and its pass-through module, the
        // floor under keygate's (crates/bench-module; `--lib` builds it).
        args.extend([
            "-p",
            "keyrig-bench-peer",
            "--bin",
            "keyrig-bench-peer",
            "-p",
            "keyrig-bench-module",
        ]);
    } else {
        args.extend(["-p", "xtask", "--bin", "xtask"]);
    }
    args.extend(["--bin", "keygate", "--lib"]);
    args
}

/// The bench's own builds, debug (`bench --quick` in `cargo xtask test`):
/// the peer (its library is already in xtask's build, rig-bench uses its
/// protocol, so with xtask's binary among the targets this links one
/// binary) and the pass-through module (no dependencies).
pub(crate) fn bench_debug_build() -> Result<BenchBuild> {
    let built = crate::build::cargo_build(
        &[
            "build",
            "-p",
            "keyrig-bench-peer",
            "-p",
            "keyrig-bench-module",
            "-p",
            "xtask",
            "--bin",
            "xtask",
            "--bin",
            "keyrig-bench-peer",
            "--lib",
        ],
        "building the bench's load generator, upstream and pass-through module",
    )?;
    let debug = rig::base::paths::target_dir().join("debug");
    Ok(BenchBuild {
        peer: built
            .bin("keyrig-bench-peer", "keyrig-bench-peer")
            .unwrap_or_else(|| debug.join("keyrig-bench-peer")),
        passthrough_module: built
            .cdylib("keyrig-bench-module", "keyrig_bench_module")
            .unwrap_or_else(|| debug.join(BENCH_MODULE_FILE)),
    })
}

/// The pass-through module's file (crates/bench-module).
pub(crate) const BENCH_MODULE_FILE: &str = "libkeyrig_bench_module.so";

/// What the bench runs beside keygate: its load generator and upstream,
/// and its pass-through Envoy module.
#[derive(Debug, Clone)]
pub(crate) struct BenchBuild {
    pub(crate) peer: PathBuf,
    pub(crate) passthrough_module: PathBuf,
}

/// The keygate binary and module runs use: `$KEYRIG_KEYGATE` (and
/// `$KEYRIG_KEYGATE_ENVOY`, else the module beside that binary), else the
/// debug builds, made now by one cargo invocation (cargo says what it
/// compiles; a no-op when fresh).
pub(crate) fn build_keygate() -> Result<KeygateBuild> {
    let module_var = rig::process::envoy_module::MODULE_VAR;
    let module_override = std::env::var_os(module_var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    if let Some(path) = std::env::var_os("KEYRIG_KEYGATE").filter(|v| !v.is_empty()) {
        say!(
            "keygate: using KEYRIG_KEYGATE={}",
            Path::new(&path).display()
        );
        let keygate = PathBuf::from(path);
        let module = module_override.unwrap_or_else(|| rig::local::module_beside(&keygate));
        return Ok(KeygateBuild { keygate, module });
    }
    let built = crate::build::cargo_build(&keygate_build_args(false), "building keygate")?;
    let debug = rig::base::paths::target_dir().join("debug");
    let keygate = built
        .bin("keygate", "keygate")
        .unwrap_or_else(|| debug.join("keygate"));
    let module = match module_override {
        Some(path) => {
            say!(
                "keygate's Envoy module: using {module_var}={}",
                path.display()
            );
            path
        }
        None => built
            .cdylib("keygate-envoy", rig::process::envoy_module::MODULE_NAME)
            .unwrap_or_else(|| rig::local::module_beside(&keygate)),
    };
    Ok(KeygateBuild { keygate, module })
}

/// The local profile's options for `mode` with this keygate build; the
/// echo upstream and the publish hook are this very binary's hidden
/// subcommands.
pub(crate) fn local_options_with(
    mode: rig::contract::modes::Mode,
    build: &KeygateBuild,
) -> Result<rig::local::LocalOptions> {
    let xtask = this_binary()?;
    let echo = rig::local::EchoCommand {
        program: xtask.clone(),
        args: vec!["echo-upstream".into()],
    };
    let mut opts = rig::local::LocalOptions::new(build.keygate.clone(), echo);
    opts.keygate_envoy_module = build.module.clone();
    opts.mode = mode;
    opts.publish = Some(rig::local::delivery::PublishCommand {
        program: xtask,
        args: vec!["publish-secret".into()],
    });
    Ok(opts)
}

pub(crate) fn up(profile: Profile, mode: rig::contract::modes::Mode, keygate: bool) -> Result<()> {
    profile.require_local()?;
    stop_on_interrupt()?;
    let mut opts = if keygate {
        local_options(mode)?
    } else {
        // No keygate to build: the binary is never started.
        local_options_with(
            mode,
            &KeygateBuild {
                keygate: PathBuf::from("keygate"),
                module: PathBuf::from("libkeygate_envoy.so"),
            },
        )?
    };
    opts.keygate = keygate;
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
    if keygate {
        println!("  gateway   {}", env.gateway_url);
    } else {
        println!("  gateway   none: yours, asking your validator (--no-keygate)");
    }
    for (group, prefix) in &env.groups {
        println!("              {prefix}  ({group})");
    }
    println!(
        "  vault     {}  (root token in {})",
        env.vault_addr,
        env.root_token_file.display()
    );
    if let Some(token) = &env.validator_token_file {
        println!(
            "  validator token in {} (read-only: the gateway role's policies); keys at {}/data/<groupId>/<selector>, field `key`",
            token.display(),
            env.kv_mount
        );
        println!(
            "  openapi   {}  (the groups' documents)",
            rig::base::paths::scenarios_dir().join("apis").display()
        );
    } else {
        println!(
            "  keygate   {}  (/readyz, /healthz, /metrics; forward-auth at /auth)",
            env.keygate_url
        );
    }
    if let Some(grpc) = &env.keygate_grpc {
        println!("  keygate   {grpc}  (gRPC: Envoy ext_authz Authorization/Check)");
    }
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
    if keygate {
        println!(
            "your own gateway: point it at keygate above, then `cargo xtask e2e --gateway-url <name>=<its url>` (docs/gateways.md#a-gateway-you-run-yourself)"
        );
    } else {
        println!(
            "your own validator: point it at Vault above, your gateway at it, then `cargo xtask e2e --gateway-url <name>=<its url> --expect <name>=<file>` (docs/gateways.md#a-validator-you-run-yourself)"
        );
    }
    println!("stop with `cargo xtask down`");
    run.supervisor.detach();
    Ok(())
}
