//! `cargo xtask up --profile kind` on a machine without the kind profile's
//! tools: it must stop at once, non-zero, with one message naming each
//! missing tool and where to get it. The PATH here is an empty directory, so
//! the result is the same on any machine, Docker or not.

use std::time::Instant;

use assert_cmd::Command;

fn xtask_without_tools(args: &[&str]) -> (std::process::Output, std::time::Duration) {
    let empty_path = tempfile::tempdir().unwrap();
    let empty_cache = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let output = Command::cargo_bin("xtask")
        .unwrap()
        .args(args)
        .env("PATH", empty_path.path())
        .env("KEYRIG_TOOLS_DIR", empty_cache.path())
        .env_remove("KEYRIG_KUBECTL")
        .env_remove("KEYRIG_KEYGATE_IMAGE")
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN")
        .output()
        .unwrap();
    (output, started.elapsed())
}

#[test]
fn up_kind_without_tools_names_each_missing_tool() {
    let (output, elapsed) = xtask_without_tools(&["up", "--profile", "kind"]);
    // Recorded, not asserted: timings belong in benchmarks.
    eprintln!("`cargo xtask up --profile kind` without tools exited after {elapsed:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for needle in [
        "the kind profile cannot start",
        "  - docker: no `docker` on PATH",
        "  - kind: no `kind` on PATH",
        "  - helm: no `helm` on PATH",
        "  - kubectl: the pinned kubectl",
        "https://docs.docker.com/engine/install/",
        "https://kind.sigs.k8s.io/",
        "https://helm.sh/docs/intro/install/",
        "nix develop",
    ] {
        assert!(
            stderr.contains(needle),
            "{needle:?} missing from:\n{stderr}"
        );
    }
    // One message: nothing was started before it.
    assert_eq!(stderr.matches("error:").count(), 1, "{stderr}");
}

#[test]
fn e2e_cluster_without_tools_also_names_the_vault_settings() {
    let (output, elapsed) =
        xtask_without_tools(&["e2e", "--profile", "cluster", "--mode", "inline"]);
    eprintln!("`cargo xtask e2e --profile cluster` without tools exited after {elapsed:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for needle in ["docker", "helm", "kubectl", "VAULT_ADDR", "VAULT_TOKEN"] {
        assert!(
            stderr.contains(needle),
            "{needle:?} missing from:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains("  - kind:"),
        "the cluster profile needs no kind:\n{stderr}"
    );
}
