//! The one metric table: every family both exporters export, each
//! declared once (full name, type, labels, help), in output order.
//! `ipamctl metrics` exports the cluster's figures ([`ipam`],
//! `host_etcd_ipam_*`), each node agent its node's ([`agent`],
//! `host_etcd_agent_*`); both render their samples with
//! [`Samples::render`](super::exposition::Samples::render) over
//! [`FAMILIES`].

/// Metric type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A value that only goes up (name ends in `_total`).
    Counter,
    /// Observations counted in cumulative buckets (`_bucket{le=...}`,
    /// `_sum`, `_count`; see
    /// [`Histogram`](super::exposition::Histogram)).
    Histogram,
}

impl Kind {
    /// The `# TYPE` word.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family of the table: full name, type, label names, help.
#[derive(Clone, Copy, Debug)]
pub struct Def {
    /// The full metric name (`host_etcd_ipam_*` or `host_etcd_agent_*`).
    pub name: &'static str,
    /// Type.
    pub kind: Kind,
    /// Label names, in order.
    pub labels: &'static [&'static str],
    /// The `HELP` text.
    pub help: &'static str,
}

/// Families of `ipamctl metrics`, the cluster exporter (`host_etcd_ipam_*`).
pub mod ipam {
    use super::{Def, Kind};

    /// Labels of a range's figures.
    const RANGE: &[&str] = &["network", "range_set", "range", "family"];
    /// Labels of a network's figures.
    const NETWORK: &[&str] = &["network"];

    /// Allocatable addresses of a range.
    pub const ADDRESSES_SIZE: Def = Def {
        name: "host_etcd_ipam_addresses_size",
        kind: Kind::Gauge,
        labels: RANGE,
        help: "Addresses in the range (rangeStart..rangeEnd).",
    };

    /// Addresses marked taken.
    pub const ADDRESSES_USED: Def = Def {
        name: "host_etcd_ipam_addresses_used",
        kind: Kind::Gauge,
        labels: RANGE,
        help: "Addresses of the range marked taken in the stored chunks.",
    };

    /// Addresses not taken.
    pub const ADDRESSES_FREE: Def = Def {
        name: "host_etcd_ipam_addresses_free",
        kind: Kind::Gauge,
        labels: RANGE,
        help: "Addresses of the range not taken (size - used).",
    };

    /// used / size.
    pub const UTILIZATION: Def = Def {
        name: "host_etcd_ipam_utilization_ratio",
        kind: Kind::Gauge,
        labels: RANGE,
        help: "Used addresses of the range over its size (0..1).",
    };

    /// Stored chunks overlapping a range.
    pub const CHUNKS: Def = Def {
        name: "host_etcd_ipam_chunks_stored",
        kind: Kind::Gauge,
        labels: RANGE,
        help: "Stored bitmap chunks overlapping the range.",
    };

    /// Bytes of those chunks.
    pub const CHUNK_BYTES: Def = Def {
        name: "host_etcd_ipam_chunks_stored_bytes",
        kind: Kind::Gauge,
        labels: RANGE,
        help: "Bytes of the stored values of the chunks overlapping the range.",
    };

    /// Owner records of a network, as the last check counted them.
    pub const OWNER_RECORDS: Def = Def {
        name: "host_etcd_ipam_owner_records",
        kind: Kind::Gauge,
        labels: NETWORK,
        help: "Owner records (container interfaces holding addresses) the last consistency check read.",
    };

    /// Problems found by `check`.
    pub const CHECK_PROBLEMS: Def = Def {
        name: "host_etcd_ipam_check_problems",
        kind: Kind::Gauge,
        labels: &["network", "kind"],
        help: "Inconsistencies the consistency check (ipamctl check) finds, by kind.",
    };

    /// Findings in flux.
    pub const CHECK_IN_FLUX: Def = Def {
        name: "host_etcd_ipam_check_in_flux",
        kind: Kind::Gauge,
        labels: NETWORK,
        help: "Check findings whose chunk changed during the check (concurrent writes).",
    };

    /// When the last check finished.
    pub const CHECK_TIMESTAMP: Def = Def {
        name: "host_etcd_ipam_check_last_run_timestamp_seconds",
        kind: Kind::Gauge,
        labels: NETWORK,
        help: "Unix time at which the last consistency check of the network finished.",
    };

    /// Failed checks.
    pub const CHECK_ERRORS: Def = Def {
        name: "host_etcd_ipam_check_errors_total",
        kind: Kind::Counter,
        labels: NETWORK,
        help: "Consistency checks of the network that could not read the store.",
    };

    /// Nodes reaped.
    pub const REAPED_NODES: Def = Def {
        name: "host_etcd_ipam_reaped_nodes_total",
        kind: Kind::Counter,
        labels: NETWORK,
        help: "Dead nodes whose owner records of the network the reaper released (--reap-after).",
    };

