//! What keyrig may change in a Vault it shares with others.
//!
//! The cluster profile runs against someone's real Vault, where a policy
//! named `gateway-policy`, an AppRole role named `gateway`, a `pki/` or an
//! `api-portal-keys/` mount may already serve something else (those are
//! the names vendors' docs use). **keyrig writes only what it made:**
//! every policy it writes ends with a comment line carrying [`OWNER_MARK`],
//! every mount it creates has the mark in its description, and an AppRole
//! role counts as keyrig's only when every policy it grants (but
//! `default`) is one keyrig manages. Anything of the same name without
//! that is refused, untouched, with what to do; `setup::apply` looks at
//! everything first, so a refusal leaves nothing half-written. The local
//! and kind profiles start from an empty Vault, so there the checks find
//! nothing and cost a read each.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result, bail};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::vault::client::VaultClient;

/// In the text of every policy and the description of every mount keyrig
/// creates; the only ones it ever changes carry it.
pub const OWNER_MARK: &str = "managed by keyrig";

/// Who a Vault object of a given name belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Absent,
    Keyrig,
    /// Someone else's: never modified. What it is, for the message.
    Other(String),
}

/// `path` as the mark and messages name it: relative to the workspace when
/// inside it, so no checkout path (a user name) goes into a shared Vault.
pub fn source_name(path: &Path) -> String {
    let root = crate::base::paths::workspace_root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The policy text keyrig writes: `hcl`, then a last comment line with the
/// mark and where the policy comes from (last, so the line numbers of
/// Vault's parse errors are the file's).
pub fn marked_policy(hcl: &str, source: &str) -> String {
    let separator = if hcl.is_empty() || hcl.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    format!("{hcl}{separator}# {OWNER_MARK}: {source}\n")
}

/// Who owns ACL policy `name`.
pub async fn policy_owner(root: &VaultClient, name: &str) -> Result<Owner> {
    let path = format!("sys/policies/acl/{name}");
    let (status, body) = root.request(Method::GET, &path, None).await?;
    match status {
        StatusCode::NOT_FOUND => Ok(Owner::Absent),
        status if status.is_success() => Ok(policy_owner_in(&body)),
        status => bail!("reading {path}: Vault answered {status}"),
    }
}

fn policy_owner_in(body: &Value) -> Owner {
    let text = body
        .pointer("/data/policy")
        .or_else(|| body.get("policy"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let last = text.lines().rev().find(|l| !l.trim().is_empty());
    if last.is_some_and(|l| l.starts_with(&format!("# {OWNER_MARK}"))) {
        Owner::Keyrig
    } else {
        Owner::Other("a policy keyrig did not write".into())
    }
}

/// Why keyrig may not write policy `name` (from `source`), if it may not.
pub async fn policy_conflict(
    root: &VaultClient,
    name: &str,
    source: &str,
) -> Result<Option<String>> {
    Ok(match policy_owner(root, name).await? {
        Owner::Other(what) => Some(format!(
            "Vault already has a policy named {name:?} ({what}: its last line is not \
             \"# {OWNER_MARK}: ...\"). Rename keyrig's policy in {source} or, if this Vault is a \
             throwaway one, delete that policy"
        )),
        Owner::Absent | Owner::Keyrig => None,
    })
}

/// Writes policy `name` (marked) unless a policy of that name is someone
/// else's. `source` names the file it comes from, for the mark and the
/// message.
pub async fn put_managed_policy(
    root: &VaultClient,
    name: &str,
    hcl: &str,
    source: &str,
) -> Result<()> {
    if let Some(conflict) = policy_conflict(root, name, source).await? {
        bail!("{conflict}; keyrig does not overwrite it");
    }
    root.put_policy(name, &marked_policy(hcl, source))
        .await
        .with_context(|| {
            format!("Vault rejected policy {name:?} from {source}: fix the HCL in that file")
        })
}

/// Who owns AppRole role `name` on `auth/<mount>`: keyrig's when it grants
/// at least one policy besides `default` and every one of those is in
/// `managed` or is a policy keyrig wrote (a role an earlier setup made).
/// AppRole roles carry no description to mark. Vault keeps policy names
/// in lower case, so they are compared so.
pub async fn approle_role_owner(
    root: &VaultClient,
    mount: &str,
    name: &str,
    managed: &BTreeSet<String>,
) -> Result<Owner> {
    let path = format!("auth/{mount}/role/{name}");
    let (status, body) = root.request(Method::GET, &path, None).await?;
    let granted = match status {
        StatusCode::NOT_FOUND => return Ok(Owner::Absent),
        status if status.is_success() => granted_policies(&body),
        status => bail!("reading {path}: Vault answered {status}"),
    };
    let mut unmanaged = Vec::new();
    for policy in unmanaged_policies(&granted, managed) {
        if policy == "default" || policy_owner(root, &policy).await? != Owner::Keyrig {
            unmanaged.push(policy);
        }
    }
    Ok(if unmanaged.is_empty() {
        Owner::Keyrig
    } else {
        Owner::Other(format!(
            "a role granting [{}], not only policies keyrig manages",
            granted.iter().cloned().collect::<Vec<_>>().join(", ")
        ))
    })
}

/// The policies a role grants, lower case, without `default`.
fn granted_policies(body: &Value) -> BTreeSet<String> {
    let data = body.get("data").unwrap_or(body);
    ["token_policies", "policies"]
        .iter()
        .filter_map(|field| data.get(field).and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_lowercase)
        .filter(|p| p != "default")
        .collect()
}

/// Of `granted`, those not in `managed`. A role granting nothing but
/// `default` is not keyrig's (it never writes such a role): `default` is
/// then reported as the one unmanaged policy.
fn unmanaged_policies(granted: &BTreeSet<String>, managed: &BTreeSet<String>) -> Vec<String> {
    if granted.is_empty() {
        return vec!["default".into()];
    }
    let managed: BTreeSet<String> = managed.iter().map(|p| p.to_lowercase()).collect();
    granted.difference(&managed).cloned().collect()
}

/// Why keyrig may not write AppRole role `name` (from `source`), if it may
/// not.
pub async fn role_conflict(
    root: &VaultClient,
    mount: &str,
    name: &str,
    managed: &BTreeSet<String>,
    source: &str,
) -> Result<Option<String>> {
    Ok(
        match approle_role_owner(root, mount, name, managed).await? {
            Owner::Other(what) => Some(format!(
                "Vault already has an AppRole role named {name:?} on auth/{mount} ({what}). Rename \
             keyrig's role in {source} or, if this Vault is a throwaway one, delete that role"
            )),
            Owner::Absent | Owner::Keyrig => None,
        },
    )
}

/// Who owns secrets-engine mount `path` and what type it is, from `GET
/// sys/mounts`.
async fn secrets_mount(root: &VaultClient, path: &str) -> Result<(Owner, String)> {
    let mounts = root
        .call(Method::GET, "sys/mounts", None)
        .await
        .context("listing Vault's secrets engines (sys/mounts)")?;
    Ok(mount_owner_in(&mounts, path))
}

fn mount_owner_in(mounts: &Value, path: &str) -> (Owner, String) {
    let key = format!("{}/", path.trim_end_matches('/'));
    let Some(found) = mounts.get("data").unwrap_or(mounts).get(&key) else {
        return (Owner::Absent, String::new());
    };
    let kind = found["type"].as_str().unwrap_or("?").to_owned();
    let description = found["description"].as_str().unwrap_or("");
    if description.contains(OWNER_MARK) {
        (Owner::Keyrig, kind)
    } else {
        let what = format!("a {kind} mount keyrig did not create");
        (Owner::Other(what), kind)
    }
}

/// Why keyrig may not use `path` as a `kind` mount (`field` chose the
/// path), if it may not: someone else's mount, or keyrig's of another type.
pub async fn mount_conflict(
    root: &VaultClient,
    path: &str,
    kind: &str,
    field: &str,
) -> Result<Option<String>> {
    Ok(conflict_of(
        &secrets_mount(root, path).await?,
        path,
        kind,
        field,
    ))
}

/// [`mount_conflict`]'s answer for what `sys/mounts` says of `path`.
fn conflict_of(found: &(Owner, String), path: &str, kind: &str, field: &str) -> Option<String> {
    match found {
        (Owner::Absent, _) => None,
        (Owner::Keyrig, found) if found == kind => None,
        (Owner::Keyrig, found) => Some(format!(
            "{path}/ is keyrig's {found} mount, not {kind}: set {field} to another path"
        )),
        (Owner::Other(what), _) => Some(format!(
            "{path}/ is already mounted in this Vault ({what}: its description lacks \
             \"{OWNER_MARK}\"); keyrig does not write into it. Set {field} to a path of keyrig's \
             own (e.g. keyrig-{path}) or, if this Vault is a throwaway one, unmount it"
        )),
    }
}

/// Mounts secrets engine `kind` at `path` with the mark, or accepts it when
/// keyrig made it; refuses a mount of someone else's. `field` names the
/// setting that chose `path`, for the message.
pub async fn claim_secrets_mount(
    root: &VaultClient,
    path: &str,
    kind: &str,
    options: Value,
    field: &str,
) -> Result<()> {
    let found = secrets_mount(root, path).await?;
    if let Some(conflict) = conflict_of(&found, path, kind, field) {
        bail!("{conflict}");
    }
    if found.0 == Owner::Keyrig {
        return Ok(());
    }
    let mut body = json!({
        "type": kind,
        "description": format!("{OWNER_MARK}: {field}"),
    });
    if let (Some(body), Some(options)) = (body.as_object_mut(), options.as_object()) {
        body.extend(options.clone());
    }
    root.call(Method::POST, &format!("sys/mounts/{path}"), Some(&body))
        .await
        .with_context(|| format!("mounting {kind} at {path}/ ({field})"))?;
    Ok(())
}

/// Fails with every conflict found, one per line, when there are any.
pub fn refuse(conflicts: Vec<String>) -> Result<()> {
    match conflicts.len() {
        0 => Ok(()),
        1 => bail!("{}; nothing was written", conflicts[0]),
        n => bail!(
            "{n} objects of this Vault are not keyrig's to write; nothing was written:\n- {}",
            conflicts.join("\n- ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn managed(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn only_a_policy_whose_last_line_carries_the_mark_is_keyrigs() {
        let hcl = "path \"x/*\" { capabilities = [\"read\"] }";
        let ours = marked_policy(hcl, "setup.yaml");
        assert!(ours.starts_with(hcl), "the file's lines keep their numbers");
        assert_eq!(
            policy_owner_in(&json!({"data": {"policy": ours}})),
            Owner::Keyrig
        );
        assert_eq!(
            policy_owner_in(&json!({"data": {"policy": marked_policy(&format!("{hcl}\n"), "f")}})),
            Owner::Keyrig
        );
        let theirs = "# managed by keyrig\npath \"x/*\" { capabilities = [\"read\"] }\n";
        assert!(matches!(
            policy_owner_in(&json!({"data": {"policy": theirs}})),
            Owner::Other(_)
        ));
        assert!(matches!(policy_owner_in(&json!({})), Owner::Other(_)));
    }

    #[test]
    fn a_role_grants_what_it_lists_in_lower_case_but_default() {
        let granted = granted_policies(&json!({"data": {
            "token_policies": ["Gateway-Policy", "default"],
            "policies": ["prod-read"],
        }}));
        assert_eq!(granted, managed(&["gateway-policy", "prod-read"]));
    }

    #[test]
    fn only_policies_outside_the_managed_ones_are_looked_at() {
        let ours = managed(&["gateway-policy", "Gateway-Policy-Billing"]);
        assert_eq!(
            unmanaged_policies(&managed(&["gateway-policy-billing"]), &ours),
            Vec::<String>::new()
        );
        assert_eq!(
            unmanaged_policies(&managed(&["gateway-policy", "prod-read"]), &ours),
            vec!["prod-read".to_owned()]
        );
        // Nothing but `default`: never a role keyrig wrote.
        assert_eq!(
            unmanaged_policies(&BTreeSet::new(), &ours),
            vec!["default".to_owned()]
        );
    }

    #[test]
    fn only_a_mount_described_with_the_mark_is_keyrigs() {
        let mounts = json!({"data": {
            "api-portal-keys/": {"type": "kv", "description": "managed by keyrig: kv_mount"},
            "pki/": {"type": "pki", "description": "the company CA"},
        }});
        assert_eq!(
            mount_owner_in(&mounts, "api-portal-keys"),
            (Owner::Keyrig, "kv".into())
        );
        assert_eq!(
            mount_owner_in(&mounts, "pki"),
            (
                Owner::Other("a pki mount keyrig did not create".into()),
                "pki".into()
            )
        );
        assert_eq!(mount_owner_in(&mounts, "secret").0, Owner::Absent);
    }
}
