//! Revocation through Vault's audit stream under faults: the stream down,
//! Vault killed after a revocation, Vault started while keygate's listener
//! is down. Each runs in an environment it owns (`support::Owned`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use apikey::ApiKey;
use rig::base::wait::{Probe, wait_until};
use rig::local::{LocalOptions, VaultStorage};
use rig::process::supervisor::StopMode;

use crate::support::{Owned, Tally, until_status};

const CONNECTED: &str = "keygate_invalidation_stream_connected";

/// A fifth of the positive TTL: a revocation that lands within it came
/// through the audit stream, not the cache's expiry.
fn fast(env: &Owned) -> Duration {
    Duration::from_millis(env.env().cache.positive_ttl_ms / 5)
}

/// Deletes the key's record with the root token (all versions, the portal's
/// revocation); fails unless Vault answers at once (it keeps serving
/// whatever the socket audit device does).
async fn revoke(env: &Owned, group: &str, key: &ApiKey) -> Result<()> {
    env.root
        .kv2_delete_metadata(
            &env.env().kv_mount,
            &format!("{group}/{}", key.selector().as_str()),
        )
        .await
        .with_context(|| "Vault refused the revocation".to_owned())
}

/// Waits until Vault's socket audit device is connected to keygate. Vault
/// connects when it next writes an audit entry, so each round makes it
/// write one (a key written to Vault).
async fn stream_connected(env: &Owned, group: &str) -> Result<()> {
    wait_until(
        "Vault's audit stream to connect to keygate",
        Duration::from_secs(30),
        async || {
            env.issue_key(group).await?;
            let open = env.metric_sum(CONNECTED).await?;
            Ok(if open >= 1 {
                Probe::Ready(())
            } else {
                Probe::seen(format!("{CONNECTED} {open}"))
            })
        },
    )
    .await
}

