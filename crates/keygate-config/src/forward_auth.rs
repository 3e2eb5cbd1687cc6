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
/// must name the same path, or the answer is an empty string, which routes
/// nowhere; so do repeated or non-ASCII header values.
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
    let path_of = |uri: &str| uri.split(['?', '#']).next().unwrap_or_default().to_owned();
    match candidates.split_first() {
        None => String::new(),
        Some((first, rest)) if rest.iter().all(|other| path_of(other) == path_of(first)) => {
            first.clone()
        }
        Some(_) => {
            debug!(candidates = ?candidates, "the original-URI headers and path disagree; refusing to pick one");
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
