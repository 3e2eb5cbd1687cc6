//! keygate inside Envoy, end to end with real components: a dev OpenBao
//! (file and socket audit devices), keygate following its audit stream,
//! and the pinned Envoy with the `keygate-envoy` dynamic module loaded
//! (`rig::process::envoy_module`), one route per API group, in front of
//! the echo upstream (which shows the headers the upstream received).
//!
//! The module library is `target/debug/libkeygate_envoy.so` (built here
//! with `cargo build -p keygate-envoy` when missing) or
//! `$KEYRIG_KEYGATE_ENVOY`; keygate is the `Keygate` component's binary.
//! Without the pinned Envoy the case is recorded as skipped (`CaseGuard`)
//! and says so on stderr; it never passes without having run. bao missing
//! is a failure, as in the other tests here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use apikey::{ApiKey, KeyRecord};
use rig::base::run::RunDir;
use rig::base::wait::{Probe, wait_until};
use rig::contract::case::CaseGuard;
use rig::process::components::{DevVault, Keygate};
use rig::process::envoy_module;
use rig::process::supervisor::{Readiness, StopMode, Supervisor};
use rig::vault::client::VaultClient;

const KV_MOUNT: &str = "api-portal-keys";
const BILLING: &str = "billing-api";
const ANIMALS: &str = "animal-rescue-api";
/// Long, so that only an invalidation can explain a revoked key's refusal
/// within the waits below (which are far shorter).
const POSITIVE_TTL: Duration = Duration::from_secs(60);
/// The module keeps keygate's `unknown` this long: far past the case, so
/// an unknown key that passes soon after it is issued shows the feed at
/// work, not the TTL ending.
const NEGATIVE_TTL: Duration = Duration::from_secs(60);
/// The revocation wait: keygate drops the key within milliseconds of
/// Vault's audit entry; this only bounds a broken pipeline.
const REVOCATION_DEADLINE: Duration = Duration::from_secs(10);

const BILLING_API: &str = "\
openapi: 3.0.1
groupId: billing-api
servers:
  - url: /billing
paths:
  /invoices: {}
  /invoices/{invoiceId}: {}
";

const ANIMALS_API: &str = "\
openapi: 3.0.1
groupId: animal-rescue-api
servers:
  - url: /animal-rescue
paths:
  /animals: {}
";

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn free() -> SocketAddr {
    loopback(rig::base::ports::free_port().unwrap())
}

/// The pinned Envoy, or `None` with the case marked skipped when it is not
/// installed and a run records the skip. Without a run to record it in (the
/// unit stage, plain `cargo test`) a missing Envoy fails, as a missing bao
/// does: libtest would count a bare return as passed. Any other problem (an
/// override that does not run) fails.
fn envoy_or_skip(case: &mut CaseGuard) -> Option<PathBuf> {
    let resolved = rig::process::tools::Tools::load_default()
        .unwrap()
        .resolve("envoy");
    match resolved {
        Ok(tool) => Some(tool.path),
        Err(err @ rig::process::tools::ToolError::Missing { .. })
            if rig::base::run::current_run_dir().is_none() =>
        {
            panic!(
                "this test needs the pinned Envoy and cannot find it ({err}): `cargo xtask tools` installs it"
            )
        }
        Err(err @ rig::process::tools::ToolError::Missing { .. }) => {
            let reason = err.to_string();
            eprintln!("SKIPPED keygate_envoy: {reason}");
            case.skip(reason);
            None
        }
        Err(err) => panic!("cannot use the pinned Envoy: {err:#}"),
    }
}

/// The module library: the override, or the workspace's debug build
/// (built now when missing).
fn module_library() -> PathBuf {
    let module = envoy_module::default_module();
    if !module.is_file() && std::env::var_os(envoy_module::MODULE_VAR).is_none() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "keygate-envoy"])
            .current_dir(rig::base::paths::workspace_root())
            .status()
            .expect("running cargo build -p keygate-envoy");
        assert!(status.success(), "cargo build -p keygate-envoy failed");
    }
    assert!(
        module.is_file(),
        "no module library at {}: build it with `cargo build -p keygate-envoy` or set {}",
        module.display(),
        envoy_module::MODULE_VAR
    );
    module
}

struct Stack {
    run: RunDir,
    supervisor: Supervisor,
    root: VaultClient,
    keygate: String,
    gateway: String,
    /// The same routes, the module asking a cluster with no host.
    gateway_nowhere: String,
    _dir: tempfile::TempDir,
}

