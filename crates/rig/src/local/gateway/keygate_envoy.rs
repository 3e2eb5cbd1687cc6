//! What a gateway that `loads = ["keygate-envoy"]` gets: keygate's Envoy
//! module made loadable (its version checked against the gateway's Envoy,
//! `process::envoy_module`) and the `module` template values, the module's
//! filter and per-route configs as the JSON strings Envoy hands it
//! (`keygate_envoy::config`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::local::gateway::context::{EnvoyModuleSettings, GatewayContext};
use crate::process::supervisor::Component;

/// The `module` values of the templates.
#[derive(Debug, Serialize)]
pub struct ModuleValues {
    /// `dynamic_module_config.name`: Envoy loads `lib<name>.so`.
    name: &'static str,
    filter_config: String,
    /// API group -> the per-route config of its operations' routes (the
    /// table of keygate's answers in use).
    route_configs: BTreeMap<String, String>,
    /// API group -> the per-route config of the rest of its prefix (every
    /// request asks keygate, which answers `no-route` for a path the
    /// group's documents do not declare; nothing kept).
    prefix_route_configs: BTreeMap<String, String>,
    /// API group -> how each declared path template is matched on Envoy's
    /// normalized path: the routes where a held key is answered from the
    /// table.
    operation_routes: BTreeMap<String, Vec<OperationMatch>>,
}

/// The `match` of one declared operation's route (serialized for the
/// template as `{"path": ...}` or `{"safe_regex": ...}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationMatch {
    /// A template without parameters: its text, exactly (Envoy compares
    /// strings; an RE2 match per request cost more than the module's own
    /// table look-up).
    Path(String),
    /// A template with parameters: [`template_regex`].
    SafeRegex(String),
}

/// How a declared path template's route matches; `None` for a template
/// with no fast path (see [`template_regex`]).
pub fn operation_match(template: &str) -> Option<OperationMatch> {
    // As keygate reads templates: a trailing `/` is dropped (`/a/` is
    // `/a`, which keygate routes, while it refuses `/a/`); the root and
    // doubled slashes get no fast path.
    let template = template.trim_end_matches('/');
    if template.is_empty() || template.contains("//") {
        return None;
    }
    let regex = template_regex(template)?;
    Some(if template.contains('{') {
        OperationMatch::SafeRegex(regex)
    } else {
        // No parameter, and template_regex found no escape in the text.
        OperationMatch::Path(template.to_owned())
    })
}

/// A path template (`/shop/items/{id}`) as an RE2 regex of the plain paths
/// it declares: its text literally, a parameter as one or more characters
/// other than `/`, `%`, `\` and `;` (a `..;` segment is `..` to Tomcat,
/// Jetty and older Spring; keygate refuses it). Deliberately narrower than keygate's
/// matching (which decodes escapes first): a path it misses is answered on
/// the group's prefix route, by keygate; a path it matches, keygate routes
/// to the same group. `None` for a template whose text holds an escape
/// (no fast path for it).
pub fn template_regex(template: &str) -> Option<String> {
    let mut regex = String::new();
    let mut rest = template;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('{') {
            let close = after.find('}')?;
            regex.push_str(r"[^/%\\;]+");
            rest = &after[close + 1..];
        } else {
            let end = rest.find('{').unwrap_or(rest.len());
            let text = &rest[..end];
            if text.contains(['%', '\\', '}', ';']) {
                return None;
            }
            regex.push_str(&regex::escape(text));
            rest = &rest[end..];
        }
    }
    Some(regex)
}

/// How long the module waits for keygate's answer: as Envoy's ext_authz
/// timeout, above keygate's own 2 s Vault timeout, so a slow Vault read is
/// keygate's answer (status and reason), not a `keygate-unavailable`.
pub const MODULE_CALLOUT_TIMEOUT: Duration = Duration::from_secs(3);

