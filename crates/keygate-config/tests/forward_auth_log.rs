//! What `forward_auth` logs when the original-URI sources disagree. Its own
//! test binary, with one test and a global subscriber: a scoped one
//! (`with_default`) beside other tests that reach the same callsite first
//! saw nothing now and then (tracing caches a callsite's interest).

use std::sync::{Arc, Mutex};

use http::{HeaderMap, HeaderName, Uri};
use keygate_config::forward_auth::original_uri;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A query may carry a client's credentials (`?access_token=`), and so may
/// a fragment: the debug line names the paths only.
#[test]
fn a_disagreement_is_logged_without_queries_or_fragments() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (
            "x-forwarded-uri",
            "/billing/invoices?access_token=s3cret-query",
        ),
        ("x-original-uri", "/billing/nope#token=s3cret-fragment"),
    ] {
        headers.append(HeaderName::from_static(name), value.parse().unwrap());
    }
    let uri = Uri::from_static("/auth/billing/other?api_key=s3cret-suffix");
    assert_eq!(original_uri(&headers, &uri), "", "the sources agree");
    let log = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("/billing/invoices")
            && log.contains("/billing/nope")
            && log.contains("/billing/other"),
        "the disagreement is not logged: {log}"
    );
    assert!(!log.contains("s3cret"), "{log}");
}
