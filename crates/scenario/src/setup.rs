//! `VaultSetup`: what the harness applies to a Vault, from
//! `scenarios/vault/setup.yaml`: the KV mount, policies (one per API group
//! where a name holds `{group}`), AppRole roles and the pki section, loaded
//! and checked. Applying it is rig's (`rig::vault::setup::apply`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// `scenarios/vault/setup.yaml` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetupFile {
    kv_mount: String,
    keygate_role: String,
    policies: Vec<PolicyEntry>,
    approle_roles: Vec<RoleEntry>,
    /// The gateway's TLS serving certificate (`rig::vault::pki`); optional.
    #[serde(default)]
    pki: Option<crate::pki::PkiEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyEntry {
    name: String,
    file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleEntry {
    name: String,
    policies: Vec<String>,
    token_ttl: String,
    token_max_ttl: String,
}

/// What the harness applies to Vault: `setup.yaml` with every `{group}`
/// name expanded once per API group and every policy template rendered.
#[derive(Debug, Clone)]
pub struct VaultSetup {
    pub file: PathBuf,
    pub kv_mount: String,
    /// The AppRole role keygate logs in with.
    pub keygate_role: String,
    pub policies: Vec<Policy>,
    pub roles: Vec<Role>,
    /// The pki engine, role and TLS agent of the gateway's serving certificate.
    pub pki: Option<crate::pki::PkiSetup>,
}

/// A policy ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    /// The rendered HCL.
    pub hcl: String,
    /// The template it came from, so Vault's rejection names the file to fix.
    pub file: PathBuf,
}

pub use crate::role::Role;

/// Why `mount` is not a KV mount path the harness may create, if it is not.
fn check_mount_path(mount: &str) -> std::result::Result<(), &'static str> {
    if mount.is_empty() {
        return Err("is empty");
    }
    for segment in mount.split('/') {
        if segment.is_empty() {
            return Err("has an empty segment");
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("has a character other than a letter, digit, `-` or `_`");
        }
    }
    // Vault's own mounts: a KV engine cannot live there.
    let first = mount.split('/').next().unwrap_or_default();
    if ["sys", "auth", "identity", "cubbyhole"].contains(&first) {
        return Err("is under one of Vault's own paths (sys, auth, identity, cubbyhole)");
    }
    Ok(())
}

/// Marks a name that stands for one entry per API group.
const GROUP: &str = "{group}";

