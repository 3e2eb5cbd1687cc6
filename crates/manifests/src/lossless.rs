//! The lossless round-trip check: an object's fields must all survive
//! deserializing into the kind's typed struct and serializing back.
//!
//! serde ignores fields a struct does not have, so a misspelt field
//! (`creationPolicyy`) disappears on the way through; the API server would
//! drop it just as silently (or refuse it, for a strict CRD). Comparing the
//! input with what comes back finds it, and names it by its JSON path.
//!
//! Normalization: `null` is dropped on both sides, because YAML writes absent
//! fields as `null` (`creationTimestamp: null`) and serde skips `None`.
//! Empty maps and lists are kept and compared like any value: the typed
//! structs keep `Some(empty)` as written, and dropping them would hide a
//! misspelt `emptyDirr: {}`.

use std::fmt;

use serde_json::{Map, Value};

use crate::kind::{ALL, Kind};

/// The object a finding is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    pub fn of(object: &Value) -> Self {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let metadata = object.get("metadata");
        Self {
            api_version: text(object.get("apiVersion"))
                .unwrap_or_else(|| String::from("<no apiVersion>")),
            kind: text(object.get("kind")).unwrap_or_else(|| String::from("<no kind>")),
            namespace: text(metadata.and_then(|m| m.get("namespace"))),
            name: text(metadata.and_then(|m| m.get("name")))
                .unwrap_or_else(|| String::from("<no name>")),
        }
    }
}

/// `Kind namespace/name`, or `Kind name` for cluster-scoped objects.
impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{} {namespace}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// What is wrong at a path.
#[derive(Clone, Debug, PartialEq)]
pub enum Problem {
    /// The typed struct has no such field: it would be lost (misspelt,
    /// misplaced, or from another API version).
    NotInSchema,
    /// The field survives with another value, e.g. a string where the schema
    /// has a number.
    Changed { written: Value, read_back: Value },
    /// The object does not deserialize at all (wrong type, unknown enum value,
    /// missing required field).
    Invalid(String),
    /// No typed struct for this apiVersion and kind.
    UnknownKind,
}

/// One finding of [`check_object`].
#[derive(Clone, Debug, PartialEq)]
pub struct LostField {
    pub object: ObjectRef,
    /// A JSON path: `spec.target.creationPolicyy`, `spec.data[2].remoteRef`,
    /// `metadata.labels["app.kubernetes.io/name"]`; empty for the object.
    pub path: String,
    pub problem: Problem,
}

impl fmt::Display for LostField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let schema = format!("{} {}", self.object.api_version, self.object.kind);
        let at = |f: &mut fmt::Formatter<'_>| {
            if self.path.is_empty() {
                write!(f, "{}", self.object)
            } else {
                write!(f, "{}: field {}", self.object, self.path)
            }
        };
        match &self.problem {
            Problem::NotInSchema => {
                at(f)?;
                write!(f, " is not part of {schema}")
            }
            Problem::Changed { written, read_back } => {
                at(f)?;
                write!(
                    f,
                    " is written as {written} but {schema} reads it back as {read_back}"
                )
            }
            Problem::Invalid(message) => {
                at(f)?;
                write!(f, " does not fit {schema}: {message}")
            }
            Problem::UnknownKind => {
                let known: Vec<String> = ALL.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "{}: {schema} is not a kind keyrig checks (it checks {})",
                    self.object,
                    known.join(", ")
                )
            }
        }
    }
}

/// Checks one object: known kind, deserializes, and every field survives the
/// round trip. All findings are returned, not only the first.
pub fn check_object(object: &Value) -> Result<(), Vec<LostField>> {
    let at = |path: String, problem: Problem| LostField {
        object: ObjectRef::of(object),
        path,
        problem,
    };
    let Some(kind) = Kind::of(object) else {
        return Err(vec![at(String::new(), Problem::UnknownKind)]);
    };
    let written = kind.canonical(object);
    let read_back = kind
        .round_trip(&written)
        .map_err(|err| vec![at(err.path, Problem::Invalid(err.message))])?;
    let mut found = Vec::new();
    diff(
        &mut Path::default(),
        &normalize(&written),
        &normalize(&read_back),
        &mut |path, problem| found.push(at(path, problem)),
    );
    if found.is_empty() { Ok(()) } else { Err(found) }
}

/// Checks every object; the findings of all of them, in order.
pub fn check_all<'a>(objects: impl IntoIterator<Item = &'a Value>) -> Result<(), Vec<LostField>> {
    let found: Vec<LostField> = objects
        .into_iter()
        .filter_map(|o| check_object(o).err())
        .flatten()
        .collect();
    if found.is_empty() { Ok(()) } else { Err(found) }
}

/// Drops `null`s, recursively.
pub fn normalize(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), normalize(v)))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

/// A JSON path under construction.
#[derive(Default)]
struct Path(Vec<Segment>);

enum Segment {
    Key(String),
    Index(usize),
}

impl Path {
    fn with<R>(&mut self, segment: Segment, f: impl FnOnce(&mut Self) -> R) -> R {
        self.0.push(segment);
        let result = f(self);
        self.0.pop();
        result
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for segment in &self.0 {
            match segment {
                Segment::Key(key) if is_plain(key) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                }
                // Label keys, ConfigMap file names: `labels["app.kubernetes.io/name"]`.
                Segment::Key(key) => out.push_str(&format!("[{key:?}]")),
                Segment::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }
}

fn is_plain(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '@')
}

