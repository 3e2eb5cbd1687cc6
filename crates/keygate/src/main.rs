//! `keygate --config <file> [--check]`.
//!
//! Exit codes: 0 after `--check` or a clean shutdown, 2 for a config problem
//! (the config file, an OpenAPI document or a secret file), 1 for anything
//! else that stops startup (Vault rejected the login, a root token, a port
//! already in use).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use keygate::cache::RecordCache;
use keygate::config::{Config, KeysConfig, UpstreamHeader};
use keygate::connections::{self, GuardedListener};
use keygate::decision::Validator;
use keygate::grpc::ExtAuthz;
use keygate::http;
use keygate::invalidation::AuditListener;
use keygate::keys_file::{FileModeReadiness, KeysFiles};
use keygate::metrics::Metrics;
use keygate::read_limit::LimitedSource;
use keygate::refs::{HeaderValue, UpstreamHeaders};
use keygate::routes::Routes;
use keygate::vault::Vault;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

/// Validates Tanzu API-portal API keys against Vault for Envoy ext_authz
/// (gRPC) and HTTP forward-auth gateways.
#[derive(Debug, Parser)]
#[command(name = "keygate", version)]
struct Args {
    /// The YAML config file; relative paths in it resolve against its directory.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Only validate the config and load the OpenAPI documents, then exit.
    #[arg(long)]
    check: bool,
}

