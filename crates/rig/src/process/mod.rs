//! Processes: pinned tools (`tools`, with Debian packages in `debian`), the
//! `Supervisor` every started process runs under, and the echo upstream.
//! **Imports only `base`, `contract` and `vault`.**

pub mod debian;
pub mod dev_tls_vault;
pub mod echo;
pub mod supervisor;
pub mod tools;
