//! Gateways and validators the user runs, checked as a vendor would run
//! them, a step of `cargo xtask test`. Two passes, each `up`, processes this
//! check starts itself (outside the harness's Supervisor, from configs
//! written here by hand), `e2e --gateway-url <name>=<url> --expect
//! <name>=<file>`, which must run the gateway-matrix groups through them
//! and pass, then `down`:
//!
//! - **a gateway you run**: `cargo xtask up`, and a Caddy pointed at the
//!   keygate `up` printed;
//! - **a validator you run**: `cargo xtask up --no-keygate`, and, as "the
//!   vendor's validator", a second keygate in keys-file mode fed by a
//!   `bao agent` (both configured here from what `up` printed: Vault's
//!   address, the delivered Secret, the OpenAPI documents), behind a Caddy.
//!   The harness writes keys into Vault in the documented format and
//!   asserts through Caddy; only that validator reads Vault for them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use rig::contract::case::Status;
use rig::contract::env::Environment;
use rig::contract::report::Report;
use rig::say;

/// What Caddy's forward_auth does differently, as a vendor would write it.
const CADDY_DEVIATIONS: &str = r#"# Caddy's forward_auth passes the URI as sent and copies two headers.
[path-as-sent]
why = "X-Forwarded-Uri is the URI as the client sent it"

[encoded-slash]
handling = "passed"
why = "passed on in X-Forwarded-Uri"

[owner-and-group-only]
why = "copy_headers names owner and group only"
"#;

/// How often the vendor's agent renders, and its keygate polls the files.
const RENDER_INTERVAL: &str = "1s";
const POLL_INTERVAL: &str = "500ms";

/// What the vendor's validator does differently: a keys file holds
/// `<selector>,<hash>` only (no owner, no expiry), and a change lands
/// within a render plus a poll (and the agent's own work).
const VALIDATOR_TRAITS: &str = r#"
[validator]
propagation-ms = 6000
forwards-owner = false
enforces-expiry = false
"#;

/// One pass of the check.
#[derive(Clone, Copy)]
enum Pass {
    /// `up`, and a hand-started Caddy asking the harness's keygate.
    Gateway,
    /// `up --no-keygate`, and a hand-started agent, keygate and Caddy.
    Validator,
}

impl Pass {
    fn name(self) -> &'static str {
        match self {
            Pass::Gateway => "external gateway check",
            Pass::Validator => "external validator check",
        }
    }

    /// The name the pass's gateway is tested under.
    fn gateway(self) -> &'static str {
        match self {
            Pass::Gateway => "handmade",
            Pass::Validator => "vendor",
        }
    }

    fn up_args(self) -> &'static [&'static str] {
        match self {
            Pass::Gateway => &["up"],
            Pass::Validator => &["up", "--no-keygate"],
        }
    }

    fn expectations(self) -> String {
        match self {
            Pass::Gateway => CADDY_DEVIATIONS.to_owned(),
            Pass::Validator => format!("{CADDY_DEVIATIONS}{VALIDATOR_TRAITS}"),
        }
    }

    /// Cases a pass records as skipped, by design (their reason is checked).
    fn skips(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Pass::Gateway => &[],
            Pass::Validator => &[
                (
                    "keygates_other_headers_and_the_upstream",
                    "keygate's own feature",
                ),
                (
                    "revoked_key_is_refused_before_its_cache_entry_expires",
                    "a validator you run",
                ),
            ],
        }
    }
}

/// A process this check started, killed when dropped (it is not the
/// Supervisor's), and tracked meanwhile so that a termination signal,
/// which ends xtask without dropping it, reaches it too.
struct HandStarted(Child);

impl Drop for HandStarted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = crate::runner::wait_for_test(&mut self.0);
    }
}

/// Both passes; `true` when both passed.
pub fn run() -> Result<bool> {
    let gateway = run_pass(Pass::Gateway)?;
    let validator = run_pass(Pass::Validator)?;
    Ok(gateway && validator)
}

