//! Where the gateways of the conformance matrix differ, asserted per gateway.
//! docs/gateways.md's "Gateway compatibility" table states the same facts; change both
//! together. Every case runs once per gateway, like `api_keys`.

use keyrig_e2e::*;

/// The assertion group these cases are recorded under: this file's name,
/// and the word `cargo xtask e2e --filter` takes for them.
const ASSERTION_GROUP: &str = "gateways";

const API_GROUP: &str = "animal-rescue-api";

/// What one gateway does, as docs/gateways.md's compatibility table says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expected {
    /// keygate's JSON body (`{"reason": ..}`) reaches the client on a denial
    /// (else the gateway answers with its own body).
    denial_body_is_keygates: bool,
    /// The client's `x-api-key` reaches the upstream.
    api_key_reaches_upstream: bool,
    /// A request for `/billing/../animal-rescue/animals` with an
    /// animal-rescue key: the status the client gets, and the path the
    /// upstream sees when it gets through.
    dot_segments: (u16, Option<&'static str>),
    /// A path under the group's route prefix that its OpenAPI document
    /// does not declare, with a valid key of the group that was just used
    /// on a declared path: status and `x-keyrig-reason`.
    undeclared_path_after_use: (u16, Option<&'static str>),
}

/// keygate's answer for a path no API operation declares.
const NO_ROUTE: (u16, Option<&str>) = (403, Some("no-route"));

fn expected(gateway: &str) -> Expected {
    match gateway {
        ENVOY_GRPC | ENVOY_HTTP => Expected {
            denial_body_is_keygates: true,
            api_key_reaches_upstream: true,
            // normalize_path: keygate and the upstream both see the clean path.
            dot_segments: (200, Some("/animal-rescue/animals")),
            // keygate decides every request on its path: no operation there.
            undeclared_path_after_use: NO_ROUTE,
        },
        // The module's listener is the ext_authz gateways' (one template),
        // and it answers denials with keygate's status, reason and body.
        ENVOY_MODULE => Expected {
            denial_body_is_keygates: true,
            api_key_reaches_upstream: true,
            dot_segments: (200, Some("/animal-rescue/animals")),
            // A deviation: the module's routes are one per API group
            // (prefix), and a key it holds is decided from its table by
            // (group, selector) alone, without keygate's path templates. So
            // once used, the key passes on any path under its group's
            // prefix; only a key the module does not hold is asked about,
            // and keygate answers 403 no-route for the path.
            undeclared_path_after_use: (200, None),
        },
        TRAEFIK => Expected {
            denial_body_is_keygates: true,
            api_key_reaches_upstream: true,
            // The entry point sanitizes the path before forwardAuth.
            dot_segments: (200, Some("/animal-rescue/animals")),
            undeclared_path_after_use: NO_ROUTE,
        },
        NGINX => Expected {
            // auth_request keeps only the status; nginx writes its own page.
            denial_body_is_keygates: false,
            api_key_reaches_upstream: true,
            // X-Original-URI is $request_uri, as sent: keygate routes no
            // dot segments, so 403 no-route (fails closed).
            dot_segments: (403, None),
            undeclared_path_after_use: NO_ROUTE,
        },
        CADDY => Expected {
            denial_body_is_keygates: true,
            api_key_reaches_upstream: true,
            // X-Forwarded-Uri is the URI as sent: 403 no-route, as nginx.
            dot_segments: (403, None),
            undeclared_path_after_use: NO_ROUTE,
        },
        other => panic!("no expectations for gateway {other}: add them to expected()"),
    }
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

        let reply = gw
            .get_with(
                &api_path(API_GROUP),
                &[
                    ("x-api-key", key.expose()),
                    ("x-keyrig-owner", "mallory"),
                    ("x-keyrig-group", "billing-api"),
                ],
            )
            .await
            .unwrap();

        assert_eq!(
            reply.status, 200,
            "a valid key was refused: {:?}",
            reply.reason
        );
        assert_eq!(
            (
                reply.upstream_header("x-keyrig-owner"),
                reply.upstream_header("x-keyrig-group")
            ),
            (Some("e2e-owner"), Some(API_GROUP)),
            "{gateway} let the client's x-keyrig-* through"
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
        let body_is_keygates = reply.body["reason"].as_str() == Some("mismatch");
        assert_eq!(
            body_is_keygates,
            expected(gateway).denial_body_is_keygates,
            "{gateway}'s denial body: {}",
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
        assert_eq!(
            reply.upstream_header("x-api-key").is_some(),
            expected(gateway).api_key_reaches_upstream,
            "{gateway}: headers at the upstream: {}",
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
        let (status, path) = expected(gateway).dot_segments;
        assert_eq!(
            (reply.status, upstream_path.as_deref()),
            (status, path),
            "{gateway} for GET {target}: reason {:?}",
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

        let want = expected(gateway).undeclared_path_after_use;
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
            "the undeclared path's answer once the key was used on its API",
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
                        "{gateway}: GET {undeclared} with an {API_GROUP} key just used on its API: {}, expected {want:?}",
                        again.short()
                    )
                })
            },
        )
        .await
        .unwrap();
    }
}
