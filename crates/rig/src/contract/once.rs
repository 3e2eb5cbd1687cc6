//! Assertion groups that do not depend on the delivery mode run once per
//! multi-mode e2e run, not once per mode.
//!
//! `cargo xtask e2e` (and so `cargo xtask test`) runs the suite once per
//! delivery mode, each against its own environment. Some groups never look
//! at the shared environment's delivery: the `faults` tests start
//! environments of their own, always the same way, and the TLS rotation
//! runs through its own agent and Envoy, so a second and third run per
//! mode would repeat the same minutes. When several modes run,
//! xtask names one of them in [`VAR`]; such a group runs in that mode and
//! skips in the others, saying why. A single-mode run (`--mode X`) sets
//! nothing, so `cargo xtask e2e --mode X --filter faults` runs them in X.

/// Set by `cargo xtask e2e` for the test process when it runs several
/// modes: the mode in which mode-independent groups run.
pub const VAR: &str = "KEYRIG_MODE_INDEPENDENT_IN";

/// Why a case of the mode-independent `group` skips in a run of
/// `run_mode`, or `None` when it runs here. Reads [`VAR`].
pub fn skip_reason(group: &str, run_mode: Option<&str>) -> Option<String> {
    let once_in = std::env::var(VAR).ok().filter(|v| !v.is_empty());
    skip_reason_for(group, once_in.as_deref(), run_mode)
}

/// [`skip_reason`] with the variable's value given.
pub fn skip_reason_for(
    group: &str,
    once_in: Option<&str>,
    run_mode: Option<&str>,
) -> Option<String> {
    let once_in = once_in?;
    let mode = run_mode.unwrap_or("this");
    (run_mode != Some(once_in)).then(|| {
        format!(
            "{group} runs once per `cargo xtask test` (and per multi-mode `cargo xtask e2e`), in {once_in} mode, as it does not depend on the delivery mode; `cargo xtask e2e --mode {mode} --filter {group}` runs it in {mode} mode"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(None, Some("external-secret"), false)]
    #[case(Some("inline"), Some("inline"), false)]
    #[case(Some("inline"), Some("external-secret"), true)]
    #[case(Some("inline"), None, true)]
    fn runs_only_in_the_named_mode(
        #[case] once_in: Option<&str>,
        #[case] run_mode: Option<&str>,
        #[case] skips: bool,
    ) {
        let reason = skip_reason_for("faults", once_in, run_mode);
        assert_eq!(reason.is_some(), skips, "{reason:?}");
    }

    #[rstest]
    fn the_reason_names_the_mode_and_how_to_run_it_here() {
        let reason = skip_reason_for("faults", Some("inline"), Some("existing-secret")).unwrap();
        assert!(reason.contains("in inline mode"), "{reason}");
        assert!(
            reason.contains("cargo xtask e2e --mode existing-secret --filter faults"),
            "{reason}"
        );
    }
}
