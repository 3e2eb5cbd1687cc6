//! The command line: config errors exit 2 with a sentence naming the file
//! and the field; `--check` validates without contacting Vault.

mod common;

use assert_cmd::cargo::cargo_bin_cmd;
use common::Fixture;

/// Runs `keygate --config <fixture config> [args]`; returns code, stdout, stderr.
fn keygate(fixture: &Fixture, args: &[&str]) -> (Option<i32>, String, String) {
    let output = cargo_bin_cmd!("keygate")
        .arg("--config")
        .arg(fixture.config())
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A fixture whose Vault address points nowhere; `--check` never calls it.
fn fixture() -> Fixture {
    Fixture::new("http://127.0.0.1:1")
}

#[test]
fn check_accepts_a_valid_config() {
    let fixture = fixture();
    let (code, stdout, stderr) = keygate(&fixture, &["--check"]);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(
        stdout.contains(
            "OK: 2 OpenAPI document(s), 3 route(s), groups: billing-api, animal-rescue-api"
        ),
        "{stdout}"
    );
}

#[test]
fn missing_vault_address_names_the_field() {
    let fixture = fixture();
    let text = fixture
        .config_text("http://127.0.0.1:1")
        .replace("  address: http://127.0.0.1:1\n", "");
    fixture.write_config(&text);
    let (code, _, stderr) = keygate(&fixture, &["--check"]);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    let expected = format!(
        "{}: vault.address is missing: set it to the Vault URL, e.g. http://127.0.0.1:8200",
        fixture.config().display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn missing_vault_address_also_stops_a_normal_start() {
    let fixture = fixture();
    let text = fixture
        .config_text("http://127.0.0.1:1")
        .replace("  address: http://127.0.0.1:1\n", "");
    fixture.write_config(&text);
    let (code, _, stderr) = keygate(&fixture, &[]);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(stderr.contains("vault.address"), "{stderr}");
}

#[test]
fn malformed_yaml_names_the_file_and_line() {
    let fixture = fixture();
    fixture.write_config("listen:\n  grpc: 127.0.0.1:9001\n  http: [\nvault: {}\n");
    let (code, _, stderr) = keygate(&fixture, &["--check"]);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(
        stderr.starts_with(&format!("{}: line ", fixture.config().display())),
        "{stderr}"
    );
}

#[test]
fn misspelt_field_is_an_error() {
    let fixture = fixture();
    let text = fixture
        .config_text("http://127.0.0.1:1")
        .replace("negative_ttl", "negativ_ttl");
    fixture.write_config(&text);
    let (code, _, stderr) = keygate(&fixture, &["--check"]);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("cache: unknown field `negativ_ttl`"),
        "{stderr}"
    );
}

#[test]
fn openapi_document_without_group_id_is_named() {
    let fixture = fixture();
    common::write(
        fixture.dir.path(),
        "apis/billing.yaml",
        &common::BILLING.replace("groupId: billing-api\n", ""),
    );
    let (code, _, stderr) = keygate(&fixture, &["--check"]);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains(&fixture.path("apis/billing.yaml").display().to_string()),
        "{stderr}"
    );
    assert!(
        stderr.contains("groupId is missing: add `groupId: <api-group>` at the document root"),
        "{stderr}"
    );
}

#[test]
fn missing_secret_file_names_the_field_and_path() {
    let fixture = fixture();
    std::fs::remove_file(fixture.path("secrets/secret-id")).unwrap();
    let (code, _, stderr) = keygate(&fixture, &["--check"]);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    let expected = format!(
        "vault.auth.approle.secret_id_file points to {}, which cannot be read",
        fixture.path("secrets/secret-id").display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn missing_config_file_is_a_config_error() {
    let fixture = fixture();
    std::fs::remove_file(fixture.config()).unwrap();
    let (code, _, stderr) = keygate(&fixture, &["--check"]);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(stderr.contains("cannot read the config file"), "{stderr}");
}

/// Two documents of different groups whose templates can match one request
/// path without being identical: keygate must not start (nor pass
/// `--check`), and the message names both files and a path they share, so
/// the operator knows what to change. Through the binary, since a refusal
/// that only `Routes::load` knows about would not stop a deployment.
#[test]
fn overlapping_documents_of_two_groups_stop_keygate_naming_both_files() {
    let fixture = fixture();
    common::write(
        fixture.dir.path(),
        "apis/shop-items.yaml",
        "openapi: 3.0.1\ngroupId: shop-items\nservers:\n  - url: /shop\npaths:\n  /items/{id}: {}\n",
    );
    common::write(
        fixture.dir.path(),
        "apis/shop-special.yaml",
        "openapi: 3.0.1\ngroupId: shop-special\nservers:\n  - url: /shop\npaths:\n  /items/special: {}\n",
    );
    let text = fixture.config_text("http://127.0.0.1:1").replace(
        "  - apis/billing.yaml\n  - apis/animals.yaml\n",
        "  - apis/shop-items.yaml\n  - apis/shop-special.yaml\n",
    );
    assert!(text.contains("apis/shop-special.yaml"), "{text}");
    fixture.write_config(&text);
    let items = fixture.path("apis/shop-items.yaml").display().to_string();
    let special = fixture.path("apis/shop-special.yaml").display().to_string();
    let expected = format!(
        "{special}: path /shop/items/special (group shop-special) can match the same requests as \
         path /shop/items/{{id}} in {items} (group shop-items), e.g. /shop/items/special: "
    );
    let (code, stdout, stderr) = keygate(&fixture, &["--check"]);
    assert_eq!(code, Some(2), "stdout: {stdout}; stderr: {stderr}");
    assert!(stderr.starts_with(&expected), "--check's stderr: {stderr}");
    // A normal start: bounded, so a keygate that accepted the config and
    // went on serving fails the test instead of hanging it.
    let (code, stderr) = fixture.start().wait(std::time::Duration::from_secs(30));
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(stderr.starts_with(&expected), "stderr: {stderr}");
    assert!(!stderr.contains("keygate is listening"), "{stderr}");
}

/// `--check` prints each document's base path, so a document whose
/// `servers` is missing or misspelt (routed from the root, OpenAPI's
/// default) shows before it routes.
#[test]
fn check_prints_each_documents_base_path() {
    let fixture = fixture();
    common::write(
        fixture.dir.path(),
        "apis/billing.yaml",
        &common::BILLING.replace("servers:\n", "server:\n"),
    );
    let (code, stdout, stderr) = keygate(&fixture, &["--check"]);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let billing = fixture.path("apis/billing.yaml").display().to_string();
    let animals = fixture.path("apis/animals.yaml").display().to_string();
    assert!(
        stdout.contains(&format!(
            "\n  {billing}: group billing-api, base path / (no servers[0].url: OpenAPI's default, the root)\n"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "\n  {animals}: group animal-rescue-api, base path /animal-rescue\n"
        )),
        "{stdout}"
    );
}

/// An invalid RUST_LOG was replaced by `info` without a word.
#[test]
fn an_invalid_rust_log_is_named() {
    let fixture = fixture();
    let output = cargo_bin_cmd!("keygate")
        .arg("--config")
        .arg(fixture.config())
        .arg("--check")
        .env("RUST_LOG", "keygate=loud")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("RUST_LOG is not a log filter keygate can use ("),
        "{stderr}"
    );
    assert!(stderr.contains("logging at `info` instead"), "{stderr}");
}

/// A token file of two lines passed `--check`, and keygate then reported
/// Vault's answer to it as an outage, retried forever.
#[test]
fn a_token_file_of_two_lines_fails_the_check() {
    let fixture = fixture();
    let text = fixture.config_text("http://127.0.0.1:1").replace(
        "    approle:\n      role_id_file: secrets/role-id\n      secret_id_file: secrets/secret-id\n",
        "    token_file: secrets/token\n",
    );
    fixture.write_config(&text);
    std::fs::write(fixture.path("secrets/token"), "s.tok-0c4e\ns.tok-second\n").unwrap();
    let (code, _, stderr) = keygate(&fixture, &["--check"]);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    let expected = format!(
        "{}: vault.auth.token_file points to {}, whose content is not a single line: \
         write only the secret into it (a trailing newline is fine)",
        fixture.config().display(),
        fixture.path("secrets/token").display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(!stderr.contains("0c4e"), "{stderr}");
}
