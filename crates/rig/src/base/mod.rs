//! What every layer uses and that knows nothing of keyrig's domain: where
//! things are, the run directory, redaction, waits, progress, ports and the
//! one template environment. **Imports nothing from the rest of rig.**

pub mod paths;
pub mod ports;
pub mod progress;
pub mod redact;
pub mod run;
pub mod templates;
pub mod wait;
