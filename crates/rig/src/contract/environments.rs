//! Environment-specific paths (`secret/<app>/<environment>/...`), from
//! `scenarios/vault/environments.yaml`: one policy and one AppRole role per
//! environment, and a sample secret in each environment's path so tests can
//! prove a role reads its own environment and gets 403 on the others.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvironments {
    kv_mount: String,
    app: String,
    environments: Vec<String>,
    policy: String,
    token_ttl: String,
}

/// The scenario, as tests see it in env.json (`environments`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environments {
    pub kv_mount: String,
    pub app: String,
    pub names: Vec<String>,
    /// Each environment's sample secret: `<app>/<environment>/config`.
    pub sample_path: String,
    #[serde(skip)]
    policy_template: String,
    #[serde(skip)]
    pub token_ttl: Duration,
}

impl Environments {
    pub fn load(file: &Path) -> Result<Self> {
        let name = file.display();
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {name}"))?;
        let raw: RawEnvironments =
            serde_yaml::from_str(&text).with_context(|| format!("{name}"))?;
        if raw.environments.is_empty() {
            bail!(
                "{name}: environments is empty: list them, e.g. [development, staging, production]"
            );
        }
        for (i, env) in raw.environments.iter().enumerate() {
            if env.is_empty() || !env.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                bail!("{name}: environments[{i}] is {env:?}: use letters, digits and `-`");
            }
        }
        let policy_file = file.parent().unwrap_or(Path::new("")).join(&raw.policy);
        let policy_template = std::fs::read_to_string(&policy_file)
            .with_context(|| format!("{name}: policy: cannot read {}", policy_file.display()))?;
        let token_ttl = humantime::parse_duration(&raw.token_ttl).with_context(|| {
            format!(
                "{name}: token_ttl: {:?} is not a duration like 1h",
                raw.token_ttl
            )
        })?;
        Ok(Self {
            kv_mount: raw.kv_mount,
            sample_path: format!("{}/{{environment}}/config", raw.app),
            app: raw.app,
            names: raw.environments,
            policy_template,
            token_ttl,
        })
    }

    /// Policy and AppRole role name of an environment: `<app>-<environment>`.
    pub fn role(&self, environment: &str) -> String {
        format!("{}-{environment}", self.app)
    }

    /// `<app>/<environment>/config` under the KV mount.
    pub fn sample(&self, environment: &str) -> String {
        self.sample_path.replace("{environment}", environment)
    }

    pub fn policy(&self, environment: &str) -> Result<String> {
        let templates = crate::base::templates::environment();
        Ok(templates.render_str(
            &self.policy_template,
            minijinja::context! { mount => &self.kv_mount, app => &self.app, environment => environment },
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_scenario_renders_one_policy_per_environment() {
        let envs = Environments::load(
            &crate::base::paths::scenarios_dir().join("vault/environments.yaml"),
        )
        .unwrap();
        assert_eq!(envs.names, ["development", "staging", "production"]);
        assert_eq!(envs.role("staging"), "keygate-staging");
        assert_eq!(envs.sample("production"), "keygate/production/config");
        let policy = envs.policy("staging").unwrap();
        assert!(
            policy.contains(r#"path "secret/data/keygate/staging/*""#),
            "{policy}"
        );
        assert!(!policy.contains("production"), "{policy}");
    }
}
