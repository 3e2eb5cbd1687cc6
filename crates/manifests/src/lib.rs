//! Offline checks of keyrig's Kubernetes manifests.
//!
//! The kind and cluster profiles apply `scenarios/k8s/<mode>` with kustomize.
//! Before anything reaches a cluster, this crate renders each overlay with
//! the pinned kubectl ([`render_overlay`]) and checks every object against a
//! typed struct ([`check_object`]): k8s-openapi's for Kubernetes kinds, and
//! [`eso`]'s for External Secrets Operator kinds. The check is a lossless
//! round trip, so a field the schema does not have (a typo, a field of
//! another version) is reported by its path instead of vanishing on apply.
//!
//! No network, no cluster client: `kube` is only used for its
//! `CustomResource` derive.
//!
//! [`files`] types keyrig's own Kubernetes files (pins, kind config, Vault
//! Kubernetes-auth roles) for the tests and for the harness.

pub mod eso;
pub mod files;
mod kind;
mod lossless;
mod render;

pub use kind::{ALL as ALL_KINDS, EsoVersion, Kind, TypeError};
pub use lossless::{LostField, ObjectRef, Problem, check_all, check_object, normalize};
pub use render::{Error, parse_documents, read_yaml_file, render_overlay};

/// The three ways the gateway credentials Secret comes to be, one overlay
/// each under `scenarios/k8s/`.
pub const MODES: [&str; 3] = ["inline", "existing-secret", "external-secret"];

/// The Secret keygate and the check Job read, in every mode.
pub const CREDENTIALS_SECRET: &str = "keyrig-gateway-credentials";

/// The Secret's default key names (the API7 chart's adminUrl/adminKey/group,
/// mapped to what keygate needs). The existing-secret mode renames them.
pub const DEFAULT_KEYS: [&str; 4] = ["vault-url", "role-id", "secret-id", "gateway-group"];

/// The objects of `objects` with this `kind` (any apiVersion).
pub fn of_kind<'a>(
    objects: &'a [serde_json::Value],
    kind: &'a str,
) -> impl Iterator<Item = &'a serde_json::Value> {
    objects
        .iter()
        .filter(move |o| o.get("kind").and_then(serde_json::Value::as_str) == Some(kind))
}

/// The object with this kind and `metadata.name`, if any.
pub fn find<'a>(
    objects: &'a [serde_json::Value],
    kind: &str,
    name: &str,
) -> Option<&'a serde_json::Value> {
    objects.iter().find(|o| {
        o.get("kind").and_then(serde_json::Value::as_str) == Some(kind)
            && o.pointer("/metadata/name")
                .and_then(serde_json::Value::as_str)
                == Some(name)
    })
}
