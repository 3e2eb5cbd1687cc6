//! Faults and hostile input (group `faults`): Vault outage and seal, token
//! expiry, keygate restart, hostile requests, bad scenario input. Each test
//! that kills or restarts something owns its environment (see
//! `faults/support.rs`); each is bounded in requests and time, loopback only.
//! Figures (requests, false accepts, 503s, recovery time) go into the case
//! message; recovery times are recorded, never asserted against a threshold.

#[path = "faults/bad_input.rs"]
mod bad_input;
#[path = "faults/hostile.rs"]
mod hostile;
#[path = "faults/support.rs"]
mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use apikey::ApiKey;
use rig::case::CaseGuard;
use rig::local::{LocalOptions, VaultStorage};
use rig::process::StopMode;
use support::*;

fn case(name: &str) -> CaseGuard {
    CaseGuard::start(GROUP, name)
}

/// The options for an owned environment, or `None` after marking the case
/// skipped with the reason.
fn options_or_skip(case: &mut CaseGuard) -> Option<LocalOptions> {
    match local_options() {
        Ok(opts) => Some(opts),
        Err(reason) => {
            eprintln!("skipped: {reason}");
            case.skip(reason);
            None
        }
    }
}

/// 1. Vault killed while valid and invalid keys keep coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_outage_fails_closed_resurrects_then_recovers() {
    let mut case = case("vault_outage_fails_closed_resurrects_then_recovers");
    let Some(mut opts) = options_or_skip(&mut case) else {
        return;
    };
    opts.vault_storage = VaultStorage::Raft;
    opts.resurrect_ttl = Duration::from_secs(4);
    let mut env = Owned::start(&opts).await.unwrap();
    let (group, _) = env.groups();
    let path = env.api_path(&group);
    let cached = env.issue_key(&group).await.unwrap();
    let uncached = env.issue_key(&group).await.unwrap();
    let unknown = ApiKey::generate();
    let mismatch = format!(
        "{}{}",
        &cached.expose()[..32],
        &ApiKey::generate().expose()[32..]
    );
    let mut tally = Tally::default();
    let warm = env.get(&path, Some(cached.expose())).await;
    assert_eq!(warm.status, 200, "before the outage: {}", warm.short());
    let resurrected_before = env
        .metric_sum("keygate_cache_resurrected_total")
        .await
        .unwrap();

    env.run.supervisor.stop("bao", StopMode::Kill).unwrap();
    let outage = Instant::now();
    let cache = env.env().cache;
    let deadline = Duration::from_millis(cache.positive_ttl_ms + cache.resurrect_ttl_ms)
        + Duration::from_secs(15);
    let mut cached_refused_at = None;
    let mut refused_rounds = 0;
    while refused_rounds < 3 {
        assert!(
            outage.elapsed() < deadline,
            "the cached key was still served {} after Vault went down: the resurrect window never ended",
            rig::secs(outage.elapsed())
        );
        let reply = env.get(&path, Some(cached.expose())).await;
        tally.count(&reply, false);
        match (reply.status, reply.reason.as_deref()) {
            (200, _) => assert!(
                cached_refused_at.is_none(),
                "the cached key was refused, then served again during the outage"
            ),
            (503, Some("vault-unavailable")) => {
                cached_refused_at.get_or_insert(outage.elapsed());
                refused_rounds += 1;
            }
            _ => panic!("the cached key during the outage got {}", reply.short()),
        }
        for (name, key) in [
            ("an uncached key", uncached.expose()),
            ("an unknown key", unknown.expose()),
        ] {
            let reply = env.get(&path, Some(key)).await;
            tally.count(&reply, true);
            assert_eq!(
                (reply.status, reply.reason.as_deref()),
                (503, Some("vault-unavailable")),
                "{name} during the outage must get 503 (never 401, never 200)"
            );
        }
        let reply = env.get(&path, Some(&mismatch)).await;
        tally.count(&reply, true);
        assert!(
            matches!(
                (reply.status, reply.reason.as_deref()),
                (401, Some("mismatch")) | (503, Some("vault-unavailable"))
            ),
            "a wrong verifier for the cached selector got {}",
            reply.short()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resurrected = env
        .metric_sum("keygate_cache_resurrected_total")
        .await
        .unwrap()
        - resurrected_before;
    assert!(
        resurrected > 0,
        "keygate never answered from the resurrect window (keygate_cache_resurrected_total did not move)"
    );

    env.run.supervisor.restart("bao").await.unwrap();
    let vault = env.vault_without_token().unwrap();
    rig::raft::unseal(&vault, &env.unseal_key_file().unwrap())
        .await
        .unwrap();
    let recovery = until_status(
        &env,
        &mut tally,
        &path,
        uncached.expose(),
        200,
        Duration::from_secs(30),
        false,
    )
    .await
    .unwrap();
    tally.recovery = Some(recovery);
    let after = env.get(&path, Some(unknown.expose())).await;
    tally.count(&after, true);
    assert_eq!(
        (after.status, after.reason.as_deref()),
        (401, Some("unknown"))
    );
    assert_eq!(tally.false_accepts, 0);
    let served = cached_refused_at.expect("the loop ends only after a refusal");
    case.note(tally.message(&format!(
        "cached key served {} into the outage (positive {} ms + resurrect {} ms), {resurrected} resurrected answers",
        rig::secs(served),
        cache.positive_ttl_ms,
        cache.resurrect_ttl_ms
    )));
}

/// 2. Seal -> 503 for what is not cached; unseal -> recovers, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_vault_answers_503_and_unseal_recovers_with_data_kept() {
    let mut case = case("sealed_vault_answers_503_and_unseal_recovers_with_data_kept");
    let Some(mut opts) = options_or_skip(&mut case) else {
        return;
    };
    opts.vault_storage = VaultStorage::Raft;
    let env = Owned::start(&opts).await.unwrap();
    let (group, _) = env.groups();
    let path = env.api_path(&group);
    let cached = env.issue_key(&group).await.unwrap();
    let uncached = env.issue_key(&group).await.unwrap();
    let unknown = ApiKey::generate();
    let mut tally = Tally::default();
    let warm = env.get(&path, Some(cached.expose())).await;
    tally.count(&warm, false);
    assert_eq!(warm.status, 200, "before the seal: {}", warm.short());

    env.root
        .call(reqwest::Method::PUT, "sys/seal", None)
        .await
        .unwrap();
    for _ in 0..5 {
        for (name, key) in [
            ("an uncached key", uncached.expose()),
            ("an unknown key", unknown.expose()),
        ] {
            let reply = env.get(&path, Some(key)).await;
            tally.count(&reply, true);
            assert_eq!(
                (reply.status, reply.reason.as_deref()),
                (503, Some("vault-unavailable")),
                "{name} while Vault is sealed"
            );
        }
        // Within positive TTL + the default 30 s resurrect window.
        let reply = env.get(&path, Some(cached.expose())).await;
        tally.count(&reply, false);
        assert_eq!(
            reply.status,
            200,
            "a key cached before the seal: {}",
            reply.short()
        );
    }

    let vault = env.vault_without_token().unwrap();
    rig::raft::unseal(&vault, &env.unseal_key_file().unwrap())
        .await
        .unwrap();
    tally.recovery = Some(
        until_status(
            &env,
            &mut tally,
            &path,
            uncached.expose(),
            200,
            Duration::from_secs(30),
            false,
        )
        .await
        .unwrap(),
    );
    for key in [&cached, &uncached] {
        assert!(
            env.record_exists(&group, key).await.unwrap(),
            "a record written before the seal is gone after unsealing"
        );
    }
    assert_eq!(tally.false_accepts, 0);
    case.note(tally.message("2 records written before the seal still present"));
}

