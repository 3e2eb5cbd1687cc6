//! The one template environment for everything keyrig renders: gateway and
//! agent configs from `env/`, Vault policies from `scenarios/`. Strict (an
//! undefined variable is an error, not an empty string, so a typo in a
//! template cannot silently drop a config line) and never HTML-escaped
//! (these are YAML, HCL and nginx files).

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

/// The environment: strict undefined, no auto-escape, and the `q` filter,
/// which quotes a value as a JSON string; YAML reads that as the same string
/// whatever characters a path holds.
pub fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.add_filter("q", |value: minijinja::Value| {
        serde_json::to_string(&value).map_err(|err| {
            minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, err.to_string())
        })
    });
    env
}

/// Renders a template file (of `env/`, usually) with `context`.
pub fn render(template: &Path, context: impl Serialize) -> Result<String> {
    let source = std::fs::read_to_string(template)
        .with_context(|| format!("reading the template {}", template.display()))?;
    let mut env = environment();
    let name = template.display().to_string();
    env.add_template_owned(name.clone(), source)
        .with_context(|| format!("{} is not a valid template", template.display()))?;
    env.get_template(&name)?
        .render(context)
        .with_context(|| format!("rendering {}", template.display()))
}

/// Renders one template string (a gateway manifest's argument, say) with
/// `context`; `what` names it in the error.
pub fn render_str(what: &str, source: &str, context: impl Serialize) -> Result<String> {
    environment()
        .render_str(source, context)
        .with_context(|| format!("rendering {what} ({source:?})"))
}
