//! Processes: pinned tools (`tools`, with Debian packages in `debian`), the
//! `Supervisor` every started process runs under, and the components it
//! starts as values (`components`, `dev_tls_vault`; `echo` is the upstream's
//! server).
//! **Imports only `base`, `contract` and `vault`.**

pub mod components;
pub mod debian;
pub mod dev_tls_vault;
pub mod echo;
pub mod supervisor;
pub mod tools;
