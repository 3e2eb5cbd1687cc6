//! keygate's request routing (`Routes::resolve`, `request_path::segments`)
//! on arbitrary request paths, against a fixed route table of three groups
//! whose templates cover literals, parameters, mixed segments
//! (`{name}.json`), encoded literals (`%73ecret`) and kept escapes
//! (`caf%C3%A9`).
//!
//! Input: `<request path>` or `<request path>\n<variant bytes>`; the
//! variant bytes pick how the path is re-encoded for invariant 4.
//!
//! Invariants (each is what keygate's security rests on: the group it
//! picks must be the group owning the path the upstream serves):
//!
//! 1. Resolution never panics, and it fails exactly when
//!    `request_path::segments` refuses the path (with the same reason) or
//!    no route matches (`NoMatch`).
//! 2. A routable path's decoded segments have no `.`, `..` or empty
//!    segment, no `/`, `\`, `?` or `#`, and no escape keygate should have
//!    decoded or refused: every `%` left starts an upper-case `%XY` of a
//!    byte that is neither unreserved nor `/`, `.`, `\`, and no `%25` is
//!    followed by two hex digits (an upstream that decodes twice reads it).
//! 3. Decoding is a fixed point: the decoded segments decode to
//!    themselves, and the decoded path (`/` + segments joined) resolves to
//!    the same result as the raw one, so keygate and an upstream that
//!    decodes once more agree.
//! 4. Spelling does not matter: the decoded path with any of its
//!    unreserved characters (other than `.`, which keygate refuses encoded)
//!    percent-encoded, in either hex case, and its kept escapes in either
//!    case, has the same segments and resolves to the same group.
//! 5. The group is the one an independent oracle (one regular expression
//!    per route, over the decoded path) names: no other group's route
//!    matches, and `NoMatch` means no route of any group does.
#![no_main]
use std::sync::LazyLock;

use keygate_config::request_path::{Unroutable, decode_segment, segments};
use keygate_config::routes::Routes;
use libfuzzer_sys::fuzz_target;
use regex::bytes::Regex;

/// A document's templates as written, each with the regular expression the
/// decoded request path must match.
type Templates = &'static [(&'static str, &'static str)];

/// (group, base, templates) of each document.
const TABLE: [(&str, &str, Templates); 3] = [
    (
        "shop",
        "/shop",
        &[
            ("/items/{id}", "/shop/items/[^/]+"),
            ("/items/{id}/reviews", "/shop/items/[^/]+/reviews"),
            ("/files/{name}.json", r"/shop/files/[^/]+\.json"),
            ("/cart", "/shop/cart"),
        ],
    ),
    (
        "admin",
        "/admin",
        &[
            ("/special", "/admin/special"),
            ("/%73ecret", "/admin/secret"),
            ("/{page}.html", r"/admin/[^/]+\.html"),
            ("/caf%C3%A9", "/admin/caf%C3%A9"),
            ("/r%c3%a9sum%c3%a9/{v}", "/admin/r%C3%A9sum%C3%A9/[^/]+"),
        ],
    ),
    (
        "root",
        "",
        &[
            ("/", "/"),
            ("/v{major}-{minor}/status", "/v[^/]+-[^/]+/status"),
            ("/~user/{a}.{b}", r"/~user/[^/]+\.[^/]+"),
        ],
    ),
];

static ROUTES: LazyLock<Routes> = LazyLock::new(|| {
    let docs: Vec<String> = TABLE
        .iter()
        .map(|(group, base, templates)| {
            let paths: Vec<String> = templates
                .iter()
                .map(|(t, _)| format!("'{t}': {{}}"))
                .collect();
            format!(
                "groupId: {group}\nservers: [{{url: '{base}'}}]\npaths: {{{}}}\n",
                paths.join(", ")
            )
        })
        .collect();
    Routes::from_documents(docs.iter().map(|d| ("table.yaml", d.as_str(), false)))
        .expect("the fixed route table loads")
});

