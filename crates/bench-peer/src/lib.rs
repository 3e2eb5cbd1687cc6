//! The bench's peers of the gateways under test, in one small binary
//! (`keyrig-bench-peer`) that `cargo xtask bench` builds optimized beside
//! the keygate it measures:
//!
//! - `load-generator`: HTTP/1.1 keep-alive connections, one request in
//!   flight on each, bounded by a request count and a time window, latencies
//!   into an HDR histogram; closed loop (every connection as fast as it
//!   goes) or open loop at a fixed rate (latencies from when each request
//!   was due, so a stall is in the tail); driven by `POST /burst`
//!   ([`protocol`]).
//! - `upstream`: answers every request 200 with a two-byte body.
//!
//! Why a binary of its own: both used to run inside the debug xtask (and
//! the upstream built a JSON description of every request), sharing the
//! two cores with Envoy, so on this machine they rather than Envoy set the
//! pace, and every ratio came out flattened toward 1 (Envoy without auth
//! measured at 1.01x the native filter). Optimized and doing nothing
//! else, they leave Envoy the bottleneck the comparison is about.
//!
//! No rig here: the crate builds in release mode from what keygate
//! already compiles (tokio, hyper, reqwest, axum, serde) plus hdrhistogram.

pub mod load;
pub mod protocol;
pub mod upstream;