/// How long in-flight requests get to finish after SIGTERM / Ctrl-C.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let args = Args::parse();
    // An invalid RUST_LOG was replaced by `info` without a word: someone
    // who asked for debug lines did not learn why none came.
    let (filter, bad_filter) = match std::env::var_os("RUST_LOG") {
        None => (EnvFilter::new("info"), None),
        Some(_) => match EnvFilter::try_from_default_env() {
            Ok(filter) => (filter, None),
            Err(err) => (EnvFilter::new("info"), Some(err)),
        },
    };
    tracing_subscriber::fmt()
        // Logs usually go to a file (the harness keeps one per component).
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Some(err) = bad_filter {
        warn!(
            "RUST_LOG is not a log filter keygate can use ({err}): logging at `info` instead; \
             write it like `info`, `keygate=debug` or `warn,keygate=info`"
        );
    }

    let loaded = keygate::config::load(&args.config)
        .and_then(|config| Routes::load(&config.file, &config.apis).map(|routes| (config, routes)));
    let (config, routes) = match loaded {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
    if let KeysConfig::File { files, .. } = &config.keys {
        let missing: Vec<&str> = routes
            .groups()
            .iter()
            .map(String::as_str)
            .filter(|g| !files.iter().any(|(group, _, _)| group == g))
            .collect();
        if !missing.is_empty() {
            eprintln!(
                "{}: keys.files has no file for API group(s) {}: add `keys.files.<groupId>: <path>` for each",
                config.file.display(),
                missing.join(", ")
            );
            return ExitCode::from(2);
        }
    }
    if args.check {
        println!(
            "{}: OK: {} OpenAPI document(s), {} route(s), groups: {}",
            config.file.display(),
            config.apis.len(),
            routes.len(),
            routes.groups().join(", ")
        );
        // Each document's base path, so a `servers` missing or misspelt
        // (the root, OpenAPI's default) is seen before it routes.
        for base in routes.bases() {
            println!(
                "  {}: group {}, base path {}{}",
                base.document,
                base.group,
                base.path(),
                if base.declared {
                    ""
                } else {
                    " (no servers[0].url: OpenAPI's default, the root)"
                }
            );
        }
        return ExitCode::SUCCESS;
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("keygate: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(serve(config, routes));
    // The servers have drained by now; what is left (the token maintenance
    // loop, idle Vault connections) need not delay the exit.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("keygate: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config, routes: Routes) -> anyhow::Result<()> {
    // Bound before the login, so a start that cannot listen stops before
    // an AppRole login mints a token that would stay live until its TTL.
    // Requests that come meanwhile wait in the backlog until serving
    // starts, after the first login attempt, as before.
    let file = config.file.display().to_string();
    let grpc_listener = bind(config.listen.grpc, "listen.grpc", &file).await?;
    let http_listener = bind(config.listen.http, "listen.http", &file).await?;
    let audit_listener = match (&config.invalidation, &config.keys) {
        (Some(invalidation), KeysConfig::Vault) => {
            Some(AuditListener::bind(invalidation).await.map_err(|err| {
                cannot_listen(&invalidation.listen, "invalidation.listen", &file, &err)
            })?)
        }
        _ => None,
    };
    for base in routes.bases().iter().filter(|base| !base.declared) {
        warn!(
            document = %base.document,
            group = %base.group,
            "this OpenAPI document has no servers[0].url, so its paths are routed from the root (OpenAPI's default); \
             if the API lives under a base path, add `servers: [{{url: /base}}]`"
        );
    }

    let metrics = Arc::new(Metrics::new());
    let mut vault = Vault::new(&config.vault)?
        .with_config_file(&config.file)
        .with_metrics(metrics.clone());
    if config.keys == KeysConfig::Vault {
        vault = vault.checking_kv_mount();
    }
    let vault = Arc::new(vault);
    match vault.login().await {
        Ok(_) => {}
        Err(err) if err.is_permanent() => {
            anyhow::bail!("cannot start: {err}");
        }
        // Fixed by new credential files, which the watcher below tries at
        // once; meanwhile unready (503), the same pair never sent again
        // within Vault's lockout window (`keygate::rejected`).
        Err(err) if err.is_rejected_credentials() => warn!(
            error = %err,
            "Vault rejected keygate's credentials; answering 503 (not ready) until the credential files change \
             (or, for AppRole, until the same pair is tried again 16 minutes after its rejection)"
        ),
        // Vault may simply not be up yet: serve (503) and keep trying.
        Err(err) => warn!(error = %err, "Vault is not available yet; answering 503 until it is"),
    }
    tokio::spawn(vault.clone().maintain());
    // A rotated role-id/secret-id (a Secret's `..data` swap) lands at once.
    let credential_files = config
        .secret_files()
        .into_iter()
        .map(|f| f.path.clone())
        .collect();
    tokio::spawn(keygate::watch::relogin_on_change(
        vault.clone(),
        credential_files,
    ));

    let groups = routes.groups().join(", ");
    let (records, readiness): (RecordCache, Arc<dyn http::ReadinessSource>) = match &config.keys {
        KeysConfig::Vault => {
            // The read cap sits between the cache and Vault, so it counts
            // only reads that would reach Vault.
            let limited = LimitedSource::new(
                vault.clone(),
                config.limits.vault_reads,
                config.limits.vault_read_queue,
                config.vault.timeout,
                metrics.clone(),
            );
            (
                RecordCache::new(Arc::new(limited), config.cache, metrics.clone()),
                vault.clone(),
            )
        }
        KeysConfig::File {
            files,
            poll_interval,
        } => {
            let files = Arc::new(KeysFiles::new(files.clone()));
            tokio::spawn(files.clone().watch(*poll_interval));
            info!(poll_interval = ?poll_interval, "validating from keys files rendered by a Vault Agent");
            (
                RecordCache::uncached(files.clone(), metrics.clone()),
                Arc::new(FileModeReadiness {
                    files,
                    vault: vault.clone(),
                }),
            )
        }
    };
    match (&config.invalidation, audit_listener) {
        (Some(invalidation), Some(listener)) => {
            info!(listen = %invalidation.listen, "waiting for Vault's socket audit device (invalidation)");
            if invalidation.non_loopback() {
                warn!(
                    listen = %invalidation.listen,
                    "invalidation.listen is not a loopback address (invalidation.allow_non_loopback: true): \
                     whoever can reach it can connect in Vault's place and make keygate read every key again; \
                     keep it reachable from Vault only"
                );
            }
            tokio::spawn(listener.serve(
                config.vault.kv_mount.clone(),
                records.invalidator(),
                metrics.clone(),
            ));
        }
        (Some(_), None) => {
            warn!(
                "invalidation is ignored with keys.source: file (nothing is cached; the files are the source)"
            );
        }
        (None, _) => {}
    }
    let mut validator = Validator::new(routes, records, metrics, config.vault.kv_mount.clone());
    if !config.upstream_headers.is_empty() {
        let headers = config
            .upstream_headers
            .iter()
            .map(|h| match h {
                UpstreamHeader::Plain { name, value } => {
                    (name.clone(), HeaderValue::Plain(value.clone()))
                }
                UpstreamHeader::Ref {
                    name,
                    text,
                    reference,
                    mount,
                    policy,
                } => (
                    name.clone(),
                    HeaderValue::Ref {
                        text: text.clone(),
                        reference: reference.clone(),
                        mount: mount.clone(),
                        policy: *policy,
                        slot: Default::default(),
                    },
                ),
            })
            .collect();
        info!(
            count = config.upstream_headers.len(),
            "adding upstream headers (secret references resolved by their vault's ttl)"
        );
        validator =
            validator.with_upstream_headers(Arc::new(UpstreamHeaders::new(headers, vault.clone())));
    }
    let validator = Arc::new(validator);
    // A throttled warning's count is written with the next line; this
    // writes it when none comes (the last seconds of an outage).
    tokio::spawn({
        let validator = validator.clone();
        async move {
            let mut every = tokio::time::interval(keygate::decision::WARN_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                validator.write_overdue_warnings();
            }
        }
    });

    info!(
        grpc = %config.listen.grpc,
        http = %config.listen.http,
        vault = %vault.address(),
        kv_mount = %vault.kv_mount(),
        groups = %groups,
        "keygate is listening"
    );

    let limits = config.limits;
    let (stop, stopped) = watch::channel(false);
    let grpc_listener = GuardedListener::new(grpc_listener, limits.grpc_connections, None);
    let grpc = tonic::transport::Server::builder()
        .add_service(ExtAuthz::server(validator.clone()))
        .serve_with_incoming_shutdown(
            grpc_listener.into_incoming(),
            until_stopped(stopped.clone()),
        );
    let http_listener = GuardedListener::new(
        http_listener,
        limits.http_connections,
        Some(limits.idle_timeout),
    );
    let http = connections::serve_http(
        http_listener,
        http::router_with_group(
            validator,
            readiness,
            config.gateway_group_file.clone(),
            // Well inside the idle timeout, which would close a quiet feed.
            (limits.idle_timeout / 3).clamp(Duration::from_millis(100), http::FEED_PING),
            limits.invalidation_feed_followers,
        ),
        limits.header_read_timeout,
        until_stopped(stopped),
    );
    let mut grpc = tokio::spawn(grpc);
    let mut http = tokio::spawn(async move {
        http.await;
        Ok::<(), std::convert::Infallible>(())
    });

    tokio::select! {
        () = shutdown_signal() => info!("shutting down"),
        result = &mut grpc => return Err(server_ended("gRPC", result)),
        result = &mut http => return Err(server_ended("HTTP", result)),
    }
    let _ = stop.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        let _ = grpc.await;
        let _ = http.await;
    });
    if drained.await.is_err() {
        warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the grace period; exiting anyway");
    }
    info!("stopped");
    Ok(())
}

