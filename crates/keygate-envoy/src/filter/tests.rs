//! The hooks driven by a scripted host: the `envoy_dynamic_module_callback_*`
//! functions Envoy's process defines, defined here for the test binary,
//! each doing what Envoy 1.40's does for the calls the module makes
//! (`abi_impl.cc`, `filter.cc`), including calling back into the module from
//! inside, where Envoy's code allows it: a callout its async client
//! completes inside `send` runs the done-hook inside `http_callout`, which
//! then returns "cannot create request"; a local reply that ends the stream
//! runs the destroy hook inside `send_response`. (The pinned 1.40.0 was not
//! seen doing either: a cluster without a host refuses the callout without
//! the done-hook, and a refused request's filter is destroyed after the
//! hook. A host that does both is the one the module must survive.)
//!
//! The pinned Envoy runs the same hooks in `crates/rig/tests/keygate_envoy.rs`;
//! this host is for what a real Envoy cannot show: when the module frees a
//! stream's filter, and whether it calls Envoy for a stream Envoy ended.

use std::cell::{Cell, RefCell};
use std::ffi::c_char;

use apikey::ApiKey;

use super::*;

/// Filters freed on this test's thread (`Filter`'s test-only `Drop`).
fn freed() -> usize {
    FREED.with(Cell::get)
}

type Headers = Vec<(Vec<u8>, Vec<u8>)>;

/// One request through the host, standing in for Envoy's filter object:
/// the module gets a pointer to it as `filter_envoy_ptr`.
struct Stream {
    module: Cell<FilterModulePtr>,
    route: PerRouteConfigModulePtr,
    headers: RefCell<Headers>,
    /// How the host answers a callout: `Some(status)`: at once, inside
    /// `http_callout`, with the router's own reply (no keygate reason);
    /// `None`: later (the test calls the done-hook).
    inline_answer: Option<u32>,
    callouts: Cell<u32>,
    reply: RefCell<Option<(u32, Headers)>>,
    continued: Cell<u32>,
    ended: Cell<bool>,
    /// Filters freed on the thread right after the destroy hook returned
    /// inside `send_response`.
    freed_in_reply: Cell<Option<usize>>,
    /// Calls the module made for this stream after Envoy ended it.
    after_end: RefCell<Vec<&'static str>>,
}

impl Stream {
    fn new(route: PerRouteConfigModulePtr, headers: &[(&str, &str)]) -> Box<Self> {
        Box::new(Self {
            module: Cell::new(std::ptr::null()),
            route,
            headers: RefCell::new(
                headers
                    .iter()
                    .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                    .collect(),
            ),
            inline_answer: None,
            callouts: Cell::new(0),
            reply: RefCell::new(None),
            continued: Cell::new(0),
            ended: Cell::new(false),
            freed_in_reply: Cell::new(None),
            after_end: RefCell::new(Vec::new()),
        })
    }

    fn fe(&self) -> FilterEnvoyPtr {
        (self as *const Self).cast_mut().cast()
    }

    /// The module's filter for this stream, as Envoy makes it.
    fn start(&self, config: FilterConfigModulePtr) {
        self.module
            .set(envoy_dynamic_module_on_http_filter_new(config, self.fe()));
    }

    fn request_headers(&self) -> u32 {
        envoy_dynamic_module_on_http_filter_request_headers(self.fe(), self.module.get(), true)
    }

    /// keygate's answer to the callout in flight, as Envoy delivers it later.
    fn callout_done(&self, headers: &[(&str, &str)]) {
        let mut raw: Vec<EnvoyHttpHeader> = headers
            .iter()
            .map(|(k, v)| envoy_header(k.as_bytes(), v.as_bytes()))
            .collect();
        envoy_dynamic_module_on_http_filter_http_callout_done(
            self.fe(),
            self.module.get(),
            1,
            CALLOUT_SUCCESS,
            raw.as_mut_ptr(),
            raw.len(),
            std::ptr::null_mut(),
            0,
        );
    }

    /// Envoy's end of a stream the module did not end itself.
    fn finish(&self) {
        if !self.ended.replace(true) {
            envoy_dynamic_module_on_http_filter_destroy(self.module.get());
        }
    }

