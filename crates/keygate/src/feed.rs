//! The invalidation feed: what keygate drops from its own cache, passed on
//! to followers that cache keygate's answers themselves (the Envoy dynamic
//! module, `crates/keygate-envoy`), over `GET /v1/invalidations` (`http`).
//!
//! One JSON object per line, in the order keygate applied them:
//!
//! ```text
//! {"type":"stale","why":"connected"}      every answer cached until now may be outdated
//! {"type":"drop","group":"billing-api","selector":"57b8…"}   drop what is held for this key
//! {"type":"ping"}                          nothing happened (keeps the connection alive)
//! ```
//!
//! A follower gets a `stale` line first (what happened before it connected
//! went unseen) and whenever it fell behind (`lagged`: lines were lost).
//! Lines only ever remove state: a follower that reads a forged line makes
//! one more request to keygate, never lets a request through.
//!
//! Plain data over a broadcast channel, importing nothing from the crate:
//! `cache` publishes into it and `http` serves it, and `http` imports what
//! imports `cache`.

use tokio::sync::broadcast;

/// Lines a follower may fall behind by before it is told `lagged` (and
/// marks everything stale). Invalidations are rare; a burst of this many
/// between two reads of a follower means it is stuck anyway.
const BACKLOG: usize = 1024;

/// What keygate did to its cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    /// Everything held for one key was dropped.
    Drop { group: String, selector: String },
    /// Every cached answer was marked stale; `why` is for logs.
    Stale { why: &'static str },
}

impl FeedEvent {
    /// The event as one line of the feed, newline included.
    pub fn line(&self) -> String {
        let value = match self {
            FeedEvent::Drop { group, selector } => {
                serde_json::json!({ "type": "drop", "group": group, "selector": selector })
            }
            FeedEvent::Stale { why } => serde_json::json!({ "type": "stale", "why": why }),
        };
        format!("{value}\n")
    }
}

/// The line a follower is sent when nothing happened for a while.
pub const PING_LINE: &str = "{\"type\":\"ping\"}\n";

/// The sending side, shared by the cache's invalidator and the HTTP
/// handler that subscribes followers.
#[derive(Debug, Clone)]
pub struct Feed {
    sender: broadcast::Sender<FeedEvent>,
}

impl Default for Feed {
    fn default() -> Self {
        Self::new()
    }
}

impl Feed {
    pub fn new() -> Self {
        Self {
            sender: broadcast::channel(BACKLOG).0,
        }
    }

    /// Passes `event` to every follower connected now (none: nothing to do).
    pub fn publish(&self, event: FeedEvent) {
        let _ = self.sender.send(event);
    }

    /// A new follower's receiver: it sees what is published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<FeedEvent> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_json_lines() {
        let drop = FeedEvent::Drop {
            group: "billing-api".into(),
            selector: "57b81d89804a48128f3bf3e73307a3e6".into(),
        };
        let parse = |line: String| {
            assert!(
                line.ends_with('\n') && line.matches('\n').count() == 1,
                "{line:?}"
            );
            serde_json::from_str::<serde_json::Value>(&line).unwrap()
        };
        assert_eq!(
            parse(drop.line()),
            serde_json::json!({"type": "drop", "group": "billing-api", "selector": "57b81d89804a48128f3bf3e73307a3e6"})
        );
        assert_eq!(
            parse(FeedEvent::Stale { why: "connected" }.line()),
            serde_json::json!({"type": "stale", "why": "connected"})
        );
        let ping: serde_json::Value = serde_json::from_str(PING_LINE).unwrap();
        assert_eq!(ping, serde_json::json!({"type": "ping"}));
    }

    #[tokio::test]
    async fn a_follower_sees_what_is_published_after_it_subscribed() {
        let feed = Feed::new();
        feed.publish(FeedEvent::Stale { why: "before" });
        let mut follower = feed.subscribe();
        feed.publish(FeedEvent::Stale { why: "after" });
        assert_eq!(
            follower.recv().await.unwrap(),
            FeedEvent::Stale { why: "after" }
        );
    }
}
