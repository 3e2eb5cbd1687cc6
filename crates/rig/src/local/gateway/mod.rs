//! The one gateway runner: any gateway of the catalog (`env/gateways/<name>/
//! gateway.toml`, `contract::gateways`) is planned from its manifest (config
//! files rendered from the scenario's API groups, its command line with the
//! same values), started under the [`Supervisor`] with its readiness probe,
//! and stopped with everything else on teardown. No gateway has code of its
//! own here; what a gateway may load besides its tool (`loads`) has its
//! support in a module of its own (`keygate_envoy`).
//!
//! Every gateway sends each request to keygate first (gRPC or HTTP
//! forward-auth) and only a 200 reaches the upstream, with keygate's
//! `x-keyrig-owner` and `x-keyrig-group` headers.

pub mod context;
pub mod keygate_envoy;

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::contract::gateways::{Contract, Extension, GatewayManifest};
use crate::local::gateway::context::{GatewayContext, Launch, TemplateValues};
use crate::process::supervisor::{Component, Readiness, Supervisor};

/// What a manifest's templates and command line are rendered with: the
/// context's values, the contract, and what its extensions add.
#[derive(Serialize)]
struct Values<'a> {
    #[serde(flatten)]
    common: TemplateValues<'a>,
    contract: Contract,
    /// `loads = ["keygate-envoy"]`: the module's configs.
    #[serde(skip_serializing_if = "Option::is_none")]
    module: Option<keygate_envoy::ModuleValues>,
}

/// The config files and the process for `manifest`'s gateway, run by
/// `binary` (its tool's, resolved by the caller).
pub fn plan(ctx: &GatewayContext, manifest: &GatewayManifest, binary: &Path) -> Result<Launch> {
    let values = values(ctx, manifest)?;
    let files = render_files(ctx, manifest, &values)?;
    let manifest_file = manifest.dir.join(crate::contract::gateways::MANIFEST_FILE);
    let what = |field: &str| format!("{} `{field}`", manifest_file.display());
    let mut component = Component::new(ctx.name, binary).current_dir(&ctx.dir);
    for arg in &manifest.run.args {
        component = component.arg(crate::base::templates::render_str(
            &what("run.args"),
            arg,
            &values,
        )?);
    }
    for (name, value) in &manifest.run.env {
        component = component.env(
            name,
            crate::base::templates::render_str(&what(&format!("run.env.{name}")), value, &values)?,
        );
    }
    if let Some(settings) = ctx
        .envoy_module
        .filter(|_| manifest.loads(Extension::KeygateEnvoy))
    {
        component = keygate_envoy::loadable(component, binary, &settings.library)?;
    }
    let probe = &manifest.readiness;
    Ok(Launch {
        files,
        component,
        readiness: Readiness::http(format!("{}{}", ctx.url(), probe.path), probe.status),
    })
}

/// The gateway's config files, (path in the run, text), as [`plan`]
/// writes them: for `envoy --mode validate`-style checks and the tests.
pub fn config_files(
    ctx: &GatewayContext,
    manifest: &GatewayManifest,
) -> Result<Vec<(std::path::PathBuf, String)>> {
    render_files(ctx, manifest, &values(ctx, manifest)?)
}

fn values<'a>(ctx: &'a GatewayContext, manifest: &GatewayManifest) -> Result<Values<'a>> {
    let module = if manifest.loads(Extension::KeygateEnvoy) {
        let settings = ctx.envoy_module.with_context(|| {
            format!(
                "the {} gateway loads {}, which this run did not provide (GatewayContext::envoy_module)",
                manifest.name,
                Extension::KeygateEnvoy.name()
            )
        })?;
        Some(keygate_envoy::ModuleValues::new(ctx, settings)?)
    } else {
        None
    };
    Ok(Values {
        common: ctx.template_values(),
        contract: manifest.contract,
        module,
    })
}

fn render_files(
    ctx: &GatewayContext,
    manifest: &GatewayManifest,
    values: &Values,
) -> Result<Vec<(std::path::PathBuf, String)>> {
    manifest
        .config
        .iter()
        .map(|config| {
            let text = crate::base::templates::render(&manifest.template_path(config), values)
                .with_context(|| {
                    format!("the {} gateway's config {}", manifest.name, config.file)
                })?;
            Ok((ctx.dir.join(&config.file), text))
        })
        .collect()
}

