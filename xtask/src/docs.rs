//! `cargo xtask docs`: writes what the docs generate from data, today the
//! gateway tables of docs/gateways.md (from env/gateways/*/gateway.toml,
//! `rig::contract::gateway_docs`). A rig test fails when they disagree, so
//! a manifest change is followed by this command.

use anyhow::{Context, Result};

pub(crate) fn write() -> Result<()> {
    let file = rig::base::paths::workspace_root().join("docs/gateways.md");
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let catalog = rig::contract::gateways::Catalog::load_default()?;
    let generated = rig::contract::gateway_docs::render(&catalog);
    let new = rig::contract::gateway_docs::splice(&text, &generated)
        .with_context(|| file.display().to_string())?;
    if new == text {
        println!("{}: up to date", file.display());
    } else {
        std::fs::write(&file, new).with_context(|| format!("writing {}", file.display()))?;
        println!(
            "{}: gateway tables written from {}",
            file.display(),
            catalog.dir().display()
        );
    }
    Ok(())
}
