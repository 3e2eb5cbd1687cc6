//! keygate-envoy's reading of keygate's invalidation feed
//! (`invalidations::read_feed`), which runs inside Envoy's process on the
//! module's own thread:
//!
//! - any bytes as keygate's answer: never panics, always ends, hands on no
//!   line longer than `MAX_LINE` and at most one per `\n`;
//! - known lines sent chunked at any boundaries, or as a plain body: hands
//!   on exactly those lines, in order (or stops with an error at the first
//!   one over `MAX_LINE`); afterwards the table still holds its key unless
//!   a line dropped that key or made every answer stale.
//!
//! Layout: `[mode]` then, for mode bit 0 clear, the answer itself; else
//! `[n][n chunk sizes]` and the feed's text (split into lines at `\n`),
//! plain when mode bit 1 is set.
#![no_main]
use std::io::Cursor;
use std::time::{Duration, Instant};

use apikey::ApiKey;
use keygate_envoy::config::Ttls;
use keygate_envoy::invalidations::{Applied, MAX_LINE, read_feed};
use keygate_envoy::table::{Approved, Lookup, Table};
use libfuzzer_sys::fuzz_target;

const GROUP: &str = "animals";
/// The key the table holds (its selector is in the corpus's drop lines).
const KEY: &str = "00112233445566778899aabbccddeeff0123456789abcdef0123456789abcdef";

fn table_holding(key: &ApiKey) -> Table {
    let hour = Duration::from_secs(3600);
    let table = Table::new(
        Ttls {
            positive: hour,
            negative: hour,
            resurrect: Duration::ZERO,
        },
        Duration::from_secs(1),
    );
    let approved = Approved {
        hash: key.verifier_hash(),
        owner: "fuzz".into(),
    };
    let read_at = table.stamp();
    assert!(table.insert(
        GROUP,
        key.selector().as_str(),
        approved,
        read_at,
        Instant::now(),
        None
    ));
    table
}

fn held(table: &Table, key: &ApiKey) -> bool {
    matches!(
        table.lookup(GROUP, key.selector().as_str(), Instant::now()),
        Lookup::Fresh(_)
    )
}

/// Whether a line that `read_feed` applied as a drop named the held key.
fn drops(line: &[u8], key: &ApiKey) -> bool {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(line) else {
        return false;
    };
    value["group"] == GROUP && value["selector"] == key.selector().as_str()
}

/// The answer keygate's server would send for `text`: chunked at `sizes`
/// (cycled; each at least 1 byte), or as it is.
fn answer(text: &[u8], sizes: &[u8], plain: bool) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n");
    if plain {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(text);
        return out;
    }
    out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
    let mut rest = text;
    let mut turn = 0;
    while !rest.is_empty() {
        let size = sizes
            .get(turn % sizes.len().max(1))
            .map_or(rest.len(), |s| usize::from(*s).max(1))
            .min(rest.len());
        turn += 1;
        let (chunk, tail) = rest.split_at(size);
        out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
        rest = tail;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let key = ApiKey::parse(KEY).expect("KEY is a key");
    let table = table_holding(&key);
    let mut applied: Vec<(Vec<u8>, Applied)> = Vec::new();
    let mut note = |line: &[u8], what: Applied| applied.push((line.to_vec(), what));
    if mode & 1 == 0 {
        let _ = read_feed(Cursor::new(data), &table, &mut note);
        assert!(applied.len() <= data.iter().filter(|b| **b == b'\n').count());
    } else {
        let Some((&n, rest)) = data.split_first() else {
            return;
        };
        let (sizes, text) = rest.split_at(usize::from(n % 8).min(rest.len()));
        let mut text = text.to_vec();
        if !text.is_empty() && !text.ends_with(b"\n") {
            text.push(b'\n');
        }
        let sent: Vec<&[u8]> = text
            .strip_suffix(b"\n")
            .map(|body| body.split(|b| *b == b'\n').collect())
            .unwrap_or_default();
        let result = read_feed(
            Cursor::new(answer(&text, sizes, mode & 2 != 0)),
            &table,
            &mut note,
        );
        let seen: Vec<&[u8]> = applied.iter().map(|(line, _)| line.as_slice()).collect();
        match sent.iter().position(|line| line.len() > MAX_LINE) {
            None => {
                assert_eq!(result, Ok(()));
                assert_eq!(seen, sent);
            }
            Some(long) => {
                assert!(result.is_err());
                assert_eq!(seen, sent[..long]);
            }
        }
    }
    let mut kept = true;
    for (line, what) in &applied {
        assert!(line.len() <= MAX_LINE);
        match what {
            Applied::Dropped => kept &= !drops(line, &key),
            Applied::Stale(_) | Applied::Unknown => kept = false,
            Applied::Ping => {}
        }
    }
    let lines: Vec<String> = applied
        .iter()
        .map(|(line, what)| format!("{} -> {what:?}", String::from_utf8_lossy(line)))
        .collect();
    assert_eq!(
        held(&table, &key),
        kept,
        "whether the key is held after: {lines:#?}"
    );
});
