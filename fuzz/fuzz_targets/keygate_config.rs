//! keygate's config loader on arbitrary YAML: never panics, and every error
//! names the file it came from.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = std::path::Path::new("fuzz/keygate.yaml");
    if let Err(err) = keygate_config::config::Config::parse(file, text) {
        assert!(err.to_string().starts_with("fuzz/keygate.yaml: "), "{err}");
    }
});
