//! API groups from the OpenAPI documents in `scenarios/apis/` (loaded by
//! `keyrig-scenario`, which the fuzz targets build without rig).

use anyhow::Result;

pub use keyrig_scenario::apis::*;

/// The groups of `scenarios/apis/` of this workspace.
pub fn load_default_apis() -> Result<Vec<ApiGroup>> {
    load_apis(&crate::base::paths::scenarios_dir().join("apis"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    fn loads_the_repository_apis() {
        let groups = load_default_apis().unwrap();
        let found: Vec<_> = groups
            .iter()
            .map(|g| (g.group_id.as_str(), g.route_prefix.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("animal-rescue-api", "/animal-rescue/"),
                ("billing-api", "/billing/")
            ]
        );
        assert_eq!(groups[1].base_path, "/billing");
        assert_eq!(
            groups[0].sample_get_path.as_deref(),
            Some("/animal-rescue/animals")
        );
    }
}
