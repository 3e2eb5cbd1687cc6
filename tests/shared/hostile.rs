//! Hostile requests, written byte by byte (an HTTP client would normalize
//! paths and refuse odd header bytes). The invariant: a request is refused,
//! or it reaches the upstream under the group that owns the path the
//! upstream saw, with a key of that group; and, where keygate's reads are
//! counted, none of them costs a Vault read (`keygate_vault_reads_total`
//! does not move).
//!
//! Shared by `faults` (the harness's gateways, each environment its own,
//! reads counted) and `gateways` (gateways the user runs, `e2e
//! --gateway-url`), through [`HostileTarget`].

use std::future::Future;
use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use apikey::ApiKey;
use rig::contract::env::Environment;
use serde_json::Value;

use rig::contract::gateways::{Deviations, EncodedSlashHandling, row};

use crate::GatewayReply as Reply;

/// The environment the hostile requests run in.
pub trait HostileTarget {
    fn env(&self) -> &Environment;
    /// A fresh key of `group`, written to Vault (and delivered where the
    /// validator needs time to see it).
    fn issue_key(&self, group: &str) -> impl Future<Output = Result<ApiKey>>;
    /// keygate's Vault reads so far; `None` where they are not counted
    /// (a validator the user runs, or a cache TTL too short to hold the
    /// warmed keys through the run).
    fn vault_reads(&self) -> impl Future<Output = Result<Option<u64>>>;
}

/// The first two API groups (sorted), for "group A" and "group B".
fn two_groups(env: &Environment) -> Result<(String, String)> {
    let mut names = env.groups.keys().cloned();
    match (names.next(), names.next()) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => bail!(
            "the hostile requests need two API groups; env.json has {:?}",
            env.groups.keys().collect::<Vec<_>>()
        ),
    }
}

/// A path the group's OpenAPI document declares.
fn declared_path(env: &Environment, group: &str) -> Result<String> {
    env.route(group)?;
    env.api_paths.get(group).cloned().with_context(|| {
        format!("env.json has no api_paths entry for {group}: give its OpenAPI document a GET path without parameters")
    })
}

/// Header lines of a raw request: name, value bytes.
type Headers<'a> = Vec<(&'a str, Vec<u8>)>;

/// One raw GET; header values are bytes, so NUL and non-UTF-8 go through.
async fn raw_get(base: &str, path: &str, headers: &[(&str, Vec<u8>)]) -> Result<Reply> {
    let host = base.trim_start_matches("http://").to_owned();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n").into_bytes();
    for (name, value) in headers {
        request.extend_from_slice(name.as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"Connection: close\r\n\r\n");
    let response = tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
        let mut stream = std::net::TcpStream::connect(&host)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(&request)?;
        crate::read_response(&mut stream)
    })
    .await??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status in {:?}", head.lines().next()))?;
    let reason = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("x-keyrig-reason")
            .then(|| value.trim().to_owned())
    });
    // The echo upstream answers one JSON object; take it whole even if the
    // body came chunked.
    let body = match (body.find('{'), body.rfind('}')) {
        (Some(start), Some(end)) if start < end => {
            serde_json::from_str(&body[start..=end]).unwrap_or(Value::Null)
        }
        _ => Value::Null,
    };
    Ok(Reply {
        status,
        reason,
        body,
    })
}

/// `/a/./b/../c` with `%xx` decoded and `//` merged -> `/a/c`.
fn normalize(path: &str) -> String {
    let mut decoded = Vec::new();
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).map(String::from_utf8_lossy);
        if bytes[i] == b'%'
            && let Some(Ok(byte)) = hex.map(|h| u8::from_str_radix(&h, 16))
        {
            decoded.push(byte);
            i += 3;
            continue;
        }
        decoded.push(bytes[i]);
        i += 1;
    }
    let decoded = String::from_utf8_lossy(&decoded).into_owned();
    let mut out: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// Checks the invariant for one reply and says what happened: the
