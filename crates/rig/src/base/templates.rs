//! The one template environment for everything keyrig renders (gateway and
//! agent configs from `env/`, Vault policies from `scenarios/`): strict and
//! never HTML-escaped. It lives in `keyrig-scenario`, below rig, because the
//! Vault setup's policies are rendered while loading it.

pub use keyrig_scenario::templates::*;