impl Stack {
    async fn start(envoy: &Path, module: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create_in(dir.path()).unwrap();
        let mut supervisor = Supervisor::new(&run);
        let bao = rig::process::tools::pinned_for_tests("bao");

        // Vault, with the file device beside the socket one (Vault serves
        // while any audit device works, and keygate starts after Vault).
        let audit = free();
        let bao_config = run.path().join("bao.hcl");
        std::fs::write(
            &bao_config,
            format!(
                "{}{}",
                rig::vault::audit::file_audit_config(&run.logs_dir().join("vault-audit.log")),
                rig::vault::audit::socket_audit_config(audit)
            ),
        )
        .unwrap();
        let vault = DevVault::default()
            .with_config_file(&bao_config)
            .start(&bao, &run, &mut supervisor)
            .await
            .unwrap();
        let root = vault.root.clone();
        root.enable_kv2(KV_MOUNT).await.unwrap();
        root.enable_auth("approle", "approle").await.unwrap();
        root.put_policy(
            "keygate-read",
            &format!(r#"path "{KV_MOUNT}/data/*" {{ capabilities = ["read"] }}"#),
        )
        .await
        .unwrap();
        root.approle_write_role(
            "keygate",
            &["keygate-read".to_owned()],
            Duration::from_secs(3600),
            Duration::from_secs(7200),
        )
        .await
        .unwrap();
        let role_id = root.approle_role_id("keygate").await.unwrap();
        let secret_id = root
            .approle_new_secret_id("keygate")
            .await
            .unwrap()
            .secret_id
            .expose()
            .to_owned();
        rig::base::redact::register_in_run(run.path(), &secret_id).unwrap();
        run.write_secret("role-id", &role_id).unwrap();
        run.write_secret("secret-id", &secret_id).unwrap();
        std::fs::write(run.path().join("billing.yaml"), BILLING_API).unwrap();
        std::fs::write(run.path().join("animals.yaml"), ANIMALS_API).unwrap();

        // keygate, following Vault's audit stream.
        let http = free();
        let keygate_config = run.path().join("keygate.yaml");
        std::fs::write(
            &keygate_config,
            format!(
                "\
listen:
  grpc: {grpc}
  http: {http}
vault:
  address: {address}
  kv_mount: {KV_MOUNT}
  auth:
    approle:
      role_id_file: {secrets}/role-id
      secret_id_file: {secrets}/secret-id
apis:
  - {apis}/billing.yaml
  - {apis}/animals.yaml
cache:
  positive_ttl: 60s
  negative_ttl: 1s
  resurrect_ttl: 0s
invalidation:
  listen: {audit}
",
                grpc = free(),
                address = vault.addr,
                secrets = run.secrets_dir().display(),
                apis = run.path().display(),
            ),
        )
        .unwrap();
        let keygate = Keygate::default()
            .with_config(&keygate_config, http)
            .start(&run, &mut supervisor)
            .await
            .unwrap();

        // The upstream: echoes what it received.
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_port = upstream.local_addr().unwrap().port();
        tokio::spawn(rig::process::echo::serve_on(upstream));

        // Envoy with the module.
        let listen = free();
        let listen_nowhere = free();
        let admin = free();
        let envoy_config = run.path().join("envoy.yaml");
        std::fs::write(
            &envoy_config,
            envoy_yaml(listen, listen_nowhere, admin, http, upstream_port),
        )
        .unwrap();
        // The module's debug lines too (a decision per request, by
        // selector; a stream Envoy ends inside one of the filter's hooks).
        let component = envoy_module::command("envoy-module", envoy, &envoy_config, module, "info")
            .unwrap()
            .args(["--component-log-level", "dynamic_modules:debug"])
            .current_dir(run.path());
        supervisor
            .start(
                component,
                Readiness::http(format!("http://{admin}/ready"), 200),
            )
            .await
            .unwrap();
        Self {
            run,
            supervisor,
            root,
            keygate,
            gateway: format!("http://{listen}"),
            gateway_nowhere: format!("http://{listen_nowhere}"),
            _dir: dir,
        }
    }

    /// A key written into Vault the documented way, registered for redaction.
    async fn issue(&self, group: &str, owner: &str) -> ApiKey {
        let key = ApiKey::generate();
        self.issue_key(group, &key, owner).await;
        key
    }

    /// `key` written into Vault the documented way, registered for redaction.
    async fn issue_key(&self, group: &str, key: &ApiKey, owner: &str) {
        rig::base::redact::register_in_run(self.run.path(), key.expose()).unwrap();
        let record = serde_json::to_value(KeyRecord::for_key(key, owner)).unwrap();
        self.root
            .kv2_put(KV_MOUNT, &format!("{group}/{}", key.selector()), &record)
            .await
            .unwrap();
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.run.logs_dir().join(format!("{name}.log"))).unwrap()
    }

