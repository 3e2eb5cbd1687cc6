//! [`Protocol`]: which front door a request came through.
//!
//! Plain data, importing nothing from the crate: `decision` takes it and
//! `metrics` labels by it, and `decision` imports `metrics`, so it can live in
//! neither without a loop.

/// Which front door a request came through, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    Http,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        }
    }
}