fn run_pass(pass: Pass) -> Result<bool> {
    let name = pass.name();
    say!(
        "{name}: `cargo xtask {}`, {} started and configured by hand, tested with `e2e --gateway-url`",
        pass.up_args().join(" "),
        match pass {
            Pass::Gateway => "a Caddy",
            Pass::Validator => "a bao agent, a keys-file keygate and a Caddy",
        }
    );
    // The nested `up` detaches and exits, leaving its environment to
    // `down`; until that ran, `environment` stops it on an error, a panic
    // or a termination signal (whose handler finds nothing of it in this
    // process otherwise).
    let (up, environment) = crate::runner::run_nested_up(
        &format!("`cargo xtask {}`", pass.up_args().join(" ")),
        |command| {
            command.args(pass.up_args());
        },
    )?;
    if !up.ok {
        return Ok(crate::runner::verdict(
            name,
            "",
            &up.text,
            &[format!("`cargo xtask {}` failed", pass.up_args().join(" "))],
        ));
    }
    let checked = check(pass);
    let down = crate::runner::run_nested("`cargo xtask down`", |command| {
        command.arg("down");
    })?;
    if !down.ok {
        say!("{name}: `cargo xtask down` failed: {}", down.text);
    }
    // Whatever `down` left of this pass's environment.
    drop(environment);
    let (output, problems) = match checked {
        Ok(found) => found,
        Err(err) => (String::new(), vec![format!("{err:#}")]),
    };
    Ok(crate::runner::verdict(
        name,
        &format!(
            "every api_keys and gateways case ran through {} and passed",
            pass.gateway()
        ),
        &output,
        &problems,
    ))
}

