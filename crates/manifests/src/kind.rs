//! Which typed struct an object is checked against, from its `apiVersion`
//! and `kind`.

use std::fmt;

use k8s_openapi::api::{apps, batch, core, networking, rbac};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::eso;

/// The API version of an ESO kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EsoVersion {
    V1,
    V1beta1,
}

/// The kinds keyrig's manifests use: Kubernetes' own through k8s-openapi
/// (built for Kubernetes 1.37, the kind node's version), ESO's through
/// [`crate::eso`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Namespace,
    ServiceAccount,
    ConfigMap,
    Secret,
    Service,
    Role,
    RoleBinding,
    Deployment,
    Job,
    NetworkPolicy,
    ExternalSecret(EsoVersion),
    SecretStore(EsoVersion),
    ClusterSecretStore(EsoVersion),
}

/// Every kind [`Kind::of`] knows, for messages that list them.
pub const ALL: [Kind; 16] = [
    Kind::Namespace,
    Kind::ServiceAccount,
    Kind::ConfigMap,
    Kind::Secret,
    Kind::Service,
    Kind::Role,
    Kind::RoleBinding,
    Kind::Deployment,
    Kind::Job,
    Kind::NetworkPolicy,
    Kind::ExternalSecret(EsoVersion::V1),
    Kind::SecretStore(EsoVersion::V1),
    Kind::ClusterSecretStore(EsoVersion::V1),
    Kind::ExternalSecret(EsoVersion::V1beta1),
    Kind::SecretStore(EsoVersion::V1beta1),
    Kind::ClusterSecretStore(EsoVersion::V1beta1),
];

/// Why a typed struct did not take an object.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeError {
    /// Where, as serde saw it (`spec.replicas`); empty for the whole object.
    pub path: String,
    pub message: String,
}

impl Kind {
    /// The kind of an object, from its `apiVersion` and `kind`; `None` for
    /// one keyrig does not check (or an object without them).
    pub fn of(object: &Value) -> Option<Kind> {
        let api_version = object.get("apiVersion")?.as_str()?;
        let kind = object.get("kind")?.as_str()?;
        ALL.into_iter()
            .find(|k| k.api_version() == api_version && k.name() == kind)
    }

    /// `kind` as written in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
            Kind::Service => "Service",
            Kind::Role => "Role",
            Kind::RoleBinding => "RoleBinding",
            Kind::Deployment => "Deployment",
            Kind::Job => "Job",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::ExternalSecret(_) => "ExternalSecret",
            Kind::SecretStore(_) => "SecretStore",
            Kind::ClusterSecretStore(_) => "ClusterSecretStore",
        }
    }

    /// `apiVersion` as written in manifests.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Namespace
            | Kind::ServiceAccount
            | Kind::ConfigMap
            | Kind::Secret
            | Kind::Service => "v1",
            Kind::Role | Kind::RoleBinding => "rbac.authorization.k8s.io/v1",
            Kind::Deployment => "apps/v1",
            Kind::Job => "batch/v1",
            Kind::NetworkPolicy => "networking.k8s.io/v1",
            Kind::ExternalSecret(v) | Kind::SecretStore(v) | Kind::ClusterSecretStore(v) => match v
            {
                EsoVersion::V1 => "external-secrets.io/v1",
                EsoVersion::V1beta1 => "external-secrets.io/v1beta1",
            },
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::ClusterSecretStore(_))
    }

    /// Why the API server will refuse this kind although it is checked, or
    /// `None` when it is served.
    pub fn deprecation(self) -> Option<&'static str> {
        match self {
            Kind::ExternalSecret(EsoVersion::V1beta1)
            | Kind::SecretStore(EsoVersion::V1beta1)
            | Kind::ClusterSecretStore(EsoVersion::V1beta1) => Some(
                "External Secrets Operator stopped serving external-secrets.io/v1beta1 in v0.17.0: \
                 change apiVersion to external-secrets.io/v1 (the fields are the same)",
            ),
            _ => None,
        }
    }

    /// The object as the API server reads it, where that differs from the
    /// text: base64 in a Secret's `data` (and a ConfigMap's `binaryData`) may
    /// be wrapped over lines, as kustomize writes values longer than 70
    /// characters, and Go's decoder skips the line breaks. k8s-openapi's
    /// decoder does not, so they are removed before the round trip.
    pub fn canonical(self, object: &Value) -> Value {
        let mut object = object.clone();
        let field = match self {
            Kind::Secret => "data",
            Kind::ConfigMap => "binaryData",
            _ => return object,
        };
        if let Some(Value::Object(entries)) = object.get_mut(field) {
            for value in entries.values_mut() {
                if let Value::String(text) = value {
                    text.retain(|c| c != '\n' && c != '\r');
                }
            }
        }
        object
    }

    /// Deserializes `object` into this kind's struct and serializes it back:
    /// whatever the struct has no field for is missing from the result.
    pub fn round_trip(self, object: &Value) -> Result<Value, TypeError> {
        match self {
            Kind::Namespace => through::<core::v1::Namespace>(object),
            Kind::ServiceAccount => through::<core::v1::ServiceAccount>(object),
            Kind::ConfigMap => through::<core::v1::ConfigMap>(object),
            Kind::Secret => through::<core::v1::Secret>(object),
            Kind::Service => through::<core::v1::Service>(object),
            Kind::Role => through::<rbac::v1::Role>(object),
            Kind::RoleBinding => through::<rbac::v1::RoleBinding>(object),
            Kind::Deployment => through::<apps::v1::Deployment>(object),
            Kind::Job => through::<batch::v1::Job>(object),
            Kind::NetworkPolicy => through::<networking::v1::NetworkPolicy>(object),
            Kind::ExternalSecret(EsoVersion::V1) => through::<eso::v1::ExternalSecret>(object),
            Kind::SecretStore(EsoVersion::V1) => through::<eso::v1::SecretStore>(object),
            Kind::ClusterSecretStore(EsoVersion::V1) => {
                through::<eso::v1::ClusterSecretStore>(object)
            }
            Kind::ExternalSecret(EsoVersion::V1beta1) => {
                through::<eso::v1beta1::ExternalSecret>(object)
            }
            Kind::SecretStore(EsoVersion::V1beta1) => through::<eso::v1beta1::SecretStore>(object),
            Kind::ClusterSecretStore(EsoVersion::V1beta1) => {
                through::<eso::v1beta1::ClusterSecretStore>(object)
            }
        }
    }

    /// The typed struct of an object of this kind, for tests and the harness
    /// to read fields without walking JSON.
    pub fn parse<T: DeserializeOwned>(object: &Value) -> Result<T, TypeError> {
        let object = Kind::of(object).map_or_else(|| object.clone(), |kind| kind.canonical(object));
        serde_path_to_error::deserialize(&object).map_err(|err| TypeError {
            path: err.path().to_string().trim_start_matches('.').to_owned(),
            message: err.into_inner().to_string(),
        })
    }
}

fn through<T: DeserializeOwned + Serialize>(object: &Value) -> Result<Value, TypeError> {
    let typed: T = Kind::parse(object)?;
    serde_json::to_value(&typed).map_err(|err| TypeError {
        path: String::new(),
        message: err.to_string(),
    })
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.api_version(), self.name())
    }
}
