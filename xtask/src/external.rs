//! `cargo xtask e2e --gateway-url <name>=<url>`: the gateway-matrix groups
//! (`api_keys`, `gateways`) through gateways the user runs, against the
//! environment `cargo xtask up` left running (`target/rig/latest`), whose
//! keygate those gateways were configured to call. Each external gateway
//! is held to the strict expectations unless `--expect <name>=<file>`
//! gives its deviations (the `[deviations.*]` tables of a gateway.toml).
//!
//! The run gets a directory of its own under the environment's
//! (`external/<id>/`: env.json with only the external gateways, the case
//! records, the reports and the conformance report), so the environment
//! can be reused for the next try.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rig::contract::env::{Environment, ValidatorTraits};
use rig::contract::gateways::Deviations;
use rig::say;

use crate::selection::Selection;

/// The groups that run through external gateways: the gateway matrix.
pub(crate) const GROUPS: [&str; 2] = ["api_keys", "gateways"];

/// `--gateway-url NAME=URL`.
pub(crate) fn parse_gateway_url(arg: &str) -> Result<(String, String)> {
    let (name, url) = arg.split_once('=').with_context(|| {
        format!("--gateway-url {arg:?}: write it as <name>=<url>, e.g. mygw=http://127.0.0.1:8080")
    })?;
    ensure!(
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "--gateway-url {arg:?}: the name {name:?} takes lowercase letters, digits and `-`"
    );
    let parsed = reqwest::Url::parse(url)
        .with_context(|| format!("--gateway-url {arg:?}: {url:?} is not a URL"))?;
    ensure!(
        parsed.scheme() == "http" && parsed.path() == "/",
        "--gateway-url {arg:?}: give the gateway's plain-HTTP base URL (http://host:port), no path"
    );
    Ok((name.to_owned(), url.trim_end_matches('/').to_owned()))
}

/// `--expect NAME=FILE`.
pub(crate) fn parse_expect(arg: &str) -> Result<(String, PathBuf)> {
    let (name, file) = arg.split_once('=').with_context(|| {
        format!(
            "--expect {arg:?}: write it as <name>=<file>, the file holding [deviations.*] tables"
        )
    })?;
    Ok((name.to_owned(), PathBuf::from(file)))
}

/// What an expectations file says of one external gateway.
#[derive(Debug, Default)]
pub(crate) struct Expectations {
    pub(crate) deviations: Deviations,
    /// `[validator]`: what the validator behind it does (only against an
    /// environment without keygate, `up --no-keygate`).
    pub(crate) validator: Option<ValidatorTraits>,
}

/// The expectations in `file`: a gateway.toml (its `deviations`) or a file
/// of `[deviations.<row>]` tables alone; either may add a `[validator]`
/// table.
pub(crate) fn load_expectations(file: &Path) -> Result<Expectations> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the expectations file {}", file.display()))?;
    #[derive(serde::Deserialize)]
    struct WithDeviations {
        #[serde(default)]
        deviations: Deviations,
    }
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not TOML", file.display()))?;
    let validator = table
        .remove("validator")
        .map(|v| {
            v.try_into::<ValidatorTraits>().with_context(|| {
                format!(
                    "{}: [validator] is not valid (propagation-ms, forwards-owner, enforces-expiry: docs/gateways.md#a-validator-you-run-yourself)",
                    file.display()
                )
            })
        })
        .transpose()?;
    let parsed: WithDeviations = if table.contains_key("deviations") {
        // The rest of a gateway.toml is not needed here.
        let only = toml::Table::from_iter(table.get_key_value("deviations").map(|(k, v)| (k.clone(), v.clone())));
        only.try_into()
    } else {
        toml::Table::from_iter([("deviations".to_owned(), toml::Value::Table(table))]).try_into()
    }
    .with_context(|| {
        format!(
            "{}: the [deviations.<row>] tables are not valid (rows: docs/gateways.md#adding-a-gateway)",
            file.display()
        )
    })?;
    Ok(Expectations {
        deviations: parsed.deviations,
        validator,
    })
}

