//! keygate's forward-auth request handling on arbitrary headers and URIs:
//! which path it validates and which key it sees. Never panics; a key it
//! passes on is visible ASCII (or space, tab); repeated `x-api-key` is never one key.
#![no_main]
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use keygate_config::forward_auth::Presented;
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 4] = ["x-api-key", "x-forwarded-uri", "x-original-uri", "x-other"];

fuzz_target!(|data: &[u8]| {
    // Layout: [uri len][uri bytes] then records of [name index][len][value].
    let Some((&uri_len, rest)) = data.split_first() else {
        return;
    };
    let uri_len = (uri_len as usize).min(rest.len());
    let (uri_bytes, mut rest) = rest.split_at(uri_len);
    let uri = Uri::try_from(uri_bytes).unwrap_or_else(|_| Uri::from_static("/auth"));
    let mut headers = HeaderMap::new();
    let mut keys = 0;
    while let [name, len, tail @ ..] = rest {
        let len = (*len as usize).min(tail.len());
        let (value, tail) = tail.split_at(len);
        rest = tail;
        let name = NAMES[*name as usize % NAMES.len()];
        if let Ok(value) = HeaderValue::from_bytes(value) {
            keys += usize::from(name == "x-api-key");
            headers.append(HeaderName::from_static(name), value);
        }
    }
    let (_path, presented) = keygate_config::forward_auth::forward_auth_request(&headers, &uri);
    match presented {
        Presented::One(key) => {
            assert_eq!(keys, 1);
            assert!(key.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)));
        }
        Presented::Many => assert!(keys > 1),
        Presented::Missing => assert_eq!(keys, 0),
    }
});