    fn header(&self, name: &str) -> Vec<String> {
        self.headers
            .borrow()
            .iter()
            .filter(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
            .collect()
    }

    fn reply_reason(&self) -> Option<(u32, String)> {
        let reply = self.reply.borrow();
        let (status, headers) = reply.as_ref()?;
        let reason = headers
            .iter()
            .find(|(k, _)| k == b"x-keyrig-reason")
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
            .unwrap_or_default();
        Some((*status, reason))
    }
}

fn envoy_header(key: &[u8], value: &[u8]) -> EnvoyHttpHeader {
    EnvoyHttpHeader {
        key_ptr: key.as_ptr().cast(),
        key_length: key.len(),
        value_ptr: value.as_ptr().cast(),
        value_length: value.len(),
    }
}

/// The stream behind a pointer the module hands back, noting a call for a
/// stream Envoy ended (Envoy's own pointers for it are gone by then).
fn stream<'a>(fe: FilterEnvoyPtr, call: &'static str) -> &'a Stream {
    // SAFETY: every `fe` the module gets is a live `Stream` of a test.
    let stream = unsafe { &*fe.cast::<Stream>() };
    if stream.ended.get() {
        stream.after_end.borrow_mut().push(call);
    }
    stream
}

/// # Safety
/// `buffer` points to `length` readable bytes (or is null).
unsafe fn module_bytes<'a>(ptr: *const c_char, length: usize) -> &'a [u8] {
    if ptr.is_null() || length == 0 {
        return &[];
    }
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts(ptr.cast(), length) }
}

