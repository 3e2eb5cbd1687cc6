//! Progress output for people. On a terminal, a spinner per component
//! while it starts (`envoy: waiting for /ready (1.2 s)`); when stderr is
//! not a terminal or `$CI` is set, one plain line per event and never a
//! control character, so CI logs and captured output stay readable.
//!
//! Every line goes through [`crate::base::redact::redact`] first.

/// Seconds with one decimal, the way progress lines show durations.
pub fn secs(duration: std::time::Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

use std::io::{IsTerminal, Write};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// In plain mode, how often a long wait says it is still waiting.
const PLAIN_REMINDER: Duration = Duration::from_secs(5);

/// Spinners only on a terminal, and never in CI (whose "terminal" is a log).
pub fn use_spinners(stderr_is_terminal: bool, ci: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && ci.is_none_or(|v| v.is_empty())
}

/// Whether this process shows spinners (stderr is a terminal, `$CI` unset).
pub fn is_interactive() -> bool {
    interactive()
}

fn interactive() -> bool {
    static INTERACTIVE: LazyLock<bool> = LazyLock::new(|| {
        use_spinners(
            std::io::stderr().is_terminal(),
            std::env::var_os("CI").as_deref(),
        )
    });
    *INTERACTIVE
}

static MULTI: LazyLock<MultiProgress> =
    LazyLock::new(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));

/// Prints `[keyrig] <line>` on stderr, redacted, above any spinner.
/// The [`crate::say!`] macro calls this.
pub fn say(line: &str) {
    let line = crate::base::redact::redact(line);
    if interactive() {
        MULTI.suspend(|| eprintln!("[keyrig] {line}"));
    } else {
        eprintln!("[keyrig] {line}");
    }
}

/// Where plain progress lines go: stderr, or a buffer in tests.
#[derive(Clone)]
pub enum Sink {
    Stderr,
    Buffer(Arc<Mutex<Vec<u8>>>),
}

impl Sink {
    fn line(&self, text: &str) {
        let text = crate::base::redact::redact(text);
        match self {
            Sink::Stderr => say(&text),
            Sink::Buffer(buffer) => {
                let mut buffer = buffer.lock().unwrap_or_else(|p| p.into_inner());
                let _ = writeln!(buffer, "[keyrig] {text}");
            }
        }
    }
}

/// One component being waited for.
pub struct Waiting {
    name: String,
    what: String,
    started: Instant,
    display: Display,
}

enum Display {
    Spinner(ProgressBar),
    Plain { sink: Sink, last_line: Instant },
}

impl Waiting {
    /// A spinner on a terminal, else plain lines on stderr.
    pub fn start(name: &str, what: &str) -> Self {
        if interactive() {
            let bar = MULTI.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .expect("a valid template")
                    .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏✓"),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            let waiting = Self {
                name: name.to_owned(),
                what: what.to_owned(),
                started: Instant::now(),
                display: Display::Spinner(bar),
            };
            waiting.refresh(None);
            waiting
        } else {
            Self::plain(name, what, Sink::Stderr)
        }
    }

    /// Plain lines into `sink` whatever the terminal.
    pub fn plain(name: &str, what: &str, sink: Sink) -> Self {
        sink.line(&format!("{name}: starting, waiting for {what}"));
        Self {
            name: name.to_owned(),
            what: what.to_owned(),
            started: Instant::now(),
            display: Display::Plain {
                sink,
                last_line: Instant::now(),
            },
        }
    }

    fn refresh(&self, seen: Option<&str>) {
        if let Display::Spinner(bar) = &self.display {
            let seen = seen.map(|s| format!(", saw {s}")).unwrap_or_default();
            bar.set_message(crate::base::redact::redact(&format!(
                "{}: waiting for {} ({}{seen})",
                self.name,
                self.what,
                crate::base::progress::secs(self.started.elapsed())
            )));
        }
    }

    /// Another look that was not ready yet; `seen` is what it showed.
    pub fn still(&mut self, seen: &str) {
        let elapsed = self.started.elapsed();
        match &mut self.display {
            Display::Spinner(_) => self.refresh(Some(seen)),
            Display::Plain { sink, last_line } => {
                if last_line.elapsed() >= PLAIN_REMINDER {
                    sink.line(&format!(
                        "{}: still waiting for {} ({}, saw {seen})",
                        self.name,
                        self.what,
                        crate::base::progress::secs(elapsed)
                    ));
                    *last_line = Instant::now();
                }
            }
        }
    }

    /// Done: the spinner turns into a line that stays.
    pub fn done(self, outcome: &str) {
        let line = format!(
            "{}: {outcome} in {}",
            self.name,
            crate::base::progress::secs(self.started.elapsed())
        );
        match self.display {
            Display::Spinner(bar) => {
                bar.finish_and_clear();
                MULTI.remove(&bar);
                say(&line);
            }
            Display::Plain { sink, .. } => sink.line(&line),
        }
    }

    /// Gave up: the spinner goes away, the caller reports the error.
    pub fn failed(self) {
        if let Display::Spinner(bar) = self.display {
            bar.finish_and_clear();
            MULTI.remove(&bar);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(true, None, true)]
    #[case(true, Some(""), true)]
    #[case(true, Some("true"), false)]
    #[case(false, None, false)]
    fn spinners_only_on_a_terminal_outside_ci(
        #[case] tty: bool,
        #[case] ci: Option<&str>,
        #[case] expected: bool,
    ) {
        assert_eq!(use_spinners(tty, ci.map(std::ffi::OsStr::new)), expected);
    }

    #[rstest]
    fn plain_output_is_one_line_per_event_without_control_characters() {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Waiting::plain("envoy", "/ready", Sink::Buffer(buffer.clone()));
        for _ in 0..3 {
            waiting.still("connection refused");
        }
        waiting.done("ready");
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.first(),
            Some(&"[keyrig] envoy: starting, waiting for /ready")
        );
        assert!(
            lines
                .last()
                .unwrap()
                .starts_with("[keyrig] envoy: ready in 0.")
        );
        // Quick looks in a row do not repeat themselves.
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "control characters in {text:?}"
        );
    }
}