static ORACLE: LazyLock<Vec<(&str, Regex)>> = LazyLock::new(|| {
    TABLE
        .iter()
        .flat_map(|(group, _, templates)| {
            templates.iter().map(move |(_, pattern)| {
                // Bytes, not characters: `[^/]` is any byte but `/`, as
                // keygate's matcher reads bytes.
                let regex = Regex::new(&format!("(?s-u)^{pattern}$")).expect("oracle pattern");
                (*group, regex)
            })
        })
        .collect()
});

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// Invariant 2 for one decoded segment.
fn assert_fully_decoded(segment: &str, path: &str) {
    assert!(
        !segment.is_empty() && segment != "." && segment != "..",
        "{path:?}: segment {segment:?}"
    );
    assert!(
        !segment.contains(['/', '\\', '?', '#']),
        "{path:?}: segment {segment:?}"
    );
    let bytes = segment.as_bytes();
    for (at, _) in segment.match_indices('%') {
        let (high, low) = match bytes.get(at + 1..at + 3) {
            Some(&[high, low]) => (high, low),
            _ => panic!("{path:?}: a bare `%` left in {segment:?}"),
        };
        assert!(
            [high, low]
                .iter()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)),
            "{path:?}: escape not upper-case hex in {segment:?}"
        );
        let byte = hex_value(high).unwrap() * 16 + hex_value(low).unwrap();
        assert!(
            !is_unreserved(byte) && !matches!(byte, b'/' | b'\\'),
            "{path:?}: %{byte:02X} left encoded in {segment:?}"
        );
        if byte == b'%' {
            let next = bytes.get(at + 3..at + 5).unwrap_or_default();
            assert!(
                !(next.len() == 2 && next.iter().all(u8::is_ascii_hexdigit)),
                "{path:?}: a double encoding left in {segment:?}"
            );
        }
    }
}

/// The decoded path re-spelt (invariant 4): each unreserved character but
/// `.` is percent-encoded when the next variant bit says so, with the hex
/// case from another bit; kept escapes get their hex case from a bit too.
fn respell(decoded: &str, variant: &[u8]) -> String {
    let mut bits = variant
        .iter()
        .flat_map(|byte| (0..8).map(move |i| (byte >> i) & 1 == 1))
        .cycle();
    let mut bit = || bits.next().unwrap_or(false);
    let bytes = decoded.as_bytes();
    let mut out = String::with_capacity(decoded.len() * 3);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            // A kept escape (invariant 2 holds): `%` and two hex digits.
            let escape = &decoded[i..i + 3];
            out.push_str(&if bit() {
                escape.to_ascii_lowercase()
            } else {
                escape.to_owned()
            });
            i += 3;
            continue;
        }
        if is_unreserved(b) && b != b'.' && bit() {
            out.push_str(&if bit() {
                format!("%{b:02x}")
            } else {
                format!("%{b:02X}")
            });
        } else {
            // Copy one whole character (non-ASCII text stays as it is).
            let len = decoded[i..].chars().next().unwrap().len_utf8();
            out.push_str(&decoded[i..i + len]);
            i += len;
            continue;
        }
        i += 1;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let (path, variant) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b"\x55"[..]),
    };
    let Ok(path) = std::str::from_utf8(path) else {
        return;
    };
    let routes = &*ROUTES;

    // 1: resolution fails where segmenting fails, with the same reason.
    let resolved = routes.resolve(path);
    let decoded = match segments(path) {
        Ok(decoded) => decoded,
        Err(why) => {
            assert_eq!(resolved, Err(why), "{path:?}");
            assert_ne!(why, Unroutable::NoMatch, "{path:?}");
            return;
        }
    };

    // 2: what reaches the matcher is fully decoded.
    for segment in &decoded {
        assert_fully_decoded(segment, path);
    }

    // 3: decoding again changes nothing, and the decoded path routes alike.
    for segment in &decoded {
        assert_eq!(decode_segment(segment).as_ref(), Ok(segment), "{path:?}");
    }
    let decoded_path = format!("/{}", decoded.join("/"));
    assert_eq!(segments(&decoded_path).as_ref(), Ok(&decoded), "{path:?}");
    assert_eq!(
        routes.resolve(&decoded_path),
        resolved,
        "{path:?} vs {decoded_path:?}"
    );

    // 4: another spelling of the same path routes alike.
    let respelt = respell(&decoded_path, variant);
    assert_eq!(
        segments(&respelt).as_ref(),
        Ok(&decoded),
        "{path:?} vs {respelt:?}"
    );
    assert_eq!(
        routes.resolve(&respelt),
        resolved,
        "{path:?} vs {respelt:?}"
    );

    // 5: the oracle's groups.
    let mut groups: Vec<&str> = ORACLE
        .iter()
        .filter(|(_, regex)| regex.is_match(decoded_path.as_bytes()))
        .map(|(group, _)| *group)
        .collect();
    groups.dedup();
    assert!(
        groups.len() <= 1,
        "{path:?}: routes of {groups:?} all match"
    );
    match groups.first() {
        Some(group) => assert_eq!(resolved, Ok(*group), "{path:?}"),
        None => assert_eq!(resolved, Err(Unroutable::NoMatch), "{path:?}"),
    }
});
