//! The e2e results table, whatever the test runner. Each e2e test holds a
//! [`CaseGuard`]; when it drops, the case's outcome is written to
//! `<run>/cases/<group>__<name>.json`, and `cargo xtask e2e` reads them all
//! and prints one table.
//!
//! ```no_run
//! #[test]
//! fn revoked_key_is_rejected() {
//!     let _case = rig::contract::case::CaseGuard::start("api_keys", "revoked_key_is_rejected");
//!     // ... a panic here records the case as failed
//! }
//! ```

use std::cell::RefCell;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use crate::base::run::RUN_DIR_VAR;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passed,
    Failed,
    Skipped,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseRecord {
    pub name: String,
    pub group: String,
    /// The gateway the case ran through, for cases of the gateway matrix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    pub status: Status,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the case started and ended (UTC): diagnostics pick the Vault
    /// audit entries of this window.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
    /// For a case that failed in a [`crate::base::wait::wait_until`]: what it
    /// waited for, and what it last saw (redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
}

impl CaseRecord {
    /// `<name> [<gateway>]` for a case of the gateway matrix, else `<name>`:
    /// what the table, JUnit and the summary call it, so the same case
    /// through six gateways is six names, not one name six times.
    pub fn display_name(&self) -> String {
        match &self.gateway {
            Some(gateway) => format!("{} [{gateway}]", self.name),
            None => self.name.clone(),
        }
    }

    /// `<group>__<name>`: the case's file name in `cases/` and its
    /// directory name under `diagnostics/`.
    /// `<group>__<name>[__<gateway>]`: names the record file and the
    /// diagnostics bundle, unique per gateway in the matrix.
    pub fn id(&self) -> String {
        let gateway = self
            .gateway
            .as_deref()
            .map(|g| format!("__{}", file_safe(g)))
            .unwrap_or_default();
        format!(
            "{}__{}{gateway}",
            file_safe(&self.group),
            file_safe(&self.name)
        )
    }
}

thread_local! {
    /// The message of the last panic on this thread, for the failed record.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Chains a panic hook that remembers each panic's message per thread; the
/// previous hook (the test harness's printing) still runs.
fn remember_panic_messages() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panicked".into());
            LAST_PANIC.with(|last| *last.borrow_mut() = Some(message));
            previous(info);
        }));
    });
}

/// Records one e2e case when dropped: failed if the thread is panicking
/// (or [`CaseGuard::fail`] was called), skipped after [`CaseGuard::skip`],
/// else passed. Does nothing when `$KEYRIG_RUN_DIR` is unset, e.g. when
/// someone runs `cargo test` by hand.
#[must_use = "the case is recorded when the guard drops: bind it with `let _case = ...`"]
pub struct CaseGuard {
    group: String,
    name: String,
    gateway: Option<String>,
    started: Instant,
    started_at: OffsetDateTime,
    outcome: Option<(Status, String)>,
    cases_dir: Option<PathBuf>,
}

impl CaseGuard {
    pub fn start(group: &str, name: &str) -> Self {
        Self::start_in(crate::base::run::current_run_dir().as_deref(), group, name)
    }

    /// A case of the gateway matrix: the same case runs through each
    /// gateway and is recorded once per gateway.
    pub fn start_on(group: &str, name: &str, gateway: &str) -> Self {
        let mut guard = Self::start(group, name);
        guard.gateway = Some(gateway.to_owned());
        guard
    }

    /// Like `start` with an explicit run directory (`None`: record nothing).
    pub fn start_in(run_dir: Option<&Path>, group: &str, name: &str) -> Self {
        remember_panic_messages();
        LAST_PANIC.with(|last| last.borrow_mut().take());
        crate::base::wait::take_last_timeout();
        Self {
            group: group.to_owned(),
            name: name.to_owned(),
            gateway: None,
            started: Instant::now(),
            started_at: OffsetDateTime::now_utc(),
            outcome: None,
            cases_dir: run_dir.map(|dir| dir.join("cases")),
        }
    }

