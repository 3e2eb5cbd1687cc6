//! keygate: validates Tanzu API-portal API keys against Vault, for Envoy
//! ext_authz (gRPC) and HTTP forward-auth gateways. See ARCHITECTURE.md for
//! where each concept lives.

pub mod backoff;
pub mod boxed_future;
pub mod cache;
pub mod config;
pub mod connections;
pub mod credentials;
pub mod decision;
pub mod ext_authz;
pub mod feed;
pub mod grpc;
pub mod http;
pub mod invalidation;
pub mod keys_file;
// Moved to keygate-config (no I/O; the fuzz targets build it alone),
// re-exported under their old paths.
pub use keygate_config::{limits, request_path, routes, segment};
pub mod metrics;
pub mod outcome;
pub mod protocol;
pub mod read_limit;
pub mod refs;
pub mod rejected;
pub mod vault;
pub mod vault_http;
pub mod watch;
