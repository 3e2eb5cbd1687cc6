//! Where the gateways of the matrix differ, asserted per gateway. What each
//! gateway is expected to do differently is data: the `[deviations]` of its
//! manifest (`env/gateways/<name>/gateway.toml`, in env.json as
//! `gateway_deviations`); every other gateway is held to the strict
//! expectations. docs/gateways.md's compatibility table is generated from
//! the same manifests. A case that finds a gateway showing a deviation its
//! manifest does not declare, or not showing one it declares, fails naming
//! the gateway and the row. Every case runs once per gateway, like `api_keys`.

use keyrig_e2e::*;
use rig::contract::gateways::{Deviations, row};

/// The assertion group these cases are recorded under: this file's name,
/// and the word `cargo xtask e2e --filter` takes for them.
const ASSERTION_GROUP: &str = "gateways";

const API_GROUP: &str = "animal-rescue-api";

/// keygate's answer for a path no API operation declares.
const NO_ROUTE: (u16, Option<&str>) = (403, Some("no-route"));

/// The gateway's declared deviations (none: the strict expectations).
fn deviations(gateway: &str) -> Deviations {
    env()
        .gateway_deviations
        .get(gateway)
        .cloned()
        .unwrap_or_default()
}

/// What a failure says about one row: the gateway, the row, and what its
/// manifest declares, so the fix (the gateway or the manifest) is clear.
fn row_of(gateway: &str, row: &str, declared: bool) -> String {
    format!(
        "gateway {gateway}, row `{row}`: its manifest {} this deviation (`[deviations.{row}]` of its gateway.toml)",
        if declared {
            "declares"
        } else {
            "does not declare"
        }
    )
}