/// Writes the config and starts the gateway; returns its URL once the
/// readiness probe holds. Stopping is the supervisor's (teardown, Ctrl-C,
/// panic), like every other component.
pub async fn start(
    ctx: &GatewayContext<'_>,
    manifest: &GatewayManifest,
    binary: &Path,
    supervisor: &mut Supervisor,
) -> Result<String> {
    let launch = plan(ctx, manifest, binary)?;
    std::fs::create_dir_all(&ctx.dir).with_context(|| format!("creating {}", ctx.dir.display()))?;
    for (path, text) in &launch.files {
        std::fs::write(path, text)
            .with_context(|| format!("writing {}'s config {}", ctx.name, path.display()))?;
    }
    supervisor
        .start(launch.component, launch.readiness)
        .await
        .with_context(|| format!("the {} gateway did not start", ctx.name))?;
    Ok(ctx.url())
}

/// The shipped gateways' configs as the runner renders them: each test
/// names a gateway of `env/gateways/` and reads what its templates made.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::gateways::Catalog;
    use crate::local::gateway::context::tests::context;

    fn launch(name: &str) -> Launch {
        let catalog = Catalog::load(&crate::base::paths::env_dir().join("gateways")).unwrap();
        let groups = crate::contract::scenario::load_default_apis().unwrap();
        let groups: &'static [_] = Box::leak(groups.into_boxed_slice());
        let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
        let ctx = context(name, groups);
        plan(&ctx, catalog.get(name).unwrap(), Path::new("/bin/true")).unwrap()
    }

    fn file<'a>(launch: &'a Launch, name: &str) -> &'a str {
        launch
            .files
            .iter()
            .find(|(path, _)| path.file_name().unwrap() == name)
            .map(|(_, text)| text.as_str())
            .unwrap_or_else(|| panic!("no {name} in {:?}", launch.files))
    }

    #[test]
    fn every_shipped_gateway_names_a_pinned_tool_and_renders() {
        let catalog = Catalog::load(&crate::base::paths::env_dir().join("gateways")).unwrap();
        let tools = crate::process::tools::Tools::load_default().unwrap();
        for gateway in catalog.iter() {
            tools
                .spec(&gateway.tool)
                .unwrap_or_else(|e| panic!("{gateway}: tool {}: {e:#}", gateway.tool));
            let groups = crate::contract::scenario::load_default_apis().unwrap();
            let files = config_files(&context(&gateway.name, &groups), gateway).unwrap();
            assert_eq!(files.len(), gateway.config.len(), "{gateway}");
        }
    }

    #[test]
    fn args_and_env_are_rendered_with_the_gateways_directory() {
        let caddy = launch("caddy");
        let command = caddy.component.describe();
        assert!(
            command.contains("run --adapter caddyfile --config /tmp/run/gateways/caddy/Caddyfile"),
            "{command}"
        );
        assert_eq!(
            caddy.component.env_value("XDG_DATA_HOME"),
            Some("/tmp/run/gateways/caddy/data".as_ref())
        );
        let text = file(&caddy, "Caddyfile");
        assert!(text.contains("http://127.0.0.1:10000 {"), "{text}");
        assert!(text.contains("handle \"/animal-rescue/*\" {"), "{text}");
        assert!(text.contains("handle \"/billing/*\" {"), "{text}");
        assert_eq!(text.matches("import keygate").count(), 3);
        assert!(text.contains("copy_headers X-Keyrig-Owner X-Keyrig-Group"));
    }

    #[test]
    fn nginx_includes_the_auth_request_everywhere_and_keeps_state_in_the_run() {
        let nginx = launch("nginx");
        let text = file(&nginx, "nginx.conf");
        for location in ["\"/animal-rescue/\"", "\"/billing/\"", "/"] {
            assert!(text.contains(&format!("location {location} {{")), "{text}");
        }
        assert_eq!(
            text.matches("include \"/tmp/run/gateways/nginx/keygate.conf\";")
                .count(),
            3
        );
        assert!(text.contains("pid \"/tmp/run/gateways/nginx/nginx.pid\";"));
        assert!(text.contains("proxy_set_header X-Original-URI $request_uri;"));
        let include = file(&nginx, "keygate.conf");
        assert!(include.contains("proxy_set_header x-keyrig-owner $keyrig_owner;"));
        assert!(include.contains("add_header x-keyrig-reason $keyrig_reason always;"));
        let command = nginx.component.describe();
        assert!(
            command.contains(
                "-p /tmp/run/gateways/nginx -c /tmp/run/gateways/nginx/nginx.conf -e stderr"
            ),
            "{command}"
        );
    }

    #[test]
    fn traefik_forward_auth_copies_the_keyrig_headers_and_distrusts_the_client() {
        let traefik = launch("traefik");
        let doc: serde_yaml::Value = serde_yaml::from_str(file(&traefik, "dynamic.yml")).unwrap();
        let auth = &doc["http"]["middlewares"]["keygate"]["forwardAuth"];
        assert_eq!(auth["address"].as_str(), Some("http://127.0.0.1:9002/auth"));
        assert_eq!(auth["trustForwardHeader"].as_bool(), Some(false));
        assert_eq!(
            serde_yaml::to_string(&auth["authResponseHeaders"]).unwrap(),
            "- x-keyrig-owner\n- x-keyrig-group\n"
        );
        let rules: Vec<_> = ["group-1", "group-2", "catch-all"]
            .iter()
            .map(|r| doc["http"]["routers"][r]["rule"].as_str().unwrap())
            .collect();
        assert_eq!(
            rules,
            [
                "PathPrefix(`/animal-rescue/`)",
                "PathPrefix(`/billing/`)",
                "PathPrefix(`/`)"
            ]
        );
        let statics: serde_yaml::Value =
            serde_yaml::from_str(file(&traefik, "traefik.yml")).unwrap();
        assert_eq!(
            statics["providers"]["file"]["filename"].as_str(),
            Some("/tmp/run/gateways/traefik/dynamic.yml")
        );
    }

    #[test]
    fn the_envoy_gateways_render_the_harness_envoy_template() {
        let groups = crate::contract::scenario::load_default_apis().unwrap();
        for (name, contract) in [
            ("envoy-grpc", Contract::Grpc),
            ("envoy-http", Contract::Http),
        ] {
            let launch = launch(name);
            let ctx = context(name, &groups);
            assert_eq!(
                file(&launch, "envoy.yaml"),
                crate::local::envoy::render(&ctx, contract).unwrap(),
                "{name}"
            );
            let command = launch.component.describe();
            assert!(
                command.ends_with(&format!(
                    "-c /tmp/run/gateways/{name}/envoy.yaml --disable-hot-restart --concurrency 1 --log-level info"
                )),
                "{command}"
            );
        }
    }

    #[test]
    fn a_gateway_that_loads_the_module_is_not_planned_without_it() {
        let catalog = Catalog::load(&crate::base::paths::env_dir().join("gateways")).unwrap();
        let groups = crate::contract::scenario::load_default_apis().unwrap();
        let manifest = catalog
            .iter()
            .find(|g| g.loads(Extension::KeygateEnvoy))
            .expect("a shipped gateway loads keygate-envoy");
        let mut ctx = context(&manifest.name, &groups);
        ctx.envoy_module = None;
        let err = plan(&ctx, manifest, Path::new("/bin/envoy"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("loads keygate-envoy, which this run did not provide"),
            "{err}"
        );
    }

    fn hcm(doc: &serde_yaml::Value) -> &serde_yaml::Value {
        &doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    }

    /// The shipped gateway that loads the module: each group's route names
    /// its group, the filter follows keygate's cache, and the listener is
    /// the ext_authz gateways'.
    #[test]
    fn module_routes_name_their_group_and_the_filter_follows_keygates_cache() {
        let catalog = Catalog::load(&crate::base::paths::env_dir().join("gateways")).unwrap();
        let manifest = catalog
            .iter()
            .find(|g| g.loads(Extension::KeygateEnvoy))
            .unwrap();
        let groups = crate::contract::scenario::load_default_apis().unwrap();
        let ctx = context(&manifest.name, &groups);
        // Planning also checks the module file's build marker; rendering
        // alone needs no module file.
        let files = config_files(&ctx, manifest).unwrap();
        let text = &files[0].1;
        let doc: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
        let hcm = hcm(&doc);
        let filter = &hcm["http_filters"][0];
        assert_eq!(filter["name"].as_str(), Some("keygate"));
        let typed = &filter["typed_config"];
        assert_eq!(
            typed["dynamic_module_config"]["name"].as_str(),
            Some("keygate_envoy")
        );
        let config: serde_json::Value =
            serde_json::from_str(typed["filter_config"]["value"].as_str().unwrap()).unwrap();
        assert_eq!(
            config,
            serde_json::json!({
                "cluster": "keygate",
                "invalidations": "127.0.0.1:9002",
                "positive_ttl_ms": 5000,
                "negative_ttl_ms": 1000,
                "resurrect_ttl_ms": 30000,
                "callout_timeout_ms": 3000,
            })
        );
        assert!(
            !serde_yaml::to_string(hcm).unwrap().contains("ext_authz"),
            "the module replaces ext_authz"
        );
        // Per group: a route per declared operation (its path exactly, or a
        // regex for a template with parameters; the table in use), then the group's prefix (keygate decides, "table": false);
        // last the catch-all, with no per-route config (403 no-route).
        let routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
            .as_sequence()
            .unwrap();
        let named: Vec<(String, Option<(String, bool)>)> = routes
            .iter()
            .map(|r| {
                let value = r["typed_per_filter_config"]["keygate"]["filter_config"]["value"]
                    .as_str()
                    .map(|v| {
                        let v: serde_json::Value = serde_json::from_str(v).unwrap();
                        (
                            v["group"].as_str().unwrap().to_owned(),
                            v["table"].as_bool().unwrap(),
                        )
                    });
                let matched = match (r["match"]["prefix"].as_str(), r["match"]["path"].as_str()) {
                    (Some(prefix), _) => format!("prefix {prefix}"),
                    (None, Some(path)) => format!("path {path}"),
                    (None, None) => format!(
                        "regex {}",
                        r["match"]["safe_regex"]["regex"].as_str().unwrap()
                    ),
                };
                (matched, value)
            })
            .collect();
        let mut want = Vec::new();
        for group in ctx.groups {
            for template in &group.path_templates {
                let matched = match super::keygate_envoy::operation_match(template).unwrap() {
                    super::keygate_envoy::OperationMatch::Path(path) => format!("path {path}"),
                    super::keygate_envoy::OperationMatch::SafeRegex(regex) => {
                        format!("regex {regex}")
                    }
                };
                want.push((matched, Some((group.group_id.clone(), true))));
            }
            want.push((
                format!("prefix {}", group.route_prefix),
                Some((group.group_id.clone(), false)),
            ));
        }
        want.push(("prefix /".to_owned(), None));
        assert_eq!(named, want);
        assert!(
            named
                .iter()
                .any(|(m, _)| m == r"regex /animal\-rescue/animals/[^/%\\;]+"),
            "{named:?}"
        );
        assert!(
            named
                .iter()
                .any(|(m, _)| m == "path /animal-rescue/animals"),
            "{named:?}"
        );
        // The callouts' cluster: as the HTTP ext_authz Envoy's.
        crate::local::envoy::tests::assert_http1_closing_idle_first(
            &doc["static_resources"]["clusters"][0],
        );
        // The listener's path handling is the ext_authz gateways'.
        let grpc: serde_yaml::Value = serde_yaml::from_str(
            &crate::local::envoy::render(&ctx, crate::contract::gateways::Contract::Grpc).unwrap(),
        )
        .unwrap();
        for option in [
            "normalize_path",
            "merge_slashes",
            "path_with_escaped_slashes_action",
            "common_http_protocol_options",
        ] {
            assert_eq!(hcm[option], self::hcm(&grpc)[option], "{option}");
        }
    }
}
