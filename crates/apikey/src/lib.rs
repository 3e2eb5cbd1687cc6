//! API keys in the Tanzu API-portal scheme, which Spring Cloud Gateway
//! implements and any gateway may adopt.
//!
//! A key is 64 characters: the first 32 are the [`Selector`], the last 32 the
//! verifier. Vault KV v2 holds, at `<mount>/<groupId>/<selector>`, a
//! [`KeyRecord`] whose `key` field is the lowercase hex SHA-256 of the
//! verifier's UTF-8 bytes. Only the selector and the hash are ever stored.
//!
//! This crate does no I/O: it is shared by keygate (which reads records from
//! Vault) and the harness (which writes them).

mod key;
mod record;

pub use key::{ApiKey, KEY_LEN, ParseError, SELECTOR_LEN, Selector, VerifierHash};
pub use record::{Decision, KeyRecord, RecordError, check_parts, storage_path};
