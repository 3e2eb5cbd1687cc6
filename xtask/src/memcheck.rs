//! `cargo xtask test`'s stage "keygate-envoy inside Envoy under memcheck":
//! the Envoy module's integration test (`crates/rig/tests/keygate_envoy.rs`)
//! with the pinned Envoy under valgrind's memcheck, through a wrapper the
//! test finds as `KEYRIG_ENVOY`. The unit tests under AddressSanitizer
//! drive the module's hooks through a scripted host; this runs them inside
//! the real Envoy, which owns the buffers the module reads and decides when
//! a filter dies. About 40 s here.
//!
//! Judged on the module only. Envoy 1.40's own code (stripped; BoringSSL,
//! absl) draws a score of "uninitialised value" reports in memcheck even
//! for `envoy --version`: not ours to fix, counted and said, not judged. The
//! stage fails on any invalid access (read, write, free) wherever it is,
//! and on any report with a frame in the module. Logs, one per Envoy
//! process: `target/rig/memcheck/`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rig::say;

/// How a stack frame in the module reads: the library's name (no debug
/// information) or the crate's path in a function's name (with it).
const MODULE_FRAMES: [&str; 2] = ["libkeygate_envoy.so", "keygate_envoy::"];

/// Report kinds that are a memory error wherever they are.
const INVALID: [&str; 5] = [
    "Invalid read",
    "Invalid write",
    "Invalid free",
    "Mismatched free",
    "Source and destination overlap",
];

/// One memcheck report: its first line and its stack, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Report {
    kind: String,
    lines: Vec<String>,
}

impl Report {
    /// A report the stage fails on.
    fn judged(&self) -> bool {
        INVALID.iter().any(|kind| self.kind.starts_with(kind))
            || self
                .lines
                .iter()
                .any(|line| MODULE_FRAMES.iter().any(|frame| line.contains(frame)))
    }
}

/// The reports of one memcheck log (`==PID== `-prefixed; a report runs
/// from its first line to the next blank one). The header, the heap
/// summary and the error summary are not reports.
fn reports(log: &str) -> Vec<Report> {
    let mut found = Vec::new();
    let mut current: Option<Report> = None;
    for line in log.lines() {
        // `==<pid>== <text>`; a blank text ends a report.
        let Some((_, rest)) = line
            .strip_prefix("==")
            .and_then(|rest| rest.split_once("=="))
        else {
            continue;
        };
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        if rest.trim().is_empty() {
            found.extend(current.take());
            continue;
        }
        match &mut current {
            Some(report) => report.lines.push(rest.to_owned()),
            None if is_report_start(rest) => {
                current = Some(Report {
                    kind: rest.trim().to_owned(),
                    lines: Vec::new(),
                });
            }
            None => {}
        }
    }
    found.extend(current);
    found
}

fn is_report_start(line: &str) -> bool {
    INVALID.iter().any(|kind| line.starts_with(kind))
        || line.starts_with("Conditional jump or move depends on uninitialised value")
        || line.starts_with("Use of uninitialised value")
        || line.starts_with("Syscall param")
        || line.contains("uninitialised byte(s)")
}

/// Runs the stage; `None`: skipped, with why said (no valgrind, or no
/// pinned Envoy to run under it).
pub(crate) fn module_in_envoy_under_memcheck() -> Result<Option<bool>> {
    let env = rig::process::tools::ToolEnv::from_process();
    let Some(valgrind) = env.which("valgrind") else {
        say!(
            "keygate-envoy inside Envoy under memcheck: skipped: valgrind is not on PATH (Debian's package `valgrind`)"
        );
        return Ok(None);
    };
    let envoy = match rig::process::tools::Tools::load_default()?.resolve("envoy") {
        Ok(tool) => tool.path,
        Err(err) => {
            say!("keygate-envoy inside Envoy under memcheck: skipped: {err}");
            return Ok(None);
        }
    };
    let root = rig::base::paths::workspace_root();
    let dir = root.join("target/rig/memcheck");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let wrapper = write_wrapper(&dir, &valgrind, &envoy)?;
    say!(
        "keygate-envoy inside Envoy under memcheck: crates/rig/tests/keygate_envoy.rs with {} as KEYRIG_ENVOY, logs in {}",
        wrapper.display(),
        dir.display()
    );
    let mut command = crate::runner::cargo();
    crate::runner::plain_output_unless_interactive(&mut command);
    // The unit stage's build, as it is: cargo-nextest there built every
    // test target of the package set, and selecting this one binary by
    // filter reuses it. `cargo test --test keygate_envoy` activates the
    // dev-dependencies of one target only, resolves other features for
    // prost and keygate, and compiled them and rig again (~20 s in CI).
    if crate::runner::nextest_installed() {
        command
            .args(["nextest", "run"])
            .args(crate::runner::WORKSPACE_TESTS)
            .args(["-E", "binary_id(rig::keygate_envoy)"]);
    } else {
        command
            .arg("test")
            .args(crate::runner::WORKSPACE_TESTS)
            .args(["--test", "keygate_envoy"]);
    }
    command.env("KEYRIG_ENVOY", &wrapper).current_dir(&root);
    // Tracked: on a termination signal the test process gets SIGTERM and
    // stops its OpenBao, keygate and Envoys (under valgrind) before xtask exits.
    let mut child = crate::runner::spawn_tracked(&mut command)?;
    let tests = crate::runner::wait_for_test(&mut child)
        .context("running keygate_envoy with Envoy under memcheck")?
        .success();
    let verdict = judge(&dir)?;
    Ok(Some(tests && verdict))
}

