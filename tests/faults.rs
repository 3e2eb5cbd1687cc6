//! Faults and hostile input (group `faults`): Vault outage and seal, token
//! expiry, keygate and bao agent restarts, hostile requests through every
//! gateway, bad scenario input. Each test that kills or restarts something
//! owns its environment (see `faults/support.rs`); each is bounded in
//! requests and time, loopback only. Figures (requests, false accepts, 503s,
//! recovery time) go into the case message and `rig::contract::fault` records (the
//! report's "Faults" table); recovery times are recorded, never asserted
//! against a threshold. The group runs once per multi-mode e2e run
//! (`rig::contract::once`), except the mode-specific bao agent case.

#[path = "faults/bad_input.rs"]
mod bad_input;
#[path = "faults/revocation.rs"]
mod revocation;
#[path = "faults/support.rs"]
mod support;

/// The tests live in a module named after the group, so their names
/// (`faults::<case>`) match `cargo xtask e2e --filter faults`.
mod faults {

    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use crate::support::*;
    use crate::{bad_input, revocation};
    use apikey::ApiKey;
    use keyrig_e2e::hostile;
    use reqwest::Method;
    use rig::base::wait::{Probe, wait_until};
    use rig::contract::case::CaseGuard;
    use rig::contract::modes::Mode;
    use rig::local::secret_dir::SecretDir;
    use rig::local::{LocalOptions, VaultStorage};
    use rig::process::supervisor::StopMode;
    use rig::vault::client::Secret;
    use serde_json::{Value, json};

    /// A case of this group, by its name alone.
    fn fault_case(name: &str) -> CaseGuard {
        CaseGuard::start(ASSERTION_GROUP, name)
    }

    /// The options for an owned environment, or `None` after marking the case
    /// skipped with the reason: the group runs in another mode of this run
    /// (`rig::contract::once`), or a binary is missing.
    fn options_or_skip(case: &mut CaseGuard) -> Option<LocalOptions> {
        if let Some(reason) =
            rig::contract::once::skip_reason(ASSERTION_GROUP, run_mode().as_deref())
        {
            eprintln!("skipped: {reason}");
            case.skip(reason);
            return None;
        }
        binaries_or_skip(case)
    }

    /// [`options_or_skip`] for a mode-specific case: only the binaries decide.
    fn binaries_or_skip(case: &mut CaseGuard) -> Option<LocalOptions> {
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
        let mut case = fault_case("vault_outage_fails_closed_resurrects_then_recovers");
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
        let mut unavailable = 0_usize;
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
                rig::base::progress::secs(outage.elapsed())
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
                unavailable += 1;
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
        // Every uncached request failed its Vault read; keygate's log says so
        // at most once per 10 s (with a count), not once per request.
        let outage_lines = read_failure_lines(&env);
        let allowed = 2 + outage.elapsed().as_secs() as usize / 10;
        assert!(
            (1..=allowed).contains(&outage_lines),
            "keygate wrote {outage_lines} 'cannot read the key record' lines for at least {unavailable} failed reads in {}: expected at least one and at most {allowed} (one per 10 s)",
            rig::base::progress::secs(outage.elapsed())
        );

        env.run.supervisor.restart("bao").await.unwrap();
        let vault = env.vault_without_token().unwrap();
        rig::vault::raft::unseal(&vault, &env.unseal_key_file().unwrap())
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
        env.record_fault(
            "vault_outage_fails_closed_resurrects_then_recovers",
            "Vault killed (SIGKILL) under load, restarted and unsealed",
            &env.default_gateway(),
            &tally,
        );
        case.note(tally.message(&format!(
        "cached key served {} into the outage (positive {} ms + resurrect {} ms), {resurrected} resurrected answers",
        rig::base::progress::secs(served),
        cache.positive_ttl_ms,
        cache.resurrect_ttl_ms
    )));
    }

