//! External Secrets Operator resources: `ExternalSecret`, `SecretStore` and
//! `ClusterSecretStore` of the group `external-secrets.io`.
//!
//! [`v1`] is what ESO serves (since v0.17.0 it serves nothing else).
//! [`v1beta1`] has the same fields and exists for reading older manifests,
//! such as the API7 chart's examples: `check_object` accepts them, and
//! [`crate::Kind::deprecation`] says the API server will refuse them.
//!
//! The fields follow ESO's Go types (`apis/externalsecrets/v1/*_types.go`).
//! What keyrig uses is typed down to the last string, enums included, so a
//! misspelt field or value fails the lossless check. Provider blocks keyrig
//! does not use (AWS, Azure, ...) and rarely used sub-trees (templates'
//! `templateFrom`, `syncWindows`, generators) are kept as JSON values: their
//! presence is checked, their insides are not.
//!
//! Every field is optional on the wire unless ESO's CRD requires it, and
//! `None` is never serialized, so an object reads back as written.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `spec.secretStoreRef`: which store an ExternalSecret reads from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Defaults to `SecretStore`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<SecretStoreKind>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SecretStoreKind {
    SecretStore,
    ClusterSecretStore,
}

/// `spec.target.creationPolicy`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CreationPolicy {
    /// ESO creates the Secret and sets itself as its owner.
    Owner,
    /// ESO creates the Secret and leaves it behind when the ExternalSecret goes.
    Orphan,
    /// ESO merges its keys into a Secret that must exist.
    Merge,
    /// ESO creates no Secret.
    None,
    /// ESO creates the Secret if it is missing and merges its keys into it
    /// if it exists, without an ownerReference; the Secret stays when the
    /// ExternalSecret goes. (ESO's `CreatePolicyCreateOrMerge`; the CRD's
    /// enum is `Owner;Orphan;Merge;None;CreateOrMerge` in
    /// `apis/externalsecrets/v1/externalsecret_types.go`, v2.9.0.)
    CreateOrMerge,
}

/// `nullBytePolicy` of a `remoteRef` or `find`: what ESO does with fetched
/// data that contains NUL bytes. ESO's `ExternalSecretNullBytePolicy`, enum
/// `Ignore;Fail` (`apis/externalsecrets/v1/externalsecret_types.go`, v2.9.0).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum NullBytePolicy {
    /// The data may contain NUL bytes (ESO's default).
    Ignore,
    /// Reconciliation fails if the data contains a NUL byte.
    Fail,
}

/// `spec.target.deletionPolicy`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    Delete,
    Merge,
    Retain,
}

/// `spec.refreshPolicy`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RefreshPolicy {
    CreatedOnce,
    Periodic,
    OnChange,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MetadataPolicy {
    None,
    Fetch,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConversionStrategy {
    Default,
    Unicode,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DecodingStrategy {
    Auto,
    Base64,
    #[serde(rename = "Base64URL")]
    Base64Url,
    None,
}

/// `spec.target`: the Secret ESO writes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretTarget {
    /// Defaults to the ExternalSecret's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Defaults to `Owner`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_policy: Option<CreationPolicy>,
    /// Defaults to `Retain`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<ExternalSecretTemplate>,
    /// A custom resource to write instead of a Secret (generic targets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

/// `spec.target.template`: a blueprint for the Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretTemplate {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merge_policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_from: Option<Vec<Value>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// One `spec.data[]` entry: Secret key <- remote value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretData {
    /// The key in the Kubernetes Secret.
    pub secret_key: String,
    pub remote_ref: RemoteRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<Value>,
}

/// `remoteRef`: where in the provider a value lives.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteRef {
    /// For Vault: the secret's path below the store's mount.
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_policy: Option<MetadataPolicy>,
    /// For Vault: one field of the secret's data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversion_strategy: Option<ConversionStrategy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoding_strategy: Option<DecodingStrategy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub null_byte_policy: Option<NullBytePolicy>,
}

/// One `spec.dataFrom[]` entry: many keys from one remote secret or a search.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretDataFrom {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extract: Option<RemoteRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub find: Option<ExternalSecretFind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretFind {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<FindName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversion_strategy: Option<ConversionStrategy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoding_strategy: Option<DecodingStrategy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub null_byte_policy: Option<NullBytePolicy>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct FindName {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regexp: Option<String>,
}

/// `spec.provider`: exactly one provider is set. Vault is typed; the others
/// are named so that a misspelt provider is reported, and kept as JSON.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreProvider {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultProvider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub azurekv: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub akeyless: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitwardensecretsmanager: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ovh: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gcpsm: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oracle: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ibm: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub yandexcertificatemanager: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub yandexlockbox: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub github: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gitlab: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onepassword: Option<Value>,
    #[serde(rename = "onepasswordSDK", skip_serializing_if = "Option::is_none")]
    pub onepassword_sdk: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fake: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub senhasegura: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaleway: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub doppler: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previder: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onboardbase: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepersecurity: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conjur: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delinea: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secretserver: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chef: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pulumi: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fortanix: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passworddepot: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passbolt: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dvls: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub infisical: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beyondtrust: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beyondtrustworkloadcredentials: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloudrusm: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volcengine: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ngrok: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub barbican: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nebiusmysterybox: Option<Value>,
}

