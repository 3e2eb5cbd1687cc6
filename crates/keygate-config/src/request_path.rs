//! A request path as keygate routes it: split into segments, with
//! percent-encoded unreserved characters decoded, or refused.
//!
//! keygate must decide on the path the upstream serves. Upstreams (and nginx,
//! Caddy, an Envoy without `normalize_path`) decode `%73pecial` to
//! `special`, so matching the raw text would let `/shop/items/%73pecial`
//! pass as `shop`'s `{id}` while the upstream serves admin's `special`.
//! RFC 3986 (6.2.2.2) says decoding unreserved characters (ALPHA, DIGIT,
//! `-`, `.`, `_`, `~`) never changes what a URI means, so keygate does that,
//! and refuses whatever it cannot decode without picking one of several
//! readings:
//!
//! - `%2f`, `%5c` (`/`, `\`) and a raw `\`: one server splits there, another
//!   does not;
//! - `%2e` (`.`): unreserved, but decoded it can form `.`/`..` segments that
//!   some servers resolve after routing;
//! - `%25` followed by two hex digits, written so (`%252f`) or once their
//!   own escapes are decoded (`%25%32f`): a server that decodes twice sees
//!   another path;
//! - `%` not followed by two hex digits: servers disagree on what it is;
//! - dot segments and empty segments (`//`, a trailing `/`), also before a
//!   `;` path parameter (`..;`, `.;x`, `;x`): Tomcat, Jetty and older Spring
//!   strip the parameter and then resolve the segment, so
//!   `/a/items/..;/admin` would pass as `items`' `{id}` and be served as
//!   `/a/admin`;
//! - a `#` in the path: a request target never carries a fragment, and a
//!   gateway that forwards it raw (nginx's `$request_uri`) routes on the text
//!   before it while the upstream may read the rest.
//!
//! Other escapes (`%20`, `%C3%A9`) mean the same to every server and stay
//! encoded, with their hex digits upper-cased, so `%c3` and `%C3` match alike.

/// Why a request path was refused before matching. All of these answer
/// `no-route`; the reason is for the debug log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unroutable {
    NotAbsolute,
    /// `.` or `..` segment.
    DotSegment,
    /// `%2f`, `%2e` or `%5c` (encoded `/`, `.`, `\`), a raw `\`, or a double
    /// encoding (`%25` + two hex digits).
    AmbiguousEncoding,
    /// `%` without two hex digits after it.
    InvalidEncoding,
    /// `//` or a trailing `/`, or a segment that is only a `;` parameter.
    EmptySegment,
    /// A `#` before the query: no client sends a fragment.
    Fragment,
    NoMatch,
}

/// The segments of `request_path` (query string ignored), normalised as
/// the module describes.
pub fn segments(request_path: &str) -> Result<Vec<String>, Unroutable> {
    let path = request_path.split('?').next().unwrap_or_default();
    if path.contains('#') {
        return Err(Unroutable::Fragment);
    }
    let rest = path.strip_prefix('/').ok_or(Unroutable::NotAbsolute)?;
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let segments = rest
        .split('/')
        .map(decode_segment)
        .collect::<Result<Vec<_>, _>>()?;
    // Checked after decoding, though `%2e` is refused anyway: a dot segment
    // never reaches the matcher, however it was spelt, nor one a server
    // makes by stripping a `;` parameter.
    fn name(segment: &str) -> &str {
        segment.split(';').next().unwrap_or_default()
    }
    let names = || segments.iter().map(|s| name(s));
    if names().any(|n| n == "." || n == "..") {
        return Err(Unroutable::DotSegment);
    }
    if names().any(str::is_empty) {
        return Err(Unroutable::EmptySegment);
    }
    Ok(segments)
}

/// One segment (no `/` in it) with unreserved escapes decoded and the other
/// escapes upper-cased. Also applied to template text at config load, so
/// a template written `%73pecial` means `special`.
pub fn decode_segment(segment: &str) -> Result<String, Unroutable> {
    if segment.contains('\\') {
        return Err(Unroutable::AmbiguousEncoding);
    }
    let bytes = segment.as_bytes();
    let mut out = String::with_capacity(segment.len());
    let mut i = 0;
    while let Some(offset) = segment[i..].find('%') {
        out.push_str(&segment[i..i + offset]);
        let at = i + offset;
        let byte = escaped(bytes, at).ok_or(Unroutable::InvalidEncoding)?;
        match byte {
            b'/' | b'.' | b'\\' => return Err(Unroutable::AmbiguousEncoding),
            b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') => {
                out.push(char::from(b));
            }
            b => {
                out.push('%');
                out.push_str(&format!("{b:02X}"));
            }
        }
        i = at + 3;
    }
    out.push_str(&segment[i..]);
    // `%25` then two hex digits: `%XY` to a server that decodes again.
    // Checked on the decoded text, since the digits may have been escaped
    // themselves (`%25%37%33` decodes to `%2573`, then to `%73`, then `s`).
    let decoded = out.as_bytes();
    let double = out.match_indices("%25").any(|(at, _)| {
        decoded
            .get(at + 3..at + 5)
            .is_some_and(|pair| pair.iter().all(u8::is_ascii_hexdigit))
    });
    if double {
        return Err(Unroutable::AmbiguousEncoding);
    }
    Ok(out)
}