    async fn keygate_metric(&self, series: &str) -> Option<f64> {
        let text = reqwest::get(format!("{}/metrics", self.keygate))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
    }
}

/// Routes `/billing` and `/animal-rescue` to the upstream, each with its
/// group in the module's per-route config, and `/panic` with the module's
/// fault injection; any other path has none.
fn envoy_yaml(
    listen: SocketAddr,
    listen_nowhere: SocketAddr,
    admin: SocketAddr,
    keygate: SocketAddr,
    upstream: u16,
) -> String {
    let route = |prefix: &str, config: &str| {
        format!(
            r#"
                        - match: {{ prefix: "{prefix}" }}
                          route: {{ cluster: upstream }}
                          typed_per_filter_config:
                            keygate:
                              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute
                              dynamic_module_config: {{ name: {module}, do_not_close: true }}
                              filter_name: keygate
                              filter_config:
                                "@type": type.googleapis.com/google.protobuf.StringValue
                                value: '{config}'"#,
            module = envoy_module::MODULE_NAME,
        )
    };
    let routes = format!(
        "{}{}{}",
        route("/billing", &format!(r#"{{"group":"{BILLING}"}}"#)),
        route("/animal-rescue", &format!(r#"{{"group":"{ANIMALS}"}}"#)),
        // The module's fault injection: its request-headers hook panics.
        route(
            "/panic",
            &format!(r#"{{"group":"{BILLING}","fault":"panic"}}"#)
        ),
    );
    let listener = |name: &str, port: u16, filter_config: serde_json::Value| {
        format!(
            r#"
    - name: {name}
      address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: {name}
                normalize_path: true
                merge_slashes: true
                path_with_escaped_slashes_action: REJECT_REQUEST
                route_config:
                  name: scenarios
                  virtual_hosts:
                    - name: gateway
                      domains: ["*"]
                      routes:{routes}
                        - match: {{ prefix: "/" }}
                          route: {{ cluster: upstream }}
                http_filters:
                  - name: keygate
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
                      dynamic_module_config: {{ name: {module}, do_not_close: true }}
                      filter_name: keygate
                      filter_config:
                        "@type": type.googleapis.com/google.protobuf.StringValue
                        value: '{filter_config}'
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"#,
            module = envoy_module::MODULE_NAME,
        )
    };
    let gateway = listener(
        "gateway",
        listen.port(),
        serde_json::json!({
            "cluster": "keygate_http",
            "invalidations": keygate.to_string(),
            "positive_ttl_ms": POSITIVE_TTL.as_millis() as u64,
            "negative_ttl_ms": NEGATIVE_TTL.as_millis() as u64,
            "callout_timeout_ms": 2000,
        }),
    );
    // The module asking through a cluster with no host at all (as for a
    // keygate every health check marked down): Envoy 1.40 refuses to start
    // the callout ("cannot create request").
    let nowhere = listener(
        "nowhere",
        listen_nowhere.port(),
        serde_json::json!({ "cluster": "keygate_nowhere", "callout_timeout_ms": 2000 }),
    );
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }} }}
static_resources:
  listeners:{gateway}{nowhere}
  clusters:
    - name: keygate_http
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: keygate_http
        endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {keygate_port} }} }} }} }}] }}]
    - name: keygate_nowhere
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: keygate_nowhere
        endpoints: []
    - name: upstream
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: upstream
        endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {upstream} }} }} }} }}] }}]
"#,
        admin_port = admin.port(),
        keygate_port = keygate.port(),
    )
}

/// One request through Envoy: status, `x-keyrig-reason`, content type, body.
#[derive(Debug)]
struct Answer {
    status: u16,
    reason: Option<String>,
    content_type: Option<String>,
    body: String,
}

impl Answer {
    /// The headers the upstream received (the echo's JSON).
    fn upstream_headers(&self) -> serde_json::Value {
        let echo: serde_json::Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("not the echo's answer ({err}): {}", self.body));
        echo["headers"].clone()
    }
}

async fn ask(gateway: &str, path: &str, key: Option<&str>, extra: &[(&str, &str)]) -> Answer {
    let mut request = reqwest::Client::new().get(format!("{gateway}{path}"));
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    Answer {
        status: response.status().as_u16(),
        reason: header("x-keyrig-reason"),
        content_type: header("content-type"),
        body: response.text().await.unwrap(),
    }
}

