//! Request path -> API group, from OpenAPI 3 documents.
//!
//! Each document contributes `servers[0].url`'s path as a base and every
//! `paths` key as a template under it; its root `groupId` names the group.
//! Only declared paths match: keygate would rather answer `no-route` than
//! accept a key for a path whose owner it does not know. Templates of two
//! groups that could match one path are refused at load, so a path has at
//! most one owner and the order documents are listed in never decides.
//!
//! **A path belongs to the API whose base path is its longest prefix, as
//! at the gateways**, which route each group's base as a prefix, longest
//! first: only that API's templates are matched. Where bases nest (`/api`
//! and `/api/admin`, or an API served at `/`), a template of the shorter
//! base that also matches under the longer one (`/api/{kind}/{id}` and
//! `/api/admin/users`) would otherwise accept the shorter base's key for
//! a request the gateway sends to the longer base's upstream.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::config::{ApiFile, ConfigError, is_not_utf8, without_bom, yaml_message};
pub use crate::request_path::Unroutable;
use crate::segment::Segment;

/// All routes of all configured documents.
#[derive(Debug, Clone)]
pub struct Routes {
    routes: Vec<Route>,
    /// Distinct group ids, in the order documents were listed.
    groups: Vec<String>,
    /// Each document's base path, in the order listed.
    bases: Vec<Base>,
}

/// Where one document's paths live: `--check` prints these, so a document
/// whose `servers` is missing or misspelt (served at `/`, OpenAPI's
/// default) shows instead of going unnoticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    pub document: String,
    pub group: String,
    /// The base path without a trailing slash (`/billing`; empty: the root).
    base: String,
    /// Whether it came from `servers[0].url` (else OpenAPI's default `/`).
    pub declared: bool,
}

impl Base {
    /// The base path as written in a request: `/billing`, or `/`.
    pub fn path(&self) -> &str {
        if self.base.is_empty() {
            "/"
        } else {
            &self.base
        }
    }
}

#[derive(Debug, Clone)]
struct Route {
    segments: Vec<Segment>,
    /// How many of `segments` are the document's base path (literals).
    base_len: usize,
    /// Index into `Routes::groups`.
    group: usize,
    /// `base + template` and the document declaring it, for load errors.
    template: String,
    document: String,
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
                let (field, path) = (&api.field, api.path.display());
                ConfigError::new(
                    config_file.display(),
                    if is_not_utf8(&err) {
                        format!(
                            "{field} points to {path}, which is not UTF-8 text: save it as UTF-8"
                        )
                    } else {
                        format!(
                            "{field} points to {path}, which cannot be read ({err}): fix the path \
                             (relative paths resolve against the config file's directory)"
                        )
                    },
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
        let mut routes: Vec<Route> = Vec::new();
        let mut groups: Vec<String> = Vec::new();
        let mut bases: Vec<Base> = Vec::new();
        // (group, template) pairs already routed: the same route declared
        // twice for one group is kept once.
        let mut seen: HashSet<(usize, Vec<Segment>)> = HashSet::new();
        for (name, text, json) in docs {
            let text = without_bom(text);
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
            let (base, declared) = base_path(doc.servers.as_deref())
                .map_err(|message| ConfigError::new(name, message))?;
            bases.push(Base {
                document: name.to_owned(),
                group: group.clone(),
                base: base.clone(),
                declared,
            });
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
                if !seen.insert((group_index, segments.clone())) {
                    continue;
                }
                let route = Route {
                    segments,
                    base_len: base.split('/').filter(|s| !s.is_empty()).count(),
                    group: group_index,
                    template: format!("{base}{template}"),
                    document: name.to_owned(),
                };
                let overlap = routes
                    .iter()
                    .filter(|other| other.group != group_index)
                    .find_map(|other| other.overlap(&route).map(|example| (other, example)));
                if let Some((other, example)) = overlap {
                    return Err(ConfigError::new(
                        name,
                        format!(
                            "path {} (group {group}) can match the same requests as path {} in {} (group {}), \
                             e.g. {example}: a request path must belong to one group; \
                             change or remove one of the two",
                            route.template, other.template, other.document, groups[other.group]
                        ),
                    ));
                }
                routes.push(route);
            }
        }
        Ok(Self {
            routes,
            groups,
            bases,
        })
    }

    /// Each document's base path, in the order the documents were listed.
    pub fn bases(&self) -> &[Base] {
        &self.bases
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
    /// The path is split and decoded by [`crate::request_path::segments`]:
    /// unreserved escapes are decoded, as the upstream will; dot segments,
    /// empty segments and escapes servers read differently are refused
    /// rather than normalised, since any normalisation keygate picked could
    /// authorise a key for one API while the gateway sends the request to
    /// another. Refusing never grants access it should not.
    pub fn resolve(&self, request_path: &str) -> Result<&str, Unroutable> {
        let request = crate::request_path::segments(request_path)?;
        // The longest base that prefixes the path, as the gateways route;
        // then only its templates. Routes of different groups never overlap
        // (checked at load), so the first match is the only owner.
        let longest = self
            .routes
            .iter()
            .filter(|route| route.base_prefixes(&request))
            .map(|route| route.base_len)
            .max()
            .ok_or(Unroutable::NoMatch)?;
        self.routes
            .iter()
            .filter(|route| route.base_len == longest && route.base_prefixes(&request))
            .find(|route| route.matches(&request))
            .map(|route| self.groups[route.group].as_str())
            .ok_or(Unroutable::NoMatch)
    }
}

