//! Kong-style secret references: the upstream token keygate's config refers
//! to, written to Vault (`contract::references` is what env.json records).

use anyhow::Result;
use serde_json::json;

use crate::contract::references::ReferenceSettings;
use crate::vault::client::VaultClient;

/// Writes the first upstream token (random, never printed).
pub async fn apply(references: &ReferenceSettings, root: &VaultClient) -> Result<()> {
    root.enable_kv2(&references.kv_mount).await?;
    let token = apikey::ApiKey::generate().expose().to_owned();
    root.kv2_put(
        &references.kv_mount,
        &references.path,
        &json!({ &references.key: token }),
    )
    .await?;
    Ok(())
}
