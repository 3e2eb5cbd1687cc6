//! [`BoxFuture`], the future type of keygate's object-safe async traits
//! (`RecordSource`, `RefSource`, `ReadinessSource`): a trait whose methods
//! return `impl Future` cannot be used as `dyn`, so they return this instead.
//!
//! It lives on its own and imports nothing from the crate, so naming it adds
//! no dependency: `vault` and `refs` need it but must not import `cache`,
//! which imports `vault`.

use std::future::Future;
use std::pin::Pin;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
