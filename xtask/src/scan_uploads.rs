//! `cargo xtask scan-uploads`: what CI uploads, searched for every run's
//! registered secrets.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, bail};
use rig::say;

pub(crate) fn scan_uploads(dir: &Path) -> Result<ExitCode> {
    let scan = rig::base::redact::scan_uploads(dir)?;
    say!(
        "upload scan of {}: {} files, {} secrets checked",
        dir.display(),
        scan.files_scanned,
        scan.secrets_checked
    );
    if scan.hits.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for hit in &scan.hits {
        println!("SECRET LEAK {}", dir.join(hit).display());
    }
    bail!(
        "{} file(s) under {} hold a registered secret (listed above); do not upload them",
        scan.hits.len(),
        dir.display()
    )
}
