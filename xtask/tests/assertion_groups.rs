//! One name per assertion group: the e2e crate's `[[test]]` target, its
//! file, the group its cases are recorded under and the word
//! `cargo xtask e2e --filter` selects it by are the same. And `GROUP`
//! means one thing: `ASSERTION_GROUP` is the recorded group, `API_GROUP` an
//! API group of `scenarios/apis/`.

use std::path::{Path, PathBuf};

use regex::Regex;

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests")
}

/// `(name, path)` of each `[[test]]` target of the e2e crate.
fn targets() -> Vec<(String, String)> {
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(tests_dir().join("Cargo.toml")).unwrap()).unwrap();
    manifest["test"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A test file and the files of its own directory (`faults.rs` and
/// `faults/*.rs`).
fn sources_of(path: &str) -> String {
    let file = tests_dir().join(path);
    let mut text = std::fs::read_to_string(&file).unwrap();
    let dir = file.with_extension("");
    if dir.is_dir() {
        for entry in std::fs::read_dir(dir).unwrap() {
            text.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
        }
    }
    text
}

#[test]
fn every_group_is_named_once_for_its_file_its_records_and_the_filter() {
    let declared = Regex::new(r#"const ASSERTION_GROUP: &str = "([a-z0-9_]+)";"#).unwrap();
    // A group given as a literal instead of the file's constant.
    let literal = Regex::new(
        r#"\b(?:case|case_on|case_with_section|CaseGuard::start|CaseGuard::start_on)\(\s*(?:gateway,\s*)?"[a-z_]+""#,
    )
    .unwrap();
    let mut wrong = Vec::new();
    for (name, path) in targets() {
        let stem = Path::new(&path)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if stem != name {
            wrong.push(format!(
                "[[test]] {name} is the file {path}: name one after the other"
            ));
        }
        let text = sources_of(&path);
        match declared.captures(&text) {
            Some(group) if group[1] == *name => {}
            Some(group) => wrong.push(format!(
                "{path} records its cases as {:?}: the group is the file's name, {name:?}",
                &group[1]
            )),
            None => wrong.push(format!("{path} declares no ASSERTION_GROUP")),
        }
        if let Some(call) = literal.find(&text) {
            wrong.push(format!(
                "{path}: {} gives its group as a literal: use ASSERTION_GROUP",
                call.as_str()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn group_alone_names_nothing() {
    let bare = Regex::new(r"\bconst GROUP\b").unwrap();
    let mut found = Vec::new();
    for (_, path) in targets() {
        if bare.is_match(&sources_of(&path)) {
            found.push(path);
        }
    }
    assert!(
        found.is_empty(),
        "`GROUP` in {found:?}: say ASSERTION_GROUP (the recorded group) or API_GROUP (an API group)"
    );
}