    /// Marks the case skipped (e.g. the profile lacks what it needs).
    pub fn skip(&mut self, reason: impl Into<String>) {
        self.outcome = Some((Status::Skipped, reason.into()));
    }

    /// A message for a passing case (e.g. a measured propagation time); a
    /// panic or a later `fail`/`skip` still decides the status.
    pub fn note(&mut self, message: impl Into<String>) {
        self.outcome = Some((Status::Passed, message.into()));
    }

    /// Marks the case failed without a panic, for tests that return errors.
    pub fn fail(&mut self, message: impl Into<String>) {
        self.outcome = Some((Status::Failed, message.into()));
    }

    /// Passes a test's result through, marking the case failed on `Err`.
    pub fn check<T, E: std::fmt::Display>(&mut self, result: Result<T, E>) -> Result<T, E> {
        if let Err(err) = &result {
            self.fail(err.to_string());
        }
        result
    }

    fn record(&mut self) -> CaseRecord {
        let (status, message) = if std::thread::panicking() {
            let message = LAST_PANIC
                .with(|last| last.borrow_mut().take())
                .unwrap_or_else(|| "panicked".into());
            (Status::Failed, Some(message))
        } else {
            match self.outcome.take() {
                Some((status, message)) => (status, Some(message)),
                None => (Status::Passed, None),
            }
        };
        let timeout = match status {
            Status::Failed => crate::base::wait::take_last_timeout(),
            _ => None,
        };
        CaseRecord {
            name: self.name.clone(),
            group: self.group.clone(),
            gateway: self.gateway.clone(),
            status,
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            // One short line: the table is a summary, cargo's output has the rest.
            message: message.map(|m| {
                let m = crate::base::redact::redact(&m);
                let line = m.lines().next().unwrap_or("").trim();
                line.chars().take(300).collect()
            }),
            started_at: Some(self.started_at),
            ended_at: Some(OffsetDateTime::now_utc()),
            expected: timeout
                .as_ref()
                .map(|t| crate::base::redact::redact(&t.what)),
            last_seen: timeout
                .as_ref()
                .map(|t| crate::base::redact::redact(&t.last_seen)),
        }
    }
}

impl Drop for CaseGuard {
    fn drop(&mut self) {
        let Some(dir) = self.cases_dir.clone() else {
            return;
        };
        let record = self.record();
        let file = dir.join(format!("{}.json", record.id()));
        let written = std::fs::create_dir_all(&dir).and_then(|()| {
            std::fs::write(
                &file,
                serde_json::to_vec_pretty(&record).expect("a record serializes"),
            )
        });
        if let Err(err) = written {
            // Never panic in drop (it may run during a panic): say it instead.
            eprintln!(
                "[keyrig] warning: could not record case {}: {err}",
                file.display()
            );
        }
    }
}

fn file_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The records of a run, sorted by group and name; none if no case ran.
pub fn read_cases(run_dir: &Path) -> Result<Vec<CaseRecord>> {
    let dir = run_dir.join("cases");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", dir.display())),
    };
    let mut cases = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            cases.push(
                serde_json::from_str::<CaseRecord>(&text)
                    .with_context(|| format!("{} is not a case record", path.display()))?,
            );
        }
    }
    cases.sort_by(|a, b| (&a.group, &a.name, &a.gateway).cmp(&(&b.group, &b.name, &b.gateway)));
    Ok(cases)
}

/// (passed, failed, skipped)
pub fn totals(cases: &[CaseRecord]) -> (usize, usize, usize) {
    let count = |status| cases.iter().filter(|c| c.status == status).count();
    (
        count(Status::Passed),
        count(Status::Failed),
        count(Status::Skipped),
    )
}

fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        crate::base::progress::secs(Duration::from_millis(ms))
    }
}

