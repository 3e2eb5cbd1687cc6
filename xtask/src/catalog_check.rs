//! The gateway catalog checked as a vendor uses it, a step of `cargo xtask
//! test`: a gateway added as data only (a second Caddy with another route
//! layout, in a temporary copy of `env/`, the catalog found through
//! `$KEYRIG_GATEWAYS_DIR`), whose manifest declares one deviation the
//! gateway does not show. `cargo xtask e2e --gateway caddy-alt --filter
//! gateways` must:
//!
//! - accept the name and run every case of `tests/gateways.rs` through it
//!   (the matrix comes from env.json, not from code);
//! - fail exactly the case of the falsely declared row, with a message that
//!   names the gateway and the row;
//! - pass the others: the rest of the manifest is true;
//! - write its conformance report, the false row shown as differing.

use std::path::Path;

use anyhow::{Context, Result};
use rig::contract::case::Status;
use rig::contract::report::Report;
use rig::say;

const GATEWAY: &str = "caddy-alt";
/// The row the manifest declares falsely: Caddy passes keygate's body.
const FALSE_ROW: &str = "own-denial-body";
/// The case that asserts it.
/// The gateways case recorded skipped for every catalog gateway.
const EXTERNAL_ONLY_CASE: &str = "hostile_requests_through_a_gateway_you_run";
const FALSE_ROW_CASE: &str = "denial_reaches_the_client_with_status_and_reason";
const GROUP: &str = "gateways";

/// One route for every path (where `caddy` has a `handle` per API group):
/// the catch-all layout a vendor might ship, keygate deciding the group.
const CADDYFILE: &str = r#"# A second Caddy for the catalog check (xtask/src/catalog_check.rs): one
# route for every path, keygate decides the group.
{
	admin off
	auto_https off
	persist_config off
	skip_install_trust
	storage file_system {{ (dir ~ "/data") | q }}
}

http://{{ listen }} {
	route {
		forward_auth {{ keygate_http }} {
			uri /auth
			copy_headers X-Keyrig-Owner X-Keyrig-Group
		}
		reverse_proxy {{ upstream }}
	}
}
"#;

fn manifest() -> String {
    format!(
        r#"# Written by the catalog check: Caddy with one route for every path.
description = "Caddy, one route for every path"
asks_keygate = "`forward_auth` in one `route` for every path"
tool = "caddy"
contract = "http"

[run]
args = ["run", "--adapter", "caddyfile", "--config", "{{{{ dir }}}}/Caddyfile"]
env = {{ XDG_DATA_HOME = "{{{{ dir }}}}/data", XDG_CONFIG_HOME = "{{{{ dir }}}}/config" }}

[[config]]
template = "Caddyfile.j2"
file = "Caddyfile"

[deviations.path-as-sent]
why = "X-Forwarded-Uri is the URI as sent"

[deviations.encoded-slash]
handling = "passed"
why = "passed on in X-Forwarded-Uri"

[deviations.owner-and-group-only]
why = "copy_headers names owner and group only"

# Not true (Caddy passes keygate's body): the check expects this row to fail.
[deviations.{FALSE_ROW}]
why = "declared falsely by the catalog check"
"#
    )
}