impl VaultSetup {
    /// Loads and expands a setup file; policy files are relative to it.
    pub fn load(file: &Path, groups: &[String]) -> Result<Self> {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let raw: SetupFile = serde_yaml::from_str(&text)
            .with_context(|| format!("{} is not a valid Vault setup", file.display()))?;
        let at = |field: String| format!("{}: {field}", file.display());
        let base = file.parent().unwrap_or(Path::new("."));
        // The mount goes into Vault API paths (`sys/mounts/<mount>`) and
        // policy paths: anything but plain segments would address
        // something else.
        if let Err(why) = check_mount_path(&raw.kv_mount) {
            bail!(
                "{}",
                at(format!(
                    "kv_mount: {:?} {why}: use one or more `/`-separated segments of letters, digits, `-` and `_` (e.g. api-portal-keys)",
                    raw.kv_mount
                ))
            );
        }

        let templates = crate::templates::environment();

        let mut policies = Vec::new();
        for (i, entry) in raw.policies.iter().enumerate() {
            let path = base.join(&entry.file);
            let source = std::fs::read_to_string(&path).with_context(|| {
                at(format!(
                    "policies[{i}].file: cannot read {}",
                    path.display()
                ))
            })?;
            // Named after its file, so a render error says where ("in
            // <file>:<line>"), not "<string>".
            let name = path.display().to_string();
            let template = templates
                .template_from_named_str(&name, &source)
                .with_context(|| format!("{} is not a valid policy template", path.display()))?;
            let render = |group: Option<&str>| {
                let rendered = match group {
                    Some(group) => template.render(
                        minijinja::context! { mount => &raw.kv_mount, group => group, pki => &raw.pki },
                    ),
                    None => template
                        .render(minijinja::context! { mount => &raw.kv_mount, pki => &raw.pki }),
                };
                rendered.with_context(|| {
                    format!(
                        "rendering {} for policy {:?} (a template sees `mount`; `group` only in a policy whose name holds {GROUP}; `pki` only when {} has a `pki:` section)",
                        path.display(),
                        entry.name,
                        file.display()
                    )
                })
            };
            if entry.name.contains(GROUP) {
                for group in groups {
                    policies.push(Policy {
                        name: entry.name.replace(GROUP, group),
                        hcl: render(Some(group))?,
                        file: path.clone(),
                    });
                }
            } else {
                policies.push(Policy {
                    name: entry.name.clone(),
                    hcl: render(None)?,
                    file: path.clone(),
                });
            }
        }

        let mut roles = Vec::new();
        for (i, entry) in raw.approle_roles.iter().enumerate() {
            let field = |name: &str| at(format!("approle_roles[{i}] ({}).{name}", entry.name));
            let token_ttl = parse_ttl(&entry.token_ttl).with_context(|| field("token_ttl"))?;
            let token_max_ttl =
                parse_ttl(&entry.token_max_ttl).with_context(|| field("token_max_ttl"))?;
            if token_max_ttl < token_ttl {
                bail!(
                    "{}: token_max_ttl ({}) is shorter than token_ttl ({})",
                    field("token_max_ttl"),
                    entry.token_max_ttl,
                    entry.token_ttl
                );
            }
            let per_group = entry.name.contains(GROUP);
            if let Some(p) = entry
                .policies
                .iter()
                .find(|p| p.contains(GROUP) && !per_group)
            {
                bail!(
                    "{}: policy {p:?} is one per group but the role name has no {GROUP}: add {GROUP} to the name so there is one role per group",
                    field("policies")
                );
            }
            let expand = |group: &str| Role {
                name: entry.name.replace(GROUP, group),
                policies: entry
                    .policies
                    .iter()
                    .map(|p| p.replace(GROUP, group))
                    .collect(),
                token_ttl,
                token_max_ttl,
            };
            if per_group {
                roles.extend(groups.iter().map(|g| expand(g)));
            } else {
                roles.push(expand(""));
            }
        }

        // Every name a role refers to must be written by this file (or be
        // Vault's built-in `default`), else the role logs in powerless.
        for (i, role) in roles.iter().enumerate() {
            if let Some(missing) = role
                .policies
                .iter()
                .find(|p| *p != "default" && !policies.iter().any(|known| &known.name == *p))
            {
                bail!(
                    "{}",
                    at(format!(
                        "role {:?} (approle_roles, entry {i} after expansion) names policy {missing:?}, which `policies` does not define",
                        role.name
                    ))
                );
            }
        }
        for names in [
            policies.iter().map(|p| &p.name).collect::<Vec<_>>(),
            roles.iter().map(|r| &r.name).collect(),
        ] {
            if let Some(dup) = names
                .iter()
                .enumerate()
                .find(|(i, n)| names[..*i].contains(n))
                .map(|(_, n)| n)
            {
                bail!(
                    "{}",
                    at(format!(
                        "{dup:?} is defined twice (after expanding {GROUP})"
                    ))
                );
            }
        }
        if !roles.iter().any(|r| r.name == raw.keygate_role) {
            bail!(
                "{}",
                at(format!(
                    "keygate_role: {:?} is not one of the approle_roles",
                    raw.keygate_role
                ))
            );
        }

        let pki = match &raw.pki {
            Some(entry) => {
                let with_policies: Vec<(&Role, Vec<&str>)> = roles
                    .iter()
                    .map(|role| {
                        let hcl = policies
                            .iter()
                            .filter(|p| role.policies.contains(&p.name))
                            .map(|p| p.hcl.as_str())
                            .collect();
                        (role, hcl)
                    })
                    .collect();
                Some(crate::pki::PkiSetup::check(entry, &with_policies, |f| {
                    at(f.to_owned())
                })?)
            }
            None => None,
        };

        Ok(Self {
            file: file.to_owned(),
            kv_mount: raw.kv_mount,
            keygate_role: raw.keygate_role,
            policies,
            roles,
            pki,
        })
    }
}

