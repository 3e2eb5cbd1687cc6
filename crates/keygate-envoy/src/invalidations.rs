//! Following keygate's invalidation feed (`GET /v1/invalidations`, see
//! `keygate::feed`): one thread of the module's own per filter config,
//! shared by all workers through the table, reading JSON lines from a
//! plain `std::net::TcpStream` and applying each one to the table.
//!
//! A line can only remove state: `drop` forgets one key (and outdates any
//! callout in flight for it), `stale` makes every entry ask keygate again,
//! `ping` does nothing, and anything else (unparseable, unknown) counts as
//! `stale`, since it might have been a removal. A forged line costs
//! callouts to keygate, never an allowed request.
//!
//! Disconnected (keygate down or restarting), the thread reconnects with
//! backoff; meanwhile entries live out their positive TTL, and keygate's
//! 200 to the reconnect makes everything held be asked again, since
//! revocations may have been missed (keygate's first line, `stale`, says
//! so too; the module does not wait for it). A panic in the thread's
//! own code counts as a lost feed too (everything held is asked again at
//! once), never as the end of following it.
//!
//! Envoy's worker threads never wait for this thread: they only take the
//! table's locks, which the thread holds for one insert or remove.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Deserialize;

use crate::table::Table;

/// Longer lines are not keygate's (a drop line is ~120 bytes).
pub const MAX_LINE: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// keygate pings at least every 10 s; three missed pings and the
/// connection is presumed dead (a half-open TCP connection sends nothing).
const READ_TIMEOUT: Duration = Duration::from_secs(35);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where log lines go (Envoy's log from the module, stderr in tests).
pub type Log = fn(level: Level, message: &str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
}

/// What one line did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Dropped,
    Stale(String),
    Ping,
    /// Not a line of keygate's feed: treated as `stale`.
    Unknown,
}

#[derive(Deserialize)]
struct Line {
    #[serde(rename = "type")]
    kind: String,
    group: Option<String>,
    selector: Option<String>,
    why: Option<String>,
}

/// Applies one feed line to `table`.
pub fn apply(line: &[u8], table: &Table) -> Applied {
    // keygate writes each line as a JSON object; serde would also take an
    // array for `Line`, which keygate never sends.
    let object = line.trim_ascii_start().starts_with(b"{");
    let Some(line) = object
        .then(|| serde_json::from_slice::<Line>(line).ok())
        .flatten()
    else {
        table.all_stale();
        return Applied::Unknown;
    };
    match (line.kind.as_str(), line.group, line.selector) {
        ("drop", Some(group), Some(selector)) => {
            table.drop_key(&group, &selector);
            Applied::Dropped
        }
        ("stale", _, _) => {
            table.all_stale();
            Applied::Stale(line.why.unwrap_or_default())
        }
        ("ping", _, _) => Applied::Ping,
        _ => {
            table.all_stale();
            Applied::Unknown
        }
    }
}

/// The running follower thread; [`Follower::stop`] ends it.
pub struct Follower {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    stop: AtomicBool,
    /// Wakes the backoff sleep at once on stop.
    wake: (Mutex<()>, Condvar),
    /// The connection being read, so stop can shut it down under the read.
    socket: Mutex<Option<TcpStream>>,
}