/// status and `x-keyrig-reason` of a refusal (`-` when the gateway refused
/// it itself), or `200 as <group>`.
fn judge(env: &Environment, what: &str, key_group: &str, reply: &Reply) -> Result<String> {
    if !reply.allowed() {
        ensure!(
            matches!(reply.status, 400 | 401 | 403 | 404 | 431 | 494),
            "{what}: expected a refusal (400/401/403/404/431/494) or a correct pass, got {}",
            reply.short()
        );
        return Ok(reply.short());
    }
    let granted = reply
        .upstream_header("x-keyrig-group")
        .with_context(|| format!("{what}: passed without x-keyrig-group"))?;
    ensure!(
        granted == key_group,
        "{what}: a key of {key_group} passed as group {granted}"
    );
    let seen = reply.body["path"]
        .as_str()
        .with_context(|| format!("{what}: the upstream echo has no path"))?;
    let seen = normalize(seen);
    let owner = owner_of(env, &seen);
    ensure!(
        owner == Some(granted),
        "{what}: passed as {granted} but the upstream got {seen:?}, which is {}",
        match owner {
            Some(owner) => format!("{owner}'s path (route prefix {})", env.route(owner)?),
            None => "under no group's route prefix".to_owned(),
        }
    );
    Ok(format!("200 as {granted}"))
}

/// The group a gateway routes a (normalized) path to: the longest route
/// prefix it starts with (prefixes may nest, or one be `/`).
fn owner_of<'e>(env: &'e Environment, path: &str) -> Option<&'e str> {
    env.groups
        .iter()
        .filter(|(_, prefix)| path.starts_with(prefix.as_str()))
        .max_by_key(|(_, prefix)| prefix.len())
        .map(|(group, _)| group.as_str())
}

/// An answer slower than this is named in the outcome.
const SLOW: Duration = Duration::from_millis(500);

/// One hostile request: a stable label (the key of the expectation
/// table), the path, the header lines, and the group of the key it carries.
struct Hostile<'a> {
    label: String,
    path: String,
    headers: Headers<'a>,
    key_group: String,
}

/// What the hostile requests through one gateway came to.
pub struct GatewayOutcome {
    pub requests: u64,
    /// Whether the Vault reads were counted (and found 0).
    pub reads_counted: bool,
    /// `label: outcome` per request, for the case message and the log.
    pub outcomes: Vec<String>,
}