/// The table: group, case, status, duration (and the message of failed or
/// skipped cases), then `N passed, N failed, N skipped` alone on the last
/// line, the form CI reads.
pub fn render_table(cases: &[CaseRecord]) -> String {
    let headers = ["group", "case", "status", "duration"];
    let rows: Vec<[String; 4]> = cases
        .iter()
        .map(|c| {
            [
                c.group.clone(),
                c.display_name(),
                c.status.as_str().to_owned(),
                duration(c.duration_ms),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: [&str; 4], note: Option<&str>| {
        let text = format!(
            "{:w0$}  {:w1$}  {:w2$}  {:>w3$}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
        let _ = match note {
            Some(note) => writeln!(out, "{text}  {note}"),
            None => writeln!(out, "{}", text.trim_end()),
        };
    };
    line(&mut out, headers, None);
    for (row, case) in rows.iter().zip(cases) {
        // A passing case shows its note too (fault figures), if it left one.
        let note = case.message.as_deref();
        line(&mut out, [&row[0], &row[1], &row[2], &row[3]], note);
    }
    let (passed, failed, skipped) = totals(cases);
    let _ = writeln!(out, "{passed} passed, {failed} failed, {skipped} skipped");
    out
}

pub fn print_table(cases: &[CaseRecord]) {
    print!("{}", render_table(cases));
}

/// The gateway x case matrix of the cases that ran through gateways: one
/// row per case, one column per gateway (in `gateways` order, then any
/// other seen), `pass`, `FAIL`, `skip` or `-` (not run), then each
/// gateway's totals. `None` when no case names a gateway.
pub fn render_matrix(cases: &[CaseRecord], gateways: &[&str]) -> Option<String> {
    let mut columns: Vec<&str> = gateways.to_vec();
    for case in cases {
        if let Some(g) = case.gateway.as_deref()
            && !columns.contains(&g)
        {
            columns.push(g);
        }
    }
    let matrix: Vec<&CaseRecord> = cases.iter().filter(|c| c.gateway.is_some()).collect();
    if matrix.is_empty() {
        return None;
    }
    let mut rows: Vec<(&str, &str)> = Vec::new();
    for case in &matrix {
        let row = (case.group.as_str(), case.name.as_str());
        if !rows.contains(&row) {
            rows.push(row);
        }
    }
    let label = |(group, name): (&str, &str)| format!("{group}/{name}");
    let first = rows
        .iter()
        .map(|r| label(*r).len())
        .max()
        .unwrap_or(0)
        .max("case".len());
    let widths: Vec<usize> = columns.iter().map(|c| c.len().max(4)).collect();
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let mut text = format!("{:first$}", cells[0]);
        for (cell, width) in cells[1..].iter().zip(&widths) {
            let _ = write!(text, "  {cell:width$}");
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(
        std::iter::once("case".to_owned())
            .chain(columns.iter().map(|c| c.to_string()))
            .collect(),
    );
    for row in &rows {
        let mut cells = vec![label(*row)];
        for column in &columns {
            let status = matrix.iter().find(|c| {
                (c.group.as_str(), c.name.as_str()) == *row && c.gateway.as_deref() == Some(column)
            });
            cells.push(
                match status.map(|c| c.status) {
                    Some(Status::Passed) => "pass",
                    Some(Status::Failed) => "FAIL",
                    Some(Status::Skipped) => "skip",
                    None => "-",
                }
                .to_owned(),
            );
        }
        line(cells);
    }
    for column in &columns {
        let of_gateway: Vec<CaseRecord> = matrix
            .iter()
            .filter(|c| c.gateway.as_deref() == Some(column))
            .map(|c| (*c).clone())
            .collect();
        let (passed, failed, skipped) = totals(&of_gateway);
        let _ = writeln!(
            out,
            "{column}: {passed} passed, {failed} failed, {skipped} skipped"
        );
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    fn records_pass_fail_and_skip() {
        let dir = tempfile::tempdir().unwrap();
        {
            let _case = CaseGuard::start_in(Some(dir.path()), "api_keys", "valid key passes");
        }
        {
            let mut case = CaseGuard::start_in(Some(dir.path()), "rbac", "other group");
            case.skip("the local profile has one gateway");
        }
        let outcome = std::thread::scope(|s| {
            s.spawn(|| {
                let _case = CaseGuard::start_in(Some(dir.path()), "api_keys", "revoked");
                panic!("expected 401, got 200\nmore detail");
            })
            .join()
        });
        assert!(outcome.is_err());

        let cases = read_cases(dir.path()).unwrap();
        let summary: Vec<_> = cases
            .iter()
            .map(|c| (c.group.as_str(), c.name.as_str(), c.status))
            .collect();
        assert_eq!(
            summary,
            [
                ("api_keys", "revoked", Status::Failed),
                ("api_keys", "valid key passes", Status::Passed),
                ("rbac", "other group", Status::Skipped)
            ]
        );
        assert_eq!(cases[0].message.as_deref(), Some("expected 401, got 200"));
        assert!(
            dir.path()
                .join("cases/api_keys__valid_key_passes.json")
                .is_file()
        );

        let table = render_table(&cases);
        assert_eq!(table.lines().last(), Some("1 passed, 1 failed, 1 skipped"));
        assert!(
            table.lines().next().unwrap().starts_with("group     case"),
            "{table}"
        );
        assert!(table.contains("failed"));
    }

    #[rstest]
    fn gateway_cases_form_a_matrix() {
        let dir = tempfile::tempdir().unwrap();
        let on = |gateway: &str, name: &str| {
            let mut guard = CaseGuard::start_in(Some(dir.path()), "api_keys", name);
            guard.gateway = Some(gateway.to_owned());
            guard
        };
        drop(on("envoy-grpc", "valid"));
        drop(on("nginx", "valid"));
        on("nginx", "reason").skip("nginx 1.22.1 is not installed");
        drop(CaseGuard::start_in(Some(dir.path()), "rbac", "plain"));

        let cases = read_cases(dir.path()).unwrap();
        assert_eq!(cases.len(), 4);
        assert!(
            dir.path()
                .join("cases/api_keys__valid__envoy-grpc.json")
                .is_file()
        );
        let table = render_table(&cases);
        assert!(table.contains("valid [nginx]"), "{table}");

        let matrix = render_matrix(&cases, &["envoy-grpc", "traefik"]).unwrap();
        let lines: Vec<&str> = matrix.lines().collect();
        assert_eq!(
            lines,
            [
                "case             envoy-grpc  traefik  nginx",
                "api_keys/reason  -           -        skip",
                "api_keys/valid   pass        -        pass",
                "envoy-grpc: 1 passed, 0 failed, 0 skipped",
                "traefik: 0 passed, 0 failed, 0 skipped",
                "nginx: 1 passed, 0 failed, 1 skipped",
            ]
        );
        assert_eq!(render_matrix(&cases[3..], &[]), None);
    }

    #[rstest]
    fn without_a_run_dir_nothing_is_written() {
        let mut case = CaseGuard::start_in(None, "g", "n");
        case.fail("x");
        drop(case);
    }

    #[rstest]
    fn check_marks_errors_as_failures() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut case = CaseGuard::start_in(Some(dir.path()), "g", "n");
            let _ = case.check::<(), _>(Err("Vault answered 403"));
        }
        let cases = read_cases(dir.path()).unwrap();
        assert_eq!(cases[0].status, Status::Failed);
        assert_eq!(cases[0].message.as_deref(), Some("Vault answered 403"));
    }

    #[rstest]
    fn an_empty_run_has_an_empty_table() {
        let dir = tempfile::tempdir().unwrap();
        let cases = read_cases(dir.path()).unwrap();
        assert_eq!(
            render_table(&cases).lines().last(),
            Some("0 passed, 0 failed, 0 skipped")
        );
    }
}