impl Follower {
    /// Starts following `addr` (keygate's HTTP port, `host:port`). `tick`
    /// runs on the thread after every line of the feed (keygate pings at
    /// least every 10 s) and before every reconnect: periodic work that
    /// needs no timer of its own (the filter's overdue warning counts).
    pub fn start(
        addr: String,
        authority: String,
        table: Arc<Table>,
        log: Log,
        tick: Box<dyn Fn() + Send>,
    ) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            wake: (Mutex::new(()), Condvar::new()),
            socket: Mutex::new(None),
        });
        let thread = std::thread::Builder::new()
            .name("keygate-feed".into())
            .spawn({
                let shared = shared.clone();
                move || {
                    run(&shared, &addr, &table, log, |followed| {
                        tick();
                        follow(&shared, &addr, &authority, &table, log, followed, &*tick)
                    })
                }
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Tells the thread to end, and returns without waiting for it: the
    /// filter config's destroy hook calls this, and Envoy may run that hook
    /// on a worker thread, whose requests must not wait out a connect
    /// (`CONNECT_TIMEOUT`) or a backoff. The thread holds only the table
    /// and its own state, and the library stays loaded (it pins itself at
    /// program init, see `pin`; `do_not_close` does the same from Envoy's
    /// side), so it may outlive the filter config by that long. The handle
    /// is for tests, which wait for it.
    pub fn stop(mut self) -> Option<JoinHandle<()>> {
        self.tell_to_stop();
        self.thread.take()
    }

    fn tell_to_stop(&self) {
        {
            // Under the backoff's mutex: the thread checks `stop` and starts
            // waiting under it too, so the notification below cannot fall
            // between the two and be lost (a lost one waited out the
            // backoff, up to MAX_BACKOFF).
            let _wait = lock(&self.shared.wake.0);
            self.shared.stop.store(true, Ordering::SeqCst);
        }
        if let Some(socket) = lock(&self.shared.socket).take() {
            let _ = socket.shutdown(Shutdown::Both);
        }
        self.shared.wake.1.notify_all();
    }
}

impl Drop for Follower {
    /// A follower dropped without [`Follower::stop`] (its filter config
    /// dropped on an error path, a panic after the thread started) stops
    /// all the same, without waiting either: otherwise its thread would
    /// reconnect for ever. After `stop`, telling it again is harmless.
    fn drop(&mut self) {
        self.tell_to_stop();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Follows the feed (`follow_once`: one connection) until stopped,
/// reconnecting with backoff.
fn run(
    shared: &Shared,
    addr: &str,
    table: &Table,
    log: Log,
    mut follow_once: impl FnMut(&mut bool) -> Result<(), String>,
) {
    let mut backoff = MIN_BACKOFF;
    let mut down_reported = false;
    while !shared.stop.load(Ordering::SeqCst) {
        let mut followed = false;
        let result = catch_unwind(AssertUnwindSafe(|| follow_once(&mut followed)))
            .unwrap_or_else(|_| {
                // A bug in this thread's code must not end the following
                // for good, silently: counted as a lost feed, and what it
                // may have missed is asked of keygate again.
                table.all_stale();
                Err("the feed thread panicked (a bug in keygate-envoy); every entry held is asked again".into())
            });
        *lock(&shared.socket) = None;
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        if followed {
            backoff = MIN_BACKOFF;
            down_reported = false;
        }
        let why = match result {
            Ok(()) => "keygate ended the feed".to_owned(),
            Err(err) => err,
        };
        if !down_reported {
            log(
                Level::Warn,
                &format!(
                    "keygate-envoy: invalidation feed from {addr} lost ({why}); reconnecting, \
                     cached keys expire at the positive TTL meanwhile"
                ),
            );
            down_reported = true;
        } else {
            log(
                Level::Debug,
                &format!("keygate-envoy: invalidation feed from {addr}: {why}"),
            );
        }
        let (mutex, wake) = &shared.wake;
        let guard = lock(mutex);
        let _ = wake
            .wait_timeout_while(guard, backoff, |()| !shared.stop.load(Ordering::SeqCst))
            .map(drop);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection: request the feed, apply its lines until it ends.
fn follow(
    shared: &Shared,
    addr: &str,
    authority: &str,
    table: &Table,
    log: Log,
    followed: &mut bool,
    tick: &dyn Fn(),
) -> Result<(), String> {
    let target = addr
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve {addr}: {err}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)
        .map_err(|err| format!("cannot connect: {err}"))?;
    let io_err = |err: io::Error| err.to_string();
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .map_err(io_err)?;
    stream.set_nodelay(true).map_err(io_err)?;
    *lock(&shared.socket) = Some(stream.try_clone().map_err(io_err)?);
    if shared.stop.load(Ordering::SeqCst) {
        return Ok(());
    }
    write!(
        stream,
        "GET /v1/invalidations HTTP/1.1\r\nhost: {authority}\r\naccept: application/x-ndjson\r\n\r\n"
    )
    .map_err(|err| format!("cannot send the request: {err}"))?;
    let reconnected = || {
        // keygate answered 200: a (re)connection. What it dropped while
        // this thread was not following is unknown here, so every entry
        // held is asked of keygate again from now on, whatever the first
        // line says (keygate's is `stale`, but the module does not count
        // on it).
        table.all_stale();
    };
    read_answer(BufReader::new(stream), table, reconnected, |_, applied| {
        tick();
        if !*followed {
            *followed = true;
            log(
                Level::Info,
                &format!(
                    "keygate-envoy: following keygate's invalidation feed at {addr}: revoked keys are dropped as keygate drops them"
                ),
            );
        }
        match applied {
            Applied::Dropped | Applied::Ping => {}
            Applied::Stale(why) => log(
                Level::Debug,
                &format!("keygate-envoy: keygate marked every answer stale ({why})"),
            ),
            Applied::Unknown => log(
                Level::Warn,
                "keygate-envoy: a line of the invalidation feed is not keygate's; every cached key is asked again",
            ),
        }
    })
}

/// Reads keygate's answer to `GET /v1/invalidations` from `reader` (status
/// line, headers, then the body as it comes or chunked) and applies each
/// line to `table`, handing `on_line` the line and what it did. `Ok(())`
/// when the answer ends; an error says what was wrong with it. `follow`
/// runs it on keygate's connection; the fuzz target `module_feed` on
/// arbitrary bytes and on any chunking of known lines.
pub fn read_feed(
    reader: impl BufRead,
    table: &Table,
    on_line: impl FnMut(&[u8], Applied),
) -> Result<(), String> {
    read_answer(reader, table, || {}, on_line)
}

/// [`read_feed`], running `on_head` once keygate answered 200, before the
/// first line.
fn read_answer(
    mut reader: impl BufRead,
    table: &Table,
    on_head: impl FnOnce(),
    mut on_line: impl FnMut(&[u8], Applied),
) -> Result<(), String> {
    let chunked = response_head(&mut reader)?;
    on_head();
    let mut body = BufReader::new(Body::new(reader, chunked));
    let mut line = Vec::new();
    loop {
        match read_line(&mut body, &mut line) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(err) => return Err(format!("reading the feed: {err}")),
        }
        let applied = apply(&line, table);
        on_line(&line, applied);
    }
}

/// Reads the status line and headers (parsed by `httparse`); `Ok(chunked)`
/// for a 200.
fn response_head(reader: &mut impl BufRead) -> Result<bool, String> {
    let mut head = Vec::new();
    let mut line = Vec::new();
    loop {
        if !read_line(reader, &mut line).map_err(|err| format!("reading the answer: {err}"))? {
            return Err("keygate closed the connection before answering".into());
        }
        head.extend_from_slice(&line);
        head.push(b'\n');
        if line.is_empty() || line.as_slice() == b"\r" {
            break;
        }
        if head.len() > MAX_LINE {
            return Err("keygate's answer has more than 64 KiB of headers".into());
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err("keygate's answer is not HTTP/1.1".into()),
    }
    if response.code != Some(200) {
        return Err(format!(
            "keygate answered {} {} to GET /v1/invalidations (a keygate with the invalidation feed answers 200)",
            response.code.unwrap_or_default(),
            response.reason.unwrap_or_default()
        ));
    }
    Ok(response.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            && String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .contains("chunked")
    }))
}

/// One line into `line` (without `\n`); `Ok(false)` at the end of input.
/// A line longer than [`MAX_LINE`] is an error: not keygate's.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<bool> {
    line.clear();
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            return if line.is_empty() {
                Ok(false)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the feed ended inside a line",
                ))
            };
        }
        let (chunk, ends) = match buffer.iter().position(|b| *b == b'\n') {
            Some(at) => (&buffer[..at], true),
            None => (buffer, false),
        };
        if line.len() + chunk.len() > MAX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a line longer than {MAX_LINE} bytes"),
            ));
        }
        line.extend_from_slice(chunk);
        let used = chunk.len() + usize::from(ends);
        reader.consume(used);
        if ends {
            return Ok(true);
        }
    }
}