/// The traits of the validator behind the external gateways: the one
/// their expectations files declare (they must agree: one environment, one
/// validator), else the strict defaults. Only an environment without
/// keygate has such a validator; against keygate a `[validator]` table is
/// a mistake, said so.
fn validator_traits(
    env: &Environment,
    declared: &[(&Path, ValidatorTraits)],
) -> Result<Option<ValidatorTraits>> {
    let external = env.key_source == rig::contract::env::KEY_SOURCE_EXTERNAL;
    if !external {
        if let Some((file, _)) = declared.first() {
            bail!(
                "{}: [validator] describes a validator you run, but {} runs keygate as the validator; start the environment with `cargo xtask up --no-keygate`, or drop the table",
                file.display(),
                env.run_id
            );
        }
        return Ok(None);
    }
    if let Some(((a, ta), (b, _))) = declared
        .iter()
        .zip(declared.iter().skip(1))
        .find(|((_, ta), (_, tb))| ta != tb)
    {
        bail!(
            "{} and {} declare different [validator] tables ({ta:?} ...): the gateways of one run ask one validator",
            a.display(),
            b.display()
        );
    }
    Ok(Some(declared.first().map(|(_, t)| *t).unwrap_or_default()))
}

pub(crate) struct ExternalRun<'a> {
    pub(crate) gateways: &'a [(String, String)],
    pub(crate) expect: &'a [(String, PathBuf)],
    pub(crate) filter: Option<&'a str>,
    pub(crate) report_dir: Option<&'a Path>,
    pub(crate) jobs: usize,
}

