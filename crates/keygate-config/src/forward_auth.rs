//! A forward-auth request as keygate reads it: the original URI the client
//! asked the gateway for, and the `x-api-key` it presents. Only `http`'s
//! types: keygate's HTTP port calls this, and so does the fuzz target
//! `forward_auth_headers`.

use http::{HeaderMap, Uri};
use tracing::debug;

pub const API_KEY_HEADER: &str = "x-api-key";

/// Headers that carry the original request URI, in order of preference:
/// Traefik, Caddy and APISIX send `X-Forwarded-Uri`; nginx configs
/// conventionally set `X-Original-URI`.
const ORIGINAL_URI_HEADERS: [&str; 2] = ["x-forwarded-uri", "x-original-uri"];

/// The `x-api-key` header as the request carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    Missing,
    One(&'a str),
    /// More than one header: a gateway and an upstream might each pick a
    /// different one, so this is refused as malformed.
    Many,
}

/// The URI the client asked the gateway for: `X-Forwarded-Uri`, else
/// `X-Original-URI`, else the request path after `/auth` (Envoy's HTTP
/// ext_authz appends the original path to its `path_prefix`).
///
/// Gateways pass many client headers on to the auth request (nginx passes
/// all of them), so a client could add the header its gateway does not set
/// and point keygate at another API's route. Hence every source present
/// must name the same path (queries aside, but not a `#` and what follows
/// it), or the answer is an empty string, which routes nowhere; so do
/// repeated or non-ASCII header values.
pub fn original_uri(headers: &HeaderMap, uri: &Uri) -> String {
    let mut candidates = Vec::new();
    for name in ORIGINAL_URI_HEADERS {
        let mut values = headers.get_all(name).iter();
        if let Some(first) = values.next() {
            match (first.to_str(), values.next()) {
                (Ok(value), None) => candidates.push(value.to_owned()),
                _ => return String::new(),
            }
        }
    }
    let suffix = uri.path().strip_prefix("/auth").unwrap_or_default();
    if !suffix.is_empty() {
        candidates.push(suffix.to_owned());
    }
    // Compared up to the query only: a `#` before it is part of what must
    // agree. nginx passes the client's target raw (`$request_uri`), `#`
    // and all, and forwards it so; were the text after a `#` ignored, a
    // client could send `/a/1#/../../b` with `X-Forwarded-Uri: /a/1`, have
    // keygate route the header while the upstream resolves the target.
    let path_of = |uri: &str| uri.split('?').next().unwrap_or_default().to_owned();
    match candidates.split_first() {
        None => String::new(),
        Some((first, rest)) if rest.iter().all(|other| path_of(other) == path_of(first)) => {
            first.clone()
        }
        Some(_) => {
            // Paths only: a query (or a fragment) may carry a client's
            // credentials (`?access_token=...`).
            let paths: Vec<&str> = candidates
                .iter()
                .map(|uri| uri.split(['?', '#']).next().unwrap_or_default())
                .collect();
            debug!(paths = ?paths, "the original-URI headers and path disagree; refusing to pick one");
            String::new()
        }
    }
}

/// What a forward-auth request asks: the original path to validate and
/// the key it presents (the fuzz target `forward_auth_headers` calls it).
pub fn forward_auth_request<'h>(headers: &'h HeaderMap, uri: &Uri) -> (String, Presented<'h>) {
    (original_uri(headers, uri), api_key(headers))
}

pub fn api_key(headers: &HeaderMap) -> Presented<'_> {
    let mut values = headers.get_all(API_KEY_HEADER).iter();
    match (values.next(), values.next()) {
        (None, _) => Presented::Missing,
        // Not visible ASCII cannot be a key; "" parses as malformed.
        (Some(value), None) => Presented::One(value.to_str().unwrap_or_default()),
        (Some(_), Some(_)) => Presented::Many,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        headers
    }

    fn auth() -> Uri {
        Uri::from_static("/auth")
    }

    #[test]
    fn agreeing_sources_name_the_first_queries_aside() {
        let both = headers(&[
            ("x-forwarded-uri", "/billing/invoices?page=2"),
            ("x-original-uri", "/billing/invoices"),
        ]);
        assert_eq!(original_uri(&both, &auth()), "/billing/invoices?page=2");
        let suffix = Uri::from_static("/auth/billing/invoices");
        let with_suffix = headers(&[("x-forwarded-uri", "/billing/invoices?page=3")]);
        assert_eq!(
            original_uri(&with_suffix, &suffix),
            "/billing/invoices?page=3"
        );
        assert_eq!(
            original_uri(&HeaderMap::new(), &suffix),
            "/billing/invoices"
        );
    }

    /// Behind nginx (X-Original-URI is `$request_uri`, and auth_request
    /// passes the client's headers on) a client sends a `#` in its target
    /// and the text before it as X-Forwarded-Uri: the two differ, whichever
    /// keygate would take, so it takes neither. Were the text after the `#`
    /// ignored, keygate would route the spoofed header while nginx forwards
    /// the raw target (the upstream may resolve the `..` after the `#`).
    #[test]
    fn a_fragment_in_one_source_is_a_disagreement() {
        let raw = "/animal-rescue/animals/1#/../../billing/invoices";
        let spoofed = "/animal-rescue/animals/1";
        for pairs in [
            [("x-forwarded-uri", spoofed), ("x-original-uri", raw)],
            [("x-forwarded-uri", raw), ("x-original-uri", spoofed)],
            [
                ("x-forwarded-uri", spoofed),
                ("x-original-uri", format!("{raw}?a=1").as_str()),
            ],
        ] {
            assert_eq!(original_uri(&headers(&pairs), &auth()), "", "{pairs:?}");
        }
        let suffix = Uri::from_static("/auth/animal-rescue/animals/1");
        assert_eq!(
            original_uri(&headers(&[("x-forwarded-uri", raw)]), &suffix),
            ""
        );
        // Alike in both, the `#` is still there for the path's refusal
        // (`request_path::Unroutable::Fragment`).
        let same = headers(&[("x-forwarded-uri", raw), ("x-original-uri", raw)]);
        assert_eq!(original_uri(&same, &auth()), raw);
    }
}
