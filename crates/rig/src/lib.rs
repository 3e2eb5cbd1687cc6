//! keyrig's harness library: pinned tools, run directories, supervised
//! processes, Vault setup, scenario loading, the local profile, waits and the
//! e2e results table. `xtask` is a thin CLI over it; the e2e tests use
//! `env`, `vault`, `wait` and `case`.

pub mod audit;
pub mod case;
pub mod debian;
pub mod delivery;
pub mod diagnostics;
pub mod echo;
pub mod env;
pub mod environments;
pub mod fault;
pub mod gateway;
pub mod identity;
pub mod keys_file;
pub mod local;
pub mod modes;
pub mod once;
pub mod paths;
pub mod pki;
pub mod ports;
pub mod process;
pub mod progress;
pub mod raft;
pub mod redact;
pub mod references;
pub mod report;
pub mod rotation;
pub mod run;
pub mod scenario;
pub mod secret_dir;
pub mod tls;
pub mod tls_probe;
pub mod tools;
pub mod vault;
pub mod wait;

/// A progress line for people: `[keyrig] ...` on stderr, so stdout stays
/// free for what a command is asked to print (e.g. `doctor`'s report).
/// Registered secrets are redacted, and the line prints above any spinner.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::progress::say(&format!($($arg)*))
    };
}

/// Seconds with one decimal, the way progress lines show durations.
pub fn secs(duration: std::time::Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}
