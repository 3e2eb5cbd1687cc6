//! Request path -> API group, from OpenAPI 3 documents.
//!
//! Each document contributes `servers[0].url`'s path as a base and every
//! `paths` key as a template under it; its root `groupId` names the group.
//! Only declared paths match: keygate would rather answer `no-route` than
//! accept a key for a path whose owner it does not know.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::config::{ApiFile, ConfigError, yaml_message};

/// All routes of all configured documents.
#[derive(Debug, Clone)]
pub struct Routes {
    routes: Vec<Route>,
    /// Distinct group ids, in the order documents were listed.
    groups: Vec<String>,
}

#[derive(Debug, Clone)]
struct Route {
    segments: Vec<Segment>,
    /// Index into `Routes::groups`.
    group: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{id}`: any one non-empty segment.
    Param,
    /// Text and parameters within one segment, e.g. `{name}.json`.
    Mixed(Vec<Part>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Param,
}

/// Why a request path was refused before matching. All of these answer
/// `no-route`; the reason is for the debug log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unroutable {
    NotAbsolute,
    /// `.` or `..` segment.
    DotSegment,
    /// `%2f`, `%2e` or `%5c` (encoded `/`, `.`, `\`), or a raw `\`.
    AmbiguousEncoding,
    /// `//` or a trailing `/`.
    EmptySegment,
    NoMatch,
}

/// The parts of an OpenAPI document keygate reads; everything else is ignored.
#[derive(Debug, Deserialize)]
struct OpenApiDoc {
    #[serde(rename = "groupId")]
    group_id: Option<String>,
    servers: Option<Vec<Server>>,
    paths: Option<BTreeMap<String, IgnoredAny>>,
}

#[derive(Debug, Deserialize)]
struct Server {
    url: Option<String>,
}

impl Routes {
    /// Loads every document listed in the config. A file that cannot be
    /// read is reported against the config's `apis[i]` entry; a problem in
    /// a document's content is reported against the document.
    pub fn load(config_file: &Path, apis: &[ApiFile]) -> Result<Self, ConfigError> {
        let mut docs = Vec::with_capacity(apis.len());
        for api in apis {
            let text = std::fs::read_to_string(&api.path).map_err(|err| {
                ConfigError::new(
                    config_file.display(),
                    format!(
                        "{} points to {}, which cannot be read ({err}): fix the path \
                         (relative paths resolve against the config file's directory)",
                        api.field,
                        api.path.display()
                    ),
                )
            })?;
            let json = api
                .path
                .extension()
                .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
            docs.push((api.path.display().to_string(), text, json));
        }
        Self::from_documents(
            docs.iter()
                .map(|(name, text, json)| (name.as_str(), text.as_str(), *json)),
        )
    }