fn assert_denied(answer: &Answer, status: u16, reason: &str) {
    assert_eq!(
        (answer.status, answer.reason.as_deref()),
        (status, Some(reason)),
        "{answer:?}"
    );
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    assert_eq!(answer.body, format!(r#"{{"reason":"{reason}"}}"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_module_validates_from_its_table_follows_revocations_and_fails_closed() {
    let mut case = CaseGuard::start("keygate-envoy", "module end to end");
    let Some(envoy) = envoy_or_skip(&mut case) else {
        return;
    };
    let module = module_library();
    let build = envoy_module::check(&module, &envoy).unwrap();
    assert_eq!(
        (build.abi.as_str(), build.envoy.as_str()),
        ("v0.2.0", "1.40")
    );
    let mut stack = Stack::start(&envoy, &module).await;
    let envoy_log = stack.log("envoy-module");
    assert!(
        envoy_log.contains("Dynamic module ABI version v0.2.0 matched."),
        "{envoy_log}"
    );
    assert!(!envoy_log.contains("is deprecated"), "{envoy_log}");

    // The module's thread follows keygate's feed.
    wait_until(
        "keygate to count the module as a follower of its invalidation feed",
        Duration::from_secs(15),
        async || {
            let followers = stack
                .keygate_metric("keygate_invalidation_feed_followers")
                .await;
            anyhow::Ok(match followers {
                Some(n) if n >= 1.0 => Probe::Ready(()),
                other => Probe::seen(format!("followers: {other:?}")),
            })
        },
    )
    .await
    .unwrap();
    // ...and has applied the feed's first line (`stale`), which it logs
    // right after: one applied after the first answer below would make
    // that answer stale and cost keygate a second decision (seen with
    // Envoy under valgrind, where the module's thread is slow).
    wait_until(
        "the module to apply the first line of keygate's invalidation feed",
        Duration::from_secs(15),
        async || {
            let log = stack.log("envoy-module");
            anyhow::Ok(
                if log.contains("keygate-envoy: following keygate's invalidation feed") {
                    Probe::Ready(())
                } else {
                    Probe::seen(format!(
                        "no 'following' line in the module's log yet ({} lines)",
                        log.lines().count()
                    ))
                },
            )
        },
    )
    .await
    .unwrap();

    let billing = stack.issue(BILLING, "user-billing").await;
    let animals = stack.issue(ANIMALS, "user-animals").await;
    let gateway = stack.gateway.clone();

    // A valid key: 200, with our identity headers, not the client's, nor
    // the client's spelled with underscores: this Envoy keeps its default
    // `headers_with_underscores_action: ALLOW`, as someone's own may, so
    // the module removes those itself.
    let forged = [
        ("x-keyrig-owner", "mallory"),
        ("x-keyrig-group", "admin"),
        ("x_keyrig_owner", "mallory"),
        ("x-keyrig_owner", "mallory"),
        ("x_keyrig-group", "admin"),
    ];
    let allowed = ask(
        &gateway,
        "/billing/invoices/7",
        Some(billing.expose()),
        &forged,
    )
    .await;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    let upstream = allowed.upstream_headers();
    assert_eq!(upstream["x-keyrig-owner"], "user-billing", "{upstream}");
    assert_eq!(upstream["x-keyrig-group"], BILLING, "{upstream}");
    for (name, _) in &forged[2..] {
        assert!(
            upstream.get(name).is_none(),
            "{name} reached the upstream: {upstream}"
        );
    }

    // Served from the module's table now: keygate decides nothing more,
    // five requests in a row. Polled: the feed's drop lines for the key's
    // own write (Vault's request and response audit entries) may reach the
    // module after that first answer and make it ask once more (seen with
    // Envoy under valgrind, where the module's thread is slow), which is
    // the module doing its job, not a miss.
    let decided = "keygate_decisions_total{outcome=\"allow\",protocol=\"http\"}";
    wait_until(
        "five requests in a row served from the module's table",
        Duration::from_secs(15),
        async || {
            let before = stack.keygate_metric(decided).await;
            for _ in 0..5 {
                let again = ask(&gateway, "/billing/invoices", Some(billing.expose()), &[]).await;
                assert_eq!(again.status, 200, "{again:?}");
            }
            let after = stack.keygate_metric(decided).await;
            anyhow::Ok(match (before, after) {
                (Some(before), Some(after)) if before == after => Probe::Ready(()),
                other => Probe::seen(format!(
                    "keygate's allow decisions before and after: {other:?}"
                )),
            })
        },
    )
    .await
    .unwrap();

    // Wrong keys: keygate's status, reason and body.
    let wrong_verifier = format!("{}{}", billing.selector(), "0".repeat(32));
    assert_denied(
        &ask(&gateway, "/billing/invoices", Some(&wrong_verifier), &[]).await,
        401,
        "mismatch",
    );
    let unknown = ApiKey::generate();
    rig::base::redact::register_in_run(stack.run.path(), unknown.expose()).unwrap();
    let unknown_decided = "keygate_decisions_total{outcome=\"unknown\",protocol=\"http\"}";
    let asked_before = stack.keygate_metric(unknown_decided).await.unwrap();
    assert_denied(
        &ask(&gateway, "/billing/invoices", Some(unknown.expose()), &[]).await,
        401,
        "unknown",
    );
    // keygate's `unknown` is kept: asking again costs keygate nothing...
    for _ in 0..3 {
        assert_denied(
            &ask(&gateway, "/billing/invoices/9", Some(unknown.expose()), &[]).await,
            401,
            "unknown",
        );
    }
    assert_eq!(
        stack.keygate_metric(unknown_decided).await.unwrap(),
        asked_before + 1.0,
        "keygate was asked about the unknown key more than once"
    );
    assert_denied(
        &ask(&gateway, "/billing/invoices", None, &[]).await,
        401,
        "missing",
    );
    assert_denied(
        &ask(&gateway, "/billing/invoices", Some("not-a-key"), &[]).await,
        401,
        "malformed",
    );
    assert_denied(
        &ask(&gateway, "/elsewhere", Some(billing.expose()), &[]).await,
        403,
        "no-route",
    );

    // A panic in the module is a refusal, and Envoy goes on serving.
    assert_denied(
        &ask(&gateway, "/panic", Some(billing.expose()), &[]).await,
        503,
        "module-error",
    );
    let after_panic = ask(&gateway, "/billing/invoices", Some(billing.expose()), &[]).await;
    assert_eq!(after_panic.status, 200, "{after_panic:?}");
    assert!(
        stack
            .log("envoy-module")
            .contains("the request headers hook panicked"),
        "{}",
        stack.log("envoy-module")
    );

    // keygate's cluster without a host: `http_callout` refuses to start
    // (Envoy 1.40 answers "cannot create request" without calling the
    // done-hook), every request is refused, the valid key's too (this
    // listener's module never asked keygate), and Envoy goes on serving
    // both listeners.
    let nowhere = &stack.gateway_nowhere;
    let refusing = std::time::Instant::now();
    for n in 0..50 {
        let key = if n % 2 == 0 {
            billing.expose().to_owned()
        } else {
            ApiKey::generate().expose().to_owned()
        };
        let path = if n % 3 == 0 {
            "/animal-rescue/animals"
        } else {
            "/billing/invoices"
        };
        let answer = ask(nowhere, path, Some(&key), &[]).await;
        assert_denied(&answer, 503, "keygate-unavailable");
    }
    let after_nowhere = ask(&gateway, "/billing/invoices", Some(billing.expose()), &[]).await;
    assert_eq!(after_nowhere.status, 200, "{after_nowhere:?}");
    // Said, but not once per request: at most a line per 10 s.
    let said = stack
        .log("envoy-module")
        .matches("cannot ask keygate through cluster \"keygate_nowhere\" (no healthy host")
        .count();
    let at_most = 1 + refusing.elapsed().as_secs() / 10;
    assert!(
        (1..=at_most as usize).contains(&said),
        "the module said why it refused {said} times for 50 requests (expected 1 to {at_most}): {}",
        stack.log("envoy-module")
    );

    // Another group's key: valid on its own routes, refused on billing's.
    let own = ask(
        &gateway,
        "/animal-rescue/animals",
        Some(animals.expose()),
        &[],
    )
    .await;
    assert_eq!(own.status, 200, "{own:?}");
    assert_eq!(own.upstream_headers()["x-keyrig-group"], ANIMALS);
    assert_denied(
        &ask(&gateway, "/billing/invoices", Some(animals.expose()), &[]).await,
        403,
        "wrong-group",
    );

    // Revocation: the key is cached in the module for a minute, yet
    // refused within seconds of its deletion in Vault, through Vault's
    // audit stream -> keygate -> keygate's feed -> the module.
    let revoked = stack.issue(BILLING, "user-revoked").await;
    let first = ask(&gateway, "/billing/invoices", Some(revoked.expose()), &[]).await;
    assert_eq!(first.status, 200, "{first:?}");
    stack
        .root
        .kv2_delete_metadata(KV_MOUNT, &format!("{BILLING}/{}", revoked.selector()))
        .await
        .unwrap();
    let refused = wait_until(
        "the revoked key to be refused through Envoy",
        REVOCATION_DEADLINE,
        async || {
            let answer = ask(&gateway, "/billing/invoices", Some(revoked.expose()), &[]).await;
            anyhow::Ok(if answer.status == 200 {
                Probe::seen("200")
            } else {
                Probe::Ready(answer)
            })
        },
    )
    .await
    .unwrap();
    assert_denied(&refused, 401, "unknown");

    // ...and issuing the unknown key ends its absence at once, through the
    // feed (its negative TTL would take a minute).
    stack.issue_key(BILLING, &unknown, "user-late").await;
    let issued = wait_until(
        "the key issued after it was unknown to pass through Envoy",
        REVOCATION_DEADLINE,
        async || {
            let answer = ask(&gateway, "/billing/invoices", Some(unknown.expose()), &[]).await;
            anyhow::Ok(if answer.status == 200 {
                Probe::Ready(answer)
            } else {
                Probe::seen(format!("{} {:?}", answer.status, answer.reason))
            })
        },
    )
    .await
    .unwrap();
    assert_eq!(issued.upstream_headers()["x-keyrig-owner"], "user-late");
    // The revoked key's delete reaches the feed twice (Vault's request
    // and response audit entries), and the second drop takes whatever the
    // module holds for it, `unknown` included, if it lands after the
    // module's read. Both landed before the late key's lines (one ordered
    // stream), which the module has applied by now: asked once more, it
    // holds keygate's `unknown` read after every drop.
    assert_denied(
        &ask(&gateway, "/billing/invoices", Some(revoked.expose()), &[]).await,
        401,
        "unknown",
    );

    // keygate gone: what the module approved still passes, nothing else.
    let never_used = stack.issue(BILLING, "user-never-used").await;
    stack.supervisor.stop("keygate", StopMode::Kill).unwrap();
    let cached = ask(&gateway, "/billing/invoices", Some(billing.expose()), &[]).await;
    assert_eq!(cached.status, 200, "{cached:?}");
    assert_eq!(cached.upstream_headers()["x-keyrig-owner"], "user-billing");
    for key in [&never_used, &ApiKey::generate()] {
        assert_denied(
            &ask(&gateway, "/billing/invoices", Some(key.expose()), &[]).await,
            503,
            "keygate-unavailable",
        );
    }
    // Still refused: the revoked key was dropped, not resurrected; keygate
    // said `unknown` for it since, which the module keeps.
    assert_denied(
        &ask(&gateway, "/billing/invoices", Some(revoked.expose()), &[]).await,
        401,
        "unknown",
    );

    // No key and no verifier in any log.
    for name in ["envoy-module", "keygate"] {
        let log = stack.log(name);
        for key in [&billing, &animals, &revoked, &never_used, &unknown] {
            assert!(
                !log.contains(key.verifier()),
                "{name}'s log shows a verifier"
            );
        }
    }
}

#[test]
fn a_module_for_another_envoy_is_refused_before_envoy_starts() {
    let mut case = CaseGuard::start("keygate-envoy", "version check");
    let Some(envoy) = envoy_or_skip(&mut case) else {
        return;
    };
    // The real module's marker, with another series: what a module built
    // against another Envoy's header carries.
    let module = module_library();
    let bytes = std::fs::read(&module).unwrap();
    let marker = b"keygate-envoy-build abi=v0.2.0 envoy=1.40;";
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("the module carries its build marker");
    let mut other = bytes.clone();
    other[at..at + marker.len()].copy_from_slice(b"keygate-envoy-build abi=v0.3.0 envoy=1.42;");
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("libkeygate_envoy.so");
    std::fs::write(&foreign, other).unwrap();
    let config = dir.path().join("envoy.yaml");
    let Err(err) = envoy_module::command("envoy-module", &envoy, &config, &foreign, "info") else {
        panic!("a module built for Envoy 1.42 must be refused");
    };
    let err = err.to_string();
    assert!(
        err.contains("was built for Envoy 1.42 (dynamic-module ABI v0.3.0)")
            && err.contains("is Envoy 1.40.0"),
        "{err}"
    );
}

/// A stand-in for keygate's invalidation feed: answers each connection
/// with a 200 and a ping every second until the connection closes,
/// counting connections opened and closed.
struct FeedStandIn {
    addr: SocketAddr,
    opened: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    closed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FeedStandIn {
    async fn start() -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let opened = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        tokio::spawn({
            let (opened, closed) = (opened.clone(), closed.clone());
            async move {
                while let Ok((conn, _)) = listener.accept().await {
                    opened.fetch_add(1, Ordering::SeqCst);
                    let closed = closed.clone();
                    tokio::spawn(async move {
                        let (mut read, mut write) = conn.into_split();
                        let mut request = [0u8; 1024];
                        let _ = read.read(&mut request).await;
                        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n\r\n";
                        let _ = write.write_all(head.as_bytes()).await;
                        let pings = tokio::spawn(async move {
                            while write.write_all(b"{\"type\":\"ping\"}\n").await.is_ok() {
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        });
                        while matches!(read.read(&mut request).await, Ok(n) if n > 0) {}
                        pings.abort();
                        closed.fetch_add(1, Ordering::SeqCst);
                    });
                }
            }
        });
        Self {
            addr,
            opened,
            closed,
        }
    }

    fn opened(&self) -> usize {
        self.opened.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn closed(&self) -> usize {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Envoy's LDS file with one listener (or none): the module's filter on
/// its route, both its configs with `do_not_close: false`, as a user's
/// config may have them, so Envoy `dlclose`s the module when the listener
/// goes. `feed`: the module follows an invalidation feed there.
fn closable_listener_lds(listener: Option<(&str, SocketAddr)>, feed: Option<SocketAddr>) -> String {
    let Some((name, addr)) = listener else {
        return "resources: []\n".to_owned();
    };
    let module = envoy_module::MODULE_NAME;
    let mut filter_config = serde_json::json!({ "cluster": "keygate_http" });
    if let Some(feed) = feed {
        filter_config["invalidations"] = feed.to_string().into();
    }
    format!(
        r#"resources:
  - "@type": type.googleapis.com/envoy.config.listener.v3.Listener
    name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
      - filters:
          - name: envoy.filters.network.http_connection_manager
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
              stat_prefix: {name}
              route_config:
                name: {name}
                virtual_hosts:
                  - name: gateway
                    domains: ["*"]
                    routes:
                      - match: {{ prefix: "/billing" }}
                        route: {{ cluster: keygate_http }}
                        typed_per_filter_config:
                          keygate:
                            "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute
                            dynamic_module_config: {{ name: {module}, do_not_close: false }}
                            filter_name: keygate
                            filter_config:
                              "@type": type.googleapis.com/google.protobuf.StringValue
                              value: '{{"group":"{BILLING}"}}'
              http_filters:
                - name: keygate
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
                    dynamic_module_config: {{ name: {module}, do_not_close: false }}
                    filter_name: keygate
                    filter_config:
                      "@type": type.googleapis.com/google.protobuf.StringValue
                      value: '{filter_config}'
                - name: envoy.filters.http.router
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#,
        port = addr.port(),
    )
}

/// Replaces Envoy's LDS file the way Envoy watches for: a move into place.
fn write_lds(path: &Path, text: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// Whether `pid` has a mapping of the module's library.
fn maps_module(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .contains(&format!("lib{}.so", envoy_module::MODULE_NAME))
}

/// Waits until Envoy has removed `removed` listeners in all and none is
/// draining (then their configs, and the module's in them, are destroyed).
async fn wait_listeners_removed(admin: SocketAddr, removed: u64) {
    wait_until(
        "Envoy to finish removing the listener",
        Duration::from_secs(60),
        async || {
            let text = reqwest::get(format!(
                "http://{admin}/stats?filter=^listener_manager\\.(listener_removed|total_listeners_draining)$"
            ))
            .await?
            .text()
            .await?;
            let stat = |name: &str| {
                text.lines()
                    .find_map(|line| line.strip_prefix(name)?.strip_prefix(": ")?.parse::<u64>().ok())
            };
            let seen = (
                stat("listener_manager.listener_removed"),
                stat("listener_manager.total_listeners_draining"),
            );
            anyhow::Ok(match seen {
                (Some(n), Some(0)) if n >= removed => Probe::Ready(()),
                other => Probe::seen(format!("removed, draining: {other:?}")),
            })
        },
    )
    .await
    .unwrap();
}

/// Without `do_not_close: true` Envoy `dlclose`s the module when the last
/// config naming it goes, here with a listener an LDS update removes, once
/// with no feed (then nothing else holds the library: glibc keeps one whose
/// threads registered thread-local destructors, as the feed thread's Rust
/// runtime does, which would hide a missing pin) and once while the
/// module's feed thread follows a feed. The library pins itself at program
/// init, so it stays mapped, Envoy survives the thread (which may still be
/// in the library's code when Envoy lets go of it), and a listener added
/// afterwards runs the module again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_envoy_may_unload_stays_loaded_when_its_listener_goes() {
    let mut case = CaseGuard::start("keygate-envoy", "module kept loaded without do_not_close");
    let Some(envoy) = envoy_or_skip(&mut case) else {
        return;
    };
    let module = module_library();
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::create_in(dir.path()).unwrap();
    let mut supervisor = Supervisor::new(&run);
    let feed = FeedStandIn::start().await;

    // The LDS file lives in a directory of its own: Envoy watches its
    // directory, and a log written beside it would wake Envoy on every line.
    let lds_dir = run.path().join("lds");
    std::fs::create_dir(&lds_dir).unwrap();
    let lds = lds_dir.join("lds.yaml");
    write_lds(
        &lds,
        &closable_listener_lds(Some(("unfollowed", free())), None),
    );
    let admin = free();
    let envoy_config = run.path().join("envoy.yaml");
    std::fs::write(
        &envoy_config,
        format!(
            r#"node: {{ id: keyrig-test, cluster: keyrig-test }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }} }}
dynamic_resources:
  lds_config:
    resource_api_version: V3
    path_config_source: {{ path: {lds} }}
static_resources:
  clusters:
    - name: keygate_http
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: keygate_http
        endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {feed_port} }} }} }} }}] }}]
