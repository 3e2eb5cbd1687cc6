//! Loopback ports for the components a run starts.
//!
//! A port is picked by binding it and released for the component to bind,
//! so there is a window in which someone else can take it. Two things made
//! that window bite under load: port 0 hands out ports from the kernel's
//! ephemeral range, which every outgoing connection also draws from (a load
//! loop without keep-alive burns thousands of them), and tests running in
//! one process start several environments at once. So ports come from below
//! the ephemeral range, at random, and never twice from one process.

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
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
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
        if !handed_out.contains(&next) && TcpListener::bind(("127.0.0.1", next)).is_ok() {
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

    #[test]
    fn pair_leaves_the_next_port_free_too() {
        let port = free_port_pair().unwrap();
        TcpListener::bind(("127.0.0.1", port)).unwrap();
        TcpListener::bind(("127.0.0.1", port + 1)).unwrap();
    }
}
