//! Node liveness in etcd, and the decision of the dead-node reaper.
//!
//! Keys, under the store's key prefix `{p}` (shared by every network of
//! that prefix; `_nodes` can never be a network name, which starts with an
//! alphanumeric):
//!
//! | key | value | written by |
//! |---|---|---|
//! | `{p}/_nodes/live/{node}` | JSON [`LiveRecord`], attached to the agent's lease | the node agent (`--liveness-config`): created when it starts, kept alive every TTL/3, rewritten every [`LAST_SEEN_EVERY`]; etcd deletes it when the lease is not renewed for its TTL |
//! | `{p}/_nodes/seen/{node}` | JSON [`SeenRecord`], no lease | the agent (created on its first start, `last_seen` refreshed, reaper marks cleared when it comes back) and the reaper (`gone_since`, `reaped_at`); every write a compare-and-swap |
//!
//! A node *had* liveness when its `seen` record exists: the reaper never
//! touches a node without one (a node whose plugins run without an agent).
//! A node is *gone* while its `seen` record exists and its `live` key does
//! not. The reaper ([`decide`]) marks the moment it first sees a node gone
//! (`gone_since`), clears the mark when the node is alive again, and
//! releases the node's owner records once the node has been gone for
//! `node_gone_after` **as observed by a reaper whose store reads have all
//! succeeded since** (`healthy_since`): an etcd outage, or a reaper
//! restart, starts the clock again.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often the agent rewrites its records' `last_seen` (the lease itself
/// is renewed every TTL/3 without a write).
pub const LAST_SEEN_EVERY: Duration = Duration::from_secs(300);

/// The live key of `node` under prefix `prefix` (trailing `/` ignored).
pub fn live_key(prefix: &str, node: &str) -> String {
    format!("{}{node}", live_prefix(prefix))
}

/// The prefix of every live key.
pub fn live_prefix(prefix: &str) -> String {
    format!("{}/_nodes/live/", prefix.trim_end_matches('/'))
}

/// The seen record key of `node`.
pub fn seen_key(prefix: &str, node: &str) -> String {
    format!("{}{node}", seen_prefix(prefix))
}

/// The prefix of every seen record.
pub fn seen_prefix(prefix: &str) -> String {
    format!("{}/_nodes/seen/", prefix.trim_end_matches('/'))
}

/// What the live key holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveRecord {
    /// The node (host) name.
    pub node: String,
    /// The agent's version.
    pub version: String,
    /// When this agent started (Unix seconds).
    pub started: u64,
    /// When the record was last written (Unix seconds).
    pub last_seen: u64,
}

/// What the seen record holds: that the node has run an agent, and what
/// the reaper concluded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenRecord {
    /// The node (host) name.
    pub node: String,
    /// The version of its last agent.
    pub version: String,
    /// When an agent of this node first wrote it (Unix seconds).
    pub first_seen: u64,
    /// When its agent last refreshed it (Unix seconds).
    pub last_seen: u64,
    /// When a reaper first saw the node without its live key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone_since: Option<u64>,
    /// When a reaper released the node's records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaped_at: Option<u64>,
    /// How many owner records that reaping released.
    #[serde(default)]
    pub reaped_records: u64,
}

/// The state of one node as `ipamctl nodes` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeState {
    /// Its live key exists.
    Alive,
    /// Its agent ran once; its live key is gone.
    Gone,
    /// Gone, and its records were released by a reaper.
    Reaped,
    /// Owner records but never an agent with liveness (never reaped).
    NoLiveness,
}

/// What the reaper does about one node in one pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing: alive and unmarked, still within the grace, or reaped.
    Wait,
    /// Alive again: clear `gone_since` (its agent clears `reaped_at`).
    ClearGone,
    /// First seen gone: set `gone_since` to now.
    MarkGone,
    /// Gone long enough: release its owner records created no later than
    /// `gone_since`, then set `reaped_at`.
    Reap {
        /// The node's `gone_since`.
        gone_since: u64,
    },
}

/// The reaper's decision for a node with seen record `seen`, live key
/// present or not, at `now`, for a reaper whose reads have all succeeded
/// since `healthy_since` (all times Unix seconds).
pub fn decide(
    seen: &SeenRecord,
    alive: bool,
    now: u64,
    healthy_since: u64,
    gone_after: Duration,
) -> Decision {
    match (alive, seen.gone_since, seen.reaped_at) {
        // The agent clears `reaped_at` itself, after it has logged it.
        (true, Some(_), _) => Decision::ClearGone,
        (true, None, _) => Decision::Wait,
        (false, _, Some(_)) => Decision::Wait,
        (false, None, None) => Decision::MarkGone,
        (false, Some(since), None) => {
            let counted_from = since.max(healthy_since);
            if now.saturating_sub(counted_from) >= gone_after.as_secs() {
                Decision::Reap { gone_since: since }
            } else {
                Decision::Wait
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(gone: Option<u64>, reaped: Option<u64>) -> SeenRecord {
        SeenRecord {
            node: "n".into(),
            gone_since: gone,
            reaped_at: reaped,
            ..SeenRecord::default()
        }
    }

    const AFTER: Duration = Duration::from_secs(1800);

    #[test]
    fn a_node_is_reaped_only_after_the_grace_as_seen_by_a_healthy_reaper() {
        // Alive: nothing; first seen gone: marked.
        assert_eq!(
            decide(&seen(None, None), true, 100, 0, AFTER),
            Decision::Wait
        );
        assert_eq!(
            decide(&seen(None, None), false, 100, 0, AFTER),
            Decision::MarkGone
        );
        // Within the grace: wait; after it: reap.
        assert_eq!(
            decide(&seen(Some(100), None), false, 1899, 0, AFTER),
            Decision::Wait
        );
        assert_eq!(
            decide(&seen(Some(100), None), false, 1900, 0, AFTER),
            Decision::Reap { gone_since: 100 }
        );
        // The reaper's store was unreachable until 1000: the clock starts there.
        assert_eq!(
            decide(&seen(Some(100), None), false, 2799, 1000, AFTER),
            Decision::Wait
        );
        assert_eq!(
            decide(&seen(Some(100), None), false, 2800, 1000, AFTER),
            Decision::Reap { gone_since: 100 }
        );
        // Back within the grace (a healed partition): the mark is cleared.
        assert_eq!(
            decide(&seen(Some(100), None), true, 500, 0, AFTER),
            Decision::ClearGone
        );
        // Reaped: never again while gone; cleared when it comes back.
        assert_eq!(
            decide(&seen(Some(100), Some(1900)), false, 9999, 0, AFTER),
            Decision::Wait
        );
        assert_eq!(
            decide(&seen(Some(100), Some(1900)), true, 9999, 0, AFTER),
            Decision::ClearGone
        );
        assert_eq!(
            decide(&seen(None, Some(1900)), true, 9999, 0, AFTER),
            Decision::Wait
        );
    }

    #[test]
    fn keys_live_outside_every_network() {
        assert_eq!(live_key("/host-etcd/", "n1"), "/host-etcd/_nodes/live/n1");
        assert_eq!(seen_key("/host-etcd", "n1"), "/host-etcd/_nodes/seen/n1");
        assert!(seen_key("/p", "n1").starts_with(&seen_prefix("/p")));
    }
}
