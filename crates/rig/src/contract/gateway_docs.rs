//! docs/gateways.md's tables, generated from the gateway catalog: the
//! matrix (name, what runs, how it asks keygate) and the compatibility
//! table (a column per gateway: the strict behaviour, or the manifest's
//! declared deviation), then each declared deviation's reason. The file
//! holds them between two markers; `cargo xtask docs` writes them and a
//! test fails when the file and the manifests disagree.

use std::fmt::Write;

use anyhow::{Context, Result};

use crate::contract::gateways::{Catalog, Deviations, EncodedSlashHandling, row};

/// The lines the generated part sits between.
pub const BEGIN: &str = "<!-- gateway tables: generated from env/gateways/*/gateway.toml by `cargo xtask docs`; do not edit -->";
pub const END: &str = "<!-- end of the generated gateway tables -->";

/// One behaviour of the compatibility table: what the strict expectation
/// is, and, for a row a manifest may deviate from, what a gateway that
/// declares it shows instead.
struct Row {
    behaviour: &'static str,
    strict: &'static str,
    /// The cell of a gateway that deviates (`None`: it keeps the strict one).
    deviation: fn(&Deviations) -> Option<String>,
}

fn never(_: &Deviations) -> Option<String> {
    None
}

fn rows() -> Vec<Row> {
    vec![
        Row {
            behaviour: "client's own `x-keyrig-owner` / `x-keyrig-group` (also spelled with `_`) with a valid key",
            strict: "replaced by keygate's; the `_` spellings never reach the upstream",
            deviation: never,
        },
        Row {
            behaviour: "denial status (401/403) and `x-keyrig-reason` reach the client",
            strict: "yes",
            deviation: never,
        },
        Row {
            behaviour: "keygate's JSON body `{\"reason\":..}` reaches the client",
            strict: "yes",
            deviation: |d| {
                d.own_denial_body.as_ref().map(|_| {
                    format!(
                        "**no**: the gateway's own body (`{}`)",
                        row::OWN_DENIAL_BODY
                    )
                })
            },
        },
        Row {
            behaviour: "client's `x-api-key` reaches the upstream",
            strict: "yes",
            deviation: |d| {
                d.api_key_not_forwarded
                    .as_ref()
                    .map(|_| format!("**no** (`{}`)", row::API_KEY_NOT_FORWARDED))
            },
        },
        Row {
            behaviour: "keygate's other headers (secret references' `upstream_headers`) reach the upstream",
            strict: "yes",
            deviation: |d| {
                d.owner_and_group_only.as_ref().map(|_| {
                    format!(
                        "**no**: owner and group only (`{}`)",
                        row::OWNER_AND_GROUP_ONLY
                    )
                })
            },
        },
        Row {
            behaviour: "`GET /billing/../animal-rescue/animals` with an animal-rescue key",
            strict: "200, upstream sees `/animal-rescue/animals`",
            deviation: |d| {
                d.path_as_sent.as_ref().map(|_| {
                    format!(
                        "**403 `no-route`**: keygate gets the URI as sent (`{}`)",
                        row::PATH_AS_SENT
                    )
                })
            },
        },
        Row {
            behaviour: "`GET /animal-rescue/../billing/invoices` with an animal-rescue key",
            strict: "refused",
            deviation: never,
        },
        Row {
            behaviour: "`GET /animal-rescue/no-such-operation` (under the group's prefix, not in its OpenAPI document) with a valid key of the group",
            strict: "403 `no-route`",
            deviation: |d| {
                d.held_keys_pass_undeclared_paths.as_ref().map(|_| {
                    format!(
                        "**403 `no-route` until the gateway holds the key, then 200** (`{}`)",
                        row::HELD_KEYS_PASS_UNDECLARED_PATHS
                    )
                })
            },
        },
        Row {
            behaviour: "hostile: 8 KiB `x-api-key`",
            strict: "401 `malformed`",
            deviation: |d| {
                d.header_limit.as_ref().map(|l| {
                    format!(
                        "**400 by the gateway** (headers of {} bytes or more, `{}`)",
                        l.bytes,
                        row::HEADER_LIMIT
                    )
                })
            },
        },
        Row {
            behaviour: "hostile: NUL byte in `x-api-key`",
            strict: "400 by the gateway",
            deviation: never,
        },
        Row {
            behaviour: "hostile: two `x-api-key` headers, non-ASCII or inner space in the key",
            strict: "401 `malformed`",
            deviation: never,
        },
        Row {
            behaviour: "hostile: key padded with spaces/tabs (OWS, stripped)",
            strict: "200",
            deviation: never,
        },
        Row {
            behaviour: "hostile: dot segments, `%2e%2e`, `//` (see `tests/shared/hostile.rs`)",
            strict: "resolved, then the owning group decides (200 or 403 `wrong-group`)",
            deviation: |d| {
                d.path_as_sent
                    .as_ref()
                    .map(|_| format!("**403 `no-route`** for all (`{}`)", row::PATH_AS_SENT))
            },
        },
        Row {
            behaviour: "hostile: `%62illing` (an encoded unreserved letter)",
            strict: "decoded (by the gateway or keygate), then the owning group decides",
            deviation: never,
        },
        Row {
            behaviour: "hostile: encoded slash `%2F` in a dot-segment trick",
            strict: "**400 by the gateway**",
            deviation: |d| {
                d.encoded_slash.as_ref().map(|e| {
                    let what = match e.handling {
                        EncodedSlashHandling::Passed => "403 `no-route`: passed to keygate",
                        EncodedSlashHandling::DecodedAboveRootRefused => {
                            "403 `no-route`, or 400 by the gateway when it climbs above `/`"
                        }
                    };
                    format!("{what} (`{}`)", row::ENCODED_SLASH)
                })
            },
        },
    ]
}