    /// Lines of keygate's log saying that a key record could not be read.
    fn read_failure_lines(env: &Owned) -> usize {
        let log = env.run.run.logs_dir().join("keygate.log");
        std::fs::read_to_string(&log)
            .unwrap_or_else(|err| panic!("reading {}: {err}", log.display()))
            .lines()
            .filter(|line| line.contains("cannot read the key record from Vault"))
            .count()
    }

    /// 2. Seal -> 503 for what is not cached; unseal -> recovers, nothing lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sealed_vault_answers_503_and_unseal_recovers_with_data_kept() {
        let mut case = fault_case("sealed_vault_answers_503_and_unseal_recovers_with_data_kept");
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
        rig::vault::raft::unseal(&vault, &env.unseal_key_file().unwrap())
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
        env.record_fault(
            "sealed_vault_answers_503_and_unseal_recovers_with_data_kept",
            "Vault sealed (sys/seal), then unsealed",
            &env.default_gateway(),
            &tally,
        );
        case.note(tally.message("2 records written before the seal still present"));
    }

    /// 3. keygate's AppRole token expires three times (TTL 4 s, max 12 s:
    /// keygate replaces a token at two thirds of its TTL, so 4 s leaves it
    /// 1.3 s for each login) while requests keep coming: none may fail.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn token_expiry_three_times_loses_no_request() {
        let mut case = fault_case("token_expiry_three_times_loses_no_request");
        let Some(mut opts) = options_or_skip(&mut case) else {
            return;
        };
        let (ttl, max_ttl) = (Duration::from_secs(4), Duration::from_secs(12));
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
        // The first token and one for each of the three lifetimes it
        // outlived: keygate logs in again at two thirds of the TTL, so each
        // token is seen for about 2.7 s, far longer than a round here.
        assert!(
            accessors.len() >= 4,
            "keygate used {} tokens over {} though each lives {} (three expiries need four)",
            accessors.len(),
            rig::base::progress::secs(span),
            rig::base::progress::secs(ttl)
        );
        assert_eq!(tally.false_accepts, 0);
        env.record_fault(
            "token_expiry_three_times_loses_no_request",
            &format!(
                "keygate's Vault token expired three times (TTL {}, max {})",
                rig::base::progress::secs(ttl),
                rig::base::progress::secs(max_ttl)
            ),
            &env.default_gateway(),
            &tally,
        );
        case.note(tally.message(&format!(
            "0 failed; {} keygate tokens seen over {}",
            accessors.len(),
            rig::base::progress::secs(started.elapsed())
        )));
    }

    /// 4a. keygate killed and restarted under load behind Envoy
    /// (failure_mode_allow: false): the gap denies, never allows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keygate_restart_under_load_denies_in_the_gap_then_serves() {
        let mut case = fault_case("keygate_restart_under_load_denies_in_the_gap_then_serves");
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
                    for (key, must_not_pass) in [(unknown.expose(), true), (valid.as_str(), false)]
                    {
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
        env.record_fault(
            "keygate_restart_under_load_denies_in_the_gap_then_serves",
            "keygate killed (SIGKILL) under load, then restarted",
            &env.default_gateway(),
            &tally,
        );
        case.note(tally.message(&format!("{in_gap} requests in the gap, all denied")));
    }

    /// 4d. keygate killed, then a valid key it never saw and an unknown
    /// one sent through every gateway of the catalog: none passes (nobody
    /// can say yes), and no file of the run outside `secrets/` holds either
    /// key's verifier. A gateway that fails to reach its auth service logs
    /// the failed request, and Caddy's error log carried its headers,
    /// `X-Api-Key` with them. Recorded once per gateway (`case [gateway]`);
    /// a gateway whose binary is absent is recorded skipped with the reason.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keygate_down_every_gateway_denies_and_logs_no_key() {
        const NAME: &str = "keygate_down_every_gateway_denies_and_logs_no_key";
        let mut all = fault_case(NAME);
        let Some(mut opts) = options_or_skip(&mut all) else {
            return;
        };
        opts.gateways = Vec::new();
        let mut env = Owned::start(&opts).await.unwrap();
        let (group, _) = env.groups();
        let path = env.api_path(&group);
        // Issued before the kill, so Vault holds it, and never sent before
        // it, so no gateway (nor the module's table) can have it cached.
        let valid = env.issue_key(&group).await.unwrap();
        let unknown = ApiKey::generate();
        env.run.supervisor.stop("keygate", StopMode::Kill).unwrap();

        let names = catalog_gateways(&env);
        let mut failed = Vec::new();
        let mut cases = Vec::new();
        for gateway in &names {
            let mut case = CaseGuard::start_on(ASSERTION_GROUP, NAME, gateway);
            let Some(url) = env.env().gateways.get(gateway.as_str()) else {
                case.skip(keyrig_e2e::not_run_reason(env.env(), gateway));
                continue;
            };
            let mut tally = Tally::default();
            let mut statuses = BTreeSet::new();
            let mut wrong = Vec::new();
            for _ in 0..3 {
                for key in [&valid, &unknown] {
                    let reply = env.get_at(url, &path, Some(key.expose())).await;
                    tally.count(&reply, true);
                    statuses.insert(reply.status);
                    if reply.allowed() || reply.status == 0 {
                        wrong.push(reply.short());
                    }
                }
            }
            if wrong.is_empty() {
                env.record_fault(
                    NAME,
                    "keygate killed, keys new to every gateway",
                    gateway,
                    &tally,
                );
                cases.push((gateway.clone(), case, tally, statuses));
            } else {
                let why = format!("with keygate down: {}", wrong.join("; "));
                case.fail(why.clone());
                failed.push(format!("{gateway}: {why}"));
            }
        }
        // Every gateway has answered; now read what they and the rest of
        // the run wrote (keygate is down, so nothing more is coming).
        let leaks = files_holding(env.run.run.path(), &[valid.verifier(), unknown.verifier()]);
        // A leak in a gateway's own files is that gateway's failure.
        let logs = env.run.run.logs_dir();
        let gateways_dir = env.run.run.path().join("gateways");
        let of = |gateway: &str| -> Vec<&std::path::PathBuf> {
            leaks
                .iter()
                .filter(|file| {
                    **file == logs.join(format!("{gateway}.log"))
                        || file.starts_with(gateways_dir.join(gateway))
                })
                .collect()
        };
        for (gateway, mut case, tally, statuses) in cases {
            match of(&gateway).as_slice() {
                [] => case.note(tally.message(&format!(
                    "denied with {statuses:?}; none of its files holds either key"
                ))),
                files => {
                    let why = format!("a key's verifier is in {files:?}");
                    case.fail(why.clone());
                    failed.push(format!("{gateway}: {why}"));
                }
            }
        }
        assert!(
            failed.is_empty() && leaks.is_empty(),
            "with keygate down, {} gateway(s) failed: {}; files of the run holding a key's verifier: {leaks:?}",
            failed.len(),
            failed.join("; ")
        );
        all.note(format!(
            "through {}: every key denied, no key in any file of the run",
            env.env()
                .gateways
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    /// Every gateway of the environment's catalog: those running and those
    /// recorded skipped (each case records one `case [gateway]` row).
    fn catalog_gateways(env: &Owned) -> BTreeSet<String> {
        env.env()
            .gateways
            .keys()
            .chain(env.env().skipped_gateways.keys())
            .cloned()
            .collect()
    }

    /// Files under `dir`, but its `secrets/`, holding any of `needles`.
    fn files_holding(dir: &std::path::Path, needles: &[&str]) -> Vec<std::path::PathBuf> {
        let mut found = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(dir) = pending.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => panic!("cannot list {}: {err}", dir.display()),
            };
            for entry in entries.flatten() {
                let (path, kind) = (entry.path(), entry.file_type());
                match kind {
                    Ok(kind) if kind.is_dir() && entry.file_name() != "secrets" => {
                        pending.push(path)
                    }
                    Ok(kind) if kind.is_file() => {
                        // A file that cannot be read could hide a leak.
                        let text = match std::fs::read(&path) {
                            Ok(text) => text,
                            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                            Err(err) => panic!("cannot read {}: {err}", path.display()),
                        };
                        let text = String::from_utf8_lossy(&text);
                        if needles.iter().any(|n| text.contains(n)) {
                            found.push(path);
                        }
                    }
                    _ => {}
                }
            }
        }
        found
    }

    /// 4c. keygate killed (SIGKILL) under load behind `envoy-module`, and
    /// restarted: keys the module approved before keep passing from its
    /// table (fresh, then past their positive TTL from the resurrect
    /// window, since keygate cannot be asked), every key it never approved
    /// gets 503 `keygate-unavailable` (never 200, never 401: nobody could
    /// tell), and once keygate is back a key new to the module passes
    /// (the recovery recorded).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keygate_killed_behind_envoy_module_cached_keys_pass_others_get_503() {
        const NAME: &str = "keygate_killed_behind_envoy_module_cached_keys_pass_others_get_503";
        let mut case = fault_case(NAME);
        let Some(mut opts) = options_or_skip(&mut case) else {
            return;
        };
        if !opts.keygate_envoy_module.is_file() {
            let reason = format!(
                "no keygate Envoy module at {}: run the fault tests through `cargo xtask e2e`, which builds it",
                opts.keygate_envoy_module.display()
            );
            eprintln!("skipped: {reason}");
            case.skip(reason);
            return;
        }
        // The catalog's gateway that loads keygate's module.
        let catalog = rig::contract::gateways::Catalog::load(&opts.gateways_dir).unwrap();
        let Some(gateway) = catalog
            .iter()
            .find(|g| g.loads(rig::contract::gateways::Extension::KeygateEnvoy))
        else {
            let reason = format!(
                "no gateway of {} loads keygate-envoy",
                catalog.dir().display()
            );
            eprintln!("skipped: {reason}");
            case.skip(reason);
            return;
        };
        let gateway = gateway.name.clone();
        opts.gateways = vec![gateway.clone()];
        let mut env = Owned::start(&opts).await.unwrap();
        // The only gateway, so `get` and the load go through the module.
        assert_eq!(env.default_gateway(), gateway);
        let (group, _) = env.groups();
        let path = env.api_path(&group);
        let invalidations = env.metric_sum("keygate_invalidations_total").await.unwrap();
        let cached = env.issue_key(&group).await.unwrap();
        // In Vault and valid, but never asked for: the module holds nothing.
        let never_seen = env.issue_key(&group).await.unwrap();
        let mut tally = Tally::default();
        // Each key's write reaches the module as a drop, through Vault's
        // audit stream (a request and a response entry per write), keygate
        // and its feed; one landing after the module cached the key would
        // drop it again. So the outage starts only once keygate applied all
        // four and the module then serves the key without asking keygate.
        wait_until(
            "keygate to apply the audit entries of the two keys' writes",
            Duration::from_secs(10),
            async || {
                let now = env.metric_sum("keygate_invalidations_total").await?;
                Ok(if now >= invalidations + 4 {
                    Probe::Ready(())
                } else {
                    Probe::seen(format!(
                        "keygate_invalidations_total {invalidations} -> {now}"
                    ))
                })
            },
        )
        .await
        .unwrap();
        let mut approved_at = Instant::now();
        wait_until(
            "the module to serve the key from its table (keygate deciding nothing)",
            Duration::from_secs(10),
            async || {
                let decided = env.metric_sum("keygate_decisions_total").await?;
                let warm = env.get(&path, Some(cached.expose())).await;
                anyhow::ensure!(warm.status == 200, "before the kill: {}", warm.short());
                let again = env.metric_sum("keygate_decisions_total").await?;
                Ok(if again == decided {
                    Probe::Ready(())
                } else {
                    approved_at = Instant::now();
                    Probe::seen("keygate was asked")
                })
            },
        )
        .await
        .unwrap();
        let load = Load::start(&env, &path, &cached);

        env.run.supervisor.stop("keygate", StopMode::Kill).unwrap();
        let killed = Instant::now();
        // Past the module's positive TTL (keygate's, which the module
        // follows), so the cached key's last rounds are served from the
        // resurrect window; a window sized by the configuration, not a
        // measured time.
        let positive_ttl = Duration::from_millis(env.env().cache.positive_ttl_ms);
        let window = positive_ttl + Duration::from_secs(1);
        let (mut rounds, mut past_ttl) = (0u32, 0u32);
        while killed.elapsed() < window {
            let reply = env.get(&path, Some(cached.expose())).await;
            tally.count(&reply, false);
            assert_eq!(
                reply.status,
                200,
                "the key the module approved was refused {} after keygate was killed: {}",
                rig::base::progress::secs(killed.elapsed()),
                reply.short()
            );
            if approved_at.elapsed() > positive_ttl {
                past_ttl += 1;
            }
            for (name, key) in [
                ("a valid key the module never saw", never_seen.expose()),
                ("an unknown key", ApiKey::generate().expose()),
            ] {
                let reply = env.get(&path, Some(key)).await;
                tally.count(&reply, true);
                assert_eq!(
                    (reply.status, reply.reason.as_deref()),
                    (503, Some("keygate-unavailable")),
                    "{name} while keygate is down must get 503 (never 200, never 401)"
                );
            }
            rounds += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            past_ttl > 0,
            "no round ran past the cached entry's positive TTL ({rounds} rounds in {})",
            rig::base::progress::secs(window)
        );

        let restarted = Instant::now();
        env.run.supervisor.restart("keygate").await.unwrap();
        until_status(
            &env,
            &mut tally,
            &path,
            never_seen.expose(),
            200,
            Duration::from_secs(30),
            false,
        )
        .await
        .unwrap();
        tally.recovery = Some(restarted.elapsed());
        let after = env.get(&path, Some(ApiKey::generate().expose())).await;
        tally.count(&after, true);
        assert_eq!(
            (after.status, after.reason.as_deref()),
            (401, Some("unknown")),
            "an unknown key once keygate is back"
        );
        let load = load.finish().await;
        tally.add(&load.tally);
        assert_eq!(
            load.failed,
            0,
            "{} of {} load requests with the approved key failed across the kill and restart, first: {}",
            load.failed,
            load.tally.requests,
            load.first_failure.as_deref().unwrap_or("-")
        );
        assert_eq!(tally.false_accepts, 0);
        env.record_fault(
            NAME,
            &format!(
                "keygate killed (SIGKILL) under load behind envoy-module for {}, then restarted",
                rig::base::progress::secs(window)
            ),
            &gateway,
            &tally,
        );
        case.note(tally.message(&format!(
            "approved key served in all {rounds} rounds of the outage ({past_ttl} past its positive TTL of {} ms); recovery: keygate restart -> first 200 for a key new to the module",
            positive_ttl.as_millis()
        )));
    }

    /// 4b. `bao agent` (external-secret mode) killed: the Secret keeps the last
    /// good data and keygate keeps validating; a secret-id written to Vault
    /// meanwhile is delivered once the agent is back, and keygate logs in with
    /// it. Mode-specific: runs when this run's mode has an agent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bao_agent_restart_keeps_last_good_data_and_catches_up() {
        const NAME: &str = "bao_agent_restart_keeps_last_good_data_and_catches_up";
        let mut case = fault_case(NAME);
        let mode = run_mode();
        if mode.as_deref() != Some(Mode::ExternalSecret.as_str()) {
            let reason = format!(
                "no bao agent in {} mode: only external-secret delivers through one (`cargo xtask e2e --mode external-secret --filter faults` runs this case)",
                mode.as_deref().unwrap_or("this run's")
            );
            eprintln!("skipped: {reason}");
            case.skip(reason);
            return;
        }
        let Some(mut opts) = binaries_or_skip(&mut case) else {
            return;
        };
        opts.mode = Mode::ExternalSecret;
        let mut env = Owned::start(&opts).await.unwrap();
        let delivery = env.env().delivery.clone().expect("env.json has `delivery`");
        let external = delivery
            .external
            .clone()
            .expect("external-secret delivery names its Vault path");
        let dir = SecretDir::new(&delivery.secret_dir);
        let secret_key = delivery.keys.secret_id.clone();
        let (group, _) = env.groups();
        let path = env.api_path(&group);
        let valid = env.issue_key(&group).await.unwrap();
        let warm = env.get(&path, Some(valid.expose())).await;
        assert_eq!(warm.status, 200, "before the agent stops: {}", warm.short());
        let old_secret_id = Secret::new(dir.read(&secret_key).unwrap().trim().to_owned());
        let payload_before = dir.current_payload();
        let accessor_before = env
            .keygate_accessor()
            .await
            .expect("keygate reports its token accessor on /readyz");
        let mut tally = Tally::default();
        let load = Load::start(&env, &path, &valid);

        env.run
            .supervisor
            .stop("bao-agent", StopMode::Kill)
            .unwrap();

        // Meanwhile, in Vault: a new secret-id for keygate, where the agent reads.
        let new = env
            .root
            .approle_new_secret_id(&delivery.approle_role)
            .await
            .unwrap();
        rig::base::redact::register_secret(new.secret_id.expose());
        let mut data = env
            .root
            .kv2_get(&external.kv_mount, &external.secret_id_path)
            .await
            .unwrap()
            .expect("the delivery path in Vault holds the credentials");
        data[&external.secret_id_property] = Value::String(new.secret_id.expose().to_owned());
        env.root
            .kv2_put(&external.kv_mount, &external.secret_id_path, &data)
            .await
            .unwrap();

        // With no agent, nothing may touch the Secret: observed for three render
        // intervals plus two keygate polls (a window sized by the configured
        // intervals, not a measured time), while keygate keeps validating.
        let window = Duration::from_millis(
            3 * external.refresh_interval_ms + 2 * delivery.watch_interval_ms,
        );
        let held = Instant::now();
        let mut checks = 0;
        while held.elapsed() < window {
            assert_eq!(
                dir.current_payload(),
                payload_before,
                "the Secret's ..data changed {} after its agent was killed",
                rig::base::progress::secs(held.elapsed())
            );
            let now = dir.read(&secret_key).unwrap();
            assert!(
                now.trim() == old_secret_id.expose(),
                "the Secret's {secret_key} changed while its agent was down"
            );
            let reply = env.get(&path, Some(valid.expose())).await;
            tally.count(&reply, false);
            assert_eq!(
                reply.status,
                200,
                "keygate stopped validating while the agent was down: {}",
                reply.short()
            );
            checks += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        let restarted = Instant::now();
        env.run.supervisor.restart("bao-agent").await.unwrap();
        let deadline =
            Duration::from_millis(external.refresh_interval_ms + delivery.watch_interval_ms)
                + Duration::from_secs(20);
        wait_until(
            "the Secret to carry the secret-id written while bao agent was down",
            deadline,
            async || {
                let now = dir.read(&secret_key)?;
                Ok(if now.trim() == new.secret_id.expose() {
                    Probe::Ready(())
                } else {
                    Probe::seen(format!(
                        "the secret-id from before the agent stopped (..data -> {})",
                        dir.current_payload().unwrap_or_default()
                    ))
                })
            },
        )
        .await
        .unwrap();
        let delivered = restarted.elapsed();
        wait_until(
            "keygate to log in with the secret-id delivered after the agent restart",
            deadline,
            async || {
                let now = env.keygate_accessor().await;
                Ok(match now {
                    Some(now) if now != accessor_before => Probe::Ready(()),
                    Some(now) => Probe::seen(format!("the same token accessor {now}")),
                    None => Probe::seen("keygate not ready"),
                })
            },
        )
        .await
        .unwrap();
        tally.recovery = Some(restarted.elapsed());

        // The old secret-id retired: keygate works on the delivered one alone
        // (a fresh key is a Vault read with keygate's new token).
        env.root
            .call(
                Method::POST,
                &format!(
                    "auth/approle/role/{}/secret-id/destroy",
                    delivery.approle_role
                ),
                Some(&json!({ "secret_id": old_secret_id.expose() })),
            )
            .await
            .unwrap();
        let fresh = env.issue_key(&group).await.unwrap();
        let reply = env.get(&path, Some(fresh.expose())).await;
        tally.count(&reply, false);
        assert_eq!(
            reply.status,
            200,
            "a fresh key after the old secret-id was destroyed: {}",
            reply.short()
        );
        let load = load.finish().await;
        tally.add(&load.tally);
        assert_eq!(
            load.failed,
            0,
            "{} of {} load requests failed across the agent restart, first: {}",
            load.failed,
            load.tally.requests,
            load.first_failure.as_deref().unwrap_or("-")
        );
        assert_eq!(tally.false_accepts, 0);
        env.record_fault(
        NAME,
        "bao agent killed (SIGKILL), keygate's secret-id rotated in Vault meanwhile, agent restarted",
        &env.default_gateway(),
        &tally,
    );
        case.note(tally.message(&format!(
        "Secret unchanged over {checks} checks in {} without the agent; new secret-id in the Secret {} ms after the restart",
        rig::base::progress::secs(window),
        delivered.as_millis()
    )));
    }

    /// Random keys across every API group: each costs at most one Vault read
    /// (its own group's record), whatever the number of groups. This
    /// environment is the test's alone, so every read counted is the
    /// flood's.
    async fn keyless_flood(env: &Owned, gateway: &str) -> anyhow::Result<String> {
        let groups: Vec<String> = env.env().groups.keys().cloned().collect();
        let before = env.vault_reads().await?;
        let mut requests = 0u64;
        for group in &groups {
            for _ in 0..10 {
                let reply = env
                    .get_at(
                        gateway,
                        &env.api_path(group),
                        Some(ApiKey::generate().expose()),
                    )
                    .await;
                anyhow::ensure!(
                    (reply.status, reply.reason.as_deref()) == (401, Some("unknown")),
                    "a random key for {group} got {}",
                    reply.short()
                );
                requests += 1;
            }
        }
        let reads = env.vault_reads().await? - before;
        anyhow::ensure!(
            reads <= requests,
            "{reads} Vault reads for {requests} random keys across {} groups: more than one read per request",
            groups.len()
        );
        Ok(format!(
            "keyless flood: {requests} random keys across {} groups, {reads} Vault reads",
            groups.len()
        ))
    }

    /// 5. Hostile requests through every gateway of the environment: refused
    /// (by keygate or by the gateway itself) or mapped to the right group, the
    /// exact outcome per gateway, and no Vault read. Recorded once per gateway
    /// (`case [gateway]`, the gateway matrix); a gateway whose binary is absent
    /// is recorded skipped with the reason.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hostile_requests_are_refused_without_a_vault_read() {
        const NAME: &str = "hostile_requests_are_refused_without_a_vault_read";
        // The whole test (environment, every gateway); each gateway also
        // records its own case below.
        let mut all = fault_case(NAME);
        let Some(mut opts) = options_or_skip(&mut all) else {
            return;
        };
        // Every gateway of the catalog (installed ones run, the others are
        // recorded skipped), not only the default one.
        opts.gateways = Vec::new();
        // Long TTLs: every (group, selector) pair is warmed once, so any read
        // after that is one a hostile request caused.
        opts.positive_ttl = Duration::from_secs(300);
        opts.negative_ttl = Duration::from_secs(300);
        let env = Owned::start(&opts).await.unwrap();
        let mut failed = Vec::new();
        let mut passed = Vec::new();
        let names = catalog_gateways(&env);
        for gateway in &names {
            let gateway = gateway.as_str();
            let mut case = CaseGuard::start_on(ASSERTION_GROUP, NAME, gateway);
            let Some(url) = env.env().gateways.get(gateway) else {
                case.skip(keyrig_e2e::not_run_reason(env.env(), gateway));
                continue;
            };
            let checked = match hostile::run(&env, gateway, url).await {
                Ok(outcome) => keyless_flood(&env, url).await.map(|flood| (outcome, flood)),
                Err(err) => Err(err),
            };
            match checked {
                Ok((outcome, flood)) => {
                    let tally = Tally {
                        requests: outcome.requests,
                        ..Tally::default()
                    };
                    env.record_fault(NAME, "hostile requests", gateway, &tally);
                    case.note(tally.message(&format!(
                        "Vault reads 0; {}; {flood}",
                        outcome.outcomes.join("; ")
                    )));
                    passed.push(format!("{gateway} ({} requests)", outcome.requests));
                }
                Err(err) => {
                    case.fail(format!("{err:#}"));
                    failed.push(format!("{gateway}: {err:#}"));
                }
            }
        }
        assert!(
            failed.is_empty(),
            "hostile requests through {} gateways did not hold: {}",
            failed.len(),
            failed.join("; ")
        );
        all.note(format!(
            "through {}: every outcome as expected, 0 false accepts, 0 Vault reads",
            passed.join(", ")
        ));
    }

    /// 6a. Vault's audit stream down (nothing listens where its socket
    /// device points): Vault serves, revocation lands within the positive
    /// TTL, no false accept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn audit_stream_down_revocation_lands_within_the_ttl() {
        let mut case = fault_case("audit_stream_down_revocation_lands_within_the_ttl");
        let Some(opts) = options_or_skip(&mut case) else {
            return;
        };
        case.note(revocation::stream_down(opts).await.unwrap());
    }

    /// 6b. A key revoked through the audit stream, then Vault killed: the
    /// revoked key is never allowed, another cached key is resurrected.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn revoked_key_is_not_resurrected_when_vault_dies() {
        let mut case = fault_case("revoked_key_is_not_resurrected_when_vault_dies");
        let Some(opts) = options_or_skip(&mut case) else {
            return;
        };
        case.note(revocation::revoke_then_kill_vault(opts).await.unwrap());
    }

    /// 6c. Vault started while keygate's listener is down: it unseals and
    /// serves (`skip_test`), then keygate catches up through the stream.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn vault_started_without_keygate_serves_then_keygate_catches_up() {
        let mut case = fault_case("vault_started_without_keygate_serves_then_keygate_catches_up");
        let Some(opts) = options_or_skip(&mut case) else {
            return;
        };
        case.note(
            revocation::vault_starts_without_keygate(opts)
                .await
                .unwrap(),
        );
    }

    /// 6d. keygate's policy withdrawn: 503 `vault-forbidden`, not an
    /// outage, so the cached key is not resurrected.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn withdrawn_policy_is_vault_forbidden_and_not_resurrected() {
        let mut case = fault_case("withdrawn_policy_is_vault_forbidden_and_not_resurrected");
        let Some(opts) = options_or_skip(&mut case) else {
            return;
        };
        case.note(revocation::policy_withdrawn(opts).await.unwrap());
    }

    /// 6e. keygate cut off (secret-id destroyed, token revoked): its
    /// re-login after the 403 is refused, 503 `vault-forbidden`, not an
    /// outage, so the cached key is not resurrected.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cut_off_keygate_is_vault_forbidden_and_not_resurrected() {
        let mut case = fault_case("cut_off_keygate_is_vault_forbidden_and_not_resurrected");
        let Some(opts) = options_or_skip(&mut case) else {
            return;
        };
        case.note(revocation::keygate_cut_off(opts).await.unwrap());
    }

    /// 7. Bad scenario input fails before anything starts (or at apply time for
    /// a policy Vault rejects), naming file, field and fix; nothing is left running.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_scenario_input_fails_early_and_leaves_nothing_running() {
        let mut case = fault_case("bad_scenario_input_fails_early_and_leaves_nothing_running");
        let Some(opts) = options_or_skip(&mut case) else {
            return;
        };
        let summary = bad_input::run(&opts).await.unwrap();
        case.note(summary);
    }
}