    /// Builds routes from `(name, text, is_json)` documents. `name` is used
    /// in error messages.
    pub fn from_documents<'a>(
        docs: impl IntoIterator<Item = (&'a str, &'a str, bool)>,
    ) -> Result<Self, ConfigError> {
        let mut routes = Vec::new();
        let mut groups: Vec<String> = Vec::new();
        // normalised template -> (group index, declaring document)
        let mut seen: HashMap<String, (usize, String)> = HashMap::new();
        for (name, text, json) in docs {
            let doc: OpenApiDoc = if json {
                serde_json::from_str(text).map_err(|err| {
                    ConfigError::new(
                        name,
                        format!("line {}, column {}: {err}", err.line(), err.column()),
                    )
                })?
            } else {
                serde_yaml::from_str(text)
                    .map_err(|err| ConfigError::new(name, yaml_message(&err)))?
            };
            let group =
                group_id(doc.group_id).map_err(|message| ConfigError::new(name, message))?;
            let group_index = match groups.iter().position(|g| *g == group) {
                Some(index) => index,
                None => {
                    groups.push(group.clone());
                    groups.len() - 1
                }
            };
            let base = base_path(doc.servers.as_deref())
                .map_err(|message| ConfigError::new(name, message))?;
            let paths = doc.paths.unwrap_or_default();
            if paths.is_empty() {
                return Err(ConfigError::new(
                    name,
                    "paths is missing or empty: keygate would route nothing to this API; declare its paths",
                ));
            }
            for template in paths.keys() {
                let segments = parse_template(&base, template)
                    .map_err(|message| ConfigError::new(name, message))?;
                let key = normalised(&segments);
                match seen.get(&key) {
                    Some((other, _)) if *other == group_index => continue,
                    Some((other, doc)) => {
                        return Err(ConfigError::new(
                            name,
                            format!(
                                "path {base}{template} (group {group}) is also declared by {doc} for group {}: \
                                 a route must belong to one group; remove it from one of the documents",
                                groups[*other]
                            ),
                        ));
                    }
                    None => {
                        seen.insert(key, (group_index, name.to_owned()));
                    }
                }
                routes.push(Route {
                    segments,
                    group: group_index,
                });
            }
        }
        Ok(Self { routes, groups })
    }

    /// The distinct group ids, in the order their documents were listed.
    pub fn groups(&self) -> &[String] {
        &self.groups
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The group owning `request_path` (query string and fragment ignored).
    ///
    /// Paths with dot segments, empty segments or percent-encoded `/`, `.`
    /// or `\` are refused rather than normalised: gateways and upstreams
    /// normalise such paths differently (some decode `%2f`, some merge `//`,
    /// some resolve `..` after routing), so any normalisation keygate picked
    /// could authorise a key for one API while the gateway sends the request
    /// to another. Refusing never grants access it should not.
    pub fn resolve(&self, request_path: &str) -> Result<&str, Unroutable> {
        let path = request_path.split(['?', '#']).next().unwrap_or_default();
        let rest = path.strip_prefix('/').ok_or(Unroutable::NotAbsolute)?;
        let lower = path.to_ascii_lowercase();
        if path.contains('\\') || ["%2f", "%2e", "%5c"].iter().any(|enc| lower.contains(enc)) {
            return Err(Unroutable::AmbiguousEncoding);
        }
        let request: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        if request.iter().any(|s| *s == "." || *s == "..") {
            return Err(Unroutable::DotSegment);
        }
        if request.iter().any(|s| s.is_empty()) {
            return Err(Unroutable::EmptySegment);
        }
        // Several templates may match (`/a/{x}` and `/a/b`); like OpenAPI,
        // prefer the most literal one, comparing segment by segment.
        self.routes
            .iter()
            .filter(|route| route.matches(&request))
            .max_by_key(|route| {
                route
                    .segments
                    .iter()
                    .map(Segment::specificity)
                    .collect::<Vec<_>>()
            })
            .map(|route| self.groups[route.group].as_str())
            .ok_or(Unroutable::NoMatch)
    }
}

impl Route {
    fn matches(&self, request: &[&str]) -> bool {
        self.segments.len() == request.len()
            && self
                .segments
                .iter()
                .zip(request)
                .all(|(segment, actual)| segment.matches(actual))
    }
}

impl Segment {
    fn matches(&self, actual: &str) -> bool {
        match self {
            Segment::Literal(text) => text == actual,
            Segment::Param => !actual.is_empty(),
            Segment::Mixed(parts) => parts_match(parts, actual),
        }
    }

    fn specificity(&self) -> u8 {
        match self {
            Segment::Literal(_) => 2,
            Segment::Mixed(_) => 1,
            Segment::Param => 0,
        }
    }
}

/// Text parts match exactly, each parameter at least one character.
fn parts_match(parts: &[Part], actual: &str) -> bool {
    match parts.split_first() {
        None => actual.is_empty(),
        Some((Part::Text(text), rest)) => actual
            .strip_prefix(text.as_str())
            .is_some_and(|tail| parts_match(rest, tail)),
        Some((Part::Param, rest)) => actual
            .char_indices()
            .skip(1)
            .map(|(i, _)| i)
            .chain([actual.len()])
            .filter(|&i| i > 0)
            .any(|i| parts_match(rest, &actual[i..])),
    }
}