fn parse_ttl(text: &str) -> Result<Duration> {
    let ttl = humantime::parse_duration(text)
        .with_context(|| format!("{text:?} is not a duration like 1h or 30m"))?;
    if ttl < Duration::from_secs(1) {
        bail!("{text:?} is under a second: Vault counts TTLs in whole seconds");
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn groups(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    struct Files(tempfile::TempDir);

    impl Files {
        fn new(setup: &str, policies: &[(&str, &str)]) -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("setup.yaml"), setup).unwrap();
            for (name, text) in policies {
                std::fs::write(dir.path().join(name), text).unwrap();
            }
            Self(dir)
        }

        fn load(&self) -> Result<VaultSetup> {
            VaultSetup::load(&self.0.path().join("setup.yaml"), &groups(&["a", "b"]))
        }
    }

    const POLICY: &str = r#"path "{{ mount }}/data/*" { capabilities = ["read"] }"#;

    #[rstest]
    #[case::missing_field(
        "kv_mount: kv\nkeygate_role: r\npolicies: []\napprole_roles:\n  - name: r\n    policies: []\n    token_ttl: 1h\n",
        "missing field `token_max_ttl` at line 5"
    )]
    #[case::unknown_field(
        "kv_mount: kv\nkeygate_role: r\npolicies: []\napprole_roles: []\nmounts: []\n",
        "unknown field `mounts`"
    )]
    #[case::bad_ttl(
        "kv_mount: kv\nkeygate_role: r\npolicies: []\napprole_roles:\n  - {name: r, policies: [], token_ttl: 1x, token_max_ttl: 2h}\n",
        "approle_roles[0] (r).token_ttl: \"1x\" is not a duration"
    )]
    #[case::unknown_policy(
        "kv_mount: kv\nkeygate_role: r\npolicies: []\napprole_roles:\n  - {name: r, policies: [nope], token_ttl: 1h, token_max_ttl: 2h}\n",
        "names policy \"nope\", which `policies` does not define"
    )]
    #[case::group_policy_in_a_single_role(
        "kv_mount: kv\nkeygate_role: r\npolicies: [{name: 'p-{group}', file: p.hcl}]\napprole_roles:\n  - {name: r, policies: ['p-{group}'], token_ttl: 1h, token_max_ttl: 2h}\n",
        "add {group} to the name"
    )]
    #[case::group_placeholder_in_a_single_policy(
        "kv_mount: kv\nkeygate_role: r\npolicies: [{name: p, file: g.hcl}]\napprole_roles:\n  - {name: r, policies: [p], token_ttl: 1h, token_max_ttl: 2h}\n",
        "`group` only in a policy whose name holds {group}"
    )]
    #[case::pki_placeholder_without_a_pki_section(
        "kv_mount: kv\nkeygate_role: r\npolicies: [{name: t, file: t.hcl}]\napprole_roles:\n  - {name: r, policies: [t], token_ttl: 1h, token_max_ttl: 2h}\n",
        "`pki` only when"
    )]
    #[case::mount_out_of_its_path(
        "kv_mount: ../sys\nkeygate_role: r\npolicies: []\napprole_roles: []\n",
        "kv_mount: \"../sys\" has a character other than"
    )]
    #[case::mount_empty(
        "kv_mount: ''\nkeygate_role: r\npolicies: []\napprole_roles: []\n",
        "kv_mount: \"\" is empty"
    )]
    #[case::mount_in_vaults_own_paths(
        "kv_mount: sys/keys\nkeygate_role: r\npolicies: []\napprole_roles: []\n",
        "is under one of Vault's own paths"
    )]
    #[case::mount_with_an_empty_segment(
        "kv_mount: a//b\nkeygate_role: r\npolicies: []\napprole_roles: []\n",
        "has an empty segment"
    )]
    #[case::missing_policy_file(
        "kv_mount: kv\nkeygate_role: r\npolicies: [{name: p, file: nowhere.hcl}]\napprole_roles: []\n",
        "policies[0].file: cannot read"
    )]
    #[case::unknown_keygate_role(
        "kv_mount: kv\nkeygate_role: gw\npolicies: []\napprole_roles: []\n",
        "keygate_role: \"gw\" is not one of the approle_roles"
    )]
    fn setup_errors_name_file_and_field(#[case] setup: &str, #[case] expected: &str) {
        let files = Files::new(
            setup,
            &[
                ("p.hcl", POLICY),
                ("g.hcl", r#"path "{{ mount }}/data/{{ group }}*" {}"#),
                ("t.hcl", r#"path "{{ pki.mount }}/issue/x" {}"#),
            ],
        );
        let err = files.load().unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains(expected), "{message}");
        assert!(
            message.contains("setup.yaml") || message.contains(".hcl"),
            "{message}"
        );
    }
}
