//! Keeping the module's library loaded for the rest of Envoy's process.
//!
//! Envoy `dlclose`s a dynamic module when the last config naming it goes
//! (an LDS update or drain removing a listener), unless every
//! `dynamic_module_config` naming it says `do_not_close: true`. The
//! module's feed thread may still be running the library's code then
//! (its filter config's destroy hook tells it to end and does not wait),
//! and an unloaded library under a running thread crashes Envoy. So at
//! `envoy_dynamic_module_on_program_init` the library pins itself: it
//! finds its own path with `dladdr` on one of its symbols and opens itself
//! again with `RTLD_NOLOAD | RTLD_NODELETE`, which loads nothing and marks
//! the object already loaded as never to be unloaded. `do_not_close: true`
//! stays the advice: it does the same from Envoy's side.

use std::ffi::{CStr, CString, c_void};
use std::sync::OnceLock;

/// This library's path once pinned, or why it could not be.
pub type Pinned = Result<CString, String>;

static PINNED: OnceLock<Pinned> = OnceLock::new();

/// Pins this library, once per process (later calls answer the first's
/// outcome).
pub fn pin_this_library() -> &'static Pinned {
    PINNED.get_or_init(|| {
        // An address inside this library: its build marker, exported data.
        let ours = crate::build_info::KEYGATE_ENVOY_BUILD_INFO.as_ptr();
        pin_object_holding(ours.cast())
    })
}

/// What [`pin_this_library`] did, if it ran.
#[cfg(test)]
pub fn outcome() -> Option<&'static Pinned> {
    PINNED.get()
}

/// Marks the loaded object that holds `addr` as never to be unloaded
/// (`RTLD_NODELETE`), loading nothing (`RTLD_NOLOAD`); its path.
pub fn pin_object_holding(addr: *const c_void) -> Pinned {
    // SAFETY: all-zero is a valid Dl_info (null pointers).
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid out-pointer; `addr` is only compared with
    // the loaded objects' address ranges.
    let found = unsafe { libc::dladdr(addr, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return Err("dladdr finds no loaded object holding the module's code".into());
    }
    // SAFETY: dladdr's NUL-ended path, valid while the object is loaded,
    // which it is (it holds the code running now); copied at once.
    let path = unsafe { CStr::from_ptr(info.dli_fname) }.to_owned();
    let mode = libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE;
    // SAFETY: a NUL-ended path. The handle is kept (never closed): one
    // more reference of our own.
    let handle = unsafe { libc::dlopen(path.as_ptr(), mode) };
    if handle.is_null() {
        // SAFETY: dlerror's message (or null) is read before any other dl call.
        let error = unsafe { libc::dlerror() };
        let why = if error.is_null() {
            "not loaded under that name".to_owned()
        } else {
            // SAFETY: a NUL-ended message, copied at once.
            unsafe { CStr::from_ptr(error) }
                .to_string_lossy()
                .into_owned()
        };
        return Err(format!(
            "dlopen({}, RTLD_NOLOAD | RTLD_NODELETE) failed: {why}",
            path.to_string_lossy()
        ));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On an object loaded as a shared library (here the C library the
    /// test binary runs on): pinned, and found loaded under the path. The
    /// address is of a glibc function no sanitizer intercepts: under
    /// AddressSanitizer `dlopen` itself resolves to the runtime linked into
    /// the test executable, which `dlopen(RTLD_NOLOAD)` cannot name.
    #[test]
    fn a_loaded_shared_object_is_pinned_under_its_path() {
        let in_libc = libc::gnu_get_libc_version as *const c_void;
        let path = pin_object_holding(in_libc).unwrap();
        assert!(!path.as_bytes().is_empty());
        // SAFETY: a NUL-ended path.
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
        assert!(!handle.is_null(), "{path:?} is not loaded");
    }

    #[test]
    fn an_address_in_no_object_is_an_error() {
        let err = pin_object_holding(std::ptr::null()).unwrap_err();
        assert!(err.contains("dladdr"), "{err}");
    }
}
