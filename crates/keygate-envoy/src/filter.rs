//! The hooks Envoy calls (`envoy_dynamic_module_on_*`), each body under
//! [`guarded`]: a panic is caught, logged, answered with a 503
//! (`module-error`) for the request it happened in, and never unwinds into
//! Envoy.
//!
//! Threads: the filter config (its [`Shared`], with the table) is created
//! on Envoy's main thread and used by every worker; a per-stream [`Filter`]
//! lives on one worker, and its callout's done-hook runs on that same
//! worker. The feed follower is the module's own thread (`invalidations`).
//!
//! One request: the request-headers hook removes client-sent identity
//! headers, takes the route's group from the per-route config, and decides
//! from the table (`decide::first`); on a question for keygate it starts an
//! HTTP callout and stops the request (headers, body and trailers) until
//! the callout's done-hook, which decides (`decide::answered`) and either
//! continues the request or sends the denial.

use std::cell::{Cell, RefCell};
use std::ffi::c_char;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use log_throttle::{Admit, Throttle};

use apikey::ApiKey;

use crate::abi::*;
use crate::build_info;
use crate::callout::{self, Answer};
use crate::config::{Fault, FilterConfig, RouteConfig};
use crate::decide::{self, Deny, First, Presented, Verdict, reason};
use crate::invalidations::{Follower, Level};
use crate::table::Table;

/// At most one line per this long for each per-request warning (per
/// filter config).
const WARN_EVERY: Duration = Duration::from_secs(10);

const OWNER_HEADER: &[u8] = b"x-keyrig-owner";
const GROUP_HEADER: &[u8] = b"x-keyrig-group";
const API_KEY_HEADER: &[u8] = b"x-api-key";
const REASON_HEADER: &[u8] = b"x-keyrig-reason";

fn log(level: u32, message: &str) {
    // SAFETY: a module buffer valid for the call.
    unsafe { envoy_dynamic_module_callback_log(level, ModuleBuffer::of(message.as_bytes())) }
}

fn log_enabled(level: u32) -> bool {
    // SAFETY: no pointers.
    unsafe { envoy_dynamic_module_callback_log_enabled(level) }
}

/// The feed follower's log (its own thread; Envoy's logger is thread-safe).
/// The count of per-request warnings no later warning came to carry (the
/// last seconds of an outage), in a line of its own once due. Run by the
/// feed thread (`Follower`'s tick): without `invalidations`, the count
/// waits for the next warning.
fn write_overdue_warnings(warnings: &Throttle) {
    if let Some(left_out) = warnings.overdue(Instant::now()) {
        log(
            LOG_WARN,
            &format!(
                "keygate-envoy: {left_out} more per-request warning{} since the last one (at most one line per {} s)",
                if left_out == 1 { "" } else { "s" },
                WARN_EVERY.as_secs()
            ),
        );
    }
}

fn log_feed(level: Level, message: &str) {
    let level = match level {
        Level::Debug => LOG_DEBUG,
        Level::Info => LOG_INFO,
        Level::Warn => LOG_WARN,
    };
    if log_enabled(level) {
        log(level, message);
    }
}

/// Runs a hook's body; on a panic logs it, runs `on_panic` (itself
/// guarded) and returns `fallback`. Nothing unwinds into Envoy.
fn guarded<T>(hook: &str, fallback: T, on_panic: impl FnOnce(), body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(_) => {
            let _ = catch_unwind(AssertUnwindSafe(|| {
                log(
                    LOG_ERROR,
                    &format!(
                        "keygate-envoy: the {hook} hook panicked; its request, if any, is refused (503 module-error)"
                    ),
                );
                on_panic();
            }));
            fallback
        }
    }
}

/// The filter config: one per HTTP connection manager's filter, shared by
/// every worker thread's filters.
struct Shared {
    settings: FilterConfig,
    table: Arc<Table>,
    follower: Mutex<Option<Follower>>,
    /// Per-request warnings: at most one line per `WARN_EVERY`; the feed
    /// thread writes the counts no later warning came to carry.
    warnings: Arc<Throttle>,
}

impl Shared {
    /// A warning that can come once per request (keygate unreachable, a
    /// callout that cannot start, keygate naming another group): an outage
    /// under load would otherwise put a line per request into Envoy's log.
    /// `message` runs only for a line that is written.
    fn warn(&self, now: Instant, message: impl FnOnce() -> String) {
        if let Admit::Write { left_out } = self.warnings.admit(now) {
            let mut line = message();
            line.push_str(&self.warnings.left_out_note(left_out));
            log(LOG_WARN, &line);
        }
    }
}