// ------------------------------------------------- the host's callbacks

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_log(_level: u32, _message: ModuleBuffer) {}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_log_enabled(_level: u32) -> bool {
    false
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_is_validation_mode() -> bool {
    false
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_get_most_specific_route_config(
    fe: FilterEnvoyPtr,
) -> PerRouteConfigModulePtr {
    stream(fe, "get_most_specific_route_config").route
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_http_get_headers_size(
    fe: FilterEnvoyPtr,
    _header_type: u32,
) -> usize {
    stream(fe, "get_headers_size").headers.borrow().len()
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_http_get_headers(
    fe: FilterEnvoyPtr,
    _header_type: u32,
    result_headers: *mut EnvoyHttpHeader,
) -> bool {
    let stream = stream(fe, "get_headers");
    for (n, (key, value)) in stream.headers.borrow().iter().enumerate() {
        // SAFETY: the module passes room for `get_headers_size` entries;
        // the bytes live in the stream until a setter (as in Envoy).
        unsafe { *result_headers.add(n) = envoy_header(key, value) };
    }
    true
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_http_get_header(
    fe: FilterEnvoyPtr,
    _header_type: u32,
    key: ModuleBuffer,
    result: *mut EnvoyBuffer,
    index: usize,
    optional_size: *mut usize,
) -> bool {
    let stream = stream(fe, "get_header");
    // SAFETY: the module's buffer, valid for the call.
    let key = unsafe { module_bytes(key.ptr, key.length) };
    let headers = stream.headers.borrow();
    let values: Vec<&Vec<u8>> = headers
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect();
    if !optional_size.is_null() {
        // SAFETY: the module's out-pointer.
        unsafe { *optional_size = values.len() };
    }
    let found = values.get(index).map(|value| EnvoyBuffer {
        ptr: value.as_ptr().cast(),
        length: value.len(),
    });
    // SAFETY: the module's out-pointer.
    unsafe { *result = found.unwrap_or(EnvoyBuffer::NULL) };
    found.is_some()
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_http_add_header(
    fe: FilterEnvoyPtr,
    _header_type: u32,
    key: ModuleBuffer,
    value: ModuleBuffer,
) -> bool {
    let stream = stream(fe, "add_header");
    // Envoy 1.40 refuses an empty or null value.
    if value.ptr.is_null() || value.length == 0 {
        return false;
    }
    // SAFETY: the module's buffers, valid for the call.
    let (key, value) = unsafe {
        (
            module_bytes(key.ptr, key.length),
            module_bytes(value.ptr, value.length),
        )
    };
    stream
        .headers
        .borrow_mut()
        .push((key.to_vec(), value.to_vec()));
    true
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_http_set_header(
    fe: FilterEnvoyPtr,
    _header_type: u32,
    key: ModuleBuffer,
    value: ModuleBuffer,
) -> bool {
    let stream = stream(fe, "set_header");
    // SAFETY: the module's buffers, valid for the call.
    let (key, value) = unsafe {
        (
            module_bytes(key.ptr, key.length),
            module_bytes(value.ptr, value.length),
        )
    };
    let mut headers = stream.headers.borrow_mut();
    headers.retain(|(k, _)| k != key);
    // Envoy 1.40 removes the header for a null or empty value.
    if !value.is_empty() {
        headers.push((key.to_vec(), value.to_vec()));
    }
    true
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_http_send_response(
    fe: FilterEnvoyPtr,
    status_code: u32,
    headers_vector: *mut ModuleHttpHeader,
    headers_vector_size: usize,
    _body: ModuleBuffer,
    _details: ModuleBuffer,
) {
    let stream = stream(fe, "send_response");
    // SAFETY: the module's array of `headers_vector_size`, valid for the call.
    let headers = unsafe { std::slice::from_raw_parts(headers_vector, headers_vector_size) }
        .iter()
        // SAFETY: as above.
        .map(|h| unsafe {
            (
                module_bytes(h.key_ptr, h.key_length).to_vec(),
                module_bytes(h.value_ptr, h.value_length).to_vec(),
            )
        })
        .collect();
    stream.reply.replace(Some((status_code, headers)));
    // The reply ends a request whose headers ended it (a GET): Envoy
    // destroys the stream's filters there and then.
    if !stream.ended.replace(true) {
        envoy_dynamic_module_on_http_filter_destroy(stream.module.get());
        stream.freed_in_reply.set(Some(freed()));
    }
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_http_filter_http_callout(
    fe: FilterEnvoyPtr,
    callout_id_out: *mut u64,
    _cluster_name: ModuleBuffer,
    _headers: *mut ModuleHttpHeader,
    _headers_size: usize,
    _body: ModuleBuffer,
    _timeout_milliseconds: u64,
) -> u32 {
    let stream = stream(fe, "http_callout");
    stream.callouts.set(stream.callouts.get() + 1);
    match stream.inline_answer {
        Some(status) => {
            // Envoy's router answers at once; the done-hook runs inside
            // this call, and `send` then reports no request.
            let status = status.to_string();
            let mut raw = [
                envoy_header(b":status", status.as_bytes()),
                envoy_header(b"content-type", b"text/plain"),
            ];
            envoy_dynamic_module_on_http_filter_http_callout_done(
                fe,
                stream.module.get(),
                1,
                CALLOUT_SUCCESS,
                raw.as_mut_ptr(),
                raw.len(),
                std::ptr::null_mut(),
                0,
            );
            CALLOUT_INIT_CANNOT_CREATE_REQUEST
        }
        None => {
            // SAFETY: the module's out-pointer.
            unsafe { *callout_id_out = 1 };
            CALLOUT_INIT_SUCCESS
        }
    }
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_http_filter_continue_decoding(fe: FilterEnvoyPtr) {
    let stream = stream(fe, "continue_decoding");
    stream.continued.set(stream.continued.get() + 1);
}

// ------------------------------------------------------------ the tests

/// The module's filter config and one route's config, destroyed on drop
/// as Envoy does at shutdown.
struct Configs {
    filter: FilterConfigModulePtr,
    route: PerRouteConfigModulePtr,
}

impl Configs {
    fn new(filter: &str, route: &str) -> Self {
        let name = EnvoyBuffer::NULL;
        let buffer = |text: &str| EnvoyBuffer {
            ptr: text.as_ptr().cast(),
            length: text.len(),
        };
        let filter = envoy_dynamic_module_on_http_filter_config_new(
            std::ptr::null_mut(),
            name,
            buffer(filter),
        );
        assert!(!filter.is_null(), "the filter config was refused");
        let route = envoy_dynamic_module_on_http_filter_per_route_config_new(name, buffer(route));
        assert!(!route.is_null(), "the route config was refused");
        Self { filter, route }
    }
}

impl Drop for Configs {
    fn drop(&mut self) {
        envoy_dynamic_module_on_http_filter_per_route_config_destroy(self.route);
        envoy_dynamic_module_on_http_filter_config_destroy(self.filter);
    }
}

const GROUP: &str = "g";

fn keygate_allows(owner: &str) -> Vec<(&str, &str)> {
    vec![
        (":status", "200"),
        ("x-keyrig-owner", owner),
        ("x-keyrig-group", GROUP),
    ]
}

#[test]
fn a_denial_inside_an_answer_envoy_gave_at_once_frees_the_filter_after_its_hooks() {
    let configs = Configs::new(r#"{"cluster":"keygate_http"}"#, r#"{"group":"g"}"#);
    let key = ApiKey::generate();
    let mut stream = Stream::new(
        configs.route,
        &[
            (":path", "/g/x"),
            (":method", "GET"),
            ("x-api-key", key.expose()),
        ],
    );
    // Envoy's async client answers the callout inside `http_callout`, with
    // its router's own 503 (no keygate reason).
    stream.inline_answer = Some(503);
    let before = freed();
    stream.start(configs.filter);

    assert_eq!(stream.request_headers(), REQUEST_HEADERS_STOP_ITERATION);

    assert_eq!(stream.callouts.get(), 1);
    assert_eq!(
        stream.reply_reason(),
        Some((503, reason::KEYGATE_UNAVAILABLE.to_owned()))
    );
    // The reply ended the stream inside the done-hook, itself inside the
    // request-headers hook: the filter was still in use there...
    assert_eq!(stream.freed_in_reply.get(), Some(before));
    // ...and freed once both hooks had left it.
    assert_eq!(freed(), before + 1);
    assert_eq!(*stream.after_end.borrow(), Vec::<&str>::new());
    assert_eq!(stream.continued.get(), 0);
}

#[test]
fn an_approved_answer_resurrected_inside_the_headers_hook_continues_by_its_return_value() {
    // Positive TTL 0: every request asks keygate; resurrect TTL: a minute.
    let configs = Configs::new(
        r#"{"cluster":"keygate_http","positive_ttl_ms":0,"resurrect_ttl_ms":60000}"#,
        r#"{"group":"g"}"#,
    );
    let key = ApiKey::generate();
    let request = [
        (":path", "/g/x"),
        (":method", "GET"),
        ("x-api-key", key.expose()),
        // A client's own identity headers, which the upstream must not see.
        ("x-keyrig-owner", "mallory"),
        ("x-keyrig-group", "admin"),
    ];

    // First: keygate answers later, approving the key.
    let first = Stream::new(configs.route, &request);
    first.start(configs.filter);
    assert_eq!(
        first.request_headers(),
        REQUEST_HEADERS_STOP_ALL_ITERATION_AND_WATERMARK
    );
    first.callout_done(&keygate_allows("alice"));
    assert_eq!(
        first.continued.get(),
        1,
        "a later answer resumes the request"
    );
    assert_eq!(first.header("x-keyrig-owner"), ["alice"]);
    assert_eq!(first.header("x-keyrig-group"), [GROUP]);
    first.finish();

    // Then Envoy answers a callout inside `http_callout` with its own 503,
    // and the approved answer is resurrected inside the headers hook.
    let mut second = Stream::new(configs.route, &request);
    second.inline_answer = Some(503);
    second.start(configs.filter);
    assert_eq!(second.request_headers(), REQUEST_HEADERS_CONTINUE);
    assert_eq!(second.callouts.get(), 1);
    assert_eq!(
        second.continued.get(),
        0,
        "inside the headers hook its return value continues the request"
    );
    assert_eq!(second.reply_reason(), None);
    assert_eq!(second.header("x-keyrig-owner"), ["alice"]);
    assert_eq!(second.header("x-keyrig-group"), [GROUP]);
    let before = freed();
    second.finish();
    assert_eq!(freed(), before + 1);
    assert_eq!(*second.after_end.borrow(), Vec::<&str>::new());
}

#[test]
fn an_owner_less_key_reaches_the_upstream_without_an_owner_header() {
    let configs = Configs::new(r#"{"cluster":"keygate_http"}"#, r#"{"group":"g"}"#);
    let key = ApiKey::generate();
    let stream = Stream::new(
        configs.route,
        &[
            (":path", "/g/x"),
            (":method", "GET"),
            ("x-api-key", key.expose()),
            ("x-keyrig-owner", "mallory"),
        ],
    );
    stream.start(configs.filter);
    stream.request_headers();
    stream.callout_done(&keygate_allows(""));
    assert_eq!(stream.continued.get(), 1);
    assert_eq!(stream.header("x-keyrig-owner"), Vec::<String>::new());
    assert_eq!(stream.header("x-keyrig-group"), [GROUP]);
    stream.finish();
}

/// An upstream that reads headers CGI-style (PHP, WSGI, Rack) takes
/// `x_keyrig_owner` for `x-keyrig-owner`: an Envoy that passes names with
/// underscores (its default) must not carry the client's to it, least of
/// all for a key without an owner, where no header of the module's own
/// stands beside it.
#[test]
fn identity_headers_spelled_with_underscores_never_reach_the_upstream() {
    let configs = Configs::new(r#"{"cluster":"keygate_http"}"#, r#"{"group":"g"}"#);
    let key = ApiKey::generate();
    let forged = [
        "x_keyrig_owner",
        "x-keyrig_owner",
        "x_keyrig-owner",
        "x_keyrig_group",
        "x-keyrig_group",
        "x_keyrig-group",
    ];
    let mut headers = vec![
        (":path", "/g/x"),
        (":method", "GET"),
        ("x-api-key", key.expose()),
    ];
    headers.extend(forged.iter().map(|name| (*name, "mallory")));
    // Not identity headers, and left alone.
    headers.extend([("x_keyrig_owners", "kept"), ("x_api_key", "kept")]);
    let stream = Stream::new(configs.route, &headers);
    stream.start(configs.filter);
    stream.request_headers();
    stream.callout_done(&keygate_allows(""));
    assert_eq!(stream.continued.get(), 1);
    for name in forged {
        assert_eq!(stream.header(name), Vec::<String>::new(), "{name}");
    }
    assert_eq!(stream.header("x-keyrig-owner"), Vec::<String>::new());
    assert_eq!(stream.header("x-keyrig-group"), [GROUP]);
    assert_eq!(stream.header("x_keyrig_owners"), ["kept"]);
    assert_eq!(stream.header("x_api_key"), ["kept"]);
    stream.finish();
}

#[test]
fn a_stream_without_a_filter_is_refused() {
    let configs = Configs::new(r#"{"cluster":"keygate_http"}"#, r#"{"group":"g"}"#);
    let key = ApiKey::generate();
    let stream = Stream::new(configs.route, &[("x-api-key", key.expose())]);
    // `filter_new` returned null (Envoy does not check): no filter to
    // decide with, so the request is refused, never let through.
    assert_eq!(stream.request_headers(), REQUEST_HEADERS_STOP_ITERATION);
    assert_eq!(
        stream.reply_reason(),
        Some((503, reason::MODULE_ERROR.to_owned()))
    );
}

/// A per-route config under the filter's name that the module did not
/// make (another module's, named in the route's `typed_per_filter_config`)
/// is never read as the module's: the request is refused, 503
/// `module-error`, and keygate is not asked. Here it is a `RouteConfig`
/// the module would take for one of its own if it read it.
#[test]
fn a_per_route_config_the_module_did_not_make_is_refused_unread() {
    let configs = Configs::new(r#"{"cluster":"keygate_http"}"#, r#"{"group":"g"}"#);
    let foreign = Box::new(RouteConfig::parse(br#"{"group":"g"}"#).unwrap());
    let key = ApiKey::generate();
    let request = [
        (":path", "/g/x"),
        (":method", "GET"),
        ("x-api-key", key.expose()),
    ];
    let stream = Stream::new(std::ptr::from_ref(&*foreign).cast(), &request);
    stream.start(configs.filter);
    assert_eq!(stream.request_headers(), REQUEST_HEADERS_STOP_ITERATION);
    assert_eq!(stream.callouts.get(), 0, "keygate was asked");
    assert_eq!(
        stream.reply_reason(),
        Some((503, reason::MODULE_ERROR.to_owned()))
    );
    assert_eq!(*stream.after_end.borrow(), Vec::<&str>::new());

    // The module's own per-route config on the same filter config asks.
    let own = Stream::new(configs.route, &request);
    own.start(configs.filter);
    assert_eq!(
        own.request_headers(),
        REQUEST_HEADERS_STOP_ALL_ITERATION_AND_WATERMARK
    );
    assert_eq!(own.callouts.get(), 1);
    own.finish();
}

/// The module's per-route configs are known from their new hook to their
/// destroy hook.
#[test]
fn per_route_configs_are_the_modules_from_new_to_destroy() {
    let text = r#"{"group":"g"}"#;
    let route = envoy_dynamic_module_on_http_filter_per_route_config_new(
        EnvoyBuffer::NULL,
        EnvoyBuffer {
            ptr: text.as_ptr().cast(),
            length: text.len(),
        },
    );
    assert!(!route.is_null());
    assert!(is_our_route(route));
    envoy_dynamic_module_on_http_filter_per_route_config_destroy(route);
    assert!(!is_our_route(route));
}

/// Program init answers the ABI version and has tried to pin the library
/// (here the test binary itself, an executable, which no `dlopen` names:
/// the pin's effect is shown on a shared object in `pin`'s tests and inside
/// Envoy in `crates/rig/tests/keygate_envoy.rs`).
#[test]
fn program_init_answers_the_abi_version_and_pins_the_library() {
    let version = envoy_dynamic_module_on_program_init();
    // SAFETY: a NUL-ended static string.
    assert_eq!(
        unsafe { std::ffi::CStr::from_ptr(version) },
        build_info::ABI_VERSION_C
    );
    assert!(
        crate::pin::outcome().is_some(),
        "program init did not try to pin the library"
    );
}