/// Sends every hostile request through the gateway at `base`: each must
/// keep the invariant (refused, or passed under the right group), give
/// exactly the outcome `expected` names for this gateway, and none may
/// cost a Vault read (where they are counted).
pub async fn run(target: &impl HostileTarget, gateway: &str, base: &str) -> Result<GatewayOutcome> {
    let env = target.env();
    let (a, b) = two_groups(env)?;
    let (path_a, path_b) = (declared_path(env, &a)?, declared_path(env, &b)?);
    let (prefix_a, prefix_b) = (env.route(&a)?.to_owned(), env.route(&b)?.to_owned());
    let deviations = env
        .gateway_deviations
        .get(gateway)
        .cloned()
        .unwrap_or_default();
    let key_a = target.issue_key(&a).await?;
    let key_b = target.issue_key(&b).await?;

    // Warm every (group, selector) pair: right group, and the wrong-group
    // lookup that reads the other group's record.
    for (key, path, want) in [
        (&key_a, &path_a, 200),
        (&key_a, &path_b, 403),
        (&key_b, &path_b, 200),
        (&key_b, &path_a, 403),
    ] {
        let reply = raw_get(
            base,
            path,
            &[("x-api-key", key.expose().as_bytes().to_vec())],
        )
        .await?;
        ensure!(
            reply.status == want,
            "warming up {path} through {gateway}: expected {want}, got {}",
            reply.short()
        );
    }
    let reads_before = target.vault_reads().await?;

    let ka = key_a.expose().as_bytes().to_vec();
    let kb = key_b.expose().as_bytes().to_vec();
    let with = |mut v: Vec<u8>, at: usize, insert: &[u8]| {
        v.splice(at..at, insert.iter().copied());
        v
    };
    let header = |v: Vec<u8>| vec![("x-api-key", v)];
    let on_a = |label: &str, headers: Headers<'static>| Hostile {
        label: label.to_owned(),
        path: path_a.clone(),
        headers,
        key_group: a.clone(),
    };

    // Header tricks on group A's path.
    let mut requests = vec![
        on_a("8 KiB x-api-key", header(vec![b'a'; 8192])),
        on_a(
            "two x-api-key headers, same key",
            vec![("x-api-key", ka.clone()), ("X-Api-Key", ka.clone())],
        ),
        on_a(
            "two x-api-key headers, keys of A and B",
            vec![("x-api-key", ka.clone()), ("x-api-key", kb.clone())],
        ),
        on_a(
            "non-ASCII in the key",
            header(with(ka[..62].to_vec(), 62, "é".as_bytes())),
        ),
        on_a("NUL byte in the key", header(with(ka.clone(), 32, b"\0"))),
        on_a("space inside the key", header(with(ka.clone(), 32, b" "))),
        on_a("key of B on A", header(kb.clone())),
        // Spaces and tabs around a value are not part of it (RFC 9110
        // OWS): the padded key is the key itself, served from the cache.
        on_a(
            "key padded with spaces and tabs",
            header([b" \t".as_slice(), &ka, b"\t "].concat()),
        ),
    ];

    // Path tricks, with each key. Labels name them with A and B.
    let a_rest = path_a.trim_start_matches(&prefix_a).to_owned();
    let b_rest = path_b.trim_start_matches(&prefix_b).to_owned();
    let tricks = [
        ("B/../A", format!("{prefix_b}..{prefix_a}{a_rest}")),
        ("A/../B", format!("{prefix_a}..{prefix_b}{b_rest}")),
        ("B/%2e%2e/A", format!("{prefix_b}%2e%2e{prefix_a}{a_rest}")),
        (
            "B/%2E%2E%2FA",
            format!(
                "{prefix_b}%2E%2E%2F{}{a_rest}",
                prefix_a.trim_start_matches('/')
            ),
        ),
        (
            "B percent-encoded first letter",
            format!("{}{b_rest}", percent_first_letter(&prefix_b)),
        ),
        ("//B", format!("/{prefix_b}{b_rest}")),
        ("B//", format!("{prefix_b}/{b_rest}")),
        (
            "A path/../../B",
            format!("{path_a}/../..{prefix_b}{b_rest}"),
        ),
        (
            "A/.%2F..%2F../B",
            format!("{prefix_a}.%2F..%2F..{prefix_b}{b_rest}"),
        ),
    ];
    for (label, path) in &tricks {
        for (key, group, name) in [(&ka, &a, "A"), (&kb, &b, "B")] {
            requests.push(Hostile {
                label: format!("{label} with a key of {name}"),
                path: path.clone(),
                headers: header(key.clone()),
                key_group: group.clone(),
            });
        }
    }

    let mut outcomes = Vec::new();
    let mut wrong = Vec::new();
    for request in &requests {
        let what = format!("{} ({})", request.label, request.path);
        let sent = std::time::Instant::now();
        let reply = raw_get(base, &request.path, &request.headers).await?;
        let took = sent.elapsed();
        let outcome = judge(env, &what, &request.key_group, &reply)?;
        let want = expected(&deviations, &request.label);
        if want != Some(outcome.as_str()) {
            let row = match row_of(&request.label) {
                Some(row) => format!(
                    "row `{row}`, which env/gateways/{gateway}/gateway.toml {}",
                    if deviations.declared().iter().any(|(r, _)| *r == row) {
                        "declares"
                    } else {
                        "does not declare"
                    }
                ),
                None => "an invariant no manifest can change".to_owned(),
            };
            wrong.push(format!(
                "{what}: expected {}, got {outcome} ({row})",
                want.unwrap_or("no expectation")
            ));
        }
        // A slow answer is not a failure, but worth seeing (a gateway
        // holding a refused connection open until a timeout of its own).
        let slow = if took >= SLOW {
            format!(" (answered in {})", rig::base::progress::secs(took))
        } else {
            String::new()
        };
        outcomes.push(format!("{}: {outcome}{slow}", request.label));
    }
    eprintln!(
        "hostile requests through {gateway}:\n  {}",
        outcomes.join("\n  ")
    );
    if !wrong.is_empty() {
        bail!(
            "{} of {} hostile requests through gateway {gateway} did not get the outcome its manifest's deviations (and docs/gateways.md's table) state: {}",
            wrong.len(),
            requests.len(),
            wrong.join("; ")
        );
    }
    let reads_after = target.vault_reads().await?;
    if let (Some(before), Some(after)) = (reads_before, reads_after)
        && after != before
    {
        bail!(
            "hostile requests through {gateway} caused {} Vault reads (keygate_vault_reads_total {before} -> {after}); outcomes: {}",
            after - before,
            outcomes.join("; ")
        );
    }
    Ok(GatewayOutcome {
        requests: requests.len() as u64,
        reads_counted: reads_before.is_some() && reads_after.is_some(),
        outcomes,
    })
}

