//! `ApiKey::parse` and `verify`: the per-request work keygate does before
//! (or instead of) a cache lookup. `cargo bench -p apikey`.

use apikey::{ApiKey, VerifierHash};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

fn parse_and_verify(c: &mut Criterion) {
    let key = ApiKey::generate();
    let text = key.expose().to_owned();
    let stored = key.verifier_hash();
    let other = ApiKey::generate().verifier_hash();

    c.bench_function("parse", |b| b.iter(|| ApiKey::parse(black_box(&text))));
    c.bench_function("parse_rejects_non_hex", |b| {
        let bad = format!("{}X", &text[..63]);
        b.iter(|| ApiKey::parse(black_box(&bad)))
    });
    c.bench_function("verify_match", |b| {
        b.iter(|| black_box(&key).verify(black_box(&stored)))
    });
    c.bench_function("verify_mismatch", |b| {
        b.iter(|| black_box(&key).verify(black_box(&other)))
    });
    c.bench_function("parse_then_verify", |b| {
        b.iter(|| {
            ApiKey::parse(black_box(&text))
                .map(|k| k.verify(black_box(&stored)))
                .unwrap_or(false)
        })
    });
    c.bench_function("verifier_hash_from_hex", |b| {
        let hex = stored.to_hex();
        b.iter(|| VerifierHash::from_hex(black_box(&hex)))
    });
}

criterion_group!(benches, parse_and_verify);
criterion_main!(benches);