impl Shared {
    fn start(settings: FilterConfig) -> Result<Self, String> {
        let table = Arc::new(Table::new(settings.ttls(), settings.callout_timeout()));
        let warnings = Arc::new(Throttle::new(WARN_EVERY));
        // SAFETY: no pointers; called on the main thread (config load).
        let validating = unsafe { envoy_dynamic_module_callback_is_validation_mode() };
        let follower = match (&settings.invalidations, validating) {
            (Some(addr), false) => Some(
                Follower::start(
                    addr.clone(),
                    settings.authority.clone(),
                    table.clone(),
                    log_feed,
                    Box::new({
                        let warnings = warnings.clone();
                        move || write_overdue_warnings(&warnings)
                    }),
                )
                .map_err(|err| {
                    format!("keygate-envoy: cannot start the invalidation feed thread: {err}")
                })?,
            ),
            (None, false) => {
                log(
                    LOG_WARN,
                    "keygate-envoy: filter_config.invalidations is not set: a revoked key passes until its entry's positive TTL ends",
                );
                None
            }
            (_, true) => None,
        };
        log(
            LOG_INFO,
            &format!(
                "keygate-envoy: filter config loaded (ABI {}, built for Envoy {}): keygate cluster {:?}, invalidation feed {}, positive TTL {} ms, negative TTL {} ms, resurrect TTL {} ms",
                build_info::ABI_VERSION,
                build_info::ENVOY_SERIES,
                settings.cluster,
                settings.invalidations.as_deref().unwrap_or("off"),
                settings.positive_ttl_ms,
                settings.negative_ttl_ms,
                settings.resurrect_ttl_ms,
            ),
        );
        Ok(Self {
            settings,
            table,
            follower: Mutex::new(follower),
            warnings,
        })
    }
}

/// The per-route configs this module made and Envoy has not destroyed:
/// their addresses, sorted. Envoy hands a request whatever per-route
/// config its route holds under the filter's name, which may be another
/// module's (a `typed_per_filter_config` naming another library); only
/// an address listed here is read as a [`RouteConfig`].
///
/// Changed on the main thread (per-route config new and destroy), read on
/// every request: each worker reads its own copy, taken again when
/// [`ROUTES_CHANGED`] has moved, so a request costs a load of a counter
/// that changes only with the routes, not a lock on a cache line every
/// worker writes.
static ROUTES: Mutex<Vec<usize>> = Mutex::new(Vec::new());
/// Counts the changes of [`ROUTES`]; changed under its lock.
static ROUTES_CHANGED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's copy of [`ROUTES`], and the count it was taken at.
    static KNOWN_ROUTES: RefCell<(u64, Vec<usize>)> = const { RefCell::new((0, Vec::new())) };
}

fn routes() -> std::sync::MutexGuard<'static, Vec<usize>> {
    // The list is valid after any panic under the lock (one insert or
    // remove).
    ROUTES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `route` is a per-route config of ours from now on.
fn route_made(route: *const RouteConfig) {
    let mut live = routes();
    let at = route as usize;
    if let Err(slot) = live.binary_search(&at) {
        live.insert(slot, at);
    }
    ROUTES_CHANGED.fetch_add(1, Ordering::Release);
}

/// `route` is about to be freed: no longer ours.
fn route_destroyed(route: *const RouteConfig) {
    let mut live = routes();
    if let Ok(slot) = live.binary_search(&(route as usize)) {
        live.remove(slot);
    }
    ROUTES_CHANGED.fetch_add(1, Ordering::Release);
}

/// Whether Envoy's per-route config pointer is one this module made and
/// has not destroyed. Envoy hands a pointer over to a worker after
/// `per_route_config_new` returned it (its own synchronisation), so a
/// worker that sees the pointer sees the count that listed it.
fn is_our_route(route: PerRouteConfigModulePtr) -> bool {
    let changed = ROUTES_CHANGED.load(Ordering::Acquire);
    KNOWN_ROUTES.with(|known| {
        let mut known = known.borrow_mut();
        if known.0 != changed {
            let live = routes();
            known.1.clone_from(&live);
            // Read under the lock: the count of the copy just taken.
            known.0 = ROUTES_CHANGED.load(Ordering::Relaxed);
        }
        known.1.binary_search(&(route as usize)).is_ok()
    })
}