/// The byte `%XY` at `at` stands for, if `bytes[at..]` starts with one.
fn escaped(bytes: &[u8], at: usize) -> Option<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    match bytes.get(at..at + 3)? {
        [b'%', high, low] => Some((hex(*high)? * 16 + hex(*low)?) as u8),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("/shop/items/%73pecial", &["shop", "items", "special"])]
    #[case("/shop/items/%53PECIAL", &["shop", "items", "SPECIAL"])]
    #[case("/a/%7e%2D%5f%30", &["a", "~-_0"])]
    #[case("/a/b%20c", &["a", "b%20c"])]
    #[case("/a/%c3%a9", &["a", "%C3%A9"])]
    #[case("/a/100%25", &["a", "100%25"])]
    #[case("/a/x?q=%2f#%zz", &["a", "x"])]
    #[case("/a/items;v=1", &["a", "items;v=1"])]
    #[case("/a/..x;y", &["a", "..x;y"])]
    #[case("/", &[])]
    fn decodes_unreserved_and_keeps_the_rest(#[case] path: &str, #[case] want: &[&str]) {
        assert_eq!(segments(path).unwrap(), want);
    }

    #[rstest]
    #[case::encoded_slash("/a/b%2fc", Unroutable::AmbiguousEncoding)]
    #[case::encoded_dot("/a/%2e%2e", Unroutable::AmbiguousEncoding)]
    #[case::encoded_dot_in_name("/a/x%2Ejson", Unroutable::AmbiguousEncoding)]
    #[case::encoded_backslash("/a/%5C", Unroutable::AmbiguousEncoding)]
    #[case::double_encoded_slash("/a/%252f", Unroutable::AmbiguousEncoding)]
    #[case::double_encoded_letter("/a/%2573pecial", Unroutable::AmbiguousEncoding)]
    // Found by fuzz target route_resolve: the digits after `%25` escaped.
    #[case::double_encoded_escaped_digits("/a/%25%625", Unroutable::AmbiguousEncoding)]
    #[case::double_encoded_escaped_letter("/a/%25%37%33pecial", Unroutable::AmbiguousEncoding)]
    #[case::double_encoded_escaped_slash("/a/%25%32f", Unroutable::AmbiguousEncoding)]
    #[case::truncated("/a/b%2", Unroutable::InvalidEncoding)]
    #[case::not_hex("/a/%zz", Unroutable::InvalidEncoding)]
    #[case::bare_percent("/a/%", Unroutable::InvalidEncoding)]
    #[case::sign_in_hex("/a/%+1", Unroutable::InvalidEncoding)]
    #[case::dot_dot("/a/../b", Unroutable::DotSegment)]
    #[case::dot_dot_parameter("/a/..;/b", Unroutable::DotSegment)]
    #[case::dot_parameter("/a/.;x=1/b", Unroutable::DotSegment)]
    #[case::only_a_parameter("/a/;x/b", Unroutable::EmptySegment)]
    #[case::fragment("/a/b#/../c", Unroutable::Fragment)]
    #[case::fragment_alone("/a/b#", Unroutable::Fragment)]
    #[case::empty("/a//b", Unroutable::EmptySegment)]
    #[case::relative("a/b", Unroutable::NotAbsolute)]
    fn refuses_what_cannot_be_decoded_safely(#[case] path: &str, #[case] why: Unroutable) {
        assert_eq!(segments(path), Err(why));
    }

    #[test]
    fn decoding_is_idempotent_and_never_adds_a_slash() {
        // Every two-byte escape: what decodes once decodes to itself again,
        // so keygate and an upstream that decodes once more agree.
        for byte in 0..=255u8 {
            let segment = format!("x%{byte:02x}y");
            if let Ok(once) = decode_segment(&segment) {
                assert!(!once.contains('/'), "{segment} -> {once}");
                assert_eq!(decode_segment(&once), Ok(once.clone()), "{segment}");
            }
        }
    }
}
