//! keyrig's harness library, in layers. Each folder imports only the folders
//! listed before it (a workspace test, `crates/rig/tests/layers.rs`, holds
//! this and that no file imports a file that imports it back):
//!
//! - `base`: paths, the run directory, redaction, waits, progress, ports,
//!   templates: what every layer uses and that knows nothing of keyrig's
//!   domain;
//! - `contract`: what a run and its tests agree on, as data: env.json, the
//!   scenario files, the delivery modes, the results table and reports;
//! - `vault`: the Vault client (it knows nothing of env.json) and the setup
//!   keyrig applies to a Vault;
//! - `process`: pinned tools and the Supervisor every started process runs
//!   under;
//! - `local`: the local profile: gateways, credential delivery, keys-file
//!   mode, TLS, diagnostics and `up`.
//!
//! `xtask` is a thin CLI over it; the Kubernetes profiles (`rig-k8s`) and the
//! bench (`rig-bench`) are crates over it; the e2e tests use `contract` and
//! `vault`.

pub mod base;
pub mod contract;
pub mod local;
pub mod process;
pub mod vault;

/// A progress line for people: `[keyrig] ...` on stderr, so stdout stays
/// free for what a command is asked to print (e.g. `doctor`'s report).
/// Registered secrets are redacted, and the line prints above any spinner.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::base::progress::say(&format!($($arg)*))
    };
}
