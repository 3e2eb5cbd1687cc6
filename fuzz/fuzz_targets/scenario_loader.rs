//! The scenario loaders on arbitrary files: an OpenAPI document
//! (`keyrig_scenario::apis::load_api`) and the Vault setup (`VaultSetup::load`,
//! with a policy file beside it). Never panic; errors name the file.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let api = dir.path().join("api.yaml");
    std::fs::write(&api, text).unwrap();
    if let Err(err) = keyrig_scenario::apis::load_api(&api) {
        assert!(format!("{err:#}").contains("api.yaml"), "{err:#}");
    }
    let setup = dir.path().join("setup.yaml");
    std::fs::write(&setup, text).unwrap();
    std::fs::write(
        dir.path().join("p.hcl"),
        "path \"{{ mount }}/data/*\" { capabilities = [\"read\"] }",
    )
    .unwrap();
    if let Err(err) = keyrig_scenario::setup::VaultSetup::load(&setup, &["a".into(), "b".into()]) {
        let message = format!("{err:#}");
        assert!(
            message.contains("setup.yaml") || message.contains(".hcl"),
            "{message}"
        );
    }
});