/// The e2e run's output and what was wrong with its results.
fn check(pass: Pass) -> Result<(String, Vec<String>)> {
    let gateway = pass.gateway();
    let env_file = rig::base::paths::rig_dir().join("latest").join("env.json");
    let env = Environment::load(&env_file)?;
    let dir = rig::base::paths::rig_dir().join(format!("external-check-{gateway}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    // Dropped (killed) when the check returns, before `down`.
    let mut started = Vec::new();
    let validator = match pass {
        Pass::Gateway => env.keygate_url.trim_start_matches("http://").to_owned(),
        Pass::Validator => {
            let (processes, authority) = start_vendor_validator(&env, &dir)?;
            started.extend(processes);
            authority
        }
    };
    let (caddy, url) = start_caddy(&env, &dir, &validator)?;
    started.push(caddy);

    let expectations = dir.join("expect.toml");
    std::fs::write(&expectations, pass.expectations())?;
    let report_dir = dir.join("reports");
    let run = crate::runner::run_nested("`cargo xtask e2e --gateway-url`", |command| {
        command
            .args(["e2e", "--gateway-url"])
            .arg(format!("{gateway}={url}"))
            .arg("--expect")
            .arg(format!("{gateway}={}", expectations.display()))
            .arg("--report-dir")
            .arg(&report_dir)
            .env_remove("GITHUB_STEP_SUMMARY");
    })?;
    let mut problems = Vec::new();
    if !run.ok {
        problems.push("`e2e --gateway-url` failed: its output is above".to_owned());
    }
    let report: Report = serde_json::from_str(
        &std::fs::read_to_string(report_dir.join(rig::contract::report::REPORT_FILE))
            .context("the external run's report.json")?,
    )?;
    let mine: Vec<_> = report
        .cases
        .iter()
        .map(|c| &c.record)
        .filter(|r| r.gateway.as_deref() == Some(gateway))
        .collect();
    if mine.len() < 15 {
        problems.push(format!(
            "only {} cases ran through {gateway}, expected every api_keys and gateways case",
            mine.len()
        ));
    }
    for case in mine.iter().filter(|c| c.status != Status::Passed) {
        let message = case.message.as_deref().unwrap_or("");
        let expected_skip = case.status == Status::Skipped
            && pass
                .skips()
                .iter()
                .any(|(name, why)| case.name == *name && message.contains(why));
        if !expected_skip {
            problems.push(format!(
                "{}/{} [{gateway}] {:?}: {message}",
                case.group, case.name, case.status,
            ));
        }
    }
    if let Some(other) = report
        .cases
        .iter()
        .find(|c| c.record.gateway.as_deref().is_some_and(|g| g != gateway))
    {
        problems.push(format!(
            "{} ran through {:?}: only the external gateway is under test",
            other.record.name, other.record.gateway
        ));
    }
    let conformance = report_dir
        .join(rig::contract::conformance::CONFORMANCE_DIR)
        .join(format!("{gateway}.md"));
    if !conformance.is_file() {
        problems.push(format!("no conformance report {}", conformance.display()));
    }
    drop(started);
    Ok((run.text, problems))
}

/// A hand-started process: its environment cleared (nothing secret is
/// inherited), `HOME` in `dir`, stdout and stderr into `dir/<name>.log`.
fn spawn(name: &str, program: &Path, args: &[&str], dir: &Path) -> Result<HandStarted> {
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let child = crate::runner::spawn_tracked(
        Command::new(program)
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("HOME", dir)
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log),
    )
    .with_context(|| format!("starting {name} ({})", program.display()))?;
    Ok(HandStarted(child))
}

/// Caddy in front of the validator at `validator` (`host:port`, HTTP
/// forward-auth at `/auth`) and the environment's upstream; its URL.
fn start_caddy(env: &Environment, dir: &Path, validator: &str) -> Result<(HandStarted, String)> {
    let port = rig::base::ports::free_port()?;
    let caddyfile = dir.join("Caddyfile");
    std::fs::write(
        &caddyfile,
        format!(
            // The log filter as in env/gateways/caddy/Caddyfile.j2: Caddy's
            // error log would carry the X-Api-Key of each failed request.
            "{{\n\tadmin off\n\tauto_https off\n\tpersist_config off\n\tskip_install_trust\n\tstorage file_system {data:?}\n\tlog {{\n\t\tformat filter {{\n\t\t\twrap json\n\t\t\tfields {{\n\t\t\t\trequest>headers>X-Api-Key delete\n\t\t\t}}\n\t\t}}\n\t}}\n}}\n\n\
             http://127.0.0.1:{port} {{\n\troute {{\n\t\tforward_auth {validator} {{\n\t\t\turi /auth\n\t\t\tcopy_headers X-Keyrig-Owner X-Keyrig-Group\n\t\t\ttransport http {{\n\t\t\t\tkeepalive 30s\n\t\t\t}}\n\t\t}}\n\t\treverse_proxy {upstream}\n\t}}\n}}\n",
            data = dir.join("data").display().to_string(),
            upstream = env.upstream_url.trim_start_matches("http://"),
        ),
    )?;
    let caddy = rig::process::tools::Tools::load_default()?
        .resolve("caddy")
        .context("the external checks run Caddy: `cargo xtask tools` installs it")?;
    let config = caddyfile.display().to_string();
    let process = spawn(
        "caddy",
        &caddy.path,
        &["run", "--adapter", "caddyfile", "--config", &config],
        dir,
    )?;
    let url = format!("http://127.0.0.1:{port}");
    wait_for(
        "the hand-started Caddy to answer 403 (the validator's no-route)",
        &format!("{url}{}", rig::contract::gateways::READINESS_PATH),
        403,
        &dir.join("caddy.log"),
    )?;
    Ok((process, url))
}

/// "The vendor's validator": a `bao agent` rendering one keys file per
/// group from the documented storage format, and a keygate validating from
/// those files, both written from what `up --no-keygate` printed (Vault's
/// address, the delivered Secret's AppRole credentials, the OpenAPI
/// documents). Returns them and the validator's forward-auth `host:port`.
fn start_vendor_validator(env: &Environment, dir: &Path) -> Result<(Vec<HandStarted>, String)> {
    let delivery = env
        .delivery
        .as_ref()
        .context("env.json of `up --no-keygate` names no delivered Secret (delivery)")?;
    let role_id_file = delivery.secret_dir.join(&delivery.keys.role_id);
    let secret_id_file = delivery.secret_dir.join(&delivery.keys.secret_id);
    let keys_dir = dir.join("keys");
    std::fs::create_dir_all(&keys_dir)?;
    let quote = |p: &Path| serde_json::to_string(&p.display().to_string()).expect("a path as JSON");

    // The agent: the template a vendor writes from docs/gateways.md.
    let mut agent = format!(
        "vault {{\n  address = {vault:?}\n}}\n\
         auto_auth {{\n  method \"approle\" {{\n    mount_path = \"auth/approle\"\n    config = {{\n      role_id_file_path = {role}\n      secret_id_file_path = {secret}\n      remove_secret_id_file_after_reading = false\n    }}\n  }}\n}}\n\
         template_config {{\n  static_secret_render_interval = {RENDER_INTERVAL:?}\n  exit_on_retry_failure = false\n}}\n",
        vault = env.vault_addr,
        role = quote(&role_id_file),
        secret = quote(&secret_id_file),
    );
    let mut files = Vec::new();
    for group in env.groups.keys() {
        let template = dir.join(format!("{group}.ctmpl"));
        std::fs::write(
            &template,
            format!(
                "{{{{- range secrets \"{mount}/metadata/{group}\" }}}}\n\
                 {{{{ . }}}},{{{{ with secret (printf \"{mount}/data/{group}/%s\" .) }}}}{{{{ .Data.data.key }}}}{{{{ end }}}}\n\
                 {{{{- end }}}}\n",
                mount = env.kv_mount
            ),
        )?;
        let destination = keys_dir.join(group);
        agent.push_str(&format!(
            "template {{\n  source = {}\n  destination = {}\n  perms = \"0600\"\n  error_on_missing_key = false\n}}\n",
            quote(&template),
            quote(&destination)
        ));
        files.push((group.clone(), destination));
    }
    let agent_config = dir.join("agent.hcl");
    std::fs::write(&agent_config, agent)?;
    let bao = rig::process::tools::Tools::load_default()?
        .resolve("bao")
        .context(
            "the external validator check runs `bao agent`: `cargo xtask tools` installs it",
        )?;
    let config_arg = format!("-config={}", agent_config.display());
    let agent = spawn("bao-agent", &bao.path, &["agent", &config_arg], dir)?;
    let rt = crate::runner::runtime()?;
    rt.block_on(rig::base::wait::wait_until(
        "the hand-started bao agent to render every keys file",
        Duration::from_secs(30),
        async || {
            let missing: Vec<&str> = files
                .iter()
                .filter(|(_, path)| !path.is_file())
                .map(|(group, _)| group.as_str())
                .collect();
            anyhow::Ok(if missing.is_empty() {
                rig::base::wait::Probe::Ready(())
            } else {
                rig::base::wait::Probe::seen(format!("not rendered yet: {}", missing.join(", ")))
            })
        },
    ))
    .with_context(|| format!("its log: {}", dir.join("bao-agent.log").display()))?;

    // keygate reading those files.
    let (grpc, http) = (
        rig::base::ports::free_port()?,
        rig::base::ports::free_port()?,
    );
    let apis: Vec<PathBuf> = {
        let mut found: Vec<PathBuf> =
            std::fs::read_dir(rig::base::paths::scenarios_dir().join("apis"))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
        found.sort();
        found
    };
    let mut config = format!(
        "listen:\n  grpc: \"127.0.0.1:{grpc}\"\n  http: \"127.0.0.1:{http}\"\n\
         vault:\n  address: {vault:?}\n  kv_mount: {mount:?}\n  auth:\n    approle:\n      role_id_file: {role}\n      secret_id_file: {secret}\n\
         apis:\n",
        vault = env.vault_addr,
        mount = env.kv_mount,
        role = quote(&role_id_file),
        secret = quote(&secret_id_file),
    );
    for api in &apis {
        config.push_str(&format!("  - {}\n", quote(api)));
    }
    config.push_str(&format!(
        "keys:\n  source: file\n  poll_interval: {POLL_INTERVAL:?}\n  files:\n"
    ));
    for (group, path) in &files {
        config.push_str(&format!("    {group:?}: {}\n", quote(path)));
    }
    let config_file = dir.join("keygate.yaml");
    std::fs::write(&config_file, config)?;
    let keygate = crate::up::build_keygate()?.keygate;
    let config_arg = config_file.display().to_string();
    let keygate = spawn("keygate", &keygate, &["--config", &config_arg], dir)?;
    wait_for(
        "the hand-started keygate (keys-file mode) to be ready",
        &format!("http://127.0.0.1:{http}/readyz"),
        200,
        &dir.join("keygate.log"),
    )?;
    Ok((vec![agent, keygate], format!("127.0.0.1:{http}")))
}

/// Polls `url` until it answers `status`.
fn wait_for(what: &str, url: &str, status: u16, log: &Path) -> Result<()> {
    let rt = crate::runner::runtime()?;
    rt.block_on(rig::base::wait::wait_until(
        what,
        Duration::from_secs(20),
        async || {
            let reply = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(2))
                .build()?
                .get(url)
                .send()
                .await;
            anyhow::Ok(match reply {
                Ok(r) if r.status().as_u16() == status => rig::base::wait::Probe::Ready(()),
                Ok(r) => rig::base::wait::Probe::seen(format!("{}", r.status())),
                Err(err) => rig::base::wait::Probe::seen(err.to_string()),
            })
        },
    ))
    .with_context(|| format!("its log: {}", log.display()))
}
