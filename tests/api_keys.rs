//! API keys through every gateway of the conformance matrix (Envoy gRPC and
//! HTTP ext_authz, Envoy with keygate's module, Traefik, nginx, Caddy ->
//! keygate -> Vault): each case runs
//! once per gateway (`#[values]`) and is recorded as `case [gateway]`.
//! Each case issues its own keys, so cases run in parallel without sharing state.

use keyrig_e2e::*;
use rig::base::wait::Probe;
use serde_json::json;
use sha2::{Digest, Sha256};
use time::{Duration as TimeDelta, OffsetDateTime};

/// The assertion group these cases are recorded under: this file's name,
/// and the word `cargo xtask e2e --filter` takes for them.
const ASSERTION_GROUP: &str = "api_keys";

const API_GROUP: &str = "animal-rescue-api";
const OTHER_API_GROUP: &str = "billing-api";

gateway_matrix! {
    #[tokio::test]
    async fn valid_key_reaches_upstream_with_owner_and_group(
        gateway: &str,
    ) {
        let Some((_case, gw)) = case_on(
            gateway,
            ASSERTION_GROUP,
            "valid_key_reaches_upstream_with_owner_and_group",
        ) else {
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
        // Keys-file mode: the file holds no owner (see `keys_file_mode`).
        assert_eq!(
            reply.upstream_header("x-keyrig-owner").unwrap_or(""),
            expected_owner("e2e-owner")
        );
        assert_eq!(reply.upstream_header("x-keyrig-group"), Some(API_GROUP));
    }
}

gateway_matrix! {
    #[tokio::test]
    async fn header_name_is_case_insensitive(
        gateway: &str,
    ) {
        let Some((_case, gw)) = case_on(gateway, ASSERTION_GROUP, "header_name_is_case_insensitive")
        else {
            return;
        };
        let key = issue_key(API_GROUP, |r| r).await.unwrap();
        // reqwest lowercases header names, so write the request by hand.
        let reply = gw
            .raw_get(&api_path(API_GROUP), &[("X-API-Key", key.expose())])
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "X-API-Key was not honoured: {reply:?}");
    }
}

gateway_matrix! {
    /// Keys that must be refused, with the status and the reason keygate gives.
    #[case::missing_header("missing_header", None, 401, "missing")]
    #[case::too_short_63("too_short_63", Some(Mangle::Truncate), 401, "malformed")]
    #[case::too_long_65("too_long_65", Some(Mangle::Append), 401, "malformed")]
    #[case::non_hex("non_hex", Some(Mangle::NonHex), 401, "malformed")]
    #[case::unknown_selector("unknown_selector", Some(Mangle::NewSelector), 401, "unknown")]
    #[case::wrong_verifier("wrong_verifier", Some(Mangle::NewVerifier), 401, "mismatch")]
    #[tokio::test]
    async fn refused_keys(
        gateway: &str,
        #[case] name: &str,
        #[case] mangle: Option<Mangle>,
        #[case] status: u16,
        #[case] reason: &str,
    ) {
        let Some((_case, gw)) = case_on(gateway, ASSERTION_GROUP, &format!("refused_{name}")) else {
            return;
        };
        let key = issue_key(API_GROUP, |r| r).await.unwrap();
        let presented = mangle.map(|m| m.apply(key.expose()));

        let reply = gw
            .get(&api_path(API_GROUP), presented.as_deref())
            .await
            .unwrap();

        assert_eq!(
            (reply.status, reply.reason.as_deref()),
            (status, Some(reason))
        );
    }
}

#[derive(Debug, Clone, Copy)]
enum Mangle {
    Truncate,
    Append,
    NonHex,
    NewSelector,
    NewVerifier,
}

impl Mangle {
    fn apply(self, key: &str) -> String {
        let fresh = apikey::ApiKey::generate();
        match self {
            Mangle::Truncate => key[..63].to_owned(),
            Mangle::Append => format!("{key}0"),
            Mangle::NonHex => format!("{}z", &key[..63]),
            Mangle::NewSelector => format!("{}{}", &fresh.expose()[..32], &key[32..]),
            Mangle::NewVerifier => format!("{}{}", &key[..32], &fresh.expose()[32..]),
        }
    }
}

gateway_matrix! {
    #[tokio::test]
    async fn key_of_one_group_is_forbidden_on_another(
        gateway: &str,
    ) {
        let Some((_case, gw)) = case_on(
            gateway,
            ASSERTION_GROUP,
            "key_of_one_group_is_forbidden_on_another",
        ) else {
            return;
        };
        let key = issue_key(API_GROUP, |r| r).await.unwrap();
        // keygate tells `wrong-group` from records it already holds, never
        // from extra Vault reads (one read per request): the key is used on
        // its own API first, as its owner would.
        let own = gw.get(&api_path(API_GROUP), Some(key.expose())).await.unwrap();
        assert_eq!(own.status, 200, "{own:?}");

        let reply = gw
            .get(&api_path(OTHER_API_GROUP), Some(key.expose()))
            .await
            .unwrap();

        assert_eq!(
            (reply.status, reply.reason.as_deref()),
            (403, Some("wrong-group"))
        );
    }
}