/// Dot segments behind a `;` path parameter (`..;`: `..` to Tomcat, Jetty
/// and older Spring once they strip the parameter) and behind a `#` (nginx
/// forwards the raw target), the latter also with the text before the `#`
/// in an original-URI header of the client's: gateways differ in what they
/// do with them, so only the invariant is held, with each key: refused, or
/// passed under the group that owns the path the upstream saw, and never
/// with a `..;` or `.;` segment left in that path. The echo upstream's
/// HTTP parser drops a `#` and what follows it, which an upstream that
/// keeps it would read, so a target with a `#` passes only under the group
/// that owns it either way. `label: outcome` per request.
pub async fn parameter_and_fragment_tricks(
    target: &impl HostileTarget,
    gateway: &str,
    base: &str,
) -> Result<Vec<String>> {
    let env = target.env();
    let (a, b) = two_groups(env)?;
    let (path_a, path_b) = (declared_path(env, &a)?, declared_path(env, &b)?);
    let (prefix_a, prefix_b) = (env.route(&a)?.to_owned(), env.route(&b)?.to_owned());
    let b_rest = path_b.trim_start_matches(&prefix_b).to_owned();
    let keys = [
        (target.issue_key(&a).await?, &a, "A"),
        (target.issue_key(&b).await?, &b, "B"),
    ];
    let fragment = format!("{path_a}#/../..{prefix_b}{b_rest}");
    let tricks = [
        ("A/..;/B", format!("{prefix_a}..;{prefix_b}{b_rest}"), None),
        (
            "A path/..;/..;/B",
            format!("{path_a}/..;/..;{prefix_b}{b_rest}"),
            None,
        ),
        // Where the document declares a parameter under its GET path (the
        // shipped ones do), these fill it: keygate must refuse them.
        ("A path/..;", format!("{path_a}/..;"), None),
        ("A path/.;x", format!("{path_a}/.;x"), None),
        ("A path#/../../B", fragment.clone(), None),
        (
            "A path#/..;/..;/B",
            format!("{path_a}#/..;/..;{prefix_b}{b_rest}"),
            None,
        ),
        // The same with the text before the `#` in the original-URI header
        // the gateway does not set (nginx sets X-Original-URI and passed a
        // client's X-Forwarded-Uri on): keygate must not route the header
        // while the gateway forwards the target.
        (
            "A path#/../../B, X-Forwarded-Uri: A path",
            fragment.clone(),
            Some("x-forwarded-uri"),
        ),
        (
            "A path#/../../B, X-Original-URI: A path",
            fragment,
            Some("x-original-uri"),
        ),
    ];
    let mut outcomes = Vec::new();
    for (label, path, spoofed) in &tricks {
        for (key, group, name) in &keys {
            let what = format!("{label} with a key of {name} through {gateway} ({path})");
            let mut headers = vec![("x-api-key", key.expose().as_bytes().to_vec())];
            if let Some(header) = spoofed {
                headers.push((*header, path_a.as_bytes().to_vec()));
            }
            let reply = raw_get(base, path, &headers).await?;
            let outcome = judge(env, &what, group, &reply)?;
            if reply.allowed() && path.contains('#') {
                let whole = normalize(path);
                let granted = reply.upstream_header("x-keyrig-group").unwrap_or_default();
                ensure!(
                    owner_of(env, &whole) == Some(granted),
                    "{what}: passed as {granted}, but read with the text after its `#` (which a gateway \
                     forwarding the target raw passes on) the path is {whole:?}, which is {}",
                    match owner_of(env, &whole) {
                        Some(owner) => format!("{owner}'s"),
                        None => "under no group's route prefix".to_owned(),
                    }
                );
            }
            if reply.allowed() {
                let seen = reply.body["path"].as_str().unwrap_or_default();
                let dotted = seen
                    .split(['/', '#', '?'])
                    .any(|s| matches!(s.split(';').next(), Some("." | "..")) && s.contains(';'));
                ensure!(
                    !dotted,
                    "{what}: passed as {outcome} with a dot segment behind a `;` left for the upstream: {seen:?}"
                );
            }
            outcomes.push(format!("{label} with a key of {name}: {outcome}"));
        }
    }
    Ok(outcomes)
}

