//! A gateway the user runs, checked as a vendor would run it, a step of
//! `cargo xtask test`: `cargo xtask up`, then a Caddy this check starts
//! itself (outside the harness's Supervisor, from a Caddyfile written here
//! by hand, pointed at the keygate `up` printed), then `cargo xtask e2e
//! --gateway-url handmade=<its url> --expect handmade=<file>`, which must
//! run the gateway-matrix groups through it and pass; then `down`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use rig::contract::case::Status;
use rig::contract::report::Report;
use rig::say;

const GATEWAY: &str = "handmade";

/// What this Caddy does differently, as a vendor would write it.
const EXPECTATIONS: &str = r#"# Caddy's forward_auth passes the URI as sent and copies two headers.
[path-as-sent]
why = "X-Forwarded-Uri is the URI as the client sent it"

[encoded-slash]
handling = "passed"
why = "passed on in X-Forwarded-Uri"

[owner-and-group-only]
why = "copy_headers names owner and group only"
"#;

/// The Caddy process, killed when dropped (it is not the Supervisor's).
struct HandStarted(Child);

impl Drop for HandStarted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run() -> Result<bool> {
    say!(
        "external gateway check: a Caddy started and configured by hand, tested with `e2e --gateway-url`"
    );
    let up = crate::runner::run_nested("`cargo xtask up`", |command| {
        command.arg("up");
    })?;
    if !up.ok {
        return Ok(crate::runner::verdict(
            "external gateway check",
            "",
            &up.text,
            &["`cargo xtask up` failed".to_owned()],
        ));
    }
    let checked = check();
    let down = crate::runner::run_nested("`cargo xtask down`", |command| {
        command.arg("down");
    })?;
    if !down.ok {
        say!(
            "external gateway check: `cargo xtask down` failed: {}",
            down.text
        );
    }
    let (output, problems) = match checked {
        Ok(found) => found,
        Err(err) => (String::new(), vec![format!("{err:#}")]),
    };
    Ok(crate::runner::verdict(
        "external gateway check",
        &format!("every api_keys and gateways case ran through {GATEWAY} and passed"),
        &output,
        &problems,
    ))
}

/// The e2e run's output and what was wrong with its results.
fn check() -> Result<(String, Vec<String>)> {
    let env_file = rig::base::paths::rig_dir().join("latest").join("env.json");
    let env = rig::contract::env::Environment::load(&env_file)?;
    let dir = rig::base::paths::rig_dir().join("external-check");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let port = rig::base::ports::free_port()?;
    let caddyfile = dir.join("Caddyfile");
    std::fs::write(
        &caddyfile,
        format!(
            "{{\n\tadmin off\n\tauto_https off\n\tpersist_config off\n\tskip_install_trust\n\tstorage file_system {data:?}\n}}\n\n\
             http://127.0.0.1:{port} {{\n\troute {{\n\t\tforward_auth {keygate} {{\n\t\t\turi /auth\n\t\t\tcopy_headers X-Keyrig-Owner X-Keyrig-Group\n\t\t}}\n\t\treverse_proxy {upstream}\n\t}}\n}}\n",
            data = dir.join("data").display().to_string(),
            keygate = env.keygate_url.trim_start_matches("http://"),
            upstream = env.upstream_url.trim_start_matches("http://"),
        ),
    )?;
    let expectations = dir.join("expect.toml");
    std::fs::write(&expectations, EXPECTATIONS)?;
    let caddy = rig::process::tools::Tools::load_default()?
        .resolve("caddy")
        .context("the external gateway check runs Caddy: `cargo xtask tools` installs it")?;
    let log = std::fs::File::create(dir.join("caddy.log"))?;
    let child = Command::new(&caddy.path)
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&caddyfile)
        .env_clear()
        .env("HOME", &dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", caddy.path.display()))?;
    let _caddy = HandStarted(child);
    let url = format!("http://127.0.0.1:{port}");
    wait_for(&format!("{url}{}", rig::contract::gateways::READINESS_PATH))?;

    let report_dir = dir.join("reports");
    let run = crate::runner::run_nested("`cargo xtask e2e --gateway-url`", |command| {
        command
            .args(["e2e", "--gateway-url"])
            .arg(format!("{GATEWAY}={url}"))
            .arg("--expect")
            .arg(format!("{GATEWAY}={}", expectations.display()))
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
        .filter(|r| r.gateway.as_deref() == Some(GATEWAY))
        .collect();
    if mine.len() < 15 {
        problems.push(format!(
            "only {} cases ran through {GATEWAY}, expected every api_keys and gateways case",
            mine.len()
        ));
    }
    for case in mine.iter().filter(|c| c.status != Status::Passed) {
        problems.push(format!(
            "{}/{} [{GATEWAY}] {:?}: {}",
            case.group,
            case.name,
            case.status,
            case.message.as_deref().unwrap_or("")
        ));
    }
    if let Some(other) = report
        .cases
        .iter()
        .find(|c| c.record.gateway.as_deref().is_some_and(|g| g != GATEWAY))
    {
        problems.push(format!(
            "{} ran through {:?}: only the external gateway is under test",
            other.record.name, other.record.gateway
        ));
    }
    let conformance = report_dir
        .join(rig::contract::conformance::CONFORMANCE_DIR)
        .join(format!("{GATEWAY}.md"));
    if !conformance.is_file() {
        problems.push(format!("no conformance report {}", conformance.display()));
    }
    Ok((run.text, problems))
}

/// Polls the hand-started gateway's readiness path: keygate's 403.
fn wait_for(url: &str) -> Result<()> {
    let rt = crate::runner::runtime()?;
    rt.block_on(rig::base::wait::wait_until(
        "the hand-started Caddy to answer 403 (keygate's no-route)",
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
                Ok(r) if r.status().as_u16() == 403 => rig::base::wait::Probe::Ready(()),
                Ok(r) => rig::base::wait::Probe::seen(format!("{}", r.status())),
                Err(err) => rig::base::wait::Probe::seen(err.to_string()),
            })
        },
    ))
    .context("its log: target/rig/external-check/caddy.log")
}