/// 3. keygate's AppRole token expires three times (TTL 10 s, max 30 s)
/// while requests keep coming: none may fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_three_times_loses_no_request() {
    let mut case = case("token_expiry_three_times_loses_no_request");
    let Some(mut opts) = options_or_skip(&mut case) else {
        return;
    };
    let (ttl, max_ttl) = (Duration::from_secs(10), Duration::from_secs(30));
    opts.keygate_token_ttl = Some((ttl, max_ttl));
    let env = Owned::start(&opts).await.unwrap();
    let (group, _) = env.groups();
    let path = env.api_path(&group);
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    let mut accessors = BTreeSet::new();
    let started = Instant::now();
    // Past three token lifetimes, and past the max TTL (a fresh login).
    let span = ttl * 3 + Duration::from_secs(5);
    while started.elapsed() < span {
        // A fresh key each round: its record is not cached, so every round
        // reads Vault with keygate's current token.
        let key = env.issue_key(&group).await.unwrap();
        let reply = env.get(&path, Some(key.expose())).await;
        tally.count(&reply, false);
        if reply.status != 200 {
            failures.push(format!("valid key: {}", reply.short()));
        }
        let reply = env.get(&path, Some(ApiKey::generate().expose())).await;
        tally.count(&reply, true);
        if (reply.status, reply.reason.as_deref()) != (401, Some("unknown")) {
            failures.push(format!("unknown key: {}", reply.short()));
        }
        if let Some(accessor) = env.keygate_accessor().await {
            accessors.insert(accessor);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        failures.is_empty(),
        "{} of {} requests failed across token expiries, first: {}",
        failures.len(),
        tally.requests,
        failures[0]
    );
    assert!(
        accessors.len() >= 2,
        "keygate kept one token for {} though its max TTL is {}",
        rig::secs(span),
        rig::secs(max_ttl)
    );
    assert_eq!(tally.false_accepts, 0);
    case.note(tally.message(&format!(
        "0 failed; {} keygate tokens seen over {}",
        accessors.len(),
        rig::secs(started.elapsed())
    )));
}