impl Route {
    /// Whether the route's base path is a (segment) prefix of `request`.
    fn base_prefixes(&self, request: &[String]) -> bool {
        request.len() >= self.base_len
            && self.segments[..self.base_len]
                .iter()
                .zip(request)
                .all(|(segment, actual)| segment.matches(actual))
    }

    fn matches(&self, request: &[String]) -> bool {
        self.segments.len() == request.len()
            && self
                .segments
                .iter()
                .zip(request)
                .all(|(segment, actual)| segment.matches(actual))
    }

    /// A request path both routes match, if any: segment counts equal and
    /// every pair of segments sharing a text.
    fn overlap(&self, other: &Route) -> Option<String> {
        if self.segments.len() != other.segments.len() {
            return None;
        }
        let mut path = String::new();
        for (a, b) in self.segments.iter().zip(&other.segments) {
            path.push('/');
            path.push_str(&a.common_text(b)?);
        }
        Some(if path.is_empty() { "/".into() } else { path })
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

/// The path component of `servers[0].url`, without a trailing slash, its
/// unreserved escapes decoded; and whether there was one (without, the
/// root: OpenAPI's default server is `/`).
fn base_path(servers: Option<&[Server]>) -> Result<(String, bool), String> {
    let Some(url) = servers
        .and_then(|s| s.first())
        .and_then(|s| s.url.as_deref())
    else {
        return Ok((String::new(), false));
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
    // Checked here, so a problem is blamed on servers[0].url and not on
    // each template joined to it. The same rules as request paths: a base
    // a request cannot route to would make every template of the document
    // unreachable, or (decoded differently) another API's.
    let mut base = String::new();
    let trimmed = path.trim_end_matches('/');
    for segment in trimmed.split('/').skip(1) {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(format!(
                "servers[0].url is `{url}`, whose path has an empty, `.` or `..` segment: \
                 write the base path with single slashes and no dot segments, e.g. /billing \
                 (`//host/path` is not read as a host: write https://host/path)"
            ));
        }
        // `%2e` is refused, so no dot segment comes out of the decoding.
        let decoded = crate::request_path::decode_segment(segment).map_err(|_| {
            format!(
                "servers[0].url is `{url}`, whose path segment `{segment}` has a `%` escape \
                     keygate refuses in request paths (an encoded `/`, `.` or `\\`, a double \
                     encoding, a `%` without two hex digits) or a `\\`: write the base path \
                     as the gateway routes it"
            )
        })?;
        base.push('/');
        base.push_str(&decoded);
    }
    Ok((base, true))
}

fn parse_template(base: &str, template: &str) -> Result<Vec<Segment>, String> {
    if !template.starts_with('/') {
        return Err(format!(
            "paths has `{template}`, which does not start with `/`: OpenAPI paths start with `/`"
        ));
    }
    let full = format!("{base}{template}");
    // Trailing slashes are dropped (`/a/` is `/a`), so a template of slashes
    // alone (`//`) is the root, like `/`. `full` starts with `/`: the base
    // is empty or does, and so does the template.
    let rest = full
        .trim_end_matches('/')
        .strip_prefix('/')
        .unwrap_or_default();
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
            Segment::parse(segment).ok_or_else(|| {
                format!(
                    "paths has `{template}`, whose segment `{segment}` has unbalanced or empty `{{}}`, \
                     two adjacent parameters, or a `%` escape keygate refuses in request paths: fix the template"
                )
            })
        })
        .collect()
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
    #[case::fragment("/billing/invoices/inv-1#frag", Unroutable::Fragment)]
    #[case::dot_dot_parameter(
        "/animal-rescue/animals/..;/adoption-requests",
        Unroutable::DotSegment
    )]
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

    /// Found by reading fuzz target openapi_docs' invariants (its seed
    /// `slashes-only-template`): `//` panicked at load (an index past the
    /// end once the trailing slashes were trimmed).
    #[rstest]
    #[case::no_base("groupId: g\npaths: {//: {}}\n", "/")]
    #[case::three("groupId: g\npaths: {///: {}}\n", "/")]
    #[case::under_a_base("groupId: g\nservers: [{url: /b}]\npaths: {//: {}}\n", "/b")]
    fn a_template_of_slashes_alone_is_the_root(#[case] doc: &str, #[case] path: &str) {
        let routes = Routes::from_documents([("d", doc, false)]).unwrap();
        assert_eq!(routes.resolve(path), Ok("g"));
        assert_eq!(routes.len(), 1);
    }

    /// Nested bases: a path is the API's whose base is its longest prefix,
    /// as at the gateways, and only that API's templates count. Matching
    /// every template first accepted `/api/admin/users` as `outer`'s
    /// `/{kind}/{id}` while a gateway sends it to `admin`'s upstream, and
    /// `/billing/status` as the root API's `/{tenant}/status`.
    #[rstest]
    #[case::outer_template_under_the_inner_base("/api/admin/users", Err(Unroutable::NoMatch))]
    #[case::inner("/api/admin/users/7", Ok("admin"))]
    #[case::outer("/api/things/7", Ok("outer"))]
    #[case::root_template_under_a_base("/billing/status", Err(Unroutable::NoMatch))]
    #[case::root("/acme/status", Ok("tenant"))]
    #[case::based("/billing/invoices", Ok("billing"))]
    fn a_path_is_the_api_of_its_longest_base(
        #[case] path: &str,
        #[case] want: Result<&str, Unroutable>,
    ) {
        let routes = Routes::from_documents([
            (
                "outer.yaml",
                "groupId: outer\nservers: [{url: /api}]\npaths: {\"/{kind}/{id}\": {}}\n",
                false,
            ),
            (
                "admin.yaml",
                "groupId: admin\nservers: [{url: /api/admin}]\npaths: {\"/users/{id}\": {}}\n",
                false,
            ),
            (
                "tenant.yaml",
                "groupId: tenant\nservers: [{url: http://gateway.local/}]\npaths: {\"/{tenant}/status\": {}}\n",
                false,
            ),
            (
                "billing.yaml",
                "groupId: billing\nservers: [{url: /billing}]\npaths: {/invoices: {}}\n",
                false,
            ),
        ])
        .unwrap();
        assert_eq!(routes.resolve(path), want);
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
    #[case::adjacent_params("groupId: g\npaths: {'/a/{x}{y}': {}}\n", "two adjacent parameters")]
    #[case::encoded_slash("groupId: g\npaths: {'/a/b%2fc': {}}\n", "paths has `/a/b%2fc`")]
    #[case::malformed_yaml("groupId: [\n", "doc.yaml: line ")]
    fn document_errors_name_the_document(#[case] doc: &str, #[case] expected: &str) {
        let err = Routes::from_documents([("doc.yaml", doc, false)])
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }

    /// A problem in the base path is blamed on `servers[0].url`, not on
    /// `paths` (base and template used to be joined before the check).
    #[rstest]
    #[case::dot_dot(
        "/x/../y",
        "servers[0].url is `/x/../y`, whose path has an empty, `.` or `..` segment"
    )]
    #[case::dot(
        "http://h/x/./y",
        "servers[0].url is `http://h/x/./y`, whose path has an empty, `.` or `..` segment"
    )]
    #[case::network_path(
        "//host/billing",
        "servers[0].url is `//host/billing`, whose path has an empty, `.` or `..` segment"
    )]
    #[case::inner_empty("/a//b", "servers[0].url is `/a//b`, whose path has an empty")]
    #[case::encoded_slash(
        "/x%2fy",
        "servers[0].url is `/x%2fy`, whose path segment `x%2fy` has a `%` escape keygate refuses in request paths"
    )]
    #[case::encoded_dot(
        "/%2e%2e/y",
        "servers[0].url is `/%2e%2e/y`, whose path segment `%2e%2e` has a `%` escape"
    )]
    #[case::bad_escape(
        "/x%zz",
        "servers[0].url is `/x%zz`, whose path segment `x%zz` has a `%` escape"
    )]
    #[case::backslash(
        "/x\\y",
        "servers[0].url is `/x\\y`, whose path segment `x\\y` has a `%` escape keygate refuses in request paths"
    )]
    fn base_path_problems_name_servers_url(#[case] url: &str, #[case] expected: &str) {
        let doc = format!("groupId: g\nservers: [{{url: '{url}'}}]\npaths: {{/a: {{}}}}\n");
        let err = Routes::from_documents([("doc.yaml", doc.as_str(), false)])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("doc.yaml: {expected}")),
            "expected {expected:?} in {err:?}"
        );
        assert!(!err.contains("paths has"), "{err}");
    }

    /// An escaped unreserved character in the base means the same as the
    /// character, as in request paths and templates.
    #[test]
    fn an_encoded_unreserved_base_is_decoded() {
        let doc = "groupId: g\nservers: [{url: /b%69lling}]\npaths: {/a: {}}\n";
        let routes = Routes::from_documents([("d", doc, false)]).unwrap();
        assert_eq!(routes.resolve("/billing/a"), Ok("g"));
    }

    /// Each document's base path, for `--check` to print: a document
    /// without `servers` (or with it misspelt) is served at `/`, OpenAPI's
    /// default, which `--check` shows rather than keygate taking it silently.
    #[test]
    fn each_documents_base_is_reported() {
        let routes = Routes::from_documents([
            (
                "a.yaml",
                "groupId: a\nservers: [{url: 'http://h/api/'}]\npaths: {/x: {}}\n",
                false,
            ),
            (
                "b.yaml",
                "groupId: b\nserver: [{url: /b}]\npaths: {/y: {}}\n",
                false,
            ),
            (
                "c.yaml",
                "groupId: c\nservers: [{description: no url}]\npaths: {/z: {}}\n",
                false,
            ),
        ])
        .unwrap();
        let bases: Vec<(&str, &str, &str, bool)> = routes
            .bases()
            .iter()
            .map(|b| (b.document.as_str(), b.group.as_str(), b.path(), b.declared))
            .collect();
        assert_eq!(
            bases,
            [
                ("a.yaml", "a", "/api", true),
                ("b.yaml", "b", "/", false),
                ("c.yaml", "c", "/", false),
            ]
        );
    }

    /// A byte order mark before the first key (YAML or JSON) is not content.
    #[rstest]
    #[case::yaml("\u{feff}groupId: g\npaths: {/a: {}}\n", false)]
    #[case::json("\u{feff}{\"groupId\": \"g\", \"paths\": {\"/a\": {}}}", true)]
    fn a_byte_order_mark_is_not_content(#[case] doc: &str, #[case] json: bool) {
        let routes = Routes::from_documents([("d", doc, json)]).unwrap();
        assert_eq!(routes.resolve("/a"), Ok("g"));
    }

    #[test]
    fn a_document_that_is_not_utf8_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.yaml");
        std::fs::write(&path, b"groupId: caf\xe9\npaths: {/a: {}}\n").unwrap();
        let apis = [ApiFile {
            field: "apis[0]".into(),
            path: path.clone(),
        }];
        let err = Routes::load(Path::new("keygate.yaml"), &apis)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "keygate.yaml: apis[0] points to {}, which is not UTF-8 text: save it as UTF-8",
                path.display()
            )
        );
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
        assert!(
            err.starts_with(
                "thief.yaml: path /billing/invoices/{other} (group thief) can match the same requests \
                 as path /billing/invoices/{invoiceId} in billing.json (group billing-api), e.g. /billing/invoices/"
            ),
            "{err}"
        );
    }

    const SHOP: &str =
        "groupId: shop\nservers: [{url: /shop}]\npaths: {'/items/{id}': {}, /cart: {}}\n";
    const ADMIN: &str = "groupId: admin\nservers: [{url: /shop}]\npaths: {/items/special: {}}\n";

    #[rstest]
    #[case::param_vs_literal(
        SHOP,
        ADMIN,
        "/shop/items/{id}",
        "/shop/items/special",
        "/shop/items/special"
    )]
    #[case::listed_the_other_way(
        ADMIN,
        SHOP,
        "/shop/items/special",
        "/shop/items/{id}",
        "/shop/items/special"
    )]
    #[case::mixed_segments(
        "groupId: a\npaths: {'/files/{name}.json': {}}\n",
        "groupId: b\npaths: {'/files/report.{ext}': {}}\n",
        "/files/{name}.json",
        "/files/report.{ext}",
        "/files/report.json"
    )]
    #[case::encoded_literal(
        "groupId: a\npaths: {/items/special: {}}\n",
        "groupId: b\npaths: {/items/%73pecial: {}}\n",
        "/items/special",
        "/items/%73pecial",
        "/items/special"
    )]
    fn overlapping_documents_are_refused_naming_both(
        #[case] first: &str,
        #[case] second: &str,
        #[case] first_path: &str,
        #[case] second_path: &str,
        #[case] example: &str,
    ) {
        let err =
            Routes::from_documents([("first.yaml", first, false), ("second.yaml", second, false)])
                .unwrap_err()
                .to_string();
        assert!(
            err.starts_with(&format!("second.yaml: path {second_path} (group "))
                && err.contains(&format!("as path {first_path} in first.yaml (group "))
                && err.contains(&format!("e.g. {example}: ")),
            "{err}"
        );
    }

    #[test]
    fn templates_that_cannot_match_one_path_coexist() {
        let other = "groupId: other\nservers: [{url: /shop}]\n\
                     paths: {'/items/{id}/reviews': {}, '/files/{name}.xml': {}, /carts: {}}\n";
        let shop = "groupId: shop\nservers: [{url: /shop}]\npaths: {'/items/{id}': {}, '/files/{name}.json': {}}\n";
        let routes =
            Routes::from_documents([("shop", shop, false), ("other", other, false)]).unwrap();
        assert_eq!(routes.resolve("/shop/items/1"), Ok("shop"));
        assert_eq!(routes.resolve("/shop/items/1/reviews"), Ok("other"));
        assert_eq!(routes.resolve("/shop/files/a.json"), Ok("shop"));
        assert_eq!(routes.resolve("/shop/files/a.xml"), Ok("other"));
    }

    #[rstest]
    #[case("/admin/special", Ok("admin"))]
    #[case("/admin/%73pecial", Ok("admin"))]
    #[case("/admin/%73%70%65%63%69%61%6C", Ok("admin"))]
    #[case("/%61dmin/special", Ok("admin"))]
    #[case("/shop/items/%73pecial", Ok("shop"))]
    #[case("/admin/%2573pecial", Err(Unroutable::AmbiguousEncoding))]
    #[case("/admin/%25%37%33pecial", Err(Unroutable::AmbiguousEncoding))]
    #[case("/admin/%7", Err(Unroutable::InvalidEncoding))]
    fn an_encoded_fixed_segment_resolves_to_the_group_owning_the_decoded_path(
        #[case] path: &str,
        #[case] want: Result<&str, Unroutable>,
    ) {
        let shop = "groupId: shop\nservers: [{url: /shop}]\npaths: {'/items/{id}': {}}\n";
        let admin =
            "groupId: admin\nservers: [{url: /admin}]\npaths: {/special: {}, '/{page}.html': {}}\n";
        let routes =
            Routes::from_documents([("shop", shop, false), ("admin", admin, false)]).unwrap();
        assert_eq!(routes.resolve(path), want);
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