/// Polls until `key` is refused (401 `unknown`) within `deadline`; a 200 in
/// between is counted (it is allowed only until the revocation lands) and
/// any other answer fails. Returns how long it took.
async fn until_refused(
    env: &Owned,
    path: &str,
    key: &ApiKey,
    deadline: Duration,
    tally: &mut Tally,
) -> Result<Duration> {
    let started = Instant::now();
    let mut last = "nothing yet".to_owned();
    while started.elapsed() < deadline {
        let reply = env.get(path, Some(key.expose())).await;
        tally.count(&reply, false);
        match (reply.status, reply.reason.as_deref()) {
            (401, Some("unknown")) => return Ok(started.elapsed()),
            (200, _) => last = reply.short(),
            _ => bail!(
                "the revoked key got {} before it was refused",
                reply.short()
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!(
        "the revoked key was not refused within {}: last saw {last}",
        rig::base::progress::secs(deadline)
    )
}

/// (b) The audit stream down (bao.hcl declares the socket device, nothing
/// listens at its address): Vault keeps serving, revocation lands within
/// the positive TTL, the revoked key is never allowed again, and a valid key
/// keeps working.
pub async fn stream_down(mut opts: LocalOptions) -> Result<String> {
    opts.invalidation = false;
    let env = Owned::start(&opts).await?;
    let (group, _) = env.groups();
    let path = env.api_path(&group);
    let (revoked, valid) = (env.issue_key(&group).await?, env.issue_key(&group).await?);
    let mut tally = Tally::default();
    for key in [&revoked, &valid] {
        let reply = env.get(&path, Some(key.expose())).await;
        tally.count(&reply, false);
        ensure!(
            reply.status == 200,
            "before the revocation: {}",
            reply.short()
        );
    }
    ensure!(
        env.env().cache.invalidation_addr.is_none(),
        "keygate was configured with a listener"
    );
    // Vault serves writes while its socket device cannot connect.
    for _ in 0..5 {
        env.issue_key(&group)
            .await
            .context("Vault stopped serving writes")?;
    }
    let open = env.metric_sum(CONNECTED).await?;
    ensure!(open == 0, "{CONNECTED} is {open} with no listener");

    revoke(&env, &group, &revoked).await?;
    let ttl = Duration::from_millis(env.env().cache.positive_ttl_ms);
    let took = until_refused(
        &env,
        &path,
        &revoked,
        ttl + Duration::from_secs(3),
        &mut tally,
    )
    .await?;
    for _ in 0..10 {
        let reply = env.get(&path, Some(revoked.expose())).await;
        tally.count(&reply, true);
        ensure!(
            (reply.status, reply.reason.as_deref()) == (401, Some("unknown")),
            "the revoked key got {} after it was refused",
            reply.short()
        );
        let reply = env.get(&path, Some(valid.expose())).await;
        tally.count(&reply, false);
        ensure!(reply.status == 200, "the valid key got {}", reply.short());
    }
    ensure!(
        tally.false_accepts == 0,
        "false accepts: {}",
        tally.false_accepts
    );
    env.record_fault(
        "audit_stream_down_revocation_lands_within_the_ttl",
        "Vault's socket audit device with nothing listening (stream down)",
        &env.default_gateway(),
        &tally,
    );
    Ok(tally.message(&format!(
        "revoked key refused {} ms after the delete (positive TTL {} ms, no stream); Vault served every write",
        took.as_millis(),
        ttl.as_millis()
    )))
}

/// (c) A key revoked (seen on the stream), then Vault killed: the revoked
/// key is never allowed, while another cached key is served from the
/// resurrect store.
pub async fn revoke_then_kill_vault(mut opts: LocalOptions) -> Result<String> {
    opts.vault_storage = VaultStorage::Raft;
    let mut env = Owned::start(&opts).await?;
    let (group, _) = env.groups();
    let path = env.api_path(&group);
    stream_connected(&env, &group).await?;
    let (revoked, kept) = (env.issue_key(&group).await?, env.issue_key(&group).await?);
    let mut tally = Tally::default();
    for key in [&revoked, &kept] {
        let reply = env.get(&path, Some(key.expose())).await;
        tally.count(&reply, false);
        ensure!(
            reply.status == 200,
            "before the revocation: {}",
            reply.short()
        );
    }
    revoke(&env, &group, &revoked).await?;
    let took = until_refused(&env, &path, &revoked, fast(&env), &mut tally).await?;
    let resurrected_before = env.metric_sum("keygate_cache_resurrected_total").await?;

    env.run.supervisor.stop("bao", StopMode::Kill)?;
    let killed = Instant::now();
    // Past the positive TTL, so the kept key can only come from the
    // resurrect store (the positive window alone would also serve it).
    let window = Duration::from_millis(env.env().cache.positive_ttl_ms) + Duration::from_secs(2);
    let mut rounds = 0;
    while killed.elapsed() < window {
        let reply = env.get(&path, Some(revoked.expose())).await;
        tally.count(&reply, true);
        ensure!(
            !reply.allowed(),
            "the revoked key was allowed {} ms after Vault was killed",
            killed.elapsed().as_millis()
        );
        ensure!(
            reply.status == 503 || reply.status == 401,
            "the revoked key during the outage got {}",
            reply.short()
        );
        let reply = env.get(&path, Some(kept.expose())).await;
        tally.count(&reply, false);
        ensure!(
            reply.status == 200,
            "the cached key was not served from the resurrect store {} ms into the outage: {}",
            killed.elapsed().as_millis(),
            reply.short()
        );
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resurrected = env.metric_sum("keygate_cache_resurrected_total").await? - resurrected_before;
    ensure!(
        resurrected > 0,
        "keygate_cache_resurrected_total did not move: the kept key was not served from the resurrect store"
    );
    ensure!(
        tally.false_accepts == 0,
        "false accepts: {}",
        tally.false_accepts
    );
    env.record_fault(
        "revoked_key_is_not_resurrected_when_vault_dies",
        "a key revoked, then Vault killed (SIGKILL)",
        &env.default_gateway(),
        &tally,
    );
    Ok(tally.message(&format!(
        "revoked key refused {} ms after the delete; {rounds} rounds over {} of outage: revoked never allowed, the other key served ({resurrected} resurrected answers)",
        took.as_millis(),
        rig::base::progress::secs(window)
    )))
}

/// (d) Vault started while keygate's listener is down: it comes up,
/// unseals and serves (the socket device's `skip_test`), and once keygate
/// is back the stream connects and revocations arrive through it.
pub async fn vault_starts_without_keygate(mut opts: LocalOptions) -> Result<String> {
    opts.vault_storage = VaultStorage::Raft;
    let mut env = Owned::start(&opts).await?;
    let (group, _) = env.groups();
    let path = env.api_path(&group);
    env.run.supervisor.stop("keygate", StopMode::Kill)?;
    env.run.supervisor.stop("bao", StopMode::Kill)?;

    env.run.supervisor.restart("bao").await?;
    let vault = env.vault_without_token()?;
    rig::vault::raft::unseal(&vault, &env.unseal_key_file()?)
        .await
        .context("Vault did not unseal with keygate's listener down")?;
    // Serving with no listener: writes and reads succeed.
    let written = wait_until(
        "Vault to serve a write with keygate's listener down",
        Duration::from_secs(30),
        async || {
            Ok(match env.issue_key(&group).await {
                Ok(key) => Probe::Ready(key),
                Err(err) => Probe::seen(format!("{err:#}")),
            })
        },
    )
    .await?;
    ensure!(
        env.record_exists(&group, &written).await?,
        "the record written with keygate down cannot be read back"
    );

    env.run.supervisor.restart("keygate").await?;
    let mut tally = Tally::default();
    until_status(
        &env,
        &mut tally,
        &path,
        written.expose(),
        200,
        Duration::from_secs(30),
        false,
    )
    .await?;
    stream_connected(&env, &group).await?;
    let invalidations_before = env.metric_sum("keygate_invalidations_total").await?;
    revoke(&env, &group, &written).await?;
    let took = until_refused(&env, &path, &written, fast(&env), &mut tally).await?;
    let invalidations = env.metric_sum("keygate_invalidations_total").await? - invalidations_before;
    ensure!(
        invalidations > 0,
        "the revocation landed but keygate_invalidations_total did not move"
    );
    ensure!(
        tally.false_accepts == 0,
        "false accepts: {}",
        tally.false_accepts
    );
    env.record_fault(
        "vault_started_without_keygate_serves_then_keygate_catches_up",
        "Vault restarted and unsealed while keygate was down, then keygate restarted",
        &env.default_gateway(),
        &tally,
    );
    Ok(tally.message(&format!(
        "Vault unsealed and served with no listener; after keygate's restart the stream connected and a revocation landed {} ms after the delete",
        took.as_millis()
    )))
}

/// After the fault is undone: `key` at `path` served again within
/// `within` (the recovery recorded), no false accept in the whole case,
/// and the fault's figures recorded for the report.
async fn served_again_and_recorded(
    env: &Owned,
    tally: &mut Tally,
    (path, key): (&str, &ApiKey),
    within: Duration,
    case: &str,
    fault: &str,
) -> Result<()> {
    tally.recovery = Some(until_status(env, tally, path, key.expose(), 200, within, false).await?);
    ensure!(
        tally.false_accepts == 0,
        "false accepts: {}",
        tally.false_accepts
    );
    env.record_fault(case, fault, &env.default_gateway(), tally);
    Ok(())
}

/// From now on `key` may be served (its cached answer) until keygate
/// answers 503 `vault-forbidden`, within the positive TTL + 10 s; then it
/// must get that 20 more times over 2 s, well inside the resurrect window:
/// Vault's refusal is not an outage, never resurrected. Returns how long
/// the first refusal took. `what` says what was done, for messages.
async fn refused_as_vault_forbidden(
    env: &Owned,
    tally: &mut Tally,
    path: &str,
    key: &ApiKey,
    what: &str,
) -> Result<Duration> {
    let since = Instant::now();
    let deadline = Duration::from_millis(env.env().cache.positive_ttl_ms) + Duration::from_secs(10);
    let refused_at = loop {
        ensure!(
            since.elapsed() < deadline,
            "{what}, the key was still served after {}",
            rig::base::progress::secs(since.elapsed())
        );
        let reply = env.get(path, Some(key.expose())).await;
        tally.count(&reply, false);
        match (reply.status, reply.reason.as_deref()) {
            (200, _) => {}
            (503, Some("vault-forbidden")) => break since.elapsed(),
            _ => bail!("{what}, the key got {}", reply.short()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for _ in 0..20 {
        let reply = env.get(path, Some(key.expose())).await;
        tally.count(&reply, true);
        ensure!(
            (reply.status, reply.reason.as_deref()) == (503, Some("vault-forbidden")),
            "{what}, the key got {} after a vault-forbidden",
            reply.short()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(refused_at)
}

/// keygate's policy withdrawn (`gateway-policy` rewritten without `read` on
/// the key mount): the cached key gets 503 `vault-forbidden`, never served
/// from the resurrect store, and works again once the policy is restored.
pub async fn policy_withdrawn(opts: LocalOptions) -> Result<String> {
    let env = Owned::start(&opts).await?;
    let (group, _) = env.groups();
    let path = env.api_path(&group);
    stream_connected(&env, &group).await?;
    let key = env.issue_key(&group).await?;
    let mut tally = Tally::default();
    let reply = env.get(&path, Some(key.expose())).await;
    tally.count(&reply, false);
    ensure!(
        reply.status == 200,
        "before the withdrawal: {}",
        reply.short()
    );

    env.root
        .put_policy(
            "gateway-policy",
            "path \"sys/keyrig-nothing\" {\n  capabilities = [\"deny\"]\n}\n",
        )
        .await?;
    // The audit stream marks the cache stale at once; without it the
    // positive TTL; plus keygate's re-login on the first 403.
    let refused_at =
        refused_as_vault_forbidden(&env, &mut tally, &path, &key, "with the policy withdrawn")
            .await?;
    let hcl =
        std::fs::read_to_string(opts.scenarios_dir.join("vault/policies/gateway-policy.hcl"))?
            .replace("{{ mount }}", &env.env().kv_mount);
    env.root.put_policy("gateway-policy", &hcl).await?;
    served_again_and_recorded(
        &env,
        &mut tally,
        (&path, &key),
        Duration::from_secs(30),
        "withdrawn_policy_is_vault_forbidden_and_not_resurrected",
        "keygate's policy rewritten without read on the key mount, then restored",
    )
    .await?;
    Ok(tally.message(&format!(
        "503 vault-forbidden {} ms after the policy was withdrawn, 20 more refusals inside the resurrect window, served again once restored",
        refused_at.as_millis()
    )))
}

/// keygate cut off by its operator: its secret-id destroyed and its token
/// revoked. Once the cached answer is due, the read gets 403 and the
/// re-login is refused: 503 `vault-forbidden`, Vault's answer, so the
/// cached record is not resurrected; a new secret-id delivered the way the
/// mode delivers brings it back.
pub async fn keygate_cut_off(opts: LocalOptions) -> Result<String> {
    use rig::vault::client::Secret;
    let env = Owned::start(&opts).await?;
    let delivery = env
        .env()
        .delivery
        .clone()
        .context("env.json has no `delivery`: keygate's credentials are not files here")?;
    let (group, _) = env.groups();
    let path = env.api_path(&group);
    let key = env.issue_key(&group).await?;
    let mut tally = Tally::default();
    let reply = env.get(&path, Some(key.expose())).await;
    tally.count(&reply, false);
    ensure!(reply.status == 200, "before the cut: {}", reply.short());

    let secret_id = match &delivery.external {
        Some(ext) => env
            .root
            .kv2_get(&ext.kv_mount, &ext.secret_id_path)
            .await?
            .and_then(|data| data[&ext.secret_id_property].as_str().map(str::to_owned))
            .context("the delivery path in Vault holds no secret-id")?,
        None => rig::local::secret_dir::SecretDir::new(&delivery.secret_dir)
            .read(&delivery.keys.secret_id)?
            .trim()
            .to_owned(),
    };
    let accessor = env
        .keygate_accessor()
        .await
        .context("keygate reports no token accessor on /readyz")?;
    env.root
        .call(
            reqwest::Method::POST,
            &format!(
                "auth/approle/role/{}/secret-id/destroy",
                delivery.approle_role
            ),
            Some(&serde_json::json!({ "secret_id": secret_id })),
        )
        .await
        .context("destroying keygate's secret-id")?;
    env.root
        .call(
            reqwest::Method::POST,
            "auth/token/revoke-accessor",
            Some(&serde_json::json!({ "accessor": accessor })),
        )
        .await
        .context("revoking keygate's token")?;
    // The cached answer serves until its positive TTL; then the read.
    let refused_at =
        refused_as_vault_forbidden(&env, &mut tally, &path, &key, "with keygate cut off").await?;
    let fresh = env
        .root
        .approle_new_secret_id(&delivery.approle_role)
        .await?;
    rig::base::redact::register_secret(fresh.secret_id.expose());
    rig::local::delivery::deliver_secret_id(
        &env.root,
        &delivery,
        &Secret::new(fresh.secret_id.expose()),
    )
    .await?;
    served_again_and_recorded(
        &env,
        &mut tally,
        (&path, &key),
        Duration::from_secs(60),
        "cut_off_keygate_is_vault_forbidden_and_not_resurrected",
        "keygate's secret-id destroyed and its token revoked, then a new secret-id delivered",
    )
    .await?;
    Ok(tally.message(&format!(
        "503 vault-forbidden {} ms after the cut, 20 more refusals inside the resurrect window, served again once a new secret-id was delivered",
        refused_at.as_millis()
    )))
}