/// The executable the test starts as Envoy: the pinned Envoy under
/// memcheck, one log per process.
fn write_wrapper(dir: &Path, valgrind: &Path, envoy: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let wrapper = dir.join("envoy");
    let quote = |path: &Path| format!("'{}'", path.display().to_string().replace('\'', r"'\''"));
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\
             # Written by cargo xtask test (xtask/src/memcheck.rs).\n\
             exec {valgrind} --tool=memcheck --leak-check=no --soname-synonyms=somalloc=NONE \\\n\
             \x20 --log-file={logs} {envoy} \"$@\"\n",
            valgrind = quote(valgrind),
            logs = quote(&dir.join("envoy-%p.log")),
            envoy = quote(envoy),
        ),
    )
    .with_context(|| format!("writing {}", wrapper.display()))?;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
    Ok(wrapper)
}

/// Reads every log, says what it found, and whether the module is clean.
/// At least one log must be a serving Envoy's (`-c`), or nothing was
/// checked.
fn judge(dir: &Path) -> Result<bool> {
    let mut serving = 0;
    let mut not_judged = 0;
    let mut judged = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|ext| ext != "log") {
            continue;
        }
        let log = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if log
            .lines()
            .any(|l| l.contains("Command:") && l.contains(" -c "))
        {
            serving += 1;
        }
        for report in reports(&log) {
            if report.judged() {
                judged.push((path.clone(), report));
            } else {
                not_judged += 1;
            }
        }
    }
    for (path, report) in &judged {
        say!(
            "memcheck: {} in {}:\n  {}",
            report.kind,
            path.display(),
            report.lines.join("\n  ")
        );
    }
    say!(
        "memcheck: {serving} serving Envoy process(es) checked; {} report(s) on the module or invalid accesses; {not_judged} in Envoy's own code (uninitialised values, not judged)",
        judged.len()
    );
    Ok(serving > 0 && judged.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
==16977== Memcheck, a memory error detector
==16977== Command: /x/envoy -c /tmp/envoy.yaml --concurrency 1
==16977== 
==16977== Conditional jump or move depends on uninitialised value(s)
==16977==    at 0x2A3B4C5: ??? (in /x/envoy)
==16977==    by 0x2A3B4D6: ??? (in /x/envoy)
==16977== 
==16977== Invalid read of size 4
==16977==    at 0x4C0FFEE: keygate_envoy::filter::Filter::ask (in /t/libkeygate_envoy.so)
==16977==  Address 0x1234 is 16 bytes inside a block of size 96 free'd
==16977== 
==16977== Use of uninitialised value of size 8
==16977==    at 0x5D0D0D0: keygate_envoy::table::Table::lookup (table.rs:190)
==16977==    by 0x5D0D0E0: envoy_dynamic_module_on_http_filter_request_headers (in /t/libkeygate_envoy.so)
==16977== 
==16977== Conditional jump or move depends on uninitialised value(s)
==16977==    at 0x5D0D0F0: keygate_envoy::decide::first (decide.rs:99)
==16977== 
==16977== HEAP SUMMARY:
==16977==     in use at exit: 1 bytes in 1 blocks
==16977== 
==16977== ERROR SUMMARY: 3 errors from 3 contexts (suppressed: 0 from 0)
";

    #[test]
    fn reports_are_read_and_only_the_modules_or_invalid_accesses_judged() {
        let found = reports(LOG);
        let kinds: Vec<&str> = found.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "Conditional jump or move depends on uninitialised value(s)",
                "Invalid read of size 4",
                "Use of uninitialised value of size 8",
                "Conditional jump or move depends on uninitialised value(s)",
            ]
        );
        let judged: Vec<bool> = found.iter().map(Report::judged).collect();
        // Envoy's own uninitialised value: counted, not judged; an invalid
        // read anywhere and any report in the module (by its library's
        // name or, with debug information, its functions'): judged.
        assert_eq!(judged, [false, true, true, true]);
        assert_eq!(found[1].lines.len(), 2);
    }

    #[test]
    fn the_wrapper_runs_envoy_under_memcheck_with_one_log_per_process() {
        let dir = tempfile::tempdir().unwrap();
        let wrapper = write_wrapper(
            dir.path(),
            Path::new("/usr/bin/valgrind"),
            Path::new("/opt/it's/envoy"),
        )
        .unwrap();
        let text = std::fs::read_to_string(&wrapper).unwrap();
        assert!(text.starts_with("#!/bin/sh\n"), "{text}");
        assert!(
            text.contains("exec '/usr/bin/valgrind' --tool=memcheck"),
            "{text}"
        );
        assert!(text.contains("envoy-%p.log"), "{text}");
        assert!(text.contains(r"'/opt/it'\''s/envoy' "), "{text}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&wrapper).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }
}