pub(crate) fn run(opts: ExternalRun<'_>) -> Result<ExitCode> {
    // The test binaries run side by side in xtask's process group: a
    // terminal's Ctrl-C reaches them, a SIGTERM only through the handler.
    crate::runner::stop_on_interrupt()?;
    let wall = Instant::now();
    let started_at = time::OffsetDateTime::now_utc();
    let mut deviations: BTreeMap<String, Deviations> = opts
        .gateways
        .iter()
        .map(|(name, _)| (name.clone(), Deviations::default()))
        .collect();
    let mut declared = Vec::new();
    for (name, file) in opts.expect {
        let Some(slot) = deviations.get_mut(name) else {
            bail!("--expect {name}=...: no --gateway-url {name}=<url> to expect it of");
        };
        let expectations = load_expectations(file)?;
        *slot = expectations.deviations;
        if let Some(traits) = expectations.validator {
            declared.push((file.as_path(), traits));
        }
    }
    let env_file = rig::base::paths::rig_dir().join("latest").join("env.json");
    let env = Environment::load(&env_file).with_context(|| {
        format!(
            "no environment to test against ({}): start one with `cargo xtask up`, point your gateway at the keygate it prints, then run this again",
            env_file.display()
        )
    })?;
    let validator = validator_traits(&env, &declared)?;
    let rt = crate::runner::runtime()?;
    rt.block_on(check_running(&env, opts.gateways))?;

    let selection = Selection::new(opts.filter)?;
    let binaries: Vec<_> = crate::suite::build(&selection)?
        .into_iter()
        .filter(|b| GROUPS.contains(&b.group.as_str()))
        .collect();
    ensure!(
        !binaries.is_empty(),
        "--filter {:?} selects none of the groups that run through external gateways ({})",
        opts.filter.unwrap_or(""),
        GROUPS.join(", ")
    );

    // The environment as the external gateways' tests see it.
    let up_dir = env_file
        .parent()
        .and_then(|p| p.canonicalize().ok())
        .context("the environment's run directory")?;
    // The environment's own secrets (root token, secret-ids) are in its
    // registry, not in this run's: redacted here and looked for by this
    // run's scan too.
    rig::base::redact::load_run_registry(&up_dir)?;
    let id = time::OffsetDateTime::now_utc().unix_timestamp();
    let run_dir = up_dir.join("external").join(id.to_string());
    std::fs::create_dir_all(run_dir.join("cases"))
        .with_context(|| format!("creating {}", run_dir.display()))?;
    let mut view = env.clone();
    view.gateways = opts.gateways.iter().cloned().collect();
    view.gateway_url = opts.gateways[0].1.clone();
    view.skipped_gateways = BTreeMap::new();
    view.gateway_deviations = deviations.clone();
    // The keys-file pair is the harness's own, not under test here.
    view.keys_file = None;
    view.validator = validator;
    view.user_gateways = true;
    let view_file = run_dir.join("env.json");
    view.save(&view_file)?;
    say!(
        "testing {} against {} ({}); records in {}",
        opts.gateways
            .iter()
            .map(|(name, url)| format!("{name} ({url})"))
            .collect::<Vec<_>>()
            .join(", "),
        env.run_id,
        match &validator {
            Some(traits) => format!(
                "your validator: changes land within {} ms, owner {}, expiry {}",
                traits.propagation_ms,
                if traits.forwards_owner {
                    "forwarded"
                } else {
                    "not forwarded"
                },
                if traits.enforces_expiry {
                    "enforced"
                } else {
                    "not enforced"
                },
            ),
            None => format!("keygate {}", env.keygate_url),
        },
        run_dir.display()
    );

    let args = crate::suite::test_args(&selection, false);
    let jobs = binaries
        .iter()
        .map(|binary| crate::suite::Job {
            label: format!("external/{}", binary.group),
            binary: binary.path.clone(),
            args: args.clone(),
            env: vec![
                (
                    rig::contract::env::ENV_FILE_VAR.to_owned(),
                    view_file.clone(),
                ),
                (rig::contract::case::RUN_DIR_VAR.to_owned(), run_dir.clone()),
            ],
            log: crate::suite::log_path(&run_dir, &binary.group),
        })
        .collect();
    let tests_started = Instant::now();
    let results = crate::suite::run(jobs, opts.jobs)?;
    let tests = tests_started.elapsed();
    let runner_ok = results.iter().all(|r| r.status.success());

    let cases = rig::contract::case::read_cases(&run_dir)?;
    let cases = rt.block_on(crate::e2e_report::collect_diagnostics(
        &run_dir, &view, cases,
    ));
    let records: Vec<_> = cases.iter().map(|c| c.record.clone()).collect();
    println!();
    rig::contract::case::print_table(&records);
    crate::e2e::print_gateway_matrix(&records, &view);
    let report = crate::e2e_report::finish(crate::e2e_report::Finish {
        run_dir: &run_dir,
        run_id: &format!("{}/external/{id}", env.run_id),
        profile: &env.profile,
        mode: env.mode.as_deref(),
        filter: opts.filter.map(str::to_owned),
        started_at,
        wall: wall.elapsed(),
        up: Duration::ZERO,
        tests,
        cases,
        runner_ok,
        gateway_deviations: &deviations,
        report_dir: opts.report_dir,
    })?;
    say!(
        "conformance per gateway: {}",
        run_dir
            .join(rig::contract::conformance::CONFORMANCE_DIR)
            .display()
    );
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// keygate of the environment answers, and each external gateway answers
/// something (any HTTP status) at its URL: a clear error before any test.
async fn check_running(env: &Environment, gateways: &[(String, String)]) -> Result<()> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?;
    // What each gateway must have been configured to ask.
    let validator = if env.key_source == rig::contract::env::KEY_SOURCE_EXTERNAL {
        // No keygate: the gateways ask the user's validator.
        format!(
            "your validator, which reads Vault at {} (token in {})",
            env.vault_addr,
            env.validator_token_file
                .as_deref()
                .map(|f| f.display().to_string())
                .unwrap_or_else(|| "secrets/validator-token".into())
        )
    } else {
        check_keygate(env, &http).await?;
        format!(
            "keygate at {} (HTTP forward-auth /auth){}",
            env.keygate_url,
            env.keygate_grpc
                .as_deref()
                .map(|g| format!(" or {g} (gRPC ext_authz)"))
                .unwrap_or_default()
        )
    };
    for (name, url) in gateways {
        let probe = format!("{url}{}", rig::contract::gateways::READINESS_PATH);
        if let Err(err) = http.get(&probe).send().await {
            bail!(
                "the gateway {name} does not answer at {url} ({}): start it, configured to ask {validator}",
                rig::process::supervisor::describe_request_error(&err),
            );
        }
    }
    Ok(())
}