    /// Records released by the reaper.
    pub const REAPED_RECORDS: Def = Def {
        name: "host_etcd_ipam_reaped_owner_records_total",
        kind: Kind::Counter,
        labels: NETWORK,
        help: "Owner records of dead nodes the reaper released (--reap-after).",
    };

    /// Failed reaper passes.
    pub const REAP_ERRORS: Def = Def {
        name: "host_etcd_ipam_reap_errors_total",
        kind: Kind::Counter,
        labels: NETWORK,
        help: "Reaper passes over the network's store that failed (the grace then starts again).",
    };

    /// Whether the last scrape read everything.
    pub const UP: Def = Def {
        name: "host_etcd_ipam_up",
        kind: Kind::Gauge,
        labels: NETWORK,
        help: "1 if the last scrape read all figures of the network from the store, else 0.",
    };

    /// Scrape duration.
    pub const SCRAPE_DURATION: Def = Def {
        name: "host_etcd_ipam_scrape_duration_seconds",
        kind: Kind::Gauge,
        labels: NETWORK,
        help: "Seconds the last scrape of the network took.",
    };

    /// Failed scrapes.
    pub const SCRAPE_ERRORS: Def = Def {
        name: "host_etcd_ipam_scrape_errors_total",
        kind: Kind::Counter,
        labels: NETWORK,
        help: "Scrapes of the network in which some figure could not be read.",
    };
}

/// Families of the node agent's `--metrics-listen` (`host_etcd_agent_*`).
pub mod agent {
    use super::{Def, Kind};

    /// Whether this node holds its liveness key.
    pub const LIVENESS_UP: Def = Def {
        name: "host_etcd_agent_liveness_up",
        kind: Kind::Gauge,
        labels: &[],
        help: "Stores in which this agent holds its node's liveness key (--liveness-config).",
    };

    /// Found reaped at start.
    pub const NODE_REAPED: Def = Def {
        name: "host_etcd_agent_node_reaped",
        kind: Kind::Gauge,
        labels: &[],
        help:
            "Stores whose records said at start that a reaper had released this node's owner records.",
    };

    /// Failed liveness calls.
    pub const LIVENESS_ERRORS: Def = Def {
        name: "host_etcd_agent_liveness_errors_total",
        kind: Kind::Counter,
        labels: &[],
        help: "Liveness calls to etcd (lease, live key, seen record) that failed.",
    };

    /// Request latency per command.
    pub const REQUEST_DURATION: Def = Def {
        name: "host_etcd_agent_request_duration_seconds",
        kind: Kind::Histogram,
        labels: &["command"],
        help: "Time the agent took to answer a CNI request, by CNI_COMMAND.",
    };

    /// This node's owner records per network.
    pub const NODE_OWNER_RECORDS: Def = Def {
        name: "host_etcd_agent_node_owner_records",
        kind: Kind::Gauge,
        labels: &["network", "node"],
        help: "Owner records this node holds in the network (its per-node index entries).",
    };

    /// Scrapes whose store read failed.
    pub const SCRAPE_ERRORS: Def = Def {
        name: "host_etcd_agent_scrape_errors_total",
        kind: Kind::Counter,
        labels: &["network"],
        help: "Scrapes in which this node's owner records of the network could not be read.",
    };

    /// CNI requests served.
    pub const REQUESTS: Def = Def {
        name: "host_etcd_agent_requests_total",
        kind: Kind::Counter,
        labels: &[],
        help: "CNI requests the agent served (every network).",
    };

    /// CNI requests that failed.
    pub const ERRORS: Def = Def {
        name: "host_etcd_agent_errors_total",
        kind: Kind::Counter,
        labels: &[],
        help: "CNI requests the agent answered with an error (every network).",
    };

    /// Malformed requests.
    pub const PROTOCOL_ERRORS: Def = Def {
        name: "host_etcd_agent_protocol_errors_total",
        kind: Kind::Counter,
        labels: &[],
        help: "Connections refused for a malformed or late request frame.",
    };

    /// Refused peers.
    pub const REFUSED_PEERS: Def = Def {
        name: "host_etcd_agent_refused_peers_total",
        kind: Kind::Counter,
        labels: &[],
        help: "Connections refused because the peer's uid is not allowed.",
    };

    /// Requests dropped because their client went away.
    pub const ABANDONED_DROPPED: Def = Def {
        name: "host_etcd_agent_abandoned_dropped_total",
        kind: Kind::Counter,
        labels: &[],
        help: "CNI requests whose client went away before they were committed: not run.",
    };

    /// Late ADDs released again.
    pub const ABANDONED_RELEASED: Def = Def {
        name: "host_etcd_agent_abandoned_released_total",
        kind: Kind::Counter,
        labels: &[],
        help: "ADDs committed after their client went away, released again by compare-and-swap.",
    };

    /// Late ADDs left alone.
    pub const ABANDONED_KEPT: Def = Def {
        name: "host_etcd_agent_abandoned_kept_total",
        kind: Kind::Counter,
        labels: &[],
        help: "ADDs committed after their client went away whose record was written again since: left alone.",
    };