/// Reports what of `written` is missing or different in `read_back`. Fields
/// only `read_back` has (defaults a struct fills in) are not findings.
fn diff(
    path: &mut Path,
    written: &Value,
    read_back: &Value,
    report: &mut dyn FnMut(String, Problem),
) {
    match (written, read_back) {
        (Value::Object(written), Value::Object(read_back)) => {
            for (key, value) in written {
                path.with(Segment::Key(key.clone()), |path| match read_back.get(key) {
                    Some(back) => diff(path, value, back, report),
                    None => report(path.render(), Problem::NotInSchema),
                });
            }
        }
        (Value::Array(written), Value::Array(read_back)) if written.len() == read_back.len() => {
            for (i, (value, back)) in written.iter().zip(read_back).enumerate() {
                path.with(Segment::Index(i), |path| diff(path, value, back, report));
            }
        }
        _ if written == read_back => {}
        _ => report(
            path.render(),
            Problem::Changed {
                written: written.clone(),
                read_back: read_back.clone(),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn deployment(template_spec: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": "keygate", "namespace": "keyrig", "creationTimestamp": null },
            "spec": {
                "selector": { "matchLabels": { "app": "keygate" } },
                "template": { "metadata": { "labels": { "app": "keygate" } }, "spec": template_spec },
            },
        })
    }

    #[rstest]
    fn a_well_formed_deployment_round_trips() {
        let object = deployment(json!({
            "containers": [{ "name": "keygate", "image": "keyrig/keygate:dev", "ports": [{ "containerPort": 9001 }] }],
            "volumes": [{ "name": "tmp", "emptyDir": {} }],
        }));
        check_object(&object).unwrap();
    }

    #[rstest]
    #[case::misspelt_field(json!({ "containers": [{ "name": "k", "image": "i", "imagePullPolicyy": "Never" }] }),
        "spec.template.spec.containers[0].imagePullPolicyy", "is not part of apps/v1 Deployment")]
    #[case::misspelt_empty_map(json!({ "containers": [{ "name": "k", "image": "i" }], "volumes": [{ "name": "t", "emptyDirr": {} }] }),
        "spec.template.spec.volumes[0].emptyDirr", "is not part of apps/v1 Deployment")]
    #[case::wrong_type(json!({ "containers": [{ "name": "k", "image": "i", "ports": [{ "containerPort": "9001" }] }] }),
        "spec.template.spec.containers[0].ports[0].containerPort", "does not fit apps/v1 Deployment: invalid type: string")]
    fn problems_are_reported_by_path(
        #[case] template_spec: Value,
        #[case] path: &str,
        #[case] says: &str,
    ) {
        let found = check_object(&deployment(template_spec)).unwrap_err();
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].path, path);
        let message = found[0].to_string();
        assert!(
            message.starts_with(&format!("Deployment keyrig/keygate: field {path} ")),
            "{message}"
        );
        assert!(message.contains(says), "{message}");
    }

    #[rstest]
    fn label_keys_are_quoted_in_paths() {
        let mut object = deployment(json!({ "containers": [{ "name": "k", "image": "i" }] }));
        object["spec"]["template"]["metadata"]["labelz"] =
            json!({ "app.kubernetes.io/name": "keygate" });
        let found = check_object(&object).unwrap_err();
        assert_eq!(found[0].path, "spec.template.metadata.labelz");
        let path = Path(vec![
            Segment::Key("metadata".into()),
            Segment::Key("labels".into()),
            Segment::Key("a.b/c".into()),
        ]);
        assert_eq!(path.render(), r#"metadata.labels["a.b/c"]"#);
    }

    #[rstest]
    fn unknown_kinds_are_named() {
        let object = json!({ "apiVersion": "example.com/v1", "kind": "Widget", "metadata": { "name": "w" } });
        let found = check_object(&object).unwrap_err();
        assert_eq!(found[0].problem, Problem::UnknownKind);
        let message = found[0].to_string();
        assert!(
            message.starts_with("Widget w: example.com/v1 Widget is not a kind keyrig checks"),
            "{message}"
        );
        assert!(
            message.contains("external-secrets.io/v1 ExternalSecret"),
            "{message}"
        );
    }

    #[rstest]
    fn wrapped_base64_in_a_secret_is_read_as_the_api_server_reads_it() {
        let secret = |data: &str| json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "s" }, "data": { "k": data } });
        check_object(&secret("YWJj\nZGVm\n")).unwrap();
        let found = check_object(&secret("not base64!")).unwrap_err();
        assert_eq!(found[0].path, "data.k");
        assert!(matches!(found[0].problem, Problem::Invalid(_)), "{found:?}");
    }

    #[rstest]
    fn nulls_are_not_findings_but_values_are() {
        assert_eq!(
            normalize(&json!({ "a": null, "b": [{ "c": null }] })),
            json!({ "b": [{}] })
        );
        let mut found = Vec::new();
        diff(
            &mut Path::default(),
            &json!({ "a": 1, "b": [1, 2] }),
            &json!({ "a": "1", "b": [1] }),
            &mut |p, _| found.push(p),
        );
        assert_eq!(found, ["a", "b"]);
    }
}
