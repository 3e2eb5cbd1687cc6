//! A pass-through HTTP filter for Envoy 1.40's dynamic modules: every hook
//! returns "continue" at once, no per-stream object is allocated, and no
//! callback into Envoy is made.
//!
//! **It lets every request through. It is an instrument of `cargo xtask
//! bench` (the `envoy-module-passthrough` variant), rendered only into the
//! bench's own Envoy, never into a gateway's config.**
//!
//! Why it exists: keygate's module (`crates/keygate-envoy`) measured
//! 0.89-0.90x the requests/s of Envoy's native `api_key_auth` filter, and a
//! profile put almost all of the difference outside the module's code. This
//! module is the floor under any dynamic module: what Envoy spends on
//! loading a filter per stream and calling its hooks through the C ABI. The
//! bench runs it beside the native filter and keygate's module, so each
//! run shows how much of the module's cost is Envoy's machinery and how
//! much is the module's own work.
//!
//! The hooks are those keygate's module exports (the 30
//! `envoy_dynamic_module_on_http_filter_*` names the pinned Envoy looks up,
//! and `envoy_dynamic_module_on_program_init`), with the same signatures
//! (`crates/keygate-envoy/src/filter.rs`); the ABI version string is the
//! same (`v0.2.0`, Envoy 1.40). It depends on no workspace crate: nothing
//! of keygate's goes into the floor.

#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_void};

/// `envoy_dynamic_module_type_envoy_buffer`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const c_char,
    pub length: usize,
}

/// `envoy_dynamic_module_type_envoy_http_header`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyHttpHeader {
    pub key_ptr: *const c_char,
    pub key_length: usize,
    pub value_ptr: *const c_char,
    pub value_length: usize,
}

type EnvoyPtr = *mut c_void;
type ModulePtr = *const c_void;

/// The ABI version Envoy 1.40 matches ("Dynamic module ABI version v0.2.0
/// matched.").
pub const ABI_VERSION: &std::ffi::CStr = c"v0.2.0";

/// `..._status` "continue" of every request and response hook.
const CONTINUE: u32 = 0;

/// What the config, per-route config and filter hooks hand back: Envoy
/// needs a non-null pointer, and there is nothing to point to.
static NOTHING: u8 = 0;

fn nothing() -> ModulePtr {
    (&raw const NOTHING).cast()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    ABI_VERSION.as_ptr()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    _filter_config_envoy_ptr: EnvoyPtr,
    _name: EnvoyBuffer,
    _config: EnvoyBuffer,
) -> ModulePtr {
    nothing()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(
    _filter_config_ptr: ModulePtr,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _name: EnvoyBuffer,
    _config: EnvoyBuffer,
) -> ModulePtr {
    nothing()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(
    _filter_config_ptr: ModulePtr,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    _filter_config_ptr: ModulePtr,
    _filter_envoy_ptr: EnvoyPtr,
) -> ModulePtr {
    nothing()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    _filter_envoy_ptr: EnvoyPtr,
    _filter_module_ptr: ModulePtr,
    _end_of_stream: bool,
) -> u32 {
    CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _filter_envoy_ptr: EnvoyPtr,
    _filter_module_ptr: ModulePtr,
    _end_of_stream: bool,
) -> u32 {
    CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _filter_envoy_ptr: EnvoyPtr,
    _filter_module_ptr: ModulePtr,
) -> u32 {
    CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    _filter_envoy_ptr: EnvoyPtr,
    _filter_module_ptr: ModulePtr,
    _end_of_stream: bool,
) -> u32 {
    CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _filter_envoy_ptr: EnvoyPtr,
    _filter_module_ptr: ModulePtr,
    _end_of_stream: bool,
) -> u32 {
    CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _filter_envoy_ptr: EnvoyPtr,
    _filter_module_ptr: ModulePtr,
) -> u32 {
    CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _filter_envoy_ptr: EnvoyPtr,
    _filter_module_ptr: ModulePtr,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(_filter_module_ptr: ModulePtr) {}

#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _filter_envoy_ptr: EnvoyPtr,
    _filter_module_ptr: ModulePtr,
    _callout_id: u64,
    _result: u32,
    _headers: *mut EnvoyHttpHeader,
    _headers_size: usize,
    _body_chunks: *mut EnvoyBuffer,
    _body_chunks_size: usize,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _filter_envoy_ptr: EnvoyPtr,
    _filter_module_ptr: ModulePtr,
    _stream_id: u64,
    _headers: *mut EnvoyHttpHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _filter_envoy_ptr: EnvoyPtr,
    _filter_module_ptr: ModulePtr,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _filter_envoy_ptr: EnvoyPtr,
    _filter_module_ptr: ModulePtr,
    _stream_id: u64,
    _trailers: *mut EnvoyHttpHeader,
    _trailers_size: usize,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _filter_envoy_ptr: EnvoyPtr,
    _filter_module_ptr: ModulePtr,
    _stream_id: u64,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _filter_envoy_ptr: EnvoyPtr,
    _filter_module_ptr: ModulePtr,
    _stream_id: u64,
    _reason: u32,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _filter_envoy_ptr: EnvoyPtr,
    _filter_module_ptr: ModulePtr,
    _event_id: u64,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _filter_config_envoy_ptr: EnvoyPtr,
    _filter_config_ptr: ModulePtr,
    _event_id: u64,
) {
}

#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _filter_config_envoy_ptr: EnvoyPtr,
    _filter_config_ptr: ModulePtr,
    _callout_id: u64,
    _result: u32,
    _headers: *mut EnvoyHttpHeader,
    _headers_size: usize,
    _body_chunks: *mut EnvoyBuffer,
    _body_chunks_size: usize,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_headers(
    _filter_config_envoy_ptr: EnvoyPtr,
    _filter_config_ptr: ModulePtr,
    _stream_id: u64,
    _headers: *mut EnvoyHttpHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_data(
    _filter_config_envoy_ptr: EnvoyPtr,
    _filter_config_ptr: ModulePtr,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_trailers(
    _filter_config_envoy_ptr: EnvoyPtr,
    _filter_config_ptr: ModulePtr,
    _stream_id: u64,
    _trailers: *mut EnvoyHttpHeader,
    _trailers_size: usize,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_complete(
    _filter_config_envoy_ptr: EnvoyPtr,
    _filter_config_ptr: ModulePtr,
    _stream_id: u64,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_reset(
    _filter_config_envoy_ptr: EnvoyPtr,
    _filter_config_ptr: ModulePtr,
    _stream_id: u64,
    _reason: u32,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _filter_envoy_ptr: EnvoyPtr,
    _filter_module_ptr: ModulePtr,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _filter_envoy_ptr: EnvoyPtr,
    _filter_module_ptr: ModulePtr,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_local_reply(
    _filter_envoy_ptr: EnvoyPtr,
    _filter_module_ptr: ModulePtr,
    _response_code: u32,
    _details: EnvoyBuffer,
    _reset_imminent: bool,
) -> u32 {
    CONTINUE
}