/// A response body: as it comes, or decoded from chunked encoding (what
/// keygate's HTTP/1.1 server sends for a body of unknown length).
struct Body<R> {
    inner: R,
    chunked: bool,
    /// Bytes left in the current chunk.
    left: usize,
    /// A chunk's data ended; its CRLF is next.
    after_chunk: bool,
    done: bool,
}

impl<R: BufRead> Body<R> {
    fn new(inner: R, chunked: bool) -> Self {
        Self {
            inner,
            chunked,
            left: 0,
            after_chunk: false,
            done: false,
        }
    }
}

impl<R: BufRead> Read for Body<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if !self.chunked {
            return self.inner.read(out);
        }
        let mut line = Vec::new();
        loop {
            if self.done || out.is_empty() {
                return Ok(0);
            }
            if self.left > 0 {
                let want = out.len().min(self.left);
                let got = self.inner.read(&mut out[..want])?;
                if got == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                self.left -= got;
                self.after_chunk = self.left == 0;
                return Ok(got);
            }
            if std::mem::take(&mut self.after_chunk) {
                read_line(&mut self.inner, &mut line)?;
                if line.as_slice() != b"\r" && !line.is_empty() {
                    return Err(invalid("no CRLF after a chunk"));
                }
            }
            if !read_line(&mut self.inner, &mut line)? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            line.push(b'\n');
            self.left = match httparse::parse_chunk_size(&line) {
                Ok(httparse::Status::Complete((_, size))) => {
                    usize::try_from(size).map_err(|_| invalid("a chunk too large"))?
                }
                _ => return Err(invalid("a chunk size line is not one")),
            };
            if self.left == 0 {
                self.done = true;
            }
        }
    }
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Approved, Lookup, Ttls};
    use apikey::ApiKey;
    use std::time::Instant;

    fn table_with(key: &ApiKey) -> Table {
        let table = Table::new(
            Ttls {
                positive: Duration::from_secs(60),
                negative: Duration::from_secs(1),
                resurrect: Duration::from_secs(60),
            },
            Duration::from_secs(3),
        );
        let approved = Approved {
            hash: key.verifier_hash(),
            owner: "o".into(),
        };
        table.insert(
            "g",
            key.selector().as_str(),
            approved,
            table.stamp(),
            Instant::now(),
            None,
        );
        table
    }

    fn held(table: &Table, key: &ApiKey) -> bool {
        matches!(
            table.lookup("g", key.selector().as_str(), Instant::now()),
            Lookup::Fresh(_)
        )
    }

    #[test]
    fn lines_only_remove_state() {
        let key = ApiKey::generate();
        let table = table_with(&key);
        assert_eq!(apply(br#"{"type":"ping"}"#, &table), Applied::Ping);
        let other = format!(
            r#"{{"type":"drop","group":"g","selector":"{}"}}"#,
            "0".repeat(32)
        );
        assert_eq!(apply(other.as_bytes(), &table), Applied::Dropped);
        assert!(held(&table, &key));
        let this = format!(
            r#"{{"type":"drop","group":"g","selector":"{}"}}"#,
            key.selector()
        );
        assert_eq!(apply(this.as_bytes(), &table), Applied::Dropped);
        assert!(!held(&table, &key));
        assert!(
            table
                .resurrect("g", key.selector().as_str(), Instant::now())
                .is_none()
        );

        for line in [
            &br#"{"type":"stale","why":"connected"}"#[..],
            br#"{"type":"allow","group":"g"}"#,
            br#"{"type":"drop","group":"g"}"#,
            b"garbage",
            // serde would read `Line` from an array too; keygate never
            // sends one (found by the fuzz target's oracle).
            br#"["drop","g","00000000000000000000000000000000",null]"#,
        ] {
            let table = table_with(&key);
            assert_ne!(apply(line, &table), Applied::Ping);
            assert!(!held(&table, &key), "{}", String::from_utf8_lossy(line));
        }
    }

    /// The tick runs on every line of the feed and before every connection,
    /// over a real TCP connection to a stand-in for keygate's feed.
    #[test]
    fn the_tick_runs_on_every_line_and_every_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = [0u8; 512];
            let _ = conn.read(&mut request).unwrap();
            conn.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n\r\n\
                  {\"type\":\"ping\"}\n{\"type\":\"ping\"}\n{\"type\":\"ping\"}\n",
            )
            .unwrap();
            // Held open until the follower is stopped.
            let _ = conn.read(&mut request);
        });
        let ticks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        fn quiet(_: Level, _: &str) {}
        let follower = Follower::start(
            addr.clone(),
            addr,
            Arc::new(table_with(&ApiKey::generate())),
            quiet,
            Box::new({
                let ticks = ticks.clone();
                move || {
                    ticks.fetch_add(1, Ordering::SeqCst);
                }
            }),
        )
        .unwrap();
        // One before the connection, one per line.
        let deadline = Instant::now() + Duration::from_secs(10);
        while ticks.load(Ordering::SeqCst) < 4 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let seen = ticks.load(Ordering::SeqCst);
        follower.stop().unwrap().join().unwrap();
        server.join().unwrap();
        assert!(seen >= 4, "{seen} ticks for a connection and three lines");
    }

    /// A stand-in for keygate's feed on a free port: answers one
    /// connection with `answer`, then holds it open until the follower
    /// closes it.
    fn feed_server(answer: &'static [u8]) -> (String, std::thread::JoinHandle<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = [0u8; 512];
            let _ = conn.read(&mut request).unwrap();
            conn.write_all(answer).unwrap();
            let _ = conn.read(&mut request);
        });
        (addr, server)
    }

    /// Starts a follower of `addr` and waits for `ticks` of its ticks (one
    /// before each connection, one per line).
    fn follow_until(addr: &str, table: Arc<Table>, ticks: usize) -> Follower {
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        fn quiet(_: Level, _: &str) {}
        let follower = Follower::start(
            addr.to_owned(),
            addr.to_owned(),
            table,
            quiet,
            Box::new({
                let seen = seen.clone();
                move || {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
            }),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen.load(Ordering::SeqCst) < ticks && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            seen.load(Ordering::SeqCst) >= ticks,
            "the feed was not followed"
        );
        follower
    }

    /// What was dropped while the thread was not following is unknown:
    /// keygate's 200 to a (re)connection makes every entry held be asked
    /// again, whatever keygate's first line.
    #[test]
    fn a_reconnection_makes_every_entry_stale_whatever_the_first_line() {
        let key = ApiKey::generate();
        let table = Arc::new(table_with(&key));
        let (addr, server) = feed_server(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n\r\n{\"type\":\"ping\"}\n",
        );
        // One tick before the connection, one for the ping.
        let follower = follow_until(&addr, table.clone(), 2);
        let still_held = held(&table, &key);
        follower.stop().unwrap().join().unwrap();
        server.join().unwrap();
        assert!(
            !still_held,
            "an entry held across a reconnection is used without asking keygate"
        );
    }

    /// A follower dropped without `stop` ends its thread (which holds a
    /// reference to the table until it ends) and closes its connection.
    #[test]
    fn a_follower_dropped_without_stop_ends_its_thread() {
        let table = Arc::new(table_with(&ApiKey::generate()));
        let (addr, server) = feed_server(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n\r\n{\"type\":\"ping\"}\n",
        );
        let follower = follow_until(&addr, table.clone(), 2);
        drop(follower);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&table) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            Arc::strong_count(&table),
            1,
            "the feed thread still runs after its follower was dropped"
        );
        // The server's read ends: the connection was shut down.
        server.join().unwrap();
    }

    #[test]
    fn a_panic_while_following_is_a_lost_feed_not_the_end_of_it() {
        let key = ApiKey::generate();
        let table = table_with(&key);
        let shared = Shared {
            stop: AtomicBool::new(false),
            wake: (Mutex::new(()), Condvar::new()),
            socket: Mutex::new(None),
        };
        fn quiet(_: Level, _: &str) {}
        let mut connections = 0;
        run(&shared, "127.0.0.1:9", &table, quiet, |_followed| {
            connections += 1;
            if connections == 1 {
                panic!("injected: a bug while following the feed");
            }
            shared.stop.store(true, Ordering::SeqCst);
            Ok(())
        });
        assert_eq!(connections, 2, "the thread reconnected after the panic");
        assert!(
            !held(&table, &key),
            "what the panic may have missed is asked of keygate again"
        );
    }

    #[test]
    fn chunked_bodies_are_decoded_into_lines() {
        let wire = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n\
            23\r\n{\"type\":\"stale\",\"why\":\"connected\"}\n\r\n\
            8\r\n{\"type\":\r\n8;ext=1\r\n\"ping\"}\n\r\n0\r\n\r\n";
        let mut reader = BufReader::new(&wire[..]);
        assert!(response_head(&mut reader).unwrap());
        let mut body = BufReader::new(Body::new(reader, true));
        let mut line = Vec::new();
        let mut lines = Vec::new();
        while read_line(&mut body, &mut line).unwrap() {
            lines.push(String::from_utf8(line.clone()).unwrap());
        }
        assert_eq!(
            lines,
            [
                r#"{"type":"stale","why":"connected"}"#,
                r#"{"type":"ping"}"#
            ]
        );
    }

    #[test]
    fn a_refusal_names_what_keygate_said() {
        let wire = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        let err = response_head(&mut BufReader::new(&wire[..])).unwrap_err();
        assert!(err.contains("keygate answered 404 Not Found"), "{err}");
        let mut long = BufReader::new(std::io::repeat(b'x').take(MAX_LINE as u64 + 10));
        assert!(read_line(&mut long, &mut Vec::new()).is_err());
    }
}