/// A callout in flight.
struct Asking {
    /// Envoy's id, once `http_callout` returned it.
    callout_id: Option<u64>,
    group: String,
    key: ApiKey,
    /// The table's stamp when the callout started.
    read_at: u64,
    /// The route uses the table: keygate's answer is kept there.
    keep: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finished {
    /// Identity headers set, the request continues.
    Allowed,
    /// A local reply was sent.
    Denied,
}

/// One HTTP stream's filter.
struct Filter {
    /// The filter config this filter was made from. Not reference-counted:
    /// Envoy's filter holds the config (a shared pointer, whose destructor
    /// calls `on_http_filter_config_destroy`) until after this filter is
    /// destroyed, so it outlives the filter; a count would cost an atomic
    /// add and sub per stream on a cache line every worker writes. Not
    /// truly `'static`: never keep it past the filter.
    shared: &'static Shared,
    asking: RefCell<Option<Asking>>,
    finished: Cell<Option<Finished>>,
    /// Inside the request-headers hook: a callout answered before
    /// `http_callout` returned must not call `continue_decoding` (the
    /// hook's own return value continues the request).
    in_headers_hook: Cell<bool>,
    /// How many hooks are inside this filter now: more than one when
    /// Envoy calls back into the module from a callback (see [`Entered`]).
    entered: Cell<u32>,
    /// Envoy destroyed the stream while a hook was inside the filter: its
    /// stream pointer must not be used again, and the last hook out frees
    /// the filter.
    destroyed: Cell<bool>,
}

impl Filter {
    fn new(shared: &'static Shared) -> Self {
        Self {
            shared,
            asking: RefCell::new(None),
            finished: Cell::new(None),
            in_headers_hook: Cell::new(false),
            entered: Cell::new(0),
            destroyed: Cell::new(false),
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Filters freed on this thread: the tests' view of when the module
    /// frees one.
    static FREED: Cell<usize> = const { Cell::new(0) };
}

#[cfg(test)]
impl Drop for Filter {
    fn drop(&mut self) {
        FREED.with(|freed| freed.set(freed.get() + 1));
    }
}

/// A hook's hold on its stream's filter.
///
/// Envoy calls back into the module from inside its own callbacks:
/// `continue_decoding` runs the body and trailers hooks, and Envoy's code
/// lets a callout its async client completes inside `send` run the
/// done-hook inside `http_callout`, and a local reply that ends the stream
/// run the destroy hook inside `send_response` (the pinned 1.40.0 was not
/// seen doing these two, and nothing promises it never will). So
/// hooks share the filter (`&Filter`, its state in cells, never a `&mut`
/// across a call into Envoy), and a filter destroyed while a hook is inside
/// it is freed by the last hold to go, not under the hooks still using it.
struct Entered(NonNull<Filter>);

impl Entered {
    /// `None` for a null pointer (a filter `on_http_filter_new` failed to
    /// make; Envoy does not check).
    ///
    /// # Safety
    /// `fm` is null or comes from `on_http_filter_new` and Envoy has not
    /// destroyed it before this hook began; Envoy calls a stream's hooks on
    /// its worker thread only.
    unsafe fn new(fm: FilterModulePtr) -> Option<Self> {
        let ptr = NonNull::new(fm.cast_mut().cast::<Filter>())?;
        // SAFETY: the caller's contract: a live filter.
        let filter = unsafe { ptr.as_ref() };
        filter.entered.set(filter.entered.get() + 1);
        Some(Self(ptr))
    }

    fn filter(&self) -> &Filter {
        // SAFETY: live while any hold on it is (see `drop`).
        unsafe { self.0.as_ref() }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        let filter = self.filter();
        let inside = filter.entered.get() - 1;
        filter.entered.set(inside);
        if inside == 0 && filter.destroyed.get() {
            // SAFETY: Envoy destroyed the filter (it calls none of its hooks
            // again) and this was the last hook inside it.
            drop(unsafe { Box::from_raw(self.0.as_ptr()) });
        }
    }
}

impl Filter {
    fn on_request_headers(&self, fe: FilterEnvoyPtr) -> u32 {
        // SAFETY: no pointers of ours; Envoy's stream pointer for this hook.
        let route = unsafe { envoy_dynamic_module_callback_get_most_specific_route_config(fe) };
        if route.is_null() {
            // A route without the module's per-route config: no API group
            // serves it, as keygate says for a path it routes nowhere.
            return self.carry_out(fe, Verdict::Deny(Deny::new(403, "no-route")), "", false);
        }
        let now = Instant::now();
        if !is_our_route(route) {
            // Not read: whatever it is, it is not a RouteConfig of ours.
            self.shared.warn(now, || {
                "keygate-envoy: the route's per-route config under this filter's name is not this module's (does its typed_per_filter_config name another dynamic module?); the request is refused (503 module-error)".to_owned()
            });
            let deny = Deny::new(503, reason::MODULE_ERROR);
            return self.carry_out(fe, Verdict::Deny(deny), "", false);
        }
        // SAFETY: ours (a Box from per_route_config_new, listed until its
        // destroy hook), and it lives while the route does, which outlasts
        // this hook.
        let route = unsafe { &*route.cast::<RouteConfig>() };
        if route.fault == Some(Fault::Panic) {
            panic!("fault injection: this route's per-route config asks for a panic");
        }
        let keep = route.table;
        let table = keep.then_some(&*self.shared.table);
        // One pass over the request's headers (two ABI calls) instead of a
        // look-up per name: the key, and whether the client sent identity
        // headers of its own. The bytes are Envoy's, valid until the first
        // setter below, so the first decision is taken before any.
        let (first, sent) = with_request_headers(fe, |headers| {
            // SAFETY: Envoy's buffers, valid until the end of this hook,
            // and no setter runs before this closure returns.
            let pairs = headers.iter().map(|header| unsafe { header.pair() });
            let (presented, sent) = scan_request_headers(pairs);
            (decide::first(table, &route.group, presented, now), sent)
        });
        // The upstream trusts these only from us.
        remove_identity_headers(fe, sent);
        match first {
            First::Done(verdict) => {
                debug_decision(&route.group, None, &verdict, "local");
                self.carry_out(fe, verdict, &route.group, false)
            }
            First::Ask(key) => self.ask(fe, route.group.clone(), key, keep, now),
        }
    }

    fn ask(&self, fe: FilterEnvoyPtr, group: String, key: ApiKey, keep: bool, now: Instant) -> u32 {
        let path = request_header(fe, b":path").0.unwrap_or_default().to_vec();
        let method = request_header(fe, b":method")
            .0
            .unwrap_or_default()
            .to_vec();
        let settings = &self.shared.settings;
        let headers = callout::request_headers(&settings.authority, key.expose(), &path, &method);
        let mut abi_headers: Vec<ModuleHttpHeader> = headers
            .iter()
            .map(|(name, value)| ModuleHttpHeader::of(name, value))
            .collect();
        let cluster = settings.cluster.clone();
        let timeout = settings.callout_timeout_ms;
        // Stamped before the callout leaves: an invalidation from now on
        // outdates its answer.
        let read_at = self.shared.table.stamp();
        self.asking.replace(Some(Asking {
            callout_id: None,
            group: group.clone(),
            key: key.clone(),
            read_at,
            keep,
        }));
        let mut callout_id = 0u64;
        self.in_headers_hook.set(true);
        // SAFETY: every buffer outlives the call; Envoy copies them.
        let init = unsafe {
            envoy_dynamic_module_callback_http_filter_http_callout(
                fe,
                &mut callout_id,
                ModuleBuffer::of(cluster.as_bytes()),
                abi_headers.as_mut_ptr(),
                abi_headers.len(),
                ModuleBuffer::of(b""),
                timeout,
            )
        };
        self.in_headers_hook.set(false);
        // Answered already: the done-hook ran inside `http_callout` (Envoy's
        // async client completed the callout inside `send`), and its denial
        // may have ended the stream: the filter outlives that (see
        // `Entered`), Envoy's stream pointer does not, so nothing below
        // runs.
        if let Some(finished) = self.finished.get() {
            return match finished {
                Finished::Allowed => REQUEST_HEADERS_CONTINUE,
                Finished::Denied => REQUEST_HEADERS_STOP_ITERATION,
            };
        }
        if self.destroyed.get() {
            return REQUEST_HEADERS_STOP_ITERATION;
        }
        if init != CALLOUT_INIT_SUCCESS {
            self.asking.replace(None);
            let (what, fix) = match init {
                CALLOUT_INIT_CLUSTER_NOT_FOUND => ("no such cluster", "fix filter_config.cluster"),
                CALLOUT_INIT_CANNOT_CREATE_REQUEST => (
                    "no healthy host",
                    "is keygate up, and do the cluster's hosts and health checks point at its HTTP port?",
                ),
                CALLOUT_INIT_MISSING_REQUIRED_HEADERS => {
                    ("missing :method, :path or host", "a bug in the module")
                }
                CALLOUT_INIT_DUPLICATE_CALLOUT_ID => {
                    ("duplicate callout id", "a bug in the module")
                }
                _ => ("unknown result", "an Envoy this module was not built for?"),
            };
            self.shared.warn(now, || {
                format!(
                    "keygate-envoy: cannot ask keygate through cluster {cluster:?} ({what}, result {init}): {fix}"
                )
            });
            let verdict = keep
                .then(|| decide::resurrected(&self.shared.table, &group, &key, now))
                .flatten()
                .unwrap_or(Verdict::Deny(Deny::new(503, reason::KEYGATE_UNAVAILABLE)));
            debug_decision(&group, Some(&key), &verdict, "callout not started");
            return self.carry_out(fe, verdict, &group, false);
        }
        if let Some(asking) = self.asking.borrow_mut().as_mut() {
            asking.callout_id = Some(callout_id);
        }
        REQUEST_HEADERS_STOP_ALL_ITERATION_AND_WATERMARK
    }

    fn on_callout_done(
        &self,
        fe: FilterEnvoyPtr,
        callout_id: u64,
        result: u32,
        headers: &[EnvoyHttpHeader],
    ) {
        let ours = self
            .asking
            .borrow()
            .as_ref()
            .is_some_and(|a| a.callout_id.is_none_or(|id| id == callout_id));
        if !ours {
            return;
        }
        let Some(asking) = self.asking.take() else {
            return;
        };
        let answer = if result == CALLOUT_SUCCESS {
            let pairs: Vec<(&[u8], &[u8])> = headers
                .iter()
                // SAFETY: Envoy's header buffers, valid for this hook.
                .map(|h| unsafe { h.pair() })
                .collect();
            callout::interpret(Some(&pairs))
        } else {
            // A callout past its timeout is not a reset: Envoy's async
            // client answers it as a success carrying its router's own 504,
            // which `callout::interpret` takes for keygate unreachable.
            let what = match result {
                CALLOUT_RESET => "reset (keygate unreachable, or the connection to it reset)",
                CALLOUT_EXCEED_RESPONSE_BUFFER_LIMIT => "answer too large",
                _ => "failed",
            };
            Answer::Unreachable(format!("the callout to keygate {what}"))
        };
        let now = Instant::now();
        let (verdict, warning) = decide::answered(
            &self.shared.table,
            asking.keep,
            &asking.group,
            &asking.key,
            asking.read_at,
            &answer,
            now,
            SystemTime::now(),
        );
        if let Some(warning) = warning {
            self.shared.warn(now, || {
                format!(
                    "keygate-envoy: asking keygate about selector {} of group {}: {warning}",
                    asking.key.selector(),
                    asking.group
                )
            });
        }
        debug_decision(&asking.group, Some(&asking.key), &verdict, "keygate");
        let resume = !self.in_headers_hook.get();
        self.carry_out(fe, verdict, &asking.group, resume);
    }

    /// Lets the request through with identity headers (continuing it if it
    /// was stopped) or sends the denial. `group`: the route's.
    fn carry_out(&self, fe: FilterEnvoyPtr, verdict: Verdict, group: &str, resume: bool) -> u32 {
        match verdict {
            Verdict::Allow { owner } => {
                // Client-sent copies are gone (on_request_headers), so an
                // append is enough and skips Envoy's look-up of the name.
                add_request_header(fe, OWNER_HEADER, owner.as_bytes());
                add_request_header(fe, GROUP_HEADER, group.as_bytes());
                self.finished.set(Some(Finished::Allowed));
                if resume {
                    // SAFETY: the stream is alive (Envoy calls our hooks).
                    unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(fe) };
                }
                REQUEST_HEADERS_CONTINUE
            }
            Verdict::Deny(deny) => {
                self.finished.set(Some(Finished::Denied));
                // May end the stream, and destroy the filter, inside.
                send_denial(fe, &deny);
                REQUEST_HEADERS_STOP_ITERATION
            }
        }
    }

    /// After a caught panic: refuse the request unless it was answered.
    fn refuse_after_panic(&self, fe: FilterEnvoyPtr) {
        if self.finished.get().is_none() && !self.destroyed.get() {
            self.asking.replace(None);
            self.finished.set(Some(Finished::Denied));
            send_denial(fe, &Deny::new(503, reason::MODULE_ERROR));
        }
    }
}

fn send_denial(fe: FilterEnvoyPtr, deny: &Deny) {
    let body = deny.body();
    let details = format!("keygate_{}", deny.reason.replace('-', "_"));
    let mut headers = [
        ModuleHttpHeader::of(REASON_HEADER, deny.reason.as_bytes()),
        ModuleHttpHeader::of(b"content-type", b"application/json"),
    ];
    // SAFETY: every buffer outlives the call; Envoy copies them.
    unsafe {
        envoy_dynamic_module_callback_http_send_response(
            fe,
            u32::from(deny.status),
            headers.as_mut_ptr(),
            headers.len(),
            ModuleBuffer::of(body.as_bytes()),
            ModuleBuffer::of(details.as_bytes()),
        );
    }
}

/// The first value of request header `name` (valid until the end of the
/// current hook) and how many values it has.
fn request_header<'a>(fe: FilterEnvoyPtr, name: &[u8]) -> (Option<&'a [u8]>, usize) {
    let mut value = EnvoyBuffer::NULL;
    let mut count = 0usize;
    // SAFETY: valid out-pointers; the name outlives the call.
    let found = unsafe {
        envoy_dynamic_module_callback_http_get_header(
            fe,
            HEADER_TYPE_REQUEST_HEADER,
            ModuleBuffer::of(name),
            &mut value,
            0,
            &mut count,
        )
    };
    if !found || count == 0 || value.ptr.is_null() {
        return (None, count);
    }
    // SAFETY: Envoy's buffer, valid until the end of this hook.
    (Some(unsafe { value.bytes() }), count)
}

/// Which identity headers a request came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IdentityHeaders {
    owner: bool,
    group: bool,
    /// One spelled with `_` for a `-` (`x_keyrig_owner`): an upstream that
    /// reads headers CGI-style (PHP, WSGI, Rack) takes it for the real
    /// one. Envoy passes such names unless the connection manager's
    /// `headers_with_underscores_action` says otherwise.
    variant: bool,
}

