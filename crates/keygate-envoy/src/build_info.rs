//! What this build of the module was made for, readable without loading it.
//!
//! Envoy itself checks only the ABI version string the module returns at
//! load; a module built for another Envoy may load and then misbehave, as
//! the header's signatures are the contract and nothing checks them. So the
//! library carries a marker line, [`BUILD_INFO`], which the harness
//! (`rig::process::envoy_module`) finds in the file's bytes and compares
//! with `envoy --version` before it starts Envoy with the module.

/// The dynamic-module ABI version the hooks and callbacks follow.
pub const ABI_VERSION: &str = "v0.2.0";
/// The same, as `envoy_dynamic_module_on_program_init` returns it; Envoy
/// 1.40.0 logs "Dynamic module ABI version v0.2.0 matched." for it.
pub const ABI_VERSION_C: &std::ffi::CStr = c"v0.2.0";
/// The Envoy release series (`major.minor`) the ABI was checked against.
pub const ENVOY_SERIES: &str = "1.40";

/// `keygate-envoy-build abi=<ABI_VERSION> envoy=<ENVOY_SERIES>`, NUL-ended.
/// Kept in the library (`#[used]`, exported) so the linker cannot drop it.
#[used]
#[unsafe(no_mangle)]
pub static KEYGATE_ENVOY_BUILD_INFO: [u8; 44] = *b"keygate-envoy-build abi=v0.2.0 envoy=1.40;\n\0";

/// The marker's prefix, for readers.
pub const MARKER: &str = "keygate-envoy-build ";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_names_the_constants() {
        let text = std::str::from_utf8(&KEYGATE_ENVOY_BUILD_INFO).unwrap();
        assert_eq!(
            text,
            format!("{MARKER}abi={ABI_VERSION} envoy={ENVOY_SERIES};\n\0")
        );
        assert_eq!(ABI_VERSION_C.to_bytes(), ABI_VERSION.as_bytes());
    }
}
