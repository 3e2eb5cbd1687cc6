//! The scenario's files as checked types, without I/O beyond reading them:
//! the API groups of the OpenAPI documents (`apis`), the Vault setup with
//! its policies rendered (`setup`, `pki`) and the one template environment
//! keyrig renders with (`templates`). rig applies them to a Vault and
//! re-exports them where they used to live (`rig::contract::scenario`,
//! `rig::vault::setup`, `rig::vault::pki`, `rig::base::templates`); the fuzz
//! targets build this crate alone.
//!
//! **No network, no processes, no async: a lower layer than rig.**

pub mod apis;
pub mod pki;
pub mod role;
pub mod setup;
pub mod templates;