/// The spellings with `_` of the identity headers (Envoy keeps header
/// names lower case).
const IDENTITY_VARIANTS: [&[u8]; 6] = [
    b"x_keyrig_owner",
    b"x-keyrig_owner",
    b"x_keyrig-owner",
    b"x_keyrig_group",
    b"x-keyrig_group",
    b"x_keyrig-group",
];

/// Whether `name` is `want` (lower case, `-` separated) without regard to
/// case, and if so whether exactly (`Some(true)`) or with `_` for some
/// `-` (`Some(false)`).
fn spelled_as(name: &[u8], want: &[u8]) -> Option<bool> {
    if name.len() != want.len() {
        return None;
    }
    let mut exact = true;
    for (&have, &want) in name.iter().zip(want) {
        let have = have.to_ascii_lowercase();
        if have == want {
            continue;
        }
        if have == b'_' && want == b'-' {
            exact = false;
            continue;
        }
        return None;
    }
    Some(exact)
}

/// How many headers fit on the stack for one pass; a request with more
/// takes a heap vector.
const HEADERS_ON_STACK: usize = 32;

/// Runs `read` over every request header (Envoy's buffers, valid only
/// inside `read`, and only until the first setter).
fn with_request_headers<T>(fe: FilterEnvoyPtr, read: impl FnOnce(&[EnvoyHttpHeader]) -> T) -> T {
    // SAFETY: no out-pointers.
    let count = unsafe {
        envoy_dynamic_module_callback_http_get_headers_size(fe, HEADER_TYPE_REQUEST_HEADER)
    };
    let mut stack = [EnvoyHttpHeader::EMPTY; HEADERS_ON_STACK];
    let mut heap = Vec::new();
    let raw: &mut [EnvoyHttpHeader] = if count <= HEADERS_ON_STACK {
        &mut stack[..count]
    } else {
        heap.resize(count, EnvoyHttpHeader::EMPTY);
        &mut heap
    };
    // SAFETY: `raw` holds `count` entries, as many as Envoy writes.
    let filled = count > 0
        && unsafe {
            envoy_dynamic_module_callback_http_get_headers(
                fe,
                HEADER_TYPE_REQUEST_HEADER,
                raw.as_mut_ptr(),
            )
        };
    read(if filled { raw } else { &[] })
}