fn group_id(value: Option<String>) -> Result<String, String> {
    let group = value.ok_or(
        "groupId is missing: add `groupId: <api-group>` at the document root, next to `openapi:`; \
         it names the API group whose keys are valid for these paths",
    )?;
    // The group id becomes a Vault path segment.
    let ok = !group.is_empty()
        && group != "."
        && group != ".."
        && group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(group)
    } else {
        Err(format!(
            "groupId is `{group}`, which cannot be a Vault path segment: use letters, digits, `-`, `_` and `.`"
        ))
    }
}

/// The path component of `servers[0].url`, without a trailing slash.
fn base_path(servers: Option<&[Server]>) -> Result<String, String> {
    let Some(url) = servers
        .and_then(|s| s.first())
        .and_then(|s| s.url.as_deref())
    else {
        return Ok(String::new());
    };
    let path = match url.find("://") {
        Some(at) => {
            let after_scheme = &url[at + 3..];
            after_scheme
                .find(['/', '?', '#'])
                .map_or("", |i| &after_scheme[i..])
        }
        None => url,
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    if !path.is_empty() && !path.starts_with('/') {
        return Err(format!(
            "servers[0].url is `{url}`, a relative URL that does not start with `/`: \
             write the base path from the root, e.g. /billing"
        ));
    }
    if path.contains(['{', '}']) {
        return Err(format!(
            "servers[0].url is `{url}`, whose path has a server variable: \
             keygate cannot know the base path; write it out"
        ));
    }
    Ok(path.trim_end_matches('/').to_owned())
}

fn parse_template(base: &str, template: &str) -> Result<Vec<Segment>, String> {
    if !template.starts_with('/') {
        return Err(format!(
            "paths has `{template}`, which does not start with `/`: OpenAPI paths start with `/`"
        ));
    }
    let full = format!("{base}{template}");
    let full = if full.len() > 1 {
        full.trim_end_matches('/')
    } else {
        full.as_str()
    };
    let rest = &full[1..];
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    rest.split('/')
        .map(|segment| {
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err(format!(
                    "paths has `{template}`, which has an empty, `.` or `..` segment: keygate never routes such paths"
                ));
            }
            parse_segment(segment).ok_or_else(|| {
                format!("paths has `{template}`, whose segment `{segment}` has unbalanced or empty `{{}}`: fix the template")
            })
        })
        .collect()
}

fn parse_segment(segment: &str) -> Option<Segment> {
    if !segment.contains(['{', '}']) {
        return Some(Segment::Literal(segment.to_owned()));
    }
    let mut parts = Vec::new();
    let mut rest = segment;
    while !rest.is_empty() {
        if let Some(after_open) = rest.strip_prefix('{') {
            let close = after_open.find('}')?;
            let name = &after_open[..close];
            if name.is_empty() || name.contains('{') {
                return None;
            }
            // Two adjacent parameters cannot be told apart.
            if parts.last() == Some(&Part::Param) {
                return None;
            }
            parts.push(Part::Param);
            rest = &after_open[close + 1..];
        } else {
            let end = rest.find(['{', '}']).unwrap_or(rest.len());
            if end == 0 {
                return None; // a stray `}`
            }
            parts.push(Part::Text(rest[..end].to_owned()));
            rest = &rest[end..];
        }
    }
    Some(if parts == [Part::Param] {
        Segment::Param
    } else {
        Segment::Mixed(parts)
    })
}