/// `spec.provider.vault`: HashiCorp Vault or OpenBao, KV v1 or v2.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultProvider {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<VaultAuth>,
    /// e.g. `http://openbao.openbao.svc:8200`.
    pub server: String,
    /// The KV mount, e.g. `secret`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Defaults to `v2`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<VaultKvVersion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// PEM bundle, base64-encoded as Go's `[]byte` is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<VaultClientTls>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_provider: Option<CaProvider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_your_writes: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_inconsistent: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_and_set: Option<Value>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum VaultKvVersion {
    #[serde(rename = "v1")]
    V1,
    #[serde(rename = "v2")]
    V2,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultClientTls {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_secret_ref: Option<SecretKeySelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_secret_ref: Option<SecretKeySelector>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaProvider {
    /// `Secret` or `ConfigMap`.
    #[serde(rename = "type")]
    pub type_: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `spec.provider.vault.auth`: one method. Token, AppRole and Kubernetes are
/// typed (keyrig uses the last two); the others are kept as JSON.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultAuth {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeySelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_role: Option<VaultAppRole>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<VaultKubernetesAuth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ldap: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iam: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_pass: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gcp: Option<Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultAppRole {
    /// The auth mount; defaults to `approle`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_ref: Option<SecretKeySelector>,
    pub secret_ref: SecretKeySelector,
}

/// Kubernetes auth: ESO logs in with a token of a ServiceAccount (requested
/// with TokenRequest) or one stored in a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultKubernetesAuth {
    /// The auth mount; defaults to `kubernetes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account_ref: Option<ServiceAccountSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeySelector>,
    /// The Vault role to log in as.
    pub role: String,
}

/// A key of a Secret; `namespace` only in ClusterSecretStores.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A ServiceAccount; `namespace` only in ClusterSecretStores.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountSelector {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audiences: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetrySettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<String>,
}

/// `spec.conditions[]` of a ClusterSecretStore: which namespaces may use it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSecretStoreCondition {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace_regexes: Option<Vec<String>>,
}

/// The root types of one API version. `kube::CustomResource` makes one root
/// type per spec struct, so each version gets its own spec structs; the types
/// below them are shared, as the two versions' schemas are the same.
///
/// `$version` is a `tt` rather than a `literal` so that the derive sees a
/// plain string literal in `#[kube(version = ...)]`.
#[rustfmt::skip] // rustfmt re-indents attributes in macro bodies on every run.
macro_rules! eso_version {
    ($version:tt) => {
        use kube::CustomResource;
        use schemars::JsonSchema;
        use serde::{Deserialize, Serialize};

        use super::*;

        /// `spec` of an ExternalSecret: which store, which remote values, and
        /// the Secret to write.
        #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
        #[kube(
            group = "external-secrets.io",
            version = $version,
            kind = "ExternalSecret",
            namespaced,
            status = "serde_json::Value",
            shortname = "es"
        )]
        #[serde(rename_all = "camelCase")]
        pub struct ExternalSecretSpec {
            #[serde(skip_serializing_if = "Option::is_none")]
            pub secret_store_ref: Option<SecretStoreRef>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub target: Option<ExternalSecretTarget>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub refresh_policy: Option<RefreshPolicy>,
            /// A Go duration (`1h`, `10s`); ESO's default is `1h`, `0` syncs once.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub refresh_interval: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub sync_windows: Option<serde_json::Value>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub data: Option<Vec<ExternalSecretData>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub data_from: Option<Vec<ExternalSecretDataFrom>>,
        }

        /// `spec` of a SecretStore.
        #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
        #[kube(
            group = "external-secrets.io",
            version = $version,
            kind = "SecretStore",
            namespaced,
            status = "serde_json::Value",
            shortname = "ss"
        )]
        #[serde(rename_all = "camelCase")]
        pub struct SecretStoreSpec {
            #[serde(skip_serializing_if = "Option::is_none")]
            pub controller: Option<String>,
            pub provider: SecretStoreProvider,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub retry_settings: Option<RetrySettings>,
            /// Seconds between store validations; 0 is the controller's default.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub refresh_interval: Option<i64>,
            /// Only meaningful in a ClusterSecretStore.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub conditions: Option<Vec<ClusterSecretStoreCondition>>,
        }

        /// `spec` of a ClusterSecretStore: a SecretStore's, for every
        /// namespace its `conditions` admit.
        #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
        #[kube(
            group = "external-secrets.io",
            version = $version,
            kind = "ClusterSecretStore",
            status = "serde_json::Value",
            shortname = "css"
        )]
        #[serde(rename_all = "camelCase")]
        pub struct ClusterSecretStoreSpec {
            #[serde(skip_serializing_if = "Option::is_none")]
            pub controller: Option<String>,
            pub provider: SecretStoreProvider,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub retry_settings: Option<RetrySettings>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub refresh_interval: Option<i64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub conditions: Option<Vec<ClusterSecretStoreCondition>>,
        }
    };
}

/// `external-secrets.io/v1`: what ESO serves.
pub mod v1 {
    eso_version!("v1");
}

/// `external-secrets.io/v1beta1`: no longer served since ESO v0.17.0; read
/// for older manifests (the API7 chart's examples use it).
pub mod v1beta1 {
    eso_version!("v1beta1");
}