/// The key a request presents, and the identity headers it carries.
/// Envoy keeps names lower case; compared without case all the same.
fn scan_request_headers<'a>(
    headers: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> (Presented<'a>, IdentityHeaders) {
    let mut key = None;
    let mut keys = 0usize;
    let mut sent = IdentityHeaders {
        owner: false,
        group: false,
        variant: false,
    };
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(API_KEY_HEADER) {
            keys += 1;
            key.get_or_insert(value);
        } else if let Some(exact) = spelled_as(name, OWNER_HEADER) {
            sent.owner |= exact;
            sent.variant |= !exact;
        } else if let Some(exact) = spelled_as(name, GROUP_HEADER) {
            sent.group |= exact;
            sent.variant |= !exact;
        }
    }
    let presented = match (keys, key) {
        (0, _) => Presented::Missing,
        (1, Some(value)) => Presented::One(value),
        _ => Presented::Many,
    };
    (presented, sent)
}

fn remove_identity_headers(fe: FilterEnvoyPtr, sent: IdentityHeaders) {
    if sent.owner {
        remove_request_header(fe, OWNER_HEADER);
    }
    if sent.group {
        remove_request_header(fe, GROUP_HEADER);
    }
    if sent.variant {
        for name in IDENTITY_VARIANTS {
            remove_request_header(fe, name);
        }
    }
}

