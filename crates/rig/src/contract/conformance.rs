//! A conformance report per gateway: how many of its cases passed, and for
//! each row of the compatibility table whether the gateway deviates from
//! the strict expectation there (its manifest declares it) and whether the
//! cases that assert the row found what the manifest says. Those cases
//! assert the declared behaviour, so a passed case is a match and a failed
//! one a difference (its message says which way). In `report.json`,
//! `summary.md` and `conformance/<gateway>.md` of the run.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::contract::case::{CaseRecord, Status};
use crate::contract::gateways::{Deviations, row};

/// The directory of the per-gateway files in the run.
pub const CONFORMANCE_DIR: &str = "conformance";

/// The cases that assert each row (`tests/gateways.rs`, and the hostile
/// case of `tests/faults.rs` for the `hostile:` rows).
pub fn asserted_by(row: &str) -> &'static [&'static str] {
    const HOSTILE: &str = "hostile_requests_are_refused_without_a_vault_read";
    match row {
        row::PATH_AS_SENT => &["dot_segments_in_the_path", HOSTILE],
        row::OWN_DENIAL_BODY => &["denial_reaches_the_client_with_status_and_reason"],
        row::API_KEY_NOT_FORWARDED => &["api_key_header_and_the_upstream"],
        row::OWNER_AND_GROUP_ONLY => &["keygates_other_headers_and_the_upstream"],
        row::HEADER_LIMIT | row::ENCODED_SLASH => &[HOSTILE],
        row::HELD_KEYS_PASS_UNDECLARED_PATHS => &["undeclared_path_under_a_groups_prefix"],
        _ => &[],
    }
}

