//! AppRole credentials Vault rejected are not sent again until they change
//! or [`RETRY_REJECTED_AFTER`] has passed.
//!
//! Why: Vault and OpenBao lock an AppRole role-id out after 5 failed logins
//! that come without a 15-minute pause between them (`user_lockout_config`
//! defaults: threshold 5, counter reset 15 min, duration 15 min), and then
//! refuse even the right secret-id. Sending a rejected pair again never
//! makes it right, but every try counts: keygate's retry schedules (every
//! few seconds while it has no token, or on each pod restart) would lock
//! its own role out within seconds to minutes, and a fixed Secret rolled
//! out then would be refused too. One try per 16 minutes lets Vault's
//! counter reset in between; a new version of the files is tried at once.
//! A leaf module (imports nothing from the crate).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// How long the same rejected credentials are held back: longer than
/// Vault's default lockout counter reset (15 min), so retries never add up
/// to a lockout.
pub const RETRY_REJECTED_AFTER: Duration = Duration::from_secs(16 * 60);
const _: () = assert!(
    RETRY_REJECTED_AFTER.as_secs() > 15 * 60,
    "held back no longer than Vault's lockout counter reset, retries can add up to a lockout"
);

/// What tells one pair of credentials from another without keeping them:
/// SHA-256 over the role-id's length, the role-id and the secret-id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialDigest([u8; 32]);

impl CredentialDigest {
    pub fn of(role_id: &str, secret_id: &str) -> Self {
        let mut hash = Sha256::new();
        hash.update((role_id.len() as u64).to_le_bytes());
        hash.update(role_id.as_bytes());
        hash.update(secret_id.as_bytes());
        Self(hash.finalize().into())
    }
}

/// The last credentials Vault rejected, and when.
#[derive(Debug, Default)]
pub struct RejectedCredentials {
    last: Mutex<Option<(CredentialDigest, Instant)>>,
}

impl RejectedCredentials {
    /// How long ago Vault rejected these same credentials, when they are
    /// still held back at `now`; `None`: send them.
    pub fn held_back(&self, credentials: CredentialDigest, now: Instant) -> Option<Duration> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match *last {
            Some((rejected, at)) if rejected == credentials => {
                let ago = now.saturating_duration_since(at);
                (ago < RETRY_REJECTED_AFTER).then_some(ago)
            }
            _ => None,
        }
    }

    /// Vault rejected `credentials` at `now`.
    pub fn rejected(&self, credentials: CredentialDigest, now: Instant) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((credentials, now));
    }

    /// A login succeeded: nothing is held back.
    pub fn accepted(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn the_same_rejected_credentials_wait_sixteen_minutes() {
        let gate = RejectedCredentials::default();
        let bad = CredentialDigest::of("role", "bad");
        let t0 = Instant::now();
        assert_eq!(gate.held_back(bad, t0), None, "nothing rejected yet");
        gate.rejected(bad, t0);
        assert_eq!(gate.held_back(bad, t0 + MIN), Some(MIN));
        assert_eq!(gate.held_back(bad, t0 + 15 * MIN), Some(15 * MIN));
        assert_eq!(gate.held_back(bad, t0 + 16 * MIN), None, "one more try");
    }

    #[test]
    fn other_credentials_are_sent_at_once() {
        let gate = RejectedCredentials::default();
        let t0 = Instant::now();
        gate.rejected(CredentialDigest::of("role", "bad"), t0);
        assert_eq!(
            gate.held_back(CredentialDigest::of("role", "good"), t0),
            None
        );
        assert_eq!(
            gate.held_back(CredentialDigest::of("other-role", "bad"), t0),
            None
        );
    }

    #[test]
    fn a_success_clears_it() {
        let gate = RejectedCredentials::default();
        let bad = CredentialDigest::of("role", "bad");
        let t0 = Instant::now();
        gate.rejected(bad, t0);
        gate.accepted();
        assert_eq!(gate.held_back(bad, t0), None);
    }

    #[test]
    fn the_boundary_between_role_id_and_secret_id_counts() {
        assert_ne!(
            CredentialDigest::of("ab", "c"),
            CredentialDigest::of("a", "bc")
        );
    }
}