    /// Late ADDs whose release failed.
    pub const ABANDONED_RELEASE_FAILED: Def = Def {
        name: "host_etcd_agent_abandoned_release_failed_total",
        kind: Kind::Counter,
        labels: &[],
        help: "ADDs committed after their client went away whose release failed (reconcile or GC releases them).",
    };

    /// Requests being served.
    pub const IN_FLIGHT: Def = Def {
        name: "host_etcd_agent_requests_in_flight",
        kind: Kind::Gauge,
        labels: &[],
        help: "CNI requests being served now.",
    };

    /// Networks served.
    pub const NETWORKS: Def = Def {
        name: "host_etcd_agent_networks",
        kind: Kind::Gauge,
        labels: &[],
        help: "Networks the agent keeps a warm allocator for.",
    };

    /// Requests per network.
    pub const NETWORK_REQUESTS: Def = Def {
        name: "host_etcd_agent_network_requests_total",
        kind: Kind::Counter,
        labels: &["network"],
        help: "CNI requests of the network since its allocator was built.",
    };

    /// Failed requests per network.
    pub const NETWORK_ERRORS: Def = Def {
        name: "host_etcd_agent_network_errors_total",
        kind: Kind::Counter,
        labels: &["network"],
        help: "Failed CNI requests of the network since its allocator was built.",
    };

    /// Reconcile passes.
    pub const RECONCILE_PASSES: Def = Def {
        name: "host_etcd_agent_reconcile_passes_total",
        kind: Kind::Counter,
        labels: &["network"],
        help: "Periodic reconcile passes of the network (--reconcile-interval).",
    };

    /// Blocked passes.
    pub const RECONCILE_BLOCKED: Def = Def {
        name: "host_etcd_agent_reconcile_blocked_passes_total",
        kind: Kind::Counter,
        labels: &["network"],
        help: "Reconcile passes that released nothing because they were refused (bad or no cache entries).",
    };

    /// Failed passes.
    pub const RECONCILE_FAILED: Def = Def {
        name: "host_etcd_agent_reconcile_failed_passes_total",
        kind: Kind::Counter,
        labels: &["network"],
        help:
            "Reconcile passes that failed (store or cache directory unreadable, a release failed).",
    };

    /// Released owners.
    pub const RECONCILE_RELEASED: Def = Def {
        name: "host_etcd_agent_reconcile_released_total",
        kind: Kind::Counter,
        labels: &["network"],
        help: "Owner records the periodic reconcile released.",
    };
}

/// Every family, in output order: the cluster exporter's, then the
/// agent's.
pub const FAMILIES: [Def; 39] = [
    ipam::ADDRESSES_SIZE,
    ipam::ADDRESSES_USED,
    ipam::ADDRESSES_FREE,
    ipam::UTILIZATION,
    ipam::CHUNKS,
    ipam::CHUNK_BYTES,
    ipam::OWNER_RECORDS,
    ipam::CHECK_PROBLEMS,
    ipam::CHECK_IN_FLUX,
    ipam::CHECK_TIMESTAMP,
    ipam::CHECK_ERRORS,
    ipam::REAPED_NODES,
    ipam::REAPED_RECORDS,
    ipam::REAP_ERRORS,
    ipam::UP,
    ipam::SCRAPE_DURATION,
    ipam::SCRAPE_ERRORS,
    agent::LIVENESS_UP,
    agent::NODE_REAPED,
    agent::LIVENESS_ERRORS,
    agent::REQUEST_DURATION,
    agent::NODE_OWNER_RECORDS,
    agent::SCRAPE_ERRORS,
    agent::REQUESTS,
    agent::ERRORS,
    agent::PROTOCOL_ERRORS,
    agent::REFUSED_PEERS,
    agent::ABANDONED_DROPPED,
    agent::ABANDONED_RELEASED,
    agent::ABANDONED_KEPT,
    agent::ABANDONED_RELEASE_FAILED,
    agent::IN_FLIGHT,
    agent::NETWORKS,
    agent::NETWORK_REQUESTS,
    agent::NETWORK_ERRORS,
    agent::RECONCILE_PASSES,
    agent::RECONCILE_BLOCKED,
    agent::RECONCILE_FAILED,
    agent::RECONCILE_RELEASED,
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The Prometheus naming conventions over the whole table: every name
    /// has one of the two prefixes and is lowercase snake case, a counter
    /// and only a counter ends in `_total`, every family has help text,
    /// no name twice.
    #[test]
    fn names_follow_the_conventions() {
        let mut names = BTreeSet::new();
        for def in &FAMILIES {
            assert!(
                def.name.starts_with("host_etcd_ipam_") || def.name.starts_with("host_etcd_agent_"),
                "{}",
                def.name
            );
            assert_eq!(
                def.kind == Kind::Counter,
                def.name.ends_with("_total"),
                "{}",
                def.name
            );
            assert!(def.name.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            assert!(!def.help.is_empty());
            assert!(names.insert(def.name), "{} twice", def.name);
        }
    }
}
