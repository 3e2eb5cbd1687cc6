//! The gateway's TLS serving certificate in Vault: the `pki` section of
//! `scenarios/vault/setup.yaml` (a pki secrets engine with an internal root
//! CA, one role for the gateway's names, the serving certificate the TLS
//! agent asks for, and that agent's AppRole role), validated with field
//! paths and applied by `VaultSetup::apply`.
//!
//! Vault keeps every issued certificate (`no_store` stays false), so tests
//! can match the served serial against `LIST pki/certs`.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::role::Role;

/// `pki:` as written in `setup.yaml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PkiEntry {
    /// Where the pki secrets engine is mounted, e.g. `pki`.
    pub mount: String,
    pub root: RootEntry,
    pub role: RoleEntry,
    pub serving_cert: ServingCertEntry,
    /// The AppRole role (one of `approle_roles`) the TLS agent logs in with.
    pub agent_role: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootEntry {
    pub common_name: String,
    pub ttl: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleEntry {
    pub name: String,
    /// Host names the role may issue for (bare names only, no subdomains).
    pub allowed_domains: Vec<String>,
    pub allow_ip_sans: bool,
    pub max_ttl: String,
    /// `ec` (P-256) or `rsa` (2048).
    #[serde(default = "default_key_type")]
    pub key_type: String,
}

fn default_key_type() -> String {
    "ec".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingCertEntry {
    pub common_name: String,
    #[serde(default)]
    pub ip_sans: Vec<String>,
    /// The TTL the agent asks for; the agent re-issues at 85-95% of it.
    pub ttl: String,
}

/// The `pki` section, checked and with durations parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiSetup {
    pub mount: String,
    pub root_common_name: String,
    pub root_ttl: Duration,
    pub role: String,
    pub allowed_domains: Vec<String>,
    pub allow_ip_sans: bool,
    pub max_ttl: Duration,
    pub key_type: String,
    pub common_name: String,
    pub ip_sans: Vec<IpAddr>,
    pub cert_ttl: Duration,
    pub agent_role: String,
}

impl PkiSetup {
    /// A serving-certificate TTL other than the file's (the e2e suite's
    /// faster rotations), held to the same rules: whole seconds, at least
    /// two (bao agent re-issues at 85-95% of the lifetime), at most the
    /// role's `max_ttl`.
    pub fn override_cert_ttl(&mut self, ttl: Duration) -> Result<()> {
        if ttl.subsec_nanos() != 0 || ttl < Duration::from_secs(2) {
            bail!("a serving certificate TTL of {ttl:?}: use whole seconds, at least 2 s");
        }
        if ttl > self.max_ttl {
            bail!(
                "a serving certificate TTL of {} s is longer than pki.role.max_ttl ({} s): Vault would cut it short",
                ttl.as_secs(),
                self.max_ttl.as_secs()
            );
        }
        self.cert_ttl = ttl;
        Ok(())
    }

    /// Checks the section against itself and the roles of the same file;
    /// `at(field)` prefixes the file name. `roles` are the expanded roles,
    /// each with the rendered HCL of its policies.
    pub fn check(
        entry: &PkiEntry,
        roles: &[(&Role, Vec<&str>)],
        at: impl Fn(&str) -> String,
    ) -> Result<Self> {
        let ttl = |field: &str, text: &str| {
            parse_seconds(text).with_context(|| at(&format!("pki.{field}")))
        };
        let root_ttl = ttl("root.ttl", &entry.root.ttl)?;
        let max_ttl = ttl("role.max_ttl", &entry.role.max_ttl)?;
        let cert_ttl = ttl("serving_cert.ttl", &entry.serving_cert.ttl)?;
        if entry.mount.trim_matches('/').is_empty() || entry.mount.contains(' ') {
            bail!(
                "{}: {:?} is not a mount path: use a name like pki",
                at("pki.mount"),
                entry.mount
            );
        }
        if cert_ttl > max_ttl {
            bail!(
                "{}: {} is longer than pki.role.max_ttl ({}): Vault would cut it short; lower it or raise max_ttl",
                at("pki.serving_cert.ttl"),
                entry.serving_cert.ttl,
                entry.role.max_ttl
            );
        }
        if max_ttl > root_ttl {
            bail!(
                "{}: {} outlives the root CA (pki.root.ttl {}): lower it",
                at("pki.role.max_ttl"),
                entry.role.max_ttl,
                entry.root.ttl
            );
        }
        if !["ec", "rsa"].contains(&entry.role.key_type.as_str()) {
            bail!(
                "{}: {:?} is not a key type keyrig issues: use ec or rsa",
                at("pki.role.key_type"),
                entry.role.key_type
            );
        }
        if !entry
            .role
            .allowed_domains
            .contains(&entry.serving_cert.common_name)
        {
            bail!(
                "{}: {:?} is not in pki.role.allowed_domains {:?}: Vault would refuse to issue it",
                at("pki.serving_cert.common_name"),
                entry.serving_cert.common_name,
                entry.role.allowed_domains
            );
        }
        let mut ip_sans = Vec::new();
        for (i, ip) in entry.serving_cert.ip_sans.iter().enumerate() {
            ip_sans.push(ip.parse::<IpAddr>().map_err(|_| {
                anyhow::anyhow!(
                    "{}: {ip:?} is not an IP address",
                    at(&format!("pki.serving_cert.ip_sans[{i}]"))
                )
            })?);
        }
        if !ip_sans.is_empty() && !entry.role.allow_ip_sans {
            bail!(
                "{}: IP SANs are asked for but pki.role.allow_ip_sans is false",
                at("pki.serving_cert.ip_sans")
            );
        }
        let Some((_, policies)) = roles.iter().find(|(r, _)| r.name == entry.agent_role) else {
            bail!(
                "{}: {:?} is not one of the approle_roles",
                at("pki.agent_role"),
                entry.agent_role
            );
        };
        let issue_path = format!("\"{}/issue/{}\"", entry.mount, entry.role.name);
        if !policies.iter().any(|hcl| hcl.contains(&issue_path)) {
            bail!(
                "{}: role {:?} has no policy on path {issue_path}: the agent could not issue the certificate; grant `update` there",
                at("pki.agent_role"),
                entry.agent_role
            );
        }
        Ok(Self {
            mount: entry.mount.trim_matches('/').to_owned(),
            root_common_name: entry.root.common_name.clone(),
            root_ttl,
            role: entry.role.name.clone(),
            allowed_domains: entry.role.allowed_domains.clone(),
            allow_ip_sans: entry.role.allow_ip_sans,
            max_ttl,
            key_type: entry.role.key_type.clone(),
            common_name: entry.serving_cert.common_name.clone(),
            ip_sans,
            cert_ttl,
            agent_role: entry.agent_role.clone(),
        })
    }

    /// `<mount>/issue/<role>`, what the agent writes to.
    pub fn issue_path(&self) -> String {
        format!("{}/issue/{}", self.mount, self.role)
    }
}

/// A whole number of seconds, at least one (Vault's TTL unit).
fn parse_seconds(text: &str) -> Result<Duration> {
    let ttl = humantime::parse_duration(text)
        .with_context(|| format!("{text:?} is not a duration like 20s or 1h"))?;
    if ttl < Duration::from_secs(1) || ttl.subsec_nanos() != 0 {
        bail!("{text:?} is not a whole number of seconds: Vault counts TTLs in seconds");
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn entry() -> PkiEntry {
        serde_yaml::from_str(
            r#"
mount: pki
root: {common_name: test root, ttl: 24h}
role: {name: gw, allowed_domains: [localhost], allow_ip_sans: true, max_ttl: 1m}
serving_cert: {common_name: localhost, ip_sans: [127.0.0.1], ttl: 20s}
agent_role: tls-agent
"#,
        )
        .unwrap()
    }

    fn role() -> Role {
        Role {
            name: "tls-agent".into(),
            policies: vec!["tls-agent-policy".into()],
            token_ttl: Duration::from_secs(60),
            token_max_ttl: Duration::from_secs(60),
        }
    }

    const GRANT: &str = r#"path "pki/issue/gw" { capabilities = ["update"] }"#;

    fn check(entry: &PkiEntry, hcl: &str) -> Result<PkiSetup> {
        let role = role();
        PkiSetup::check(entry, &[(&role, vec![hcl])], |f| format!("setup.yaml: {f}"))
    }

    #[rstest]
    fn a_valid_section_parses() {
        let pki = check(&entry(), GRANT).unwrap();
        assert_eq!(pki.cert_ttl, Duration::from_secs(20));
        assert_eq!(pki.issue_path(), "pki/issue/gw");
        assert_eq!(pki.ip_sans, ["127.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(pki.key_type, "ec");
    }

    #[rstest]
    fn the_suite_may_shorten_the_certificate_ttl_within_the_rules() {
        let mut pki = check(&entry(), GRANT).unwrap();
        pki.override_cert_ttl(Duration::from_secs(8)).unwrap();
        assert_eq!(pki.cert_ttl, Duration::from_secs(8));
        for (ttl, expected) in [
            (Duration::from_millis(8500), "whole seconds"),
            (Duration::from_secs(1), "at least 2 s"),
            (
                Duration::from_secs(61),
                "longer than pki.role.max_ttl (60 s)",
            ),
        ] {
            let message = pki.override_cert_ttl(ttl).unwrap_err().to_string();
            assert!(message.contains(expected), "{message}");
            assert_eq!(pki.cert_ttl, Duration::from_secs(8));
        }
    }

    #[rstest]
    #[case::ttl_over_max(|e: &mut PkiEntry| e.serving_cert.ttl = "2m".into(), "pki.serving_cert.ttl: 2m is longer than pki.role.max_ttl")]
    #[case::bad_ttl(|e: &mut PkiEntry| e.serving_cert.ttl = "soon".into(), "pki.serving_cert.ttl")]
    #[case::subsecond(|e: &mut PkiEntry| e.serving_cert.ttl = "1500ms".into(), "whole number of seconds")]
    #[case::name_not_allowed(|e: &mut PkiEntry| e.serving_cert.common_name = "gw.example".into(), "pki.serving_cert.common_name: \"gw.example\" is not in pki.role.allowed_domains")]
    #[case::bad_ip(|e: &mut PkiEntry| e.serving_cert.ip_sans = vec!["localhost".into()], "pki.serving_cert.ip_sans[0]: \"localhost\" is not an IP address")]
    #[case::ip_not_allowed(|e: &mut PkiEntry| e.role.allow_ip_sans = false, "allow_ip_sans is false")]
    #[case::unknown_role(|e: &mut PkiEntry| e.agent_role = "nobody".into(), "pki.agent_role: \"nobody\" is not one of the approle_roles")]
    #[case::key_type(|e: &mut PkiEntry| e.role.key_type = "dsa".into(), "pki.role.key_type")]
    fn errors_name_the_field(#[case] edit: fn(&mut PkiEntry), #[case] expected: &str) {
        let mut e = entry();
        edit(&mut e);
        let message = format!("{:#}", check(&e, GRANT).unwrap_err());
        assert!(message.contains(expected), "{message}");
        assert!(message.contains("setup.yaml"), "{message}");
    }

    #[rstest]
    fn an_agent_role_without_the_issue_grant_is_refused() {
        let message = format!(
            "{:#}",
            check(&entry(), r#"path "pki/sign/gw" {}"#).unwrap_err()
        );
        assert!(
            message.contains("has no policy on path \"pki/issue/gw\""),
            "{message}"
        );
    }
}