gateway_matrix! {
    /// The security check of the matrix: a client cannot choose the owner or
    /// group the upstream sees by sending keygate's headers itself.
    #[tokio::test]
    async fn client_supplied_keyrig_headers_never_reach_the_upstream(
        gateway: &str,
    ) {
        let Some((_case, gw)) = case_on(
            gateway,
            ASSERTION_GROUP,
            "client_supplied_keyrig_headers_never_reach_the_upstream",
        ) else {
            return;
        };
        let key = issue_key(API_GROUP, |r| r).await.unwrap();

        // Also spelled with underscores, which upstreams that read headers
        // CGI-style (PHP, WSGI, Rack) take for the same header.
        let reply = gw
            .get_with(
                &api_path(API_GROUP),
                &[
                    ("x-api-key", key.expose()),
                    ("x-keyrig-owner", "mallory"),
                    ("x-keyrig-group", "billing-api"),
                    ("x_keyrig_owner", "mallory"),
                    ("x-keyrig_owner", "mallory"),
                    ("x_keyrig-owner", "mallory"),
                    ("x_keyrig_group", "billing-api"),
                    ("x-keyrig_group", "billing-api"),
                    ("x_keyrig-group", "billing-api"),
                ],
            )
            .await
            .unwrap();

        assert_eq!(
            reply.status, 200,
            "a valid key was refused: {:?}",
            reply.reason
        );
        // A validator that forwards no owner (keys-file mode, or one that
        // says so) leaves it empty or absent: never the client's.
        assert_eq!(
            (
                reply.upstream_header("x-keyrig-owner").unwrap_or(""),
                reply.upstream_header("x-keyrig-group")
            ),
            (expected_owner("e2e-owner"), Some(API_GROUP)),
            "{gateway} let the client's x-keyrig-* through"
        );
        let variants: Vec<&String> = reply.body["headers"]
            .as_object()
            .map(|headers| {
                headers
                    .keys()
                    .filter(|name| {
                        let name = name.to_ascii_lowercase();
                        name.contains('_')
                            && ["x-keyrig-owner", "x-keyrig-group"]
                                .contains(&name.replace('_', "-").as_str())
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            variants.is_empty(),
            "{gateway} let the client's x-keyrig-* spelled with underscores through: {variants:?}"
        );
    }
}

gateway_matrix! {
    /// A denial reaches the client with keygate's status and `x-keyrig-reason`
    /// on every gateway; keygate's JSON body only where the gateway passes it.
    #[tokio::test]
    async fn denial_reaches_the_client_with_status_and_reason(
        gateway: &str,
    ) {
        let Some((_case, gw)) = case_on(
            gateway,
            ASSERTION_GROUP,
            "denial_reaches_the_client_with_status_and_reason",
        ) else {
            return;
        };
        let key = issue_key(API_GROUP, |r| r).await.unwrap();
        let wrong = format!("{}{}", &key.expose()[..32], "0".repeat(32));

        let reply = gw.get(&api_path(API_GROUP), Some(&wrong)).await.unwrap();

        assert_eq!(
            (reply.status, reply.reason.as_deref()),
            (401, Some("mismatch"))
        );
        let own_body = reply.body["reason"].as_str() != Some("mismatch");
        let declared = deviations(gateway).own_denial_body.is_some();
        assert_eq!(
            own_body,
            declared,
            "{}; the denial body: {}",
            row_of(gateway, row::OWN_DENIAL_BODY, declared),
            reply.body
        );
    }
}

gateway_matrix! {
    /// Which client headers the upstream gets besides keygate's: the API key
    /// itself goes on unless the gateway is told to drop it.
    #[tokio::test]
    async fn api_key_header_and_the_upstream(
        gateway: &str,
    ) {
        let Some((_case, gw)) = case_on(gateway, ASSERTION_GROUP, "api_key_header_and_the_upstream")
        else {
            return;
        };
        let key = issue_key(API_GROUP, |r| r).await.unwrap();

        let reply = gw
            .get(&api_path(API_GROUP), Some(key.expose()))
            .await
            .unwrap();

        assert_eq!(
            reply.status, 200,
            "a valid key was refused: {:?}",
            reply.reason
        );
        let declared = deviations(gateway).api_key_not_forwarded.is_some();
        assert_eq!(
            reply.upstream_header("x-api-key").is_none(),
            declared,
            "{}; headers at the upstream: {}",
            row_of(gateway, row::API_KEY_NOT_FORWARDED, declared),
            reply.body["headers"]
        );
    }
}

gateway_matrix! {
    /// Dot segments: what keygate decides on and what the upstream gets. The
    /// path goes on the wire as written (reqwest would resolve it first).
    #[tokio::test]
    async fn dot_segments_in_the_path(
        gateway: &str,
    ) {
        let Some((_case, gw)) = case_on(gateway, ASSERTION_GROUP, "dot_segments_in_the_path") else {
            return;
        };
        let key = issue_key(API_GROUP, |r| r).await.unwrap();
        let billing = env().route("billing-api").unwrap();
        let target = format!("{billing}..{}", api_path(API_GROUP));

        let reply = gw
            .raw_get(&target, &[("x-api-key", key.expose())])
            .await
            .unwrap();

        let upstream_path = serde_json::from_str::<serde_json::Value>(&reply.body)
            .ok()
            .and_then(|echo| echo["path"].as_str().map(str::to_owned));
        // Strict: the gateway resolves the path, keygate and the upstream
        // see the clean one. Path as sent: keygate routes no dot segments
        // and refuses (fails closed).
        let declared = deviations(gateway).path_as_sent.is_some();
        let clean = api_path(API_GROUP);
        let want = if declared {
            (403, None)
        } else {
            (200, Some(clean.as_str()))
        };
        assert_eq!(
            (reply.status, upstream_path.as_deref()),
            want,
            "{}; GET {target}: reason {:?}",
            row_of(gateway, row::PATH_AS_SENT, declared),
            reply.header("x-keyrig-reason")
        );
    }
}

gateway_matrix! {
    /// The other way round, the invariant every gateway must keep: a key of one
    /// group never reaches another group's API through dot segments.
    #[tokio::test]
    async fn dot_segments_never_open_another_groups_api(
        gateway: &str,
    ) {
        let Some((_case, gw)) = case_on(
            gateway,
            ASSERTION_GROUP,
            "dot_segments_never_open_another_groups_api",
        ) else {
            return;
        };
        let key = issue_key(API_GROUP, |r| r).await.unwrap();
        let animals = env().route(API_GROUP).unwrap();
        let target = format!("{animals}..{}", api_path("billing-api"));

        let reply = gw
            .raw_get(&target, &[("x-api-key", key.expose())])
            .await
            .unwrap();

        assert!(
            matches!(reply.status, 400 | 401 | 403 | 404),
            "{gateway} answered {} for GET {target} with an {API_GROUP} key: {}",
            reply.status,
            reply.body
        );
    }
}

gateway_matrix! {
    /// A path under a group's route prefix that the group's OpenAPI
    /// document does not declare: keygate refuses it (403 no-route) with a
    /// valid key of the group. Asked first with the key unused (every
    /// gateway asks keygate then), and again once the key passed on a
    /// declared path (where a gateway that caches decisions may differ).
    #[tokio::test]
    async fn undeclared_path_under_a_groups_prefix(
        gateway: &str,
    ) {
        let Some((_case, gw)) =
            case_on(gateway, ASSERTION_GROUP, "undeclared_path_under_a_groups_prefix")
        else {
            return;
        };
        let key = issue_key(API_GROUP, |r| r).await.unwrap();
        let undeclared = format!("{}no-such-operation", env().route(API_GROUP).unwrap());
        let declared = api_path(API_GROUP);

        let first = gw.get(&undeclared, Some(key.expose())).await.unwrap();
        assert_eq!(
            (first.status, first.reason.as_deref()),
            NO_ROUTE,
            "{gateway}: GET {undeclared} with an unused {API_GROUP} key"
        );

        let held_pass = deviations(gateway).held_keys_pass_undeclared_paths.is_some();
        let want = if held_pass { (200, None) } else { NO_ROUTE };
        let row = row_of(gateway, row::HELD_KEYS_PASS_UNDECLARED_PATHS, held_pass);
        // A gateway that caches nothing shows it with one use. The module
        // may lose what it cached of the first use: the key's own issue
        // reaches it as a drop through keygate's feed (Vault's audit entry
        // of the write), which can land after that first answer. So the
        // use and the undeclared path are repeated until the module holds
        // the key, within a deadline; any answer but these two fails.
        let deadline = if want == NO_ROUTE {
            std::time::Duration::ZERO
        } else {
            cache_deadline()
        };
        rig::base::wait::wait_until(
            &format!("the undeclared path's answer once the key was used on its API ({row})"),
            deadline,
            async || {
                let used = gw.get(&declared, Some(key.expose())).await?;
                anyhow::ensure!(
                    used.status == 200,
                    "{gateway}: a valid key was refused on {declared}: {}",
                    used.short()
                );
                let again = gw.get(&undeclared, Some(key.expose())).await?;
                let seen = (again.status, again.reason.as_deref());
                Ok(if seen == want {
                    rig::base::wait::Probe::Ready(())
                } else if seen == NO_ROUTE {
                    rig::base::wait::Probe::seen(format!("{} on {undeclared}", again.short()))
                } else {
                    anyhow::bail!(
                        "{row}; GET {undeclared} with an {API_GROUP} key just used on its API: {}, expected {want:?}",
                        again.short()
                    )
                })
            },
        )
        .await
        .unwrap();
    }
}

gateway_matrix! {
    /// keygate's other headers (its secret references' `upstream_headers`,
    /// here the env reference's gateway name) reach the upstream where the
    /// gateway passes every header of keygate's answer; where it copies
    /// owner and group only, they do not (a declared deviation). The
    /// rotation of a referenced value is `references`'s case.
    #[tokio::test]
    async fn keygates_other_headers_and_the_upstream(
        gateway: &str,
    ) {
        let Some((mut case, gw)) =
            case_on(gateway, ASSERTION_GROUP, "keygates_other_headers_and_the_upstream")
        else {
            return;
        };
        let Some(references) = env().references.as_ref() else {
            case.skip("env.json has no references section: keygate adds no other header here");
            return;
        };
        if external_validator().is_some() {
            case.skip("secret references are keygate's own feature: the validator you run is not asked to add their headers");
            return;
        }
        let key = issue_key(API_GROUP, |r| r).await.unwrap();

        let reply = gw
            .get(&api_path(API_GROUP), Some(key.expose()))
            .await
            .unwrap();

        assert_eq!(reply.status, 200, "a valid key was refused: {:?}", reply.reason);
        let declared = deviations(gateway).owner_and_group_only.is_some();
        assert_eq!(
            reply.upstream_header(&references.env_header).is_none(),
            declared,
            "{}; headers at the upstream: {}",
            row_of(gateway, row::OWNER_AND_GROUP_ONLY, declared),
            reply.body["headers"]
        );
    }
}

/// The environment as the hostile requests see it through a gateway the
/// user runs: keys issued like every case's (and awaited where the
/// validator declares a propagation time); Vault reads not counted (the
/// validator may not be keygate, and the shared environment's cache TTL
/// does not outlast the run).
struct Shared;

impl hostile::HostileTarget for Shared {
    fn env(&self) -> &rig::contract::env::Environment {
        env()
    }

    async fn issue_key(&self, group: &str) -> anyhow::Result<apikey::ApiKey> {
        issue_key(group, |r| r).await
    }

    async fn vault_reads(&self) -> anyhow::Result<Option<u64>> {
        Ok(None)
    }
}

gateway_matrix! {
    /// Dot segments behind a `;` path parameter or a `#`, which some
    /// gateways forward raw and some upstreams (Tomcat, Jetty, older
    /// Spring) resolve, the `#` also with the text before it in a client's
    /// own X-Forwarded-Uri or X-Original-URI: written byte by byte with a
    /// key of each group, each is refused or passes under the group that
    /// owns the path the upstream saw, never with a `..;` left in it.
    /// Every gateway, the user's too.
    #[tokio::test]
    async fn dot_segments_behind_a_parameter_or_a_fragment_never_cross_groups(
        gateway: &str,
    ) {
        let Some((mut case, gw)) = case_on(
            gateway,
            ASSERTION_GROUP,
            "dot_segments_behind_a_parameter_or_a_fragment_never_cross_groups",
        ) else {
            return;
        };
        let outcomes = hostile::parameter_and_fragment_tricks(&Shared, gateway, &gw.url)
            .await
            .unwrap();
        case.note(outcomes.join("; "));
    }
}

gateway_matrix! {
    /// The hostile requests of `faults` (header and path tricks, written
    /// byte by byte) through a gateway the user runs (`e2e --gateway-url`):
    /// each is refused or passes under the group that owns the path the
    /// upstream saw, with exactly the outcome the gateway's declared
    /// deviations give. The harness's own gateways get them in `faults`,
    /// where keygate's Vault reads are counted too.
    #[tokio::test]
    async fn hostile_requests_through_a_gateway_you_run(
        gateway: &str,
    ) {
        let Some((mut case, gw)) =
            case_on(gateway, ASSERTION_GROUP, "hostile_requests_through_a_gateway_you_run")
        else {
            return;
        };
        if !env().user_gateways {
            case.skip("the harness's own gateways get the hostile requests in faults (hostile_requests_are_refused_without_a_vault_read, with keygate's Vault reads counted)");
            return;
        }
        let outcome = hostile::run(&Shared, gateway, &gw.url).await.unwrap();
        case.note(format!(
            "{} hostile requests, every outcome as declared (Vault reads not counted through a gateway you run): {}",
            outcome.requests,
            outcome.outcomes.join("; ")
        ));
    }
}
