//! What keyrig may change in a Vault it shares with others.
//!
//! The cluster profile runs against someone's real Vault, where a policy
//! named `gateway-policy`, an AppRole role named `gateway`, a `pki/` or an
//! `api-portal-keys/` mount may already serve something else (those are
//! the names vendors' docs use). **keyrig writes only what it made:**
//! every policy it writes starts with a comment carrying [`OWNER_MARK`],
//! every mount it creates has the mark in its description, and an AppRole
//! role counts as keyrig's only when every policy it grants is one keyrig
//! manages. Anything of the same name without that is refused, untouched,
//! with what to do. The local and kind profiles start from an empty Vault,
//! so there the checks find nothing and cost a read each.

use std::collections::BTreeSet;

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

/// Writes policy `name` (marked) unless a policy of that name is someone
/// else's. `source` names the file it comes from, for the mark and the
/// message.
pub async fn put_managed_policy(
    root: &VaultClient,
    name: &str,
    hcl: &str,
    source: &str,
) -> Result<()> {
    if let Owner::Other(what) = policy_owner(root, name).await? {
        bail!(
            "Vault already has a policy named {name:?} ({what}: its last line is not \
             \"# {OWNER_MARK}: ...\"); keyrig does not overwrite it. Rename keyrig's policy in {source} \
             or, if this Vault is a throwaway one, delete that policy"
        );
    }
    root.put_policy(name, &marked_policy(hcl, source))
        .await
        .with_context(|| {
            format!("Vault rejected policy {name:?} from {source}: fix the HCL in that file")
        })
}

/// Who owns AppRole role `name` on `auth/<mount>`: keyrig's when every
/// policy it grants is one of `managed` (AppRole roles carry no
/// description to mark).
pub async fn approle_role_owner(
    root: &VaultClient,
    mount: &str,
    name: &str,
    managed: &BTreeSet<String>,
) -> Result<Owner> {
    let path = format!("auth/{mount}/role/{name}");
    let (status, body) = root.request(Method::GET, &path, None).await?;
    match status {
        StatusCode::NOT_FOUND => Ok(Owner::Absent),
        status if status.is_success() => Ok(role_owner_in(&body, managed)),
        status => bail!("reading {path}: Vault answered {status}"),
    }
}

fn role_owner_in(body: &Value, managed: &BTreeSet<String>) -> Owner {
    let data = body.get("data").unwrap_or(body);
    let granted: BTreeSet<String> = ["token_policies", "policies"]
        .iter()
        .filter_map(|field| data.get(field).and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    if !granted.is_empty() && granted.is_subset(managed) {
        Owner::Keyrig
    } else {
        let granted: Vec<&str> = granted.iter().map(String::as_str).collect();
        Owner::Other(format!(
            "a role granting [{}], not only policies keyrig manages",
            granted.join(", ")
        ))
    }
}

/// Who owns secrets-engine mount `path`, from `GET sys/mounts`.
pub async fn secrets_mount_owner(root: &VaultClient, path: &str) -> Result<Owner> {
    let mounts = root
        .call(Method::GET, "sys/mounts", None)
        .await
        .context("listing Vault's secrets engines (sys/mounts)")?;
    Ok(mount_owner_in(&mounts, path))
}

fn mount_owner_in(mounts: &Value, path: &str) -> Owner {
    let key = format!("{}/", path.trim_end_matches('/'));
    let Some(found) = mounts.get("data").unwrap_or(mounts).get(&key) else {
        return Owner::Absent;
    };
    let description = found["description"].as_str().unwrap_or("");
    if description.contains(OWNER_MARK) {
        Owner::Keyrig
    } else {
        let kind = found["type"].as_str().unwrap_or("?");
        Owner::Other(format!("a {kind} mount keyrig did not create"))
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
    match secrets_mount_owner(root, path).await? {
        Owner::Keyrig => Ok(()),
        Owner::Other(what) => bail!(
            "{path}/ is already mounted in this Vault ({what}: its description lacks \
             \"{OWNER_MARK}\"); keyrig does not write into it. Set {field} to a path of keyrig's \
             own (e.g. keyrig-{path}) or, if this Vault is a throwaway one, unmount it"
        ),
        Owner::Absent => {
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
    fn a_role_is_keyrigs_only_when_it_grants_only_managed_policies() {
        let ours = managed(&["gateway-policy", "keygate-references"]);
        let role = |policies: Value| json!({"data": {"token_policies": policies}});
        assert_eq!(
            role_owner_in(&role(json!(["gateway-policy"])), &ours),
            Owner::Keyrig
        );
        assert_eq!(
            role_owner_in(&role(json!(["gateway-policy", "prod-secrets"])), &ours),
            Owner::Other(
                "a role granting [gateway-policy, prod-secrets], not only policies keyrig manages"
                    .into()
            )
        );
        assert!(matches!(
            role_owner_in(&role(json!([])), &ours),
            Owner::Other(_)
        ));
        // The deprecated `policies` field counts too.
        assert!(matches!(
            role_owner_in(
                &json!({"data": {"token_policies": ["gateway-policy"], "policies": ["admin"]}}),
                &ours
            ),
            Owner::Other(_)
        ));
    }

    #[test]
    fn only_a_mount_described_with_the_mark_is_keyrigs() {
        let mounts = json!({"data": {
            "api-portal-keys/": {"type": "kv", "description": "managed by keyrig: kv_mount"},
            "pki/": {"type": "pki", "description": "the company CA"},
        }});
        assert_eq!(mount_owner_in(&mounts, "api-portal-keys"), Owner::Keyrig);
        assert_eq!(
            mount_owner_in(&mounts, "pki"),
            Owner::Other("a pki mount keyrig did not create".into())
        );
        assert_eq!(mount_owner_in(&mounts, "secret"), Owner::Absent);
    }
}
