//! `Role`: an AppRole role ready to write, as `setup` loads them and `pki`
//! checks its agent's against. A module of its own so that neither of those
//! imports the other for it.

use std::time::Duration;

/// An AppRole role ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub policies: Vec<String>,
    pub token_ttl: Duration,
    pub token_max_ttl: Duration,
}
