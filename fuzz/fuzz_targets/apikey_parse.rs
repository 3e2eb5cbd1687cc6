//! `ApiKey::parse` on arbitrary text: never panics; what it accepts is 64
//! lowercase hex characters and round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = apikey::ApiKey::parse(text) {
        assert_eq!(key.expose().len(), 64);
        assert!(
            key.expose()
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        );
        assert_eq!(key.selector().as_str(), &key.expose()[..32]);
        assert!(key.verify(&key.verifier_hash()));
    }
});
