//! Processes: pinned tools (`tools`, with Debian packages in `debian`), the
//! `Supervisor` every started process runs under, and the components it
//! starts as values (`components`, `dev_tls_vault`; `echo` is the upstream's
//! server), and `envoy_module`: Envoy with keygate's dynamic module, after
//! checking the module was built for that Envoy.
//! **Imports only `base`, `contract` and `vault`.**

pub mod components;
pub mod debian;
pub mod dev_tls_vault;
pub mod echo;
pub mod envoy_module;
pub mod supervisor;
pub mod tools;
