//! Kong-style secret references: the upstream token keygate's config refers
//! to, written to Vault (`contract::references` is what env.json records).

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use crate::contract::references::ReferenceSettings;
use crate::vault::client::VaultClient;

/// Writes the first upstream token (random, never printed), registered as
/// a secret of the run in `run_dir`: keygate sends it to the upstream, whose
/// log (the echo's) would show it.
pub async fn apply(
    references: &ReferenceSettings,
    root: &VaultClient,
    run_dir: &Path,
) -> Result<()> {
    root.enable_kv2(&references.kv_mount).await?;
    let token = apikey::ApiKey::generate().expose().to_owned();
    crate::base::redact::register_in_run(run_dir, &token)?;
    root.kv2_put(
        &references.kv_mount,
        &references.path,
        &json!({ &references.key: token }),
    )
    .await?;
    Ok(())
}