/// Runs the check; `Ok(false)` lists what was wrong.
pub fn run() -> Result<bool> {
    say!(
        "gateway catalog check: a gateway added as data ({GATEWAY}) is in the matrix, and its falsely declared row `{FALSE_ROW}` fails naming it"
    );
    let work = rig::base::paths::rig_dir().join("catalog-check");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("clearing {}", work.display()))?;
    }
    let env_copy = work.join("env");
    copy_dir(&rig::base::paths::env_dir(), &env_copy)?;
    let gateway_dir = env_copy.join("gateways").join(GATEWAY);
    std::fs::create_dir_all(&gateway_dir)?;
    std::fs::write(gateway_dir.join("Caddyfile.j2"), CADDYFILE)?;
    std::fs::write(
        gateway_dir.join(rig::contract::gateways::MANIFEST_FILE),
        manifest(),
    )?;
    let report_dir = work.join("reports");
    let run = crate::runner::run_nested("the catalog check's e2e run", |command| {
        command
            .args([
                "e2e",
                "--mode",
                "inline",
                "--gateway",
                GATEWAY,
                "--filter",
                GROUP,
            ])
            .arg("--report-dir")
            .arg(&report_dir)
            .env(
                rig::contract::gateways::GATEWAYS_DIR_VAR,
                env_copy.join("gateways"),
            )
            .env_remove("GITHUB_STEP_SUMMARY");
    })?;
    let problems = check(run.ok, &run.text, &report_dir);
    Ok(crate::runner::verdict(
        "gateway catalog check",
        &format!(
            "{GATEWAY} ran every `{GROUP}` case from its directory alone; only `{FALSE_ROW}` failed, naming the gateway and the row"
        ),
        &run.text,
        &problems,
    ))
}

fn check(succeeded: bool, output: &str, report_dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    if succeeded {
        problems.push(format!(
            "the run exited 0, though {GATEWAY}'s manifest declares `{FALSE_ROW}` falsely"
        ));
    }
    let report: Report =
        match std::fs::read_to_string(report_dir.join(rig::contract::report::REPORT_FILE))
            .map_err(|err| err.to_string())
            .and_then(|text| serde_json::from_str(&text).map_err(|err| err.to_string()))
        {
            Ok(report) => report,
            Err(err) => {
                problems.push(format!("no report.json in {}: {err}", report_dir.display()));
                return problems;
            }
        };
    let cases: Vec<_> = report
        .cases
        .iter()
        .map(|c| &c.record)
        .filter(|r| r.group == GROUP && r.gateway.as_deref() == Some(GATEWAY))
        .collect();
    if cases.len() < 5 {
        problems.push(format!(
            "only {} `{GROUP}` cases ran through {GATEWAY}: the matrix did not take it from env.json",
            cases.len()
        ));
    }
    for case in &cases {
        let want = if case.name == FALSE_ROW_CASE {
            Status::Failed
        } else if case.name == EXTERNAL_ONLY_CASE {
            // Runs only through gateways the user runs (`e2e --gateway-url`);
            // a catalog gateway gets the hostile requests in `faults`.
            Status::Skipped
        } else {
            Status::Passed
        };
        if case.status != want {
            problems.push(format!(
                "{} [{GATEWAY}] is {:?}, expected {want:?}: {}",
                case.name,
                case.status,
                case.message.as_deref().unwrap_or("")
            ));
        }
        if case.name == FALSE_ROW_CASE {
            let message = case.message.as_deref().unwrap_or_default();
            let names = format!("gateway {GATEWAY}, row `{FALSE_ROW}`: its manifest declares");
            if !message.contains(&names) {
                problems.push(format!(
                    "the failure does not name the gateway and the row ({names:?}): {message:?}"
                ));
            }
        }
    }
    if !cases.iter().any(|c| c.name == FALSE_ROW_CASE) {
        problems.push(format!("no {FALSE_ROW_CASE} [{GATEWAY}] in report.json"));
    }
    let conformance = report_dir
        .join(rig::contract::conformance::CONFORMANCE_DIR)
        .join(format!("{GATEWAY}.md"));
    match std::fs::read_to_string(&conformance) {
        Ok(text) => {
            if !text.contains(&format!("| `{FALSE_ROW}` | deviates: "))
                || !text.contains("**differs**")
            {
                problems.push(format!(
                    "{} does not show `{FALSE_ROW}` as declared and differing: {text}",
                    conformance.display()
                ));
            }
        }
        Err(err) => problems.push(format!("no {}: {err}", conformance.display())),
    }
    if !output.contains(GATEWAY) {
        problems.push(format!("the run's output never names {GATEWAY}"));
    }
    problems
}

/// `from` copied into `to` (files and directories; the env/ tree has no
/// links).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).with_context(|| {
                format!("copying {} to {}", entry.path().display(), target.display())
            })?;
        }
    }
    Ok(())
}
