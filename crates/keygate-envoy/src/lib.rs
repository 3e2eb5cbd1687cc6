//! keygate inside Envoy: an HTTP filter for Envoy 1.40's dynamic modules
//! (`DynamicModuleFilter`) that validates Tanzu API-portal keys on Envoy's
//! worker threads from a table of what keygate approved, asks keygate (an
//! HTTP callout to its forward-auth endpoint) on a miss, and follows
//! keygate's invalidation feed so a revoked key is refused as soon as
//! keygate drops it. keygate stays the only Vault client.
//!
//! See README.md for loading it into Envoy and what was learnt about the
//! ABI. Modules, each over the ones before it:
//!
//! - `config`: the filter and per-route JSON configs;
//! - `table`: (group, selector) -> approved verifier hash and owner;
//! - `callout`: the forward-auth request and what keygate's answer means;
//! - `decide`: the decision for one request, from the table or keygate;
//! - `invalidations`: the feed follower thread;
//! - `build_info`: the ABI / Envoy version the build is for;
//! - `abi`: the raw `extern "C"` declarations;
//! - `pin`: keeping the library loaded in Envoy's process;
//! - `filter`: the hooks Envoy calls.
//!
//! In the unit tests, `filter`'s hooks run against a scripted host
//! (`filter/tests.rs`, which defines the callbacks Envoy's process
//! defines); the integration test in `crates/rig/tests/keygate_envoy.rs`
//! runs them inside the pinned Envoy.

pub mod build_info;
pub mod callout;
pub mod config;
pub mod decide;
pub mod invalidations;
pub mod table;

mod abi;
mod filter;
mod pin;
