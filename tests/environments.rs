//! Environment-specific paths (`secret/<app>/<environment>/...`): each
//! environment's AppRole reads its own path and gets 403 on every other's.

use keyrig_e2e::*;
use rstest::rstest;

/// The assertion group these cases are recorded under: this file's name,
/// and the word `cargo xtask e2e --filter` takes for them.
const ASSERTION_GROUP: &str = "environments";

fn environments() -> &'static rig::contract::environments::Environments {
    env()
        .environments
        .as_ref()
        .expect("env.json has no environments section: start the environment with this rig")
}

#[rstest]
#[case::development("development")]
#[case::staging("staging")]
#[case::production("production")]
#[tokio::test]
async fn a_role_reads_its_environment_and_gets_403_on_the_others(#[case] own: &str) {
    let Some(_case) = case_with_section(
        ASSERTION_GROUP,
        &format!("role_of_{own}_is_confined_to_{own}"),
        "environments",
        env().environments.is_some(),
    ) else {
        return;
    };
    let envs = environments();
    assert!(
        envs.names.iter().any(|n| n == own),
        "{own} is not in the scenario"
    );
    // With only its own environment the 403 half below checks nothing.
    assert!(
        envs.names.len() >= 2,
        "the scenario names {:?}: a role's confinement needs another environment to be refused",
        envs.names
    );
    let token = login_as(&envs.role(own)).await.unwrap();

    let mut seen = Vec::new();
    for target in &envs.names {
        let path = format!("{}/data/{}", envs.kv_mount, envs.sample(target));
        let reply = vault("GET", &path, &token, None).await.unwrap();
        if target == own {
            assert_eq!(reply.body["data"]["data"]["environment"], target.as_str());
        }
        seen.push((target.clone(), reply.status));
    }

    let expected: Vec<(String, u16)> = envs
        .names
        .iter()
        .map(|n| (n.clone(), if n == own { 200 } else { 403 }))
        .collect();
    assert_eq!(seen, expected);
}