"#,
            admin_port = admin.port(),
            lds = lds.display(),
            feed_port = feed.addr.port(),
        ),
    )
    .unwrap();
    // A removed listener drains for a second, not Envoy's default ten
    // minutes, before its configs (and the module's) are destroyed.
    let component = envoy_module::command("envoy-module", &envoy, &envoy_config, &module, "info")
        .unwrap()
        .args(["--drain-time-s", "1"])
        .current_dir(run.path());
    let pid = supervisor
        .start(
            component,
            Readiness::http(format!("http://{admin}/ready"), 200),
        )
        .await
        .unwrap();
    let log = || std::fs::read_to_string(run.logs_dir().join("envoy-module.log")).unwrap();
    assert!(maps_module(pid), "the module is not mapped in Envoy");
    assert!(
        log().contains("keygate-envoy: the module keeps itself loaded"),
        "{}",
        log()
    );

    // The listener goes, and with it every config naming the module:
    // Envoy dlcloses it, which unloaded it before it pinned itself.
    write_lds(&lds, &closable_listener_lds(None, None));
    wait_listeners_removed(admin, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        maps_module(pid),
        "Envoy unloaded the module: it did not keep itself loaded"
    );

    // Again with the module's thread following a feed.
    write_lds(
        &lds,
        &closable_listener_lds(Some(("followed", free())), Some(feed.addr)),
    );
    wait_until(
        "the module's thread to follow the feed",
        Duration::from_secs(30),
        async || {
            anyhow::Ok(
                if log().contains("keygate-envoy: following keygate's invalidation feed") {
                    Probe::Ready(())
                } else {
                    Probe::seen(format!("{} feed connection(s)", feed.opened()))
                },
            )
        },
    )
    .await
    .unwrap();
    // The filter config's destroy hook tells the thread to end (its
    // connection closes) and does not wait for it; Envoy lets go of the
    // module right after.
    write_lds(&lds, &closable_listener_lds(None, None));
    wait_listeners_removed(admin, 2).await;
    wait_until(
        "the removed listener's module config to end its feed thread",
        Duration::from_secs(30),
        async || {
            anyhow::Ok(match feed.closed() {
                0 => Probe::seen("the feed connection is open"),
                _ => Probe::Ready(()),
            })
        },
    )
    .await
    .unwrap();
    // A crash under the thread would take a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        rig::process::supervisor::is_alive(pid),
        "Envoy died after the listener went: {}",
        log()
    );
    assert!(maps_module(pid), "Envoy unloaded the module");

    // A listener added afterwards runs the module (still loaded, so not
    // initialised again), whose new thread follows the feed.
    let again = free();
    write_lds(
        &lds,
        &closable_listener_lds(Some(("again", again)), Some(feed.addr)),
    );
    let gateway = format!("http://{again}");
    wait_until(
        "the module to answer on a listener added after the removals",
        Duration::from_secs(60),
        async || {
            let answer = reqwest::Client::new()
                .get(format!("{gateway}/billing/invoices"))
                .send()
                .await;
            anyhow::Ok(match answer {
                Ok(answer) if answer.status() == 401 => Probe::Ready(()),
                Ok(answer) => Probe::seen(answer.status()),
                Err(err) => Probe::seen(err),
            })
        },
    )
    .await
    .unwrap();
    assert_denied(
        &ask(&gateway, "/billing/invoices", None, &[]).await,
        401,
        "missing",
    );
    wait_until(
        "the new listener's module config to follow the feed",
        Duration::from_secs(30),
        async || {
            anyhow::Ok(match feed.opened() {
                n if n >= 2 => Probe::Ready(()),
                n => Probe::seen(format!("{n} feed connection(s)")),
            })
        },
    )
    .await
    .unwrap();
    assert!(rig::process::supervisor::is_alive(pid));
    assert_eq!(
        log()
            .matches("keygate-envoy: the module keeps itself loaded")
            .count(),
        1,
        "the module was initialised again: {}",
        log()
    );
}