async fn bind(addr: std::net::SocketAddr, field: &str, file: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|err| cannot_listen(&addr, field, file, &err))
}

/// Why keygate cannot listen on `what` (`field` of `file`), and what to do,
/// by the kind of error.
fn cannot_listen(
    what: &dyn std::fmt::Display,
    field: &str,
    file: &str,
    err: &std::io::Error,
) -> anyhow::Error {
    use std::io::ErrorKind;
    let why = match err.kind() {
        ErrorKind::AddrInUse => format!(
            "something listens there already (another keygate?): stop it, or change {field}"
        ),
        ErrorKind::AddrNotAvailable => format!(
            "no network interface of this machine has that address: change {field} to one it \
             has (127.0.0.1 for this machine only, 0.0.0.0 for every interface)"
        ),
        ErrorKind::PermissionDenied => format!(
            "permission denied (a port below 1024 needs privileges; a Unix socket, a directory \
             keygate may write in): change {field}, or give keygate that right"
        ),
        ErrorKind::NotFound => {
            format!("its directory does not exist: create the directory, or change {field}")
        }
        _ => format!("change {field}"),
    };
    anyhow::anyhow!("cannot listen on {what} ({field} in {file}): {err}: {why}")
}

fn server_ended<E: std::fmt::Display>(
    which: &str,
    result: Result<Result<(), E>, tokio::task::JoinError>,
) -> anyhow::Error {
    match result {
        Ok(Ok(())) => anyhow::anyhow!("the {which} server stopped unexpectedly"),
        Ok(Err(err)) => anyhow::anyhow!("the {which} server failed: {err}"),
        Err(err) => anyhow::anyhow!("the {which} server task failed: {err}"),
    }
}

async fn until_stopped(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
