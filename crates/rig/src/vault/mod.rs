//! Vault: the HTTP client (`client`; it knows nothing of `env.json`), the
//! setup keyrig applies (`setup`: policies, AppRoles, KV; `pki`, `identity`,
//! `environments`, `references`; `ownership`: what of a shared Vault it may
//! change), raft storage for fault tests and the audit
//! device. **Imports only `base` and `contract`.**

pub mod audit;
pub mod client;
pub mod environments;
pub mod identity;
pub mod ownership;
pub mod pki;
pub mod raft;
pub mod references;
pub mod setup;