/// 4a. keygate killed and restarted under load behind Envoy
/// (failure_mode_allow: false): the gap denies, never allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygate_restart_under_load_denies_in_the_gap_then_serves() {
    let mut case = case("keygate_restart_under_load_denies_in_the_gap_then_serves");
    let Some(opts) = options_or_skip(&mut case) else {
        return;
    };
    let mut env = Owned::start(&opts).await.unwrap();
    let (group, _) = env.groups();
    let path = env.api_path(&group);
    let valid = env.issue_key(&group).await.unwrap();
    let mut tally = Tally::default();
    let warm = env.get(&path, Some(valid.expose())).await;
    assert_eq!(warm.status, 200, "before the restart: {}", warm.short());

    // Background load: unknown keys, which must never pass, and the valid one.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, gateway, http, path) = (
            stop.clone(),
            env.env().gateway_url.clone(),
            env.http.clone(),
            path.clone(),
        );
        let valid = valid.expose().to_owned();
        tokio::spawn(async move {
            let mut replies = Vec::new();
            let mut sent = 0u32;
            while !stop.load(Ordering::SeqCst) && sent < 2000 {
                let unknown = ApiKey::generate();
                for (key, must_not_pass) in [(unknown.expose(), true), (valid.as_str(), false)] {
                    let reply = gateway_get(&http, &gateway, &path, Some(key)).await;
                    replies.push((reply, must_not_pass));
                    sent += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            replies
        })
    };

    env.run.supervisor.stop("keygate", StopMode::Kill).unwrap();
    let mut in_gap = 0;
    for _ in 0..10 {
        let reply = env.get(&path, Some(valid.expose())).await;
        tally.count(&reply, true);
        in_gap += 1;
        assert!(
            !reply.allowed(),
            "a request passed while keygate was down: {}",
            reply.short()
        );
    }
    env.run.supervisor.restart("keygate").await.unwrap();
    tally.recovery = Some(
        until_status(
            &env,
            &mut tally,
            &path,
            valid.expose(),
            200,
            Duration::from_secs(30),
            false,
        )
        .await
        .unwrap(),
    );
    stop.store(true, Ordering::SeqCst);
    for (reply, must_not_pass) in load.await.unwrap() {
        tally.count(&reply, must_not_pass);
        assert!(
            !must_not_pass || !reply.allowed(),
            "an unknown key passed during the restart: {}",
            reply.short()
        );
        assert!(
            matches!(reply.status, 200 | 401 | 503),
            "unexpected answer during the restart: {}",
            reply.short()
        );
    }
    assert_eq!(tally.false_accepts, 0);
    case.note(tally.message(&format!("{in_gap} requests in the gap, all denied")));
}

/// 4b. `bao agent` in external-secret mode does not exist in this build.
#[test]
fn bao_agent_restart_keeps_last_good_data_and_catches_up() {
    let mut case = case("bao_agent_restart_keeps_last_good_data_and_catches_up");
    case.skip("bao agent delivery lands with issue 3");
}

/// 5. Hostile requests: refused or mapped to the right group, no Vault read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_without_a_vault_read() {
    let mut case = case("hostile_requests_are_refused_without_a_vault_read");
    let Some(mut opts) = options_or_skip(&mut case) else {
        return;
    };
    // Long TTLs: every (group, selector) pair is warmed once, so any read
    // after that is one a hostile request caused.
    opts.positive_ttl = Duration::from_secs(300);
    opts.negative_ttl = Duration::from_secs(300);
    let env = Owned::start(&opts).await.unwrap();
    let summary = hostile::run(&env).await.unwrap();
    case.note(summary);
}

/// 7. Bad scenario input fails before anything starts (or at apply time for
/// a policy Vault rejects), naming file, field and fix; nothing is left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_scenario_input_fails_early_and_leaves_nothing_running() {
    let mut case = case("bad_scenario_input_fails_early_and_leaves_nothing_running");
    let Some(opts) = options_or_skip(&mut case) else {
        return;
    };
    let summary = bad_input::run(&opts).await.unwrap();
    case.note(summary);
}