/// Appends a value of request header `name`. An empty value is left
/// out: Envoy 1.40's ABI cannot set one (`add_header` refuses it and
/// `set_header` removes the header for it), so a key whose record has no
/// owner reaches the upstream without `x-keyrig-owner` (client-sent copies
/// are gone all the same), where keygate's own answer carries it empty.
fn add_request_header(fe: FilterEnvoyPtr, name: &[u8], value: &[u8]) {
    if value.is_empty() {
        return;
    }
    // SAFETY: the buffers outlive the call; Envoy copies them.
    unsafe {
        envoy_dynamic_module_callback_http_add_header(
            fe,
            HEADER_TYPE_REQUEST_HEADER,
            ModuleBuffer::of(name),
            ModuleBuffer::of(value),
        );
    }
}

/// Removes every value of request header `name` (`set_header` with a null
/// value).
fn remove_request_header(fe: FilterEnvoyPtr, name: &[u8]) {
    // SAFETY: the name outlives the call.
    unsafe {
        envoy_dynamic_module_callback_http_set_header(
            fe,
            HEADER_TYPE_REQUEST_HEADER,
            ModuleBuffer::of(name),
            ModuleBuffer::NULL,
        );
    }
}

/// One debug line per decision: group, selector (never the key), outcome.
fn debug_decision(group: &str, key: Option<&ApiKey>, verdict: &Verdict, source: &str) {
    if !log_enabled(LOG_DEBUG) {
        return;
    }
    let outcome = match verdict {
        Verdict::Allow { .. } => "allow",
        Verdict::Deny(deny) => deny.reason.as_str(),
    };
    let selector = key.map(|k| k.selector().to_string());
    log(
        LOG_DEBUG,
        &format!(
            "keygate-envoy: decision group={group} selector={} outcome={outcome} by={source}",
            selector.as_deref().unwrap_or("-")
        ),
    );
}

// ------------------------------------------------------------------ hooks