/// The generated part of docs/gateways.md, markers included.
pub fn render(catalog: &Catalog) -> String {
    let mut out = String::new();
    let gateways: Vec<_> = catalog.iter().collect();
    writeln!(out, "{BEGIN}").unwrap();
    writeln!(out).unwrap();
    writeln!(out, "| name | what runs | how it asks keygate |").unwrap();
    writeln!(out, "|---|---|---|").unwrap();
    for g in &gateways {
        writeln!(
            out,
            "| `{}` | {} | {} |",
            g.name, g.description, g.asks_keygate
        )
        .unwrap();
    }
    writeln!(out).unwrap();
    writeln!(
        out,
        "Compatibility: the strict expectation, or the deviation a gateway's manifest declares (bold, with its row's name). Every row is asserted per gateway (`tests/gateways.rs`, the `hostile:` rows by `tests/shared/hostile.rs`)."
    )
    .unwrap();
    writeln!(out).unwrap();
    let mut header = String::from("| behaviour | strict |");
    let mut rule = String::from("|---|---|");
    for g in &gateways {
        write!(header, " {} |", g.name).unwrap();
        rule.push_str("---|");
    }
    writeln!(out, "{header}\n{rule}").unwrap();
    for row in rows() {
        let mut line = format!("| {} | {} |", row.behaviour, row.strict);
        for g in &gateways {
            let cell = (row.deviation)(&g.deviations).unwrap_or_else(|| "strict".to_owned());
            write!(line, " {cell} |").unwrap();
        }
        writeln!(out, "{line}").unwrap();
    }
    writeln!(out).unwrap();
    writeln!(out, "Declared deviations, in each manifest's words:").unwrap();
    writeln!(out).unwrap();
    for g in &gateways {
        let declared = g.deviations.declared();
        if declared.is_empty() {
            writeln!(out, "- `{}`: none (the strict expectations)", g.name).unwrap();
        }
        for (row, why) in declared {
            writeln!(out, "- `{}`, `{row}`: {why}", g.name).unwrap();
        }
    }
    writeln!(out).unwrap();
    writeln!(out, "{END}").unwrap();
    out
}

/// `text` with its generated part replaced by `generated`; an error when
/// the markers are missing.
pub fn splice(text: &str, generated: &str) -> Result<String> {
    let begin = text
        .find(BEGIN)
        .with_context(|| format!("no line {BEGIN:?}: put the two markers where the tables go"))?;
    let end = text[begin..]
        .find(END)
        .map(|at| begin + at + END.len())
        .with_context(|| format!("no line {END:?} after the first marker"))?;
    let end = text[end..].strip_prefix('\n').map_or(end, |_| end + 1);
    Ok(format!("{}{generated}{}", &text[..begin], &text[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// README links here; the tables must say what the manifests say.
    #[test]
    fn docs_gateways_md_has_the_tables_the_manifests_make() {
        let file = crate::base::paths::workspace_root().join("docs/gateways.md");
        let text = std::fs::read_to_string(&file).unwrap();
        let catalog = Catalog::load(&crate::base::paths::env_dir().join("gateways")).unwrap();
        let want = splice(&text, &render(&catalog)).unwrap();
        assert!(
            text == want,
            "{}'s gateway tables differ from env/gateways/*/gateway.toml: run `cargo xtask docs`",
            file.display()
        );
    }

    #[test]
    fn every_deviation_row_has_a_cell() {
        // A manifest declaring every row: each row that may deviate shows it.
        let all: Deviations = toml::from_str(
            r#"
[path-as-sent]
why = "a"
[own-denial-body]
why = "b"
[api-key-not-forwarded]
why = "c"
[owner-and-group-only]
why = "d"
[header-limit]
bytes = 8192
why = "e"
[encoded-slash]
handling = "passed"
why = "f"
[held-keys-pass-undeclared-paths]
why = "g"
"#,
        )
        .unwrap();
        let shown: Vec<String> = rows().iter().filter_map(|r| (r.deviation)(&all)).collect();
        for (row, _) in all.declared() {
            assert!(
                shown.iter().any(|cell| cell.contains(&format!("`{row}`"))),
                "row {row} has no cell in the table"
            );
        }
    }

    #[test]
    fn splicing_replaces_only_the_generated_part() {
        let text = format!("# T\n\nbefore\n{BEGIN}\nold\n{END}\nafter\n");
        let out = splice(&text, &format!("{BEGIN}\nnew\n{END}\n")).unwrap();
        assert_eq!(out, format!("# T\n\nbefore\n{BEGIN}\nnew\n{END}\nafter\n"));
        assert!(splice("no markers", "x").is_err());
    }
}