gateway_matrix! {
    #[tokio::test]
    async fn path_of_no_api_is_forbidden(
        gateway: &str,
    ) {
        let Some((_case, gw)) = case_on(gateway, ASSERTION_GROUP, "path_of_no_api_is_forbidden") else {
            return;
        };
        let key = issue_key(API_GROUP, |r| r).await.unwrap();

        let reply = gw
            .get("/no-such-api/anything", Some(key.expose()))
            .await
            .unwrap();

        assert_eq!(
            (reply.status, reply.reason.as_deref()),
            (403, Some("no-route"))
        );
    }
}

/// Waits up to `deadline` until `gw` refuses `key` as `unknown`; how long
/// that took.
async fn until_refused(
    gw: &Gateway,
    key: &apikey::ApiKey,
    what: &str,
    deadline: std::time::Duration,
) -> std::time::Duration {
    let path = api_path(API_GROUP);
    let started = std::time::Instant::now();
    rig::base::wait::wait_until(what, deadline, async || {
        let reply = gw.get(&path, Some(key.expose())).await?;
        Ok(match (reply.status, reply.reason.as_deref()) {
            (401, Some("unknown")) => Probe::Ready(()),
            other => Probe::seen(format!("{other:?}")),
        })
    })
    .await
    .unwrap();
    started.elapsed()
}

/// Reads the new `key` through `gw` (its first read: cached from then on),
/// revokes it in the portal's scheme (the secret deleted, all versions) and
/// waits for the gateway to refuse it, up to `deadline` (given the instant
/// before that first read); then it must stay refused. Gives how long the
/// refusal took and the deadline it had.
async fn revoke_and_expect_refusal(
    gw: &Gateway,
    key: &apikey::ApiKey,
    deadline: impl FnOnce(std::time::Instant) -> std::time::Duration,
) -> (std::time::Duration, std::time::Duration) {
    let path = api_path(API_GROUP);
    let cached_at = std::time::Instant::now();
    // Cached now, for the positive TTL.
    assert_eq!(gw.get(&path, Some(key.expose())).await.unwrap().status, 200);
    revoke_key(API_GROUP, key).await.unwrap();
    let deadline = deadline(cached_at);
    let took = until_refused(gw, key, "the revoked key to be refused", deadline).await;
    // Refused from then on: nothing brings the cached record back.
    for _ in 0..5 {
        let reply = gw.get(&path, Some(key.expose())).await.unwrap();
        assert_eq!(
            (reply.status, reply.reason.as_deref()),
            (401, Some("unknown"))
        );
    }
    (took, deadline)
}

gateway_matrix! {
    /// With Vault's audit stream connected, a revoked key is refused before
    /// the record its first read cached could expire
    /// (`revocation_deadline_since`): only the invalidation can refuse it
    /// that early. Where no audit stream reaches the gateway's validator
    /// (keys-file mode, kind, cluster, a validator you run) the case is
    /// skipped, saying so: there only
    /// `revoked_key_is_refused_within_the_cache_deadline` holds.
    #[tokio::test]
    async fn revoked_key_is_refused_before_its_cache_entry_expires(
        gateway: &str,
    ) {
        let Some((mut case, gw)) = case_on(
            gateway,
            ASSERTION_GROUP,
            "revoked_key_is_refused_before_its_cache_entry_expires",
        ) else {
            return;
        };
        if let Err(reason) = audit_stream() {
            case.skip(format!(
                "no audit stream to refuse it early: {reason}; revoked_key_is_refused_within_the_cache_deadline runs instead"
            ));
            return;
        }
        let key = issue_key(API_GROUP, |r| r).await.unwrap();
        let (took, deadline) =
            revoke_and_expect_refusal(&gw, &key, |at| revocation_deadline_since(at).0).await;
        case.note(format!(
            "refused after {} ms, within {} ms (before its first read's cache entry could expire: the audit stream)",
            took.as_millis(),
            deadline.as_millis()
        ));
    }
}

gateway_matrix! {
    /// Everywhere: a revoked key is refused by the time its cached record
    /// expires (`cache_deadline`: the positive TTL plus the poll's slack;
    /// the render deadline in keys-file mode; a validator you run, its
    /// declared deadline), and stays refused.
    #[tokio::test]
    async fn revoked_key_is_refused_within_the_cache_deadline(
        gateway: &str,
    ) {
        let Some((mut case, gw)) = case_on(
            gateway,
            ASSERTION_GROUP,
            "revoked_key_is_refused_within_the_cache_deadline",
        ) else {
            return;
        };
        let key = issue_key(API_GROUP, |r| r).await.unwrap();
        let (took, deadline) = revoke_and_expect_refusal(&gw, &key, |_| cache_deadline()).await;
        case.note(format!(
            "refused after {} ms, within {} ms",
            took.as_millis(),
            deadline.as_millis()
        ));
    }
}

