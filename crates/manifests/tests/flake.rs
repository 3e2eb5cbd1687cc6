//! flake.nix and flake.lock: nixpkgs is locked (no floating branch), on the
//! branch flake.nix names, and the formatter is not a deprecated alias.
//! Nothing here runs Nix (none is installed where this is tested): the files
//! are read as text and JSON.

mod common;

use common::root;
use serde_json::Value;

fn lock() -> Value {
    let path = root().join("flake.lock");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("{}: {err} (commit a flake.lock)", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn flake() -> String {
    std::fs::read_to_string(root().join("flake.nix")).unwrap()
}

/// `inputs.nixpkgs.url = "github:NixOS/nixpkgs/<branch>";` -> branch.
fn nixpkgs_branch(flake: &str) -> String {
    let line = flake
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("inputs.nixpkgs.url"))
        .expect("flake.nix sets inputs.nixpkgs.url");
    let url = line.split('"').nth(1).expect("a quoted url");
    url.strip_prefix("github:NixOS/nixpkgs/")
        .unwrap_or_else(|| panic!("{url}: not github:NixOS/nixpkgs/<branch>"))
        .to_owned()
}

#[test]
fn nixpkgs_is_locked_on_the_branch_flake_nix_names() {
    let lock = lock();
    assert_eq!(lock["version"], 7, "flake.lock format version");
    let root_node = lock["root"].as_str().expect("root");
    let input = lock["nodes"][root_node]["inputs"]["nixpkgs"]
        .as_str()
        .expect("the root's nixpkgs input names a node");
    let node = &lock["nodes"][input];
    let locked = &node["locked"];
    assert_eq!(locked["type"], "github");
    assert_eq!(locked["owner"], "NixOS");
    assert_eq!(locked["repo"], "nixpkgs");
    let rev = locked["rev"].as_str().expect("locked.rev");
    assert!(
        rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()),
        "locked.rev {rev:?} is not a commit"
    );
    let nar = locked["narHash"].as_str().expect("locked.narHash");
    assert!(
        nar.starts_with("sha256-") && nar.len() == "sha256-".len() + 44,
        "{nar}"
    );
    assert!(locked["lastModified"].as_u64().is_some_and(|t| t > 0));

    let original = &node["original"];
    assert_eq!(original["owner"], "NixOS");
    assert_eq!(original["repo"], "nixpkgs");
    let branch = original["ref"].as_str().expect("original.ref");
    // A release branch, not unstable: the lock moves when someone moves it.
    assert!(
        branch.starts_with("nixos-") && branch != "nixos-unstable",
        "{branch}"
    );
    assert_eq!(nixpkgs_branch(&flake()), branch, "flake.nix vs flake.lock");
}

#[test]
fn the_formatter_is_nixfmt_and_the_shell_promises_no_pins() {
    let flake = flake();
    assert!(flake.contains("pkgs.nixfmt)"), "formatter = pkgs.nixfmt");
    assert!(
        !flake.contains("pkgs.nixfmt-rfc-style"),
        "nixfmt-rfc-style is a deprecated alias of nixfmt"
    );
    // What `nix develop` gives is nixpkgs' versions; the comment says so.
    assert!(flake.contains("not keyrig's pins"), "{flake}");
}