/// The row of the compatibility table a hostile request's outcome depends
/// on (`None`: an invariant every gateway keeps).
fn row_of(label: &str) -> Option<&'static str> {
    if label == "8 KiB x-api-key" {
        Some(row::HEADER_LIMIT)
    } else if label.contains("%2F") {
        Some(row::ENCODED_SLASH)
    } else if label.contains(" with a key of ") && !label.contains("percent-encoded") {
        Some(row::PATH_AS_SENT)
    } else {
        None
    }
}

/// The exact outcome of each hostile request through a gateway with these
/// deviations (its manifest's; none: the strict expectations), as
/// docs/gateways.md's compatibility table states it (generated from the
/// same manifests). `-`: the gateway refused the request itself, keygate
/// never saw it.
fn expected(deviations: &Deviations, label: &str) -> Option<&'static str> {
    const A: &str = "200 as animal-rescue-api";
    const B: &str = "200 as billing-api";
    const MALFORMED: &str = "401 malformed";
    const WRONG_GROUP: &str = "403 wrong-group";
    const NO_ROUTE: &str = "403 no-route";
    const GATEWAY_400: &str = "400 -";
    // Strict: the gateway resolves the path before keygate sees it; path
    // as sent: keygate routes none of the tricks (403 no-route).
    let resolved = deviations.path_as_sent.is_none();
    Some(match label {
        // A gateway whose header limit is below it refuses it itself; the
        // others pass it on and keygate finds it malformed.
        "8 KiB x-api-key" if deviations.refuses_header_of(8192) => GATEWAY_400,
        "8 KiB x-api-key" => MALFORMED,
        // Every gateway hands keygate both values (one header or a list).
        "two x-api-key headers, same key" | "two x-api-key headers, keys of A and B" => MALFORMED,
        "non-ASCII in the key" | "space inside the key" => MALFORMED,
        // A NUL in a header value: every gateway refuses it itself.
        "NUL byte in the key" => GATEWAY_400,
        "key of B on A" => WRONG_GROUP,
        "key padded with spaces and tabs" => A,
        // Encoded slashes: strict, the gateway refuses them (Envoy's
        // path_with_escaped_slashes_action: REJECT_REQUEST); passed on,
        // keygate routes none; decoded for the gateway's own checks, it
        // refuses the one that climbs above the root.
        label if label.contains("%2F") => match &deviations.encoded_slash {
            None => GATEWAY_400,
            Some(e) => match e.handling {
                EncodedSlashHandling::Passed => NO_ROUTE,
                EncodedSlashHandling::DecodedAboveRootRefused
                    if label.starts_with("A/.%2F..%2F../B") =>
                {
                    GATEWAY_400
                }
                EncodedSlashHandling::DecodedAboveRootRefused => NO_ROUTE,
            },
        },
        // keygate decodes unreserved escapes itself, as the upstream will:
        // the owning group decides, whether the gateway resolved the path.
        "B percent-encoded first letter with a key of B" => B,
        "B percent-encoded first letter with a key of A" => WRONG_GROUP,
        _ if !resolved => NO_ROUTE,
        // Resolved paths: the group that owns the resolved path decides.
        "B/../A with a key of A" | "B/%2e%2e/A with a key of A" => A,
        "B/../A with a key of B" | "B/%2e%2e/A with a key of B" => WRONG_GROUP,
        "A/../B with a key of B"
        | "//B with a key of B"
        | "B// with a key of B"
        | "A path/../../B with a key of B" => B,
        "A/../B with a key of A"
        | "//B with a key of A"
        | "B// with a key of A"
        | "A path/../../B with a key of A" => WRONG_GROUP,
        _ => return None,
    })
}

/// `/billing/` -> `/%62illing/`.
fn percent_first_letter(prefix: &str) -> String {
    let mut chars = prefix.chars();
    let slash = chars.next().unwrap_or('/');
    match chars.next() {
        Some(first) => format!("{slash}%{:02X}{}", first as u32, chars.as_str()),
        None => prefix.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_dots_percent_and_slashes() {
        assert_eq!(
            normalize("/billing/../animal-rescue/animals"),
            "/animal-rescue/animals"
        );
        assert_eq!(normalize("//billing//invoices"), "/billing/invoices");
        assert_eq!(normalize("/%62illing/%2e%2e/x"), "/x");
        assert_eq!(percent_first_letter("/billing/"), "/%62illing/");
    }
}