gateway_matrix! {
    /// Revocations under concurrent load: each revoked key is refused within
    /// `revocation_deadline_since` (with the audit stream, before its first
    /// read's cache entry could expire; without one, the cache's deadline;
    /// the note says which and how long each took), and the valid key in
    /// use meanwhile never fails.
    #[tokio::test]
    async fn revocations_under_load_fail_no_valid_request(
        gateway: &str,
    ) {
        let Some((mut case, gw)) = case_on(
            gateway,
            ASSERTION_GROUP,
            "revocations_under_load_fail_no_valid_request",
        ) else {
            return;
        };
        let path = api_path(API_GROUP);
        let valid = issue_key(API_GROUP, |r| r).await.unwrap();
        assert_eq!(gw.get(&path, Some(valid.expose())).await.unwrap().status, 200);
        let load = Load::start(4, gw.url.clone(), path.clone(), valid.expose().to_owned());
        let mut bound = "";
        let mut took = Vec::new();
        for _ in 0..3 {
            let key = issue_key(API_GROUP, |r| r).await.unwrap();
            let cached_at = std::time::Instant::now();
            assert_eq!(gw.get(&path, Some(key.expose())).await.unwrap().status, 200);
            revoke_key(API_GROUP, &key).await.unwrap();
            let (deadline, this_bound) = revocation_deadline_since(cached_at);
            bound = this_bound;
            let refused =
                until_refused(&gw, &key, "the revoked key to be refused under load", deadline).await;
            took.push(format!("{} of {} ms", refused.as_millis(), deadline.as_millis()));
        }
        let (ok, failed, last_failure) = load.finish().await;
        assert!(ok > 0, "the load sent no request");
        assert_eq!(
            failed, 0,
            "{failed} of {} valid requests failed during the revocations, last: {last_failure:?}",
            ok + failed
        );
        case.note(format!(
            "3 revocations under load, refused after {} ({bound}); {ok} valid requests, 0 failed",
            took.join(", ")
        ));
    }
}

gateway_matrix! {
    #[tokio::test]
    async fn expired_key_is_refused_and_unexpired_accepted(
        gateway: &str,
    ) {
        let Some((_case, gw)) = case_on(
            gateway,
            ASSERTION_GROUP,
            "expired_key_is_refused_and_unexpired_accepted",
        ) else {
            return;
        };
        let now = OffsetDateTime::now_utc();
        let expired = issue_key(API_GROUP, |r| r.with_expiry(now - TimeDelta::minutes(1)))
            .await
            .unwrap();
        let current = issue_key(API_GROUP, |r| r.with_expiry(now + TimeDelta::hours(1)))
            .await
            .unwrap();

        let refused = gw
            .get(&api_path(API_GROUP), Some(expired.expose()))
            .await
            .unwrap();
        let accepted = gw
            .get(&api_path(API_GROUP), Some(current.expose()))
            .await
            .unwrap();

        if !enforces_expiry() {
            // A documented difference, asserted so a change is noticed: the keys
            // file is `<selector>,<hash>` only, so the gateway cannot know the
            // expiry and accepts the key until the portal deletes it (a
            // validator the user runs declares `enforces-expiry = false`).
            assert_eq!(
                (refused.status, refused.reason.as_deref()),
                (200, None),
                "this validator is expected not to know expiry (keys-file mode, or `[validator] enforces-expiry = false`)"
            );
        } else {
            assert_eq!(
                (refused.status, refused.reason.as_deref()),
                (401, Some("expired"))
            );
        }
        assert_eq!(
            accepted.status, 200,
            "an unexpired key was refused: {:?}",
            accepted.reason
        );
    }
}

gateway_matrix! {
    /// Other tools write keys too: this one follows README's storage format with
    /// nothing but the Vault HTTP API and SHA-256, not keyrig's crates.
    #[tokio::test]
    async fn key_written_by_plain_http_in_the_documented_format_is_accepted(
        gateway: &str,
    ) {
        let Some((_case, gw)) = case_on(
            gateway,
            ASSERTION_GROUP,
            "key_written_by_plain_http_in_the_documented_format_is_accepted",
        ) else {
            return;
        };
        let bytes: [u8; 32] = rand::random();
        let key = hex::encode(bytes);
        let (selector, verifier) = key.split_at(32);
        let hash = hex::encode(Sha256::digest(verifier.as_bytes()));
        let portal = portal_token().await.unwrap();
        let path = format!("{}/data/{API_GROUP}/{selector}", env().kv_mount);
        let written = vault(
            "POST",
            &path,
            &portal,
            Some(json!({"data": {"key": hash, "owner": "plain-http"}})),
        )
        .await
        .unwrap();
        assert_eq!(written.status, 200, "{:?}", written.body);
        await_delivery(API_GROUP, &key).await.unwrap();

        let reply = gw.get(&api_path(API_GROUP), Some(&key)).await.unwrap();

        assert_eq!(reply.status, 200, "refused: {:?}", reply.reason);
        assert_eq!(
            reply.upstream_header("x-keyrig-owner").unwrap_or(""),
            expected_owner("plain-http")
        );
    }
}
