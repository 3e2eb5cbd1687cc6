//! The bundle a failed case leaves behind, collected after the test run and
//! before teardown (the components are still up to be asked):
//! `<run>/diagnostics/<group>__<name>/` with
//!
//! - `case.json`: the case record (message, expected, last seen, window);
//! - `logs/<component>.log`: the last [`LOG_TAIL_LINES`] lines of each log;
//! - `vault-audit.jsonl`: Vault's audit entries of the case's time window
//!   (secret values in them are HMACs: Vault's default);
//! - `envoy-stats.txt`, `envoy-clusters.txt`: Envoy's admin `/stats` and
//!   `/clusters`;
//! - `keygate-metrics.txt`: keygate's `/metrics`.
//!
//! Everything written passes through [`crate::base::redact::redact`]. A source
//! that cannot be read puts a line saying why into its file instead of
//! failing the collection: a bundle is most needed when things are broken.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::contract::case::CaseRecord;
use crate::contract::env::Environment;

pub const DIAGNOSTICS_DIR: &str = "diagnostics";
pub const LOG_TAIL_LINES: usize = 200;
/// Audit entries this long before and after the case still count as its own:
/// clocks of the test process and of Vault are the same, but a request
/// sent at the start may be logged a moment later.
const WINDOW_SLACK: time::Duration = time::Duration::seconds(1);

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let mut out = all[all.len().saturating_sub(lines)..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

fn write_redacted(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, crate::base::redact::redact(text))
        .with_context(|| format!("writing {}", path.display()))
}

async fn fetch(http: &reqwest::Client, url: &str) -> String {
    match http.get(url).send().await {
        Ok(response) => {
            let status = response.status();
            match response.text().await {
                Ok(body) if status.is_success() => body,
                Ok(body) => format!("# GET {url} answered {status}\n{body}"),
                Err(err) => format!("# GET {url}: reading the body failed: {err}\n"),
            }
        }
        Err(err) => format!(
            "# GET {url}: no answer ({})\n",
            crate::process::supervisor::describe_request_error(&err)
        ),
    }
}

/// Collects the bundle of one failed case; returns its directory relative
/// to the run directory.
pub async fn collect(run_dir: &Path, env: &Environment, case: &CaseRecord) -> Result<PathBuf> {
    let relative = PathBuf::from(DIAGNOSTICS_DIR).join(case.id());
    let dir = run_dir.join(&relative);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    write_redacted(&dir.join("case.json"), &serde_json::to_string_pretty(case)?)?;

    // Component log tails (the audit log gets its own, filtered file).
    let audit_log = env.logs_dir.join(crate::vault::audit::AUDIT_LOG);
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&env.logs_dir)
        .with_context(|| format!("reading {}", env.logs_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && *p != audit_log)
        .collect();
    logs.sort();
    for log in logs {
        let text = std::fs::read(&log).unwrap_or_default();
        let name = log.file_name().expect("a file in logs/ has a name");
        write_redacted(
            &dir.join("logs").join(name),
            &tail(&String::from_utf8_lossy(&text), LOG_TAIL_LINES),
        )?;
    }

    // Vault's audit entries of the case's window.
    let audit = match (case.started_at, case.ended_at) {
        (Some(from), Some(to)) => {
            let entries = crate::vault::audit::entries_between(
                &audit_log,
                from - WINDOW_SLACK,
                to + WINDOW_SLACK,
            )?;
            entries.join("\n") + if entries.is_empty() { "" } else { "\n" }
        }
        _ => "# the case record has no time window (recorded by an older rig)\n".into(),
    };
    write_redacted(&dir.join("vault-audit.jsonl"), &audit)?;

    // What the running components say about themselves now.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()?;
    match &env.envoy_admin_url {
        Some(admin) => {
            write_redacted(
                &dir.join("envoy-stats.txt"),
                &fetch(&http, &format!("{admin}/stats")).await,
            )?;
            write_redacted(
                &dir.join("envoy-clusters.txt"),
                &fetch(&http, &format!("{admin}/clusters")).await,
            )?;
        }
        None => write_redacted(
            &dir.join("envoy-stats.txt"),
            "# env.json names no envoy_admin_url: this profile exposes no Envoy admin\n",
        )?,
    }
    // The admin paths the case's own gateway declares (its manifest's
    // `[diagnostics] admin`), when it is not the default one above.
    if let Some(admin) = case
        .gateway
        .as_ref()
        .and_then(|g| env.gateway_admin.get(g).map(|a| (g, a)))
        .filter(|(_, a)| Some(&a.url) != env.envoy_admin_url.as_ref())
    {
        let (gateway, admin) = admin;
        for path in &admin.paths {
            let name: String = path
                .trim_start_matches('/')
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            write_redacted(
                &dir.join(format!("{gateway}-admin-{name}.txt")),
                &fetch(&http, &format!("{}{path}", admin.url)).await,
            )?;
        }
    }
    // No keygate (`up --no-keygate`): the user's validator has no
    // metrics we know of.
    if !env.keygate_url.is_empty() {
        write_redacted(
            &dir.join("keygate-metrics.txt"),
            &fetch(&http, &format!("{}/metrics", env.keygate_url)).await,
        )?;
    }
    Ok(relative)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    fn tail_keeps_the_last_lines() {
        let text: String = (1..=300).map(|n| format!("line {n}\n")).collect();
        let tail = tail(&text, LOG_TAIL_LINES);
        assert_eq!(tail.lines().count(), 200);
        assert!(tail.starts_with("line 101\n"));
        assert!(tail.ends_with("line 300\n"));
        assert_eq!(super::tail("", 5), "");
    }
}