/// Envoy calls this once it has loaded the library (again after an
/// unload, which the pin below prevents).
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    guarded(
        "program init",
        (),
        || {},
        || match crate::pin::pin_this_library() {
            Ok(path) => log(
                LOG_INFO,
                &format!(
                    "keygate-envoy: the module keeps itself loaded ({}): Envoy cannot unload it under its invalidation feed thread, do_not_close or not",
                    path.to_string_lossy()
                ),
            ),
            Err(why) => log(
                LOG_WARN,
                &format!(
                    "keygate-envoy: the module cannot keep itself loaded ({why}): keep do_not_close: true in every dynamic_module_config naming it, or Envoy may unload it under its invalidation feed thread and crash"
                ),
            ),
        },
    );
    build_info::ABI_VERSION_C.as_ptr()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    _filter_config_envoy_ptr: FilterConfigEnvoyPtr,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> FilterConfigModulePtr {
    guarded(
        "filter config",
        std::ptr::null(),
        || {},
        || {
            // SAFETY: Envoy's buffer, valid for this hook.
            let bytes = unsafe { config.bytes() };
            match FilterConfig::parse(bytes).and_then(Shared::start) {
                Ok(shared) => Arc::into_raw(Arc::new(shared)).cast(),
                Err(err) => {
                    log(LOG_ERROR, &err);
                    std::ptr::null()
                }
            }
        },
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(
    filter_config_ptr: FilterConfigModulePtr,
) {
    guarded(
        "filter config destroy",
        (),
        || {},
        || {
            // SAFETY: from Arc::into_raw in config_new; Envoy destroys it once.
            let shared = unsafe { Arc::from_raw(filter_config_ptr.cast::<Shared>()) };
            let follower = shared
                .follower
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            if let Some(follower) = follower {
                // Not joined: this hook may run on a worker thread.
                drop(follower.stop());
            }
        },
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> PerRouteConfigModulePtr {
    guarded(
        "per-route config",
        std::ptr::null(),
        || {},
        || {
            // SAFETY: Envoy's buffer, valid for this hook.
            let bytes = unsafe { config.bytes() };
            match RouteConfig::parse(bytes) {
                Ok(route) => {
                    let route = Box::into_raw(Box::new(route)).cast_const();
                    route_made(route);
                    route.cast()
                }
                Err(err) => {
                    log(LOG_ERROR, &err);
                    std::ptr::null()
                }
            }
        },
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(
    filter_config_ptr: PerRouteConfigModulePtr,
) {
    guarded(
        "per-route config destroy",
        (),
        || {},
        || {
            let route = filter_config_ptr.cast::<RouteConfig>();
            if route.is_null() {
                return;
            }
            route_destroyed(route);
            // SAFETY: from Box::into_raw in per_route_config_new, destroyed once.
            drop(unsafe { Box::from_raw(route.cast_mut()) });
        },
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    filter_config_ptr: FilterConfigModulePtr,
    _filter_envoy_ptr: FilterEnvoyPtr,
) -> FilterModulePtr {
    guarded(
        "filter new",
        std::ptr::null(),
        || {},
        || {
            // SAFETY: from Arc::into_raw in config_new; Envoy keeps the
            // config until after this filter is destroyed (see
            // `Filter::shared`).
            let shared = unsafe { &*filter_config_ptr.cast::<Shared>() };
            Box::into_raw(Box::new(Filter::new(shared)))
                .cast_const()
                .cast()
        },
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy_ptr: FilterEnvoyPtr,
    filter_module_ptr: FilterModulePtr,
    _end_of_stream: bool,
) -> u32 {
    // SAFETY: Envoy's filter pointer for this stream.
    let Some(entered) = (unsafe { Entered::new(filter_module_ptr) }) else {
        // No filter to decide with (`filter_new` failed): refuse.
        send_denial(filter_envoy_ptr, &Deny::new(503, reason::MODULE_ERROR));
        return REQUEST_HEADERS_STOP_ITERATION;
    };
    let filter = entered.filter();
    guarded(
        "request headers",
        REQUEST_HEADERS_STOP_ITERATION,
        || filter.refuse_after_panic(filter_envoy_ptr),
        || filter.on_request_headers(filter_envoy_ptr),
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _filter_envoy_ptr: FilterEnvoyPtr,
    filter_module_ptr: FilterModulePtr,
    _end_of_stream: bool,
) -> u32 {
    guarded(
        "request body",
        REQUEST_BODY_STOP_ITERATION_NO_BUFFER,
        || {},
        || {
            // SAFETY: Envoy's filter pointer for this stream.
            let Some(entered) = (unsafe { Entered::new(filter_module_ptr) }) else {
                return REQUEST_BODY_STOP_ITERATION_NO_BUFFER;
            };
            let filter = entered.filter();
            let asking = filter.asking.borrow().is_some();
            match (asking, filter.finished.get()) {
                // Still waiting for keygate: hold the body back.
                (true, _) => REQUEST_BODY_STOP_ITERATION_AND_WATERMARK,
                (false, Some(Finished::Allowed)) => REQUEST_BODY_CONTINUE,
                _ => REQUEST_BODY_STOP_ITERATION_NO_BUFFER,
            }
        },
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _filter_envoy_ptr: FilterEnvoyPtr,
    filter_module_ptr: FilterModulePtr,
) -> u32 {
    guarded(
        "request trailers",
        REQUEST_TRAILERS_STOP_ITERATION,
        || {},
        || {
            // SAFETY: Envoy's filter pointer for this stream.
            let Some(entered) = (unsafe { Entered::new(filter_module_ptr) }) else {
                return REQUEST_TRAILERS_STOP_ITERATION;
            };
            let filter = entered.filter();
            let asking = filter.asking.borrow().is_some();
            match (asking, filter.finished.get()) {
                (false, Some(Finished::Allowed)) => REQUEST_TRAILERS_CONTINUE,
                _ => REQUEST_TRAILERS_STOP_ITERATION,
            }
        },
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: FilterModulePtr,
    _end_of_stream: bool,
) -> u32 {
    guarded(
        "response headers",
        RESPONSE_CONTINUE,
        || {},
        || RESPONSE_CONTINUE,
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: FilterModulePtr,
    _end_of_stream: bool,
) -> u32 {
    guarded(
        "response body",
        RESPONSE_CONTINUE,
        || {},
        || RESPONSE_CONTINUE,
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: FilterModulePtr,
) -> u32 {
    guarded(
        "response trailers",
        RESPONSE_CONTINUE,
        || {},
        || RESPONSE_CONTINUE,
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: FilterModulePtr,
) {
    guarded("stream complete", (), || {}, || {})
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter_module_ptr: FilterModulePtr) {
    guarded(
        "filter destroy",
        (),
        || {},
        || {
            let Some(ptr) = NonNull::new(filter_module_ptr.cast_mut().cast::<Filter>()) else {
                return;
            };
            // SAFETY: from Box::into_raw in filter_new; Envoy destroys it
            // once, and a hook inside it holds it alive (`Entered`).
            let filter = unsafe { ptr.as_ref() };
            if filter.entered.get() > 0 {
                // Inside `send_response` of one of its own hooks: the last
                // hook out frees it.
                filter.destroyed.set(true);
                if log_enabled(LOG_DEBUG) {
                    log(
                        LOG_DEBUG,
                        "keygate-envoy: a stream ended inside one of its filter's hooks (a local reply); the filter is freed when the hook returns",
                    );
                }
            } else {
                // SAFETY: as above, and no hook is inside it.
                drop(unsafe { Box::from_raw(ptr.as_ptr()) });
            }
        },
    )
}

#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    filter_envoy_ptr: FilterEnvoyPtr,
    filter_module_ptr: FilterModulePtr,
    callout_id: u64,
    result: u32,
    headers: *mut EnvoyHttpHeader,
    headers_size: usize,
    _body_chunks: *mut EnvoyBuffer,
    _body_chunks_size: usize,
) {
    // SAFETY: Envoy's filter pointer for this stream.
    let Some(entered) = (unsafe { Entered::new(filter_module_ptr) }) else {
        return;
    };
    let filter = entered.filter();
    guarded(
        "callout done",
        (),
        || filter.refuse_after_panic(filter_envoy_ptr),
        || {
            let headers = if headers.is_null() || headers_size == 0 {
                &[][..]
            } else {
                // SAFETY: Envoy's array of `headers_size`, valid for this hook.
                unsafe { std::slice::from_raw_parts(headers, headers_size) }
            };
            filter.on_callout_done(filter_envoy_ptr, callout_id, result, headers);
        },
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: FilterModulePtr,
    _stream_id: u64,
    _headers: *mut EnvoyHttpHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
    guarded("http stream headers", (), || {}, || {})
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: FilterModulePtr,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
    guarded("http stream data", (), || {}, || {})
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: FilterModulePtr,
    _stream_id: u64,
    _trailers: *mut EnvoyHttpHeader,
    _trailers_size: usize,
) {
    guarded("http stream trailers", (), || {}, || {})
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: FilterModulePtr,
    _stream_id: u64,
) {
    guarded("http stream complete", (), || {}, || {})
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: FilterModulePtr,
    _stream_id: u64,
    _reason: u32,
) {
    guarded("http stream reset", (), || {}, || {})
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: FilterModulePtr,
    _event_id: u64,
) {
    guarded("scheduled", (), || {}, || {})
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _filter_config_envoy_ptr: FilterConfigEnvoyPtr,
    _filter_config_ptr: FilterConfigModulePtr,
    _event_id: u64,
) {
    guarded("config scheduled", (), || {}, || {})
}

#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _filter_config_envoy_ptr: FilterConfigEnvoyPtr,
    _filter_config_ptr: FilterConfigModulePtr,
    _callout_id: u64,
    _result: u32,
    _headers: *mut EnvoyHttpHeader,
    _headers_size: usize,
    _body_chunks: *mut EnvoyBuffer,
    _body_chunks_size: usize,
) {
    guarded("config callout done", (), || {}, || {})
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_headers(
    _filter_config_envoy_ptr: FilterConfigEnvoyPtr,
    _filter_config_ptr: FilterConfigModulePtr,
    _stream_id: u64,
    _headers: *mut EnvoyHttpHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
    guarded("config http stream headers", (), || {}, || {})
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_data(
    _filter_config_envoy_ptr: FilterConfigEnvoyPtr,
    _filter_config_ptr: FilterConfigModulePtr,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
    guarded("config http stream data", (), || {}, || {})
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_trailers(
    _filter_config_envoy_ptr: FilterConfigEnvoyPtr,
    _filter_config_ptr: FilterConfigModulePtr,
    _stream_id: u64,
    _trailers: *mut EnvoyHttpHeader,
    _trailers_size: usize,
) {
    guarded("config http stream trailers", (), || {}, || {})
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_complete(
    _filter_config_envoy_ptr: FilterConfigEnvoyPtr,
    _filter_config_ptr: FilterConfigModulePtr,
    _stream_id: u64,
) {
    guarded("config http stream complete", (), || {}, || {})
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_reset(
    _filter_config_envoy_ptr: FilterConfigEnvoyPtr,
    _filter_config_ptr: FilterConfigModulePtr,
    _stream_id: u64,
    _reason: u32,
) {
    guarded("config http stream reset", (), || {}, || {})
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: FilterModulePtr,
) {
    guarded("above high watermark", (), || {}, || {})
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: FilterModulePtr,
) {
    guarded("below low watermark", (), || {}, || {})
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_local_reply(
    _filter_envoy_ptr: FilterEnvoyPtr,
    _filter_module_ptr: FilterModulePtr,
    _response_code: u32,
    _details: EnvoyBuffer,
    _reset_imminent: bool,
) -> u32 {
    guarded(
        "local reply",
        LOCAL_REPLY_CONTINUE,
        || {},
        || LOCAL_REPLY_CONTINUE,
    )
}

#[cfg(test)]
mod tests;
