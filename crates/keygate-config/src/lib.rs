//! keygate's configuration and routing rules, without keygate's server
//! stack: the config file's types and parsing (`config`, `limits`,
//! `reference`: the syntax of secret references), the request path ->
//! API group routing from OpenAPI documents (`routes`, `request_path`,
//! `segment`) and a forward-auth request's parsing (`forward_auth`).
//! Only serde, `http`'s types and small crates: the fuzz targets in `fuzz/`
//! build this crate, not keygate (its tonic, axum, hyper and rustls), and
//! keygate re-exports each module under its old path.

pub mod config;
pub mod forward_auth;
pub mod limits;
pub mod reference;
pub mod request_path;
pub mod routes;
pub mod segment;
