//! Loopback ports for the components a run starts.
//!
//! A port is picked by binding it and released for the component to bind,
//! so there is a window in which someone else can take it. Two things made
//! that window bite under load: port 0 hands out ports from the kernel's
//! ephemeral range, which every outgoing connection also draws from (a load
//! loop without keep-alive burns thousands of them), and tests running in
//! one process start several environments at once. So ports come from below
//! the ephemeral range, at random, and never twice from one process.
//!
//! And never twice from two processes on one machine: the e2e suite runs
//! many test processes at once (three modes, every fault case starting an
//! environment of its own), each picking its ports before binding them. A
//! pick is reserved with an exclusive `flock` on `<tmp>/keyrig-ports-<uid>/
//! <port>.lock`, held for the rest of the process's life; the kernel drops
//! it when the process exits however it exits, so nothing goes stale.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

use anyhow::{Result, bail};

/// Where picks come from when the ephemeral range cannot be read: below
/// Linux's default range (32768-60999) and above the usual service ports.
const FALLBACK: (u16, u16) = (20000, 32767);

/// The lowest port of the kernel's ephemeral range, if known.
fn ephemeral_start() -> Option<u16> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// The range picks come from: `[low, high]`, under the ephemeral range.
fn pick_range() -> (u16, u16) {
    match ephemeral_start() {
        Some(start) if start > 12000 => (start.saturating_sub(12768).max(1024), start - 1),
        _ => FALLBACK,
    }
}

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// The reservations this process holds (see the module comment).
static RESERVED: Mutex<Vec<nix::fcntl::Flock<std::fs::File>>> = Mutex::new(Vec::new());

/// Reserves `port` for this process across processes; false if another
/// process holds it. Without a usable lock directory, reservation is
/// skipped (the bind check still applies).
fn reserve(port: u16) -> bool {
    let dir = std::env::temp_dir().join(format!("keyrig-ports-{}", nix::unistd::getuid()));
    if std::fs::create_dir_all(&dir).is_err() {
        return true;
    }
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{port}.lock")))
    else {
        return true;
    };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => {
            RESERVED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(lock);
            true
        }
        Err(_) => false,
    }
}

/// A loopback port nobody listens on now, not handed out before by this
/// process, and outside the ephemeral range.
pub fn free_port() -> Result<u16> {
    let (low, high) = pick_range();
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    for _ in 0..200 {
        let port = low + (rand::random::<u16>() % (high - low + 1));
        if handed_out.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && reserve(port) {
            handed_out.insert(port);
            return Ok(port);
        }
    }
    bail!(
        "found no free loopback port in {low}-{high} after 200 tries: is something holding them all?"
    )
}

/// `free_port` where `port + 1` is free too (`bao server -dev` binds its
/// cluster listener there).
pub fn free_port_pair() -> Result<u16> {
    for _ in 0..50 {
        let port = free_port()?;
        let Some(next) = port.checked_add(1) else {
            continue;
        };
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        let handed_out = handed_out.get_or_insert_with(HashSet::new);
        if !handed_out.contains(&next)
            && TcpListener::bind(("127.0.0.1", next)).is_ok()
            && reserve(next)
        {
            handed_out.insert(next);
            return Ok(port);
        }
    }
    bail!("found no two adjacent free loopback ports after 50 tries")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let unique: HashSet<_> = ports.iter().collect();
        assert_eq!(unique.len(), ports.len());
        let (low, high) = pick_range();
        assert!(ports.iter().all(|p| (low..=high).contains(p)), "{ports:?}");
        if let Some(start) = ephemeral_start() {
            assert!(high < start);
        }
        for port in ports.iter().take(5) {
            TcpListener::bind(("127.0.0.1", *port)).expect("a picked port binds");
        }
    }

    fn lock_file(port: u16) -> std::fs::File {
        let dir = std::env::temp_dir().join(format!("keyrig-ports-{}", nix::unistd::getuid()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{port}.lock")))
            .unwrap()
    }

    #[test]
    fn a_picked_port_is_reserved_against_other_processes_and_theirs_against_us() {
        use nix::fcntl::{Flock, FlockArg};
        // flock conflicts between open file descriptions, so a second open
        // here stands for another process.
        let ours = free_port().unwrap();
        assert!(
            Flock::lock(lock_file(ours), FlockArg::LockExclusiveNonblock).is_err(),
            "port {ours} was handed out without a reservation"
        );
        let theirs = (20000..32767)
            .find(|p| Flock::lock(lock_file(*p), FlockArg::LockExclusiveNonblock).is_ok())
            .unwrap();
        let _held = Flock::lock(lock_file(theirs), FlockArg::LockExclusiveNonblock).unwrap();
        assert!(!reserve(theirs), "port {theirs} reserved twice");
    }

    #[test]
    fn pair_leaves_the_next_port_free_too() {
        let port = free_port_pair().unwrap();
        TcpListener::bind(("127.0.0.1", port)).unwrap();
        TcpListener::bind(("127.0.0.1", port + 1)).unwrap();
    }
}