/// The template with parameter names erased, so `/a/{x}` and `/a/{y}` are
/// recognised as one route.
fn normalised(segments: &[Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        out.push('/');
        match segment {
            Segment::Literal(text) => out.push_str(text),
            Segment::Param => out.push_str("{}"),
            Segment::Mixed(parts) => {
                for part in parts {
                    match part {
                        Part::Text(text) => out.push_str(text),
                        Part::Param => out.push_str("{}"),
                    }
                }
            }
        }
    }
    if out.is_empty() { "/".to_owned() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const ANIMALS: &str = "\
openapi: 3.0.1
groupId: animal-rescue-api
servers:
  - url: http://gateway.local/animal-rescue/
paths:
  /animals: {}
  /animals/{animalId}: {}
  /animals/{animalId}/adoption-requests: {}
  /animals/mine: {}
  /files/{name}.json: {}
";

    const BILLING: &str = r#"{"openapi": "3.0.1", "groupId": "billing-api",
        "servers": [{"url": "/billing"}],
        "paths": {"/invoices": {}, "/invoices/{invoiceId}": {}}}"#;

    fn routes() -> Routes {
        Routes::from_documents([
            ("animals.yaml", ANIMALS, false),
            ("billing.json", BILLING, true),
        ])
        .unwrap()
    }

    #[rstest]
    #[case("/animal-rescue/animals", "animal-rescue-api")]
    #[case("/animal-rescue/animals?limit=10", "animal-rescue-api")]
    #[case("/animal-rescue/animals/42", "animal-rescue-api")]
    #[case("/animal-rescue/animals/mine", "animal-rescue-api")]
    #[case("/animal-rescue/animals/42/adoption-requests", "animal-rescue-api")]
    #[case("/animal-rescue/animals/a%20b", "animal-rescue-api")]
    #[case("/animal-rescue/files/report.json", "animal-rescue-api")]
    #[case("/animal-rescue/files/a.b.json", "animal-rescue-api")]
    #[case("/billing/invoices", "billing-api")]
    #[case("/billing/invoices/inv-1#frag", "billing-api")]
    fn declared_paths_resolve_to_their_group(#[case] path: &str, #[case] group: &str) {
        assert_eq!(routes().resolve(path), Ok(group));
    }

    #[rstest]
    #[case::undeclared("/billing/payments", Unroutable::NoMatch)]
    #[case::base_only("/billing", Unroutable::NoMatch)]
    #[case::prefix_plus_more("/billing/invoices/1/lines", Unroutable::NoMatch)]
    #[case::other_base("/invoices", Unroutable::NoMatch)]
    #[case::case_differs("/Billing/invoices", Unroutable::NoMatch)]
    #[case::root("/", Unroutable::NoMatch)]
    #[case::empty_param_ext("/animal-rescue/files/.json", Unroutable::NoMatch)]
    #[case::relative("billing/invoices", Unroutable::NotAbsolute)]
    #[case::empty("", Unroutable::NotAbsolute)]
    #[case::trailing_slash("/billing/invoices/", Unroutable::EmptySegment)]
    #[case::double_slash("//billing/invoices", Unroutable::EmptySegment)]
    #[case::inner_double_slash("/billing//invoices", Unroutable::EmptySegment)]
    #[case::dot_dot(
        "/billing/invoices/../../animal-rescue/animals",
        Unroutable::DotSegment
    )]
    #[case::dot_dot_as_param("/billing/invoices/..", Unroutable::DotSegment)]
    #[case::dot("/billing/./invoices", Unroutable::DotSegment)]
    #[case::encoded_slash("/billing/invoices/a%2fb", Unroutable::AmbiguousEncoding)]
    #[case::encoded_slash_upper("/billing/invoices/a%2Fb", Unroutable::AmbiguousEncoding)]
    #[case::encoded_dots("/billing/invoices/%2e%2e", Unroutable::AmbiguousEncoding)]
    #[case::encoded_dots_upper("/billing/invoices/%2E%2E", Unroutable::AmbiguousEncoding)]
    #[case::backslash("/billing/invoices\\..\\x", Unroutable::AmbiguousEncoding)]
    #[case::encoded_backslash("/billing/invoices/%5C", Unroutable::AmbiguousEncoding)]
    fn everything_else_is_unroutable(#[case] path: &str, #[case] why: Unroutable) {
        assert_eq!(routes().resolve(path), Err(why));
    }

    #[test]
    fn groups_are_listed_once_in_document_order() {
        let extra = "groupId: billing-api\nservers: [{url: /billing/v2}]\npaths: {/invoices: {}}\n";
        let routes = Routes::from_documents([
            ("a", ANIMALS, false),
            ("b", BILLING, true),
            ("c", extra, false),
        ])
        .unwrap();
        assert_eq!(routes.groups(), ["animal-rescue-api", "billing-api"]);
        assert_eq!(routes.resolve("/billing/v2/invoices"), Ok("billing-api"));
        assert_eq!(routes.len(), 8);
    }

    #[test]
    fn same_route_in_two_documents_of_one_group_is_fine() {
        let again =
            "groupId: billing-api\nservers: [{url: /billing}]\npaths: {'/invoices/{id}': {}}\n";
        let routes =
            Routes::from_documents([("b", BILLING, true), ("again", again, false)]).unwrap();
        assert_eq!(routes.resolve("/billing/invoices/1"), Ok("billing-api"));
    }

    #[test]
    fn no_servers_means_an_empty_base() {
        let doc = "groupId: g\npaths: {/things: {}, /: {}}\n";
        let routes = Routes::from_documents([("d", doc, false)]).unwrap();
        assert_eq!(routes.resolve("/things"), Ok("g"));
        assert_eq!(routes.resolve("/"), Ok("g"));
    }

    #[rstest]
    #[case::no_group(
        "openapi: 3.0.1\npaths: {/a: {}}\n",
        "doc.yaml: groupId is missing: add `groupId: <api-group>` at the document root"
    )]
    #[case::bad_group("groupId: a/b\npaths: {/a: {}}\n", "doc.yaml: groupId is `a/b`")]
    #[case::no_paths("groupId: g\n", "doc.yaml: paths is missing or empty")]
    #[case::relative_server(
        "groupId: g\nservers: [{url: v1}]\npaths: {/a: {}}\n",
        "doc.yaml: servers[0].url is `v1`"
    )]
    #[case::server_variable(
        "groupId: g\nservers: [{url: 'http://h/{base}'}]\npaths: {/a: {}}\n",
        "server variable"
    )]
    #[case::template_without_slash("groupId: g\npaths: {a: {}}\n", "paths has `a`")]
    #[case::unbalanced("groupId: g\npaths: {'/a/{id': {}}\n", "paths has `/a/{id`")]
    #[case::adjacent_params("groupId: g\npaths: {'/a/{x}{y}': {}}\n", "unbalanced or empty")]
    #[case::malformed_yaml("groupId: [\n", "doc.yaml: line ")]
    fn document_errors_name_the_document(#[case] doc: &str, #[case] expected: &str) {
        let err = Routes::from_documents([("doc.yaml", doc, false)])
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }

    #[test]
    fn a_route_declared_for_two_groups_is_an_error() {
        let thief =
            "groupId: thief\nservers: [{url: /billing}]\npaths: {'/invoices/{other}': {}}\n";
        let err = Routes::from_documents([
            ("billing.json", BILLING, true),
            ("thief.yaml", thief, false),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("thief.yaml: path /billing/invoices/{other} (group thief) is also declared by billing.json"), "{err}");
    }

    #[test]
    fn json_errors_name_the_document_and_line() {
        let err = Routes::from_documents([("b.json", "{\n\"groupId\": }", true)])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("b.json: line 2, column"), "{err}");
    }

    #[test]
    fn scenario_documents_load() {
        // Whatever the scenarios declare must be loadable; no names are
        // asserted since scenarios are data.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/apis");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let apis: Vec<ApiFile> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "json"))
            .enumerate()
            .map(|(i, path)| ApiFile {
                field: format!("apis[{i}]"),
                path,
            })
            .collect();
        if apis.is_empty() {
            return;
        }
        let routes = Routes::load(Path::new("keygate.yaml"), &apis).unwrap();
        assert!(!routes.groups().is_empty() && !routes.is_empty());
    }

    #[test]
    fn missing_document_names_the_config_entry() {
        let apis = [ApiFile {
            field: "apis[0]".into(),
            path: "/nonexistent/x.yaml".into(),
        }];
        let err = Routes::load(Path::new("keygate.yaml"), &apis)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "keygate.yaml: apis[0] points to /nonexistent/x.yaml, which cannot be read"
            ),
            "{err}"
        );
    }
}