/// keygate of the environment answers `/readyz` with a success.
async fn check_keygate(env: &Environment, http: &reqwest::Client) -> Result<()> {
    let readyz = format!("{}/readyz", env.keygate_url);
    match http.get(&readyz).send().await {
        Ok(reply) if reply.status().is_success() => {}
        Ok(reply) => bail!(
            "keygate of {} is not ready ({readyz} answered {}): see its log in {}",
            env.run_id,
            reply.status(),
            env.logs_dir.display()
        ),
        Err(err) => bail!(
            "keygate of {} does not answer at {readyz} ({}): the environment is gone; start one with `cargo xtask up`",
            env.run_id,
            rig::process::supervisor::describe_request_error(&err)
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls_and_expectations_parse_or_say_what_to_write() {
        assert_eq!(
            parse_gateway_url("my-gw=http://127.0.0.1:8080/").unwrap(),
            ("my-gw".to_owned(), "http://127.0.0.1:8080".to_owned())
        );
        for (arg, says) in [
            ("http://x:1", "<name>=<url>"),
            ("My=http://x:1", "lowercase letters"),
            ("gw=x:1", "base URL"),
            ("gw=http://x:1/api", "no path"),
        ] {
            let err = parse_gateway_url(arg).unwrap_err().to_string();
            assert!(err.contains(says), "{arg}: {err}");
        }
        assert!(
            parse_expect("gw")
                .unwrap_err()
                .to_string()
                .contains("<name>=<file>")
        );
    }

    fn environment(key_source: &str) -> Environment {
        serde_json::from_value(serde_json::json!({
            "profile": "local", "run_id": "r1", "gateway_url": "", "vault_addr": "http://127.0.0.1:1",
            "kv_mount": "api-portal-keys", "groups": {}, "root_token_file": "/x", "logs_dir": "/x",
            "keygate_url": "", "upstream_url": "http://127.0.0.1:2",
            "cache": {"positive_ttl_ms": 5000, "negative_ttl_ms": 1000},
            "key_source": key_source,
        }))
        .unwrap()
    }

    #[test]
    fn one_validator_per_run_and_only_where_no_keygate_runs() {
        let external = environment(rig::contract::env::KEY_SOURCE_EXTERNAL);
        let keygate = environment(rig::contract::env::KEY_SOURCE_VAULT);
        let (a, b) = (Path::new("a.toml"), Path::new("b.toml"));
        let quick = ValidatorTraits {
            propagation_ms: 1000,
            ..ValidatorTraits::default()
        };
        // Nothing declared: keygate needs none, a validator you run gets
        // the strict defaults.
        assert_eq!(validator_traits(&keygate, &[]).unwrap(), None);
        assert_eq!(
            validator_traits(&external, &[]).unwrap(),
            Some(ValidatorTraits::default())
        );
        assert_eq!(
            validator_traits(&external, &[(a, quick), (b, quick)]).unwrap(),
            Some(quick)
        );
        let err = validator_traits(&external, &[(a, quick), (b, ValidatorTraits::default())])
            .unwrap_err()
            .to_string();
        assert!(err.contains("a.toml and b.toml declare different"), "{err}");
        let err = validator_traits(&keygate, &[(a, quick)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("runs keygate") && err.contains("--no-keygate"),
            "{err}"
        );
    }

    #[test]
    fn expectations_come_from_a_manifest_or_bare_tables() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("gateway.toml");
        std::fs::write(
            &manifest,
            "tool = \"caddy\"\n[deviations.path-as-sent]\nwhy = \"raw\"\n",
        )
        .unwrap();
        let bare = dir.path().join("expect.toml");
        std::fs::write(&bare, "[own-denial-body]\nwhy = \"page\"\n").unwrap();
        assert!(
            load_expectations(&manifest)
                .unwrap()
                .deviations
                .path_as_sent
                .is_some()
        );
        assert!(
            load_expectations(&bare)
                .unwrap()
                .deviations
                .own_denial_body
                .is_some()
        );
        // A [validator] table beside the rows, in either form.
        std::fs::write(
            &bare,
            "[own-denial-body]\nwhy = \"page\"\n[validator]\npropagation-ms = 2500\nforwards-owner = false\n",
        )
        .unwrap();
        let read = load_expectations(&bare).unwrap();
        assert!(read.deviations.own_denial_body.is_some());
        assert_eq!(
            read.validator,
            Some(ValidatorTraits {
                propagation_ms: 2500,
                forwards_owner: false,
                enforces_expiry: true,
            })
        );
        std::fs::write(&bare, "[validator]\npropagation = 1\n").unwrap();
        let err = format!("{:#}", load_expectations(&bare).unwrap_err());
        assert!(
            err.contains("[validator] is not valid") && err.contains("propagation"),
            "{err}"
        );
        std::fs::write(&bare, "[raw-uri]\nwhy = \"x\"\n").unwrap();
        let err = format!("{:#}", load_expectations(&bare).unwrap_err());
        assert!(
            err.contains("raw-uri") && err.contains("expect.toml"),
            "{err}"
        );
    }
}