impl ModuleValues {
    pub fn new(ctx: &GatewayContext, settings: &EnvoyModuleSettings) -> Result<Self> {
        let filter_config = serde_json::json!({
            "cluster": "keygate",
            // keygate's HTTP port serves the feed; the module's own thread
            // connects there (it cannot use Envoy's clusters).
            "invalidations": ctx.keygate_http.to_string(),
            "positive_ttl_ms": settings.positive_ttl.as_millis() as u64,
            "negative_ttl_ms": settings.negative_ttl.as_millis() as u64,
            "resurrect_ttl_ms": settings.resurrect_ttl.as_millis() as u64,
            "callout_timeout_ms": MODULE_CALLOUT_TIMEOUT.as_millis() as u64,
        });
        let per_group = |table: bool| -> BTreeMap<String, String> {
            ctx.groups
                .iter()
                .map(|g| {
                    let config = serde_json::json!({ "group": g.group_id, "table": table });
                    (g.group_id.clone(), config.to_string())
                })
                .collect()
        };
        let operation_routes = ctx
            .groups
            .iter()
            .map(|g| {
                let matches = g
                    .path_templates
                    .iter()
                    .filter_map(|t| operation_match(t))
                    .collect();
                (g.group_id.clone(), matches)
            })
            .collect();
        Ok(Self {
            name: crate::process::envoy_module::MODULE_NAME,
            filter_config: serde_json::to_string(&filter_config)?,
            route_configs: per_group(true),
            prefix_route_configs: per_group(false),
            operation_routes,
        })
    }
}

/// The gateway's process with the module loadable (refused, naming both
/// versions, when the module was built for another Envoy series).
pub fn loadable(component: Component, envoy: &Path, library: &Path) -> Result<Component> {
    crate::process::envoy_module::loadable(component, envoy, library)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn a_module_for_another_envoy_is_refused_before_envoy_starts() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("libkeygate_envoy.so");
        std::fs::write(&module, b"no marker").unwrap();
        let err = super::loadable(
            crate::process::supervisor::Component::new("e", "/bin/envoy"),
            Path::new("/bin/envoy"),
            &module,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("carries no keygate-envoy build marker"),
            "{err}"
        );
    }
}

#[cfg(test)]
mod template_regex_tests {
    use super::template_regex;

    /// The regex matches the plain paths of its template and nothing
    /// keygate could route elsewhere or refuse: no `/`, `%` or `\` inside a
    /// parameter, the literal text exactly.
    #[test]
    fn a_template_becomes_a_regex_of_its_plain_paths() {
        let full = |template: &str| {
            regex::Regex::new(&format!("^(?:{})$", template_regex(template).unwrap())).unwrap()
        };
        let items = full("/shop/items/{id}");
        assert!(items.is_match("/shop/items/42"));
        for other in [
            "/shop/items/",
            "/shop/items/4/2",
            "/shop/items/%73pecial",
            "/shop/items/a\\b",
            "/shop/itemsX42",
            "/shop/items/42/",
            "/shop/items/..;",
            "/shop/items/x;y=1",
        ] {
            assert!(!items.is_match(other), "{other}");
        }
        let dotted = full("/files/{name}.{ext}.json");
        assert!(dotted.is_match("/files/a.b.json"));
        assert!(
            !dotted.is_match("/files/aXbXjson"),
            "a literal dot is a dot"
        );
        assert!(full("/v1+2/(x)").is_match("/v1+2/(x)"));
        assert_eq!(template_regex("/a/%73pecial"), None);
        assert_eq!(template_regex("/a/{unclosed"), None);
    }

    /// A template without parameters is matched as a string; one with
    /// parameters by its regex; one with an escape not at all (keygate
    /// decides on the group's prefix route).
    #[test]
    fn a_template_without_parameters_is_matched_exactly() {
        use super::{OperationMatch, operation_match};
        assert_eq!(
            operation_match("/shop/items"),
            Some(OperationMatch::Path("/shop/items".into()))
        );
        assert_eq!(
            operation_match("/shop/items/{id}"),
            Some(OperationMatch::SafeRegex(
                template_regex("/shop/items/{id}").unwrap()
            ))
        );
        assert_eq!(operation_match("/a/%73pecial"), None);
        assert_eq!(operation_match("/a/b}"), None);
        // keygate drops a template's trailing `/` and refuses a path with one.
        assert_eq!(
            operation_match("/billing/"),
            Some(OperationMatch::Path("/billing".into()))
        );
        assert_eq!(operation_match("/"), None);
        assert_eq!(operation_match("/a//b"), None);
        assert_eq!(operation_match("/a;v=1"), None);
    }
}