/// Every row a manifest may declare, in the table's order.
pub const ROWS: [&str; 7] = [
    row::PATH_AS_SENT,
    row::OWN_DENIAL_BODY,
    row::API_KEY_NOT_FORWARDED,
    row::OWNER_AND_GROUP_ONLY,
    row::HEADER_LIMIT,
    row::ENCODED_SLASH,
    row::HELD_KEYS_PASS_UNDECLARED_PATHS,
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayConformance {
    pub gateway: String,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub rows: Vec<RowConformance>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowConformance {
    pub row: String,
    /// The manifest's reason when it declares the deviation; `None`: strict.
    pub declared: Option<String>,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "is", content = "detail")]
pub enum Verdict {
    /// Every case asserting the row passed: the gateway does what its
    /// manifest says there.
    Matches,
    /// A case asserting the row failed (its name and message).
    Differs(String),
    /// No case asserting the row ran through the gateway.
    NotChecked,
}

/// The report of each gateway of `deviations` (the run's env.json
/// `gateway_deviations`: every gateway that ran) from the run's cases.
pub fn assess(
    cases: &[CaseRecord],
    deviations: &BTreeMap<String, Deviations>,
) -> Vec<GatewayConformance> {
    deviations
        .iter()
        .map(|(gateway, declared)| {
            let mine: Vec<&CaseRecord> = cases
                .iter()
                .filter(|c| c.gateway.as_deref() == Some(gateway.as_str()))
                .collect();
            let count = |s: Status| mine.iter().filter(|c| c.status == s).count();
            let declared = declared.declared();
            let rows = ROWS
                .iter()
                .map(|row| {
                    let asserting: Vec<&&CaseRecord> = mine
                        .iter()
                        .filter(|c| asserted_by(row).contains(&c.name.as_str()))
                        .filter(|c| c.status != Status::Skipped)
                        .collect();
                    let verdict = match asserting.iter().find(|c| c.status == Status::Failed) {
                        Some(c) => Verdict::Differs(format!(
                            "{}/{}: {}",
                            c.group,
                            c.name,
                            c.message.as_deref().unwrap_or("failed")
                        )),
                        None if asserting.is_empty() => Verdict::NotChecked,
                        None => Verdict::Matches,
                    };
                    RowConformance {
                        row: (*row).to_owned(),
                        declared: declared
                            .iter()
                            .find(|(r, _)| r == row)
                            .map(|(_, why)| (*why).to_owned()),
                        verdict,
                    }
                })
                .collect();
            GatewayConformance {
                gateway: gateway.clone(),
                passed: count(Status::Passed),
                failed: count(Status::Failed),
                skipped: count(Status::Skipped),
                rows,
            }
        })
        .collect()
}

/// One gateway's report as Markdown.
pub fn markdown(c: &GatewayConformance) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "#### {}: {} passed, {} failed, {} skipped\n\n| row | manifest | found |\n|---|---|---|",
        c.gateway, c.passed, c.failed, c.skipped
    );
    for r in &c.rows {
        let manifest = match &r.declared {
            Some(why) => format!("deviates: {why}"),
            None => "strict".to_owned(),
        };
        let found = match &r.verdict {
            Verdict::Matches => "as declared".to_owned(),
            Verdict::Differs(detail) => format!("**differs**: {detail}"),
            Verdict::NotChecked => "not checked in this run".to_owned(),
        };
        let _ = writeln!(
            md,
            "| `{}` | {} | {} |",
            r.row,
            manifest.replace('|', "\\|"),
            found.replace('|', "\\|")
        );
    }
    md.push('\n');
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(name: &str, gateway: &str, status: Status, message: Option<&str>) -> CaseRecord {
        CaseRecord {
            name: name.into(),
            group: "gateways".into(),
            gateway: Some(gateway.into()),
            status,
            duration_ms: 1,
            message: message.map(str::to_owned),
            started_at: None,
            ended_at: None,
            expected: None,
            last_seen: None,
        }
    }

    #[test]
    fn a_row_matches_differs_or_was_not_checked() {
        let deviations: Deviations =
            toml::from_str("[own-denial-body]\nwhy = \"its own page\"\n").unwrap();
        let cases = [
            case(
                "denial_reaches_the_client_with_status_and_reason",
                "gw",
                Status::Failed,
                Some("row `own-denial-body`"),
            ),
            case(
                "api_key_header_and_the_upstream",
                "gw",
                Status::Passed,
                None,
            ),
            case(
                "api_key_header_and_the_upstream",
                "other",
                Status::Failed,
                None,
            ),
            case(
                "undeclared_path_under_a_groups_prefix",
                "gw",
                Status::Skipped,
                Some("not run"),
            ),
        ];
        let report = assess(&cases, &BTreeMap::from([("gw".to_owned(), deviations)]));
        assert_eq!(report.len(), 1);
        let gw = &report[0];
        assert_eq!((gw.passed, gw.failed, gw.skipped), (1, 1, 1));
        let row = |name: &str| gw.rows.iter().find(|r| r.row == name).unwrap();
        assert_eq!(
            row(row::OWN_DENIAL_BODY).declared.as_deref(),
            Some("its own page")
        );
        assert!(
            matches!(&row(row::OWN_DENIAL_BODY).verdict, Verdict::Differs(d) if d.contains("row `own-denial-body`"))
        );
        assert_eq!(row(row::API_KEY_NOT_FORWARDED).verdict, Verdict::Matches);
        assert_eq!(row(row::API_KEY_NOT_FORWARDED).declared, None);
        assert_eq!(
            row(row::HELD_KEYS_PASS_UNDECLARED_PATHS).verdict,
            Verdict::NotChecked
        );
        let md = markdown(gw);
        assert!(
            md.starts_with("#### gw: 1 passed, 1 failed, 1 skipped"),
            "{md}"
        );
        assert!(
            md.contains("| `own-denial-body` | deviates: its own page | **differs**: "),
            "{md}"
        );
    }

    #[test]
    fn every_row_is_asserted_by_some_case() {
        for row in ROWS {
            assert!(!asserted_by(row).is_empty(), "{row}");
        }
    }
}
