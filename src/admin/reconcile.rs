//! `ipamctl reconcile`, the pure part: which of a node's owner records to
//! release, given the attachments the container runtime still has, the
//! time and a grace period. No I/O here: the command
//! ([`super::commands::reconcile`]) lists the owner records, reads the
//! runtime's cache directory, and hands the results to [`plan`]; this
//! module also decodes one libcni cache file ([`parse_cache_entry`]) and
//! parses durations ([`parse_duration`]).
//!
//! # libcni's result cache
//!
//! After a successful ADD, libcni (the library containerd, CRI-O and podman
//! call plugins through) writes `<cacheDir>/results/<network>-<containerID>-<ifname>`
//! (`cacheDir` is `/var/lib/cni` unless the runtime sets another), a JSON
//! object with `"kind": "cniCacheV1"`, `containerId`, `ifName`,
//! `networkName`, `config` (base64), `result`, and in newer libcni `netns`,
//! `cniArgs`, `capabilityArgs`. It removes the file after a successful DEL.
//! So an entry is an attachment the runtime added and did not yet delete.
//! The JSON fields are what counts (the file name is only used to decide
//! which network a file that does not decode might belong to); unknown
//! fields are ignored.
//!
//! # The decision, per owner record of this node
//!
//! 1. Younger than the grace period (`now < created + grace`): **keep**,
//!    always. An ADD in flight has written its owner record before libcni
//!    writes the cache entry; the grace covers that window.
//! 2. Attached (a cache entry of this network, or an entry of the operator's
//!    valid list, has its container ID and interface): **keep**, unless the
//!    netns check is on and the only attachments say their network
//!    namespace is gone (podman drops a container whose DEL failed, and
//!    libcni then keeps its entry forever): **release**.
//! 3. Not attached: **release**, unless the pass is blocked (below).
//!
//! Records of other nodes, and records without a node, are never looked at.
//!
//! # Refusals
//!
//! - A cache file that does not decode and whose name starts with
//!   `<network>-` might be (a torn write of) one of this network's
//!   entries: the whole pass releases nothing ([`Plan::blocked`]).
//! - No attachment of this network at all (empty cache and list) while the
//!   pass would release something: refused unless allowed
//!   ([`Inputs::allow_empty`]): a runtime keeping its cache elsewhere
//!   would otherwise look like a node without containers.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::allocator::OwnerRecord;

/// The `kind` of every libcni cache file this tool understands.
pub const CACHE_KIND: &str = "cniCacheV1";

/// One attachment the runtime has, from its cache or from the operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Attachment {
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_IFNAME.
    pub ifname: String,
    /// Where it comes from.
    pub source: Source,
}

/// Where an attachment comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Source {
    /// A libcni cache file (its name).
    Cache {
        /// The file name inside the cache directory.
        file: String,
        /// `Some(path)` when the netns check is on and the entry's
        /// network namespace path no longer exists.
        netns_gone: Option<String>,
    },
    /// The operator's `--valid` list.
    List,
}

/// A libcni cache file that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BadCacheFile {
    /// The file name inside the cache directory.
    pub file: String,
    /// Why.
    pub error: String,
    /// Whether its name makes it a possible entry of this network (it
    /// then blocks the pass).
    pub blocks: bool,
}

/// One decoded libcni cache entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheEntry {
    /// `containerId`.
    pub container_id: String,
    /// `ifName`.
    pub ifname: String,
    /// `networkName`.
    pub network: String,
    /// The network namespace path: `netns` when present, else the
    /// `sandbox` of the result's interface named `ifName`.
    pub netns: Option<String>,
}

/// Decodes one libcni cache file. Refuses what libcni itself would not use
/// for a DEL: not JSON, not an object, `kind` other than `cniCacheV1`,
/// `containerId`, `ifName` or `networkName` missing, empty or not strings.
pub fn parse_cache_entry(bytes: &[u8]) -> Result<CacheEntry, String> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(obj) = &doc else {
        return Err("not a JSON object".into());
    };
    match obj.get("kind") {
        Some(Value::String(k)) if k == CACHE_KIND => {}
        Some(other) => {
            return Err(format!(
                "\"kind\" is {other}, expected \"{CACHE_KIND}\" (a legacy or unknown cache format)"
            ))
        }
        None => {
            return Err(format!(
                "no \"kind\" (a legacy cache format, not \"{CACHE_KIND}\")"
            ))
        }
    }
    let field = |name: &str| -> Result<String, String> {
        match obj.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(_) => Err(format!("\"{name}\" is not a non-empty string")),
            None => Err(format!("no \"{name}\"")),
        }
    };
    let container_id = field("containerId")?;
    let ifname = field("ifName")?;
    let network = field("networkName")?;
    let netns = match obj.get("netns") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => obj
            .get("result")
            .and_then(|r| r.get("interfaces"))
            .and_then(Value::as_array)
            .and_then(|ifs| {
                ifs.iter()
                    .find(|i| i.get("name").and_then(Value::as_str) == Some(ifname.as_str()))
            })
            .and_then(|i| i.get("sandbox"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    };
    Ok(CacheEntry {
        container_id,
        ifname,
        network,
        netns,
    })
}

/// Whether a cache file of this name might be an entry of `network`
/// (libcni names them `<network>-<containerID>-<ifname>`).
pub fn may_belong_to(file: &str, network: &str) -> bool {
    file.len() > network.len() + 1
        && file.starts_with(network)
        && file.as_bytes().get(network.len()) == Some(&b'-')
}

/// Parses a duration: a bare number of seconds (`600`, `0`) or numbers
/// with units, concatenated (`10m`, `1h30m`, `90s`, `1500ms`, `2d`), read
/// by `humantime` (which also knows `w`, `min`, `hours` and the like).
/// Whole numbers only, without spaces: `humantime` would also take `1.5h`
/// and `1h 30m`, which these flags have always refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!(
            "{text:?}: expected e.g. 600, 90s, 10m, 1h30m, 2d, 1500ms"
        ));
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|e| format!("{text:?}: {e}"));
    }
    humantime::parse_duration(s).map_err(|e| format!("{text:?}: {e}"))
}

/// Everything one decision needs.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    /// This node's name: only records with `node == Some(node)` are
    /// considered.
    pub node: &'a str,
    /// Every owner record of the network (all nodes).
    pub records: &'a [OwnerRecord],
    /// The attachments of this network the runtime and the operator report.
    pub attachments: &'a [Attachment],
    /// Cache files that could not be used.
    pub bad_files: &'a [BadCacheFile],
    /// Seconds since the Unix epoch.
    pub now: u64,
    /// The grace period.
    pub grace: Duration,
    /// Release even when no attachment of this network is known at all.
    pub allow_empty: bool,
}

/// What happens to one record, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "camelCase")]
pub enum Reason {
    /// Kept: younger than the grace period (an ADD may be in flight).
    YoungerThanGrace {
        /// Age in seconds.
        age_secs: u64,
    },
    /// Kept: the runtime (or the operator's list) still has it.
    Attached {
        /// The attachments naming it.
        sources: Vec<Source>,
    },
    /// Kept: it would be released, but the pass is blocked.
    Blocked,
    /// Released: no attachment names it.
    NotAttached {
        /// Age in seconds.
        age_secs: u64,
    },
    /// Released: only cache entries whose network namespace is gone name it.
    NetnsGone {
        /// The cache file.
        file: String,
        /// The namespace path that no longer exists.
        netns: String,
    },
}

impl Reason {
    /// One line for humans.
    pub fn describe(&self, grace: Duration) -> String {
        match self {
            Reason::YoungerThanGrace { age_secs } => format!(
                "younger than the grace period ({age_secs}s < {}s)",
                grace_secs(grace)
            ),
            Reason::Attached { sources } => {
                let what: Vec<String> = sources
                    .iter()
                    .map(|s| match s {
                        Source::Cache { file, .. } => format!("runtime cache {file}"),
                        Source::List => "valid list".into(),
                    })
                    .collect();
                format!("attached ({})", what.join(", "))
            }
            Reason::Blocked => "would release, but the pass is blocked".into(),
            Reason::NotAttached { age_secs } => format!(
                "no attachment in the runtime cache or the list (age {age_secs}s >= {}s)",
                grace_secs(grace)
            ),
            Reason::NetnsGone { file, netns } => {
                format!("cache entry {file} names netns {netns}, which is gone")
            }
        }
    }

    /// Whether the record is released.
    pub fn releases(&self) -> bool {
        matches!(self, Reason::NotAttached { .. } | Reason::NetnsGone { .. })
    }
}

/// One decided record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The owner record.
    pub record: OwnerRecord,
    /// Why it is kept or released.
    #[serde(flatten)]
    pub reason: Reason,
}

/// Why a pass releases nothing although it found leaks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Blocked {
    /// Cache files of (possibly) this network do not decode.
    BadCacheFiles {
        /// Their names.
        files: Vec<String>,
    },
    /// No attachment of this network is known at all.
    NoAttachments,
}

impl Blocked {
    /// One line for humans.
    pub fn describe(&self) -> String {
        match self {
            Blocked::BadCacheFiles { files } => format!(
                "cache files that might be this network's entries do not decode ({}): \
                 check them, then fix or remove them",
                files.join(", ")
            ),
            Blocked::NoAttachments => "no attachment of this network in the runtime cache or \
                 the list: is --cache-dir the runtime's? (--allow-empty releases anyway)"
                .into(),
        }
    }
}

/// The outcome of one decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Records of this node to release.
    pub release: Vec<Decision>,
    /// Records of this node kept.
    pub keep: Vec<Decision>,
    /// Set when the pass must release nothing; every would-be release is
    /// then in `keep` with [`Reason::Blocked`].
    pub blocked: Option<Blocked>,
}

/// The grace period in whole seconds, rounded up (owner records carry
/// whole seconds).
pub fn grace_secs(grace: Duration) -> u64 {
    grace.as_secs() + u64::from(grace.subsec_nanos() > 0)
}

/// Decides every owner record of `inputs.node`. Records come out sorted by
/// container ID and interface.
pub fn plan(inputs: &Inputs<'_>) -> Plan {
    let grace = grace_secs(inputs.grace);
    let mut by_owner: HashMap<(&str, &str), Vec<&Attachment>> = HashMap::new();
    for a in inputs.attachments {
        by_owner
            .entry((a.container_id.as_str(), a.ifname.as_str()))
            .or_default()
            .push(a);
    }
    // The records come from the node's index; any other (a record of
    // another node, or without one) is never looked at.
    let mut mine: Vec<&OwnerRecord> = inputs
        .records
        .iter()
        .filter(|r| r.node.as_deref() == Some(inputs.node))
        .collect();
    mine.sort_by(|a, b| (&a.container_id, &a.ifname).cmp(&(&b.container_id, &b.ifname)));
    let mut release = Vec::new();
    let mut keep = Vec::new();
    for r in mine {
        let age_secs = inputs.now.saturating_sub(r.created);
        let young = r.created.saturating_add(grace) > inputs.now;
        let reason = if young {
            Reason::YoungerThanGrace { age_secs }
        } else {
            match by_owner.get(&(r.container_id.as_str(), r.ifname.as_str())) {
                None => Reason::NotAttached { age_secs },
                Some(found) => {
                    let live: Vec<Source> = found
                        .iter()
                        .filter(|a| {
                            !matches!(
                                &a.source,
                                Source::Cache {
                                    netns_gone: Some(_),
                                    ..
                                }
                            )
                        })
                        .map(|a| a.source.clone())
                        .collect();
                    if !live.is_empty() {
                        Reason::Attached { sources: live }
                    } else {
                        match found.iter().find_map(|a| match &a.source {
                            Source::Cache {
                                file,
                                netns_gone: Some(netns),
                            } => Some((file.clone(), netns.clone())),
                            _ => None,
                        }) {
                            Some((file, netns)) => Reason::NetnsGone { file, netns },
                            // `found` is never empty and every entry is a
                            // gone-netns cache entry here.
                            None => Reason::NotAttached { age_secs },
                        }
                    }
                }
            }
        };
        let d = Decision {
            record: r.clone(),
            reason,
        };
        if d.reason.releases() {
            release.push(d);
        } else {
            keep.push(d);
        }
    }
    let bad: Vec<String> = inputs
        .bad_files
        .iter()
        .filter(|b| b.blocks)
        .map(|b| b.file.clone())
        .collect();
    let blocked = if release.is_empty() {
        None
    } else if !bad.is_empty() {
        Some(Blocked::BadCacheFiles { files: bad })
    } else if inputs.attachments.is_empty() && !inputs.allow_empty {
        Some(Blocked::NoAttachments)
    } else {
        None
    };
    if blocked.is_some() {
        for mut d in release.drain(..) {
            d.reason = Reason::Blocked;
            keep.push(d);
        }
        keep.sort_by(|a, b| {
            (&a.record.container_id, &a.record.ifname)
                .cmp(&(&b.record.container_id, &b.record.ifname))
        });
    }
    Plan {
        release,
        keep,
        blocked,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn rec(cid: &str, node: Option<&str>, created: u64) -> OwnerRecord {
        OwnerRecord {
            container_id: cid.into(),
            ifname: "eth0".into(),
            ips: vec!["10.0.0.2".parse().unwrap()],
            created,
            pod_namespace: None,
            pod_name: None,
            node: node.map(str::to_string),
        }
    }

    fn cached(cid: &str) -> Attachment {
        Attachment {
            container_id: cid.into(),
            ifname: "eth0".into(),
            source: Source::Cache {
                file: format!("net-{cid}-eth0"),
                netns_gone: None,
            },
        }
    }

    fn inputs<'a>(
        records: &'a [OwnerRecord],
        attachments: &'a [Attachment],
        bad_files: &'a [BadCacheFile],
    ) -> Inputs<'a> {
        Inputs {
            node: "n1",
            records,
            attachments,
            bad_files,
            now: 10_000,
            grace: Duration::from_secs(600),
            allow_empty: false,
        }
    }

    fn ids(ds: &[Decision]) -> Vec<&str> {
        ds.iter().map(|d| d.record.container_id.as_str()).collect()
    }

    /// Attached records stay, unattached old ones go, young ones always
    /// stay (attached or not), other nodes' and node-less records are
    /// never looked at.
    #[test]
    fn keeps_attached_and_young_releases_old_unattached() {
        let records = [
            rec("live", Some("n1"), 1_000),
            rec("leak", Some("n1"), 1_000),
            rec("adding", Some("n1"), 9_900),
            rec("edge", Some("n1"), 9_400),
            rec("other", Some("n2"), 1_000),
            rec("legacy", None, 1_000),
        ];
        let att = [cached("live")];
        let p = plan(&inputs(&records, &att, &[]));
        // `edge` is exactly grace old: released.
        assert_eq!(ids(&p.release), ["edge", "leak"]);
        assert_eq!(p.release[1].reason, Reason::NotAttached { age_secs: 9_000 });
        assert_eq!(ids(&p.keep), ["adding", "live"]);
        // Records of other nodes or without one are never decided.
        let decided: Vec<&str> = p
            .release
            .iter()
            .chain(&p.keep)
            .map(|d| d.record.container_id.as_str())
            .collect();
        assert!(!decided.contains(&"other") && !decided.contains(&"legacy"));
        assert_eq!(p.blocked, None);
        // One second earlier `edge` is younger than the grace.
        let p = plan(&Inputs {
            now: 9_999,
            ..inputs(&records, &att, &[])
        });
        assert_eq!(ids(&p.release), ["leak"]);
        let p = plan(&inputs(&records, &att, &[]));
        assert_eq!(p.keep[0].reason, Reason::YoungerThanGrace { age_secs: 100 });
    }

    /// A record exactly as old as the grace is released; one second
    /// younger is kept; a sub-second grace rounds up; a future `created`
    /// (clock step) is kept.
    #[test]
    fn grace_boundary() {
        let records = [
            rec("a", Some("n1"), 9_400),
            rec("b", Some("n1"), 9_401),
            rec("future", Some("n1"), 20_000),
        ];
        let att = [cached("other")];
        let p = plan(&inputs(&records, &att, &[]));
        assert_eq!(ids(&p.release), ["a"]);
        assert_eq!(ids(&p.keep), ["b", "future"]);
        let p = plan(&Inputs {
            grace: Duration::from_millis(1),
            now: 9_401,
            ..inputs(&records, &att, &[])
        });
        assert_eq!(ids(&p.release), ["a"]);
        let p = plan(&Inputs {
            grace: Duration::ZERO,
            now: 9_401,
            ..inputs(&records, &att, &[])
        });
        assert_eq!(ids(&p.release), ["a", "b"]);
    }

    /// The operator's list keeps what it names, like the cache.
    #[test]
    fn valid_list_keeps() {
        let records = [rec("x", Some("n1"), 0), rec("y", Some("n1"), 0)];
        let att = [Attachment {
            container_id: "x".into(),
            ifname: "eth0".into(),
            source: Source::List,
        }];
        let p = plan(&inputs(&records, &att, &[]));
        assert_eq!(ids(&p.release), ["y"]);
        assert_eq!(
            p.keep[0].reason,
            Reason::Attached {
                sources: vec![Source::List]
            }
        );
        // Another interface of the same container is another attachment.
        let mut eth1 = rec("x", Some("n1"), 0);
        eth1.ifname = "eth1".into();
        let records = [eth1];
        let p = plan(&inputs(&records, &att, &[]));
        assert_eq!(p.release.len(), 1);
    }

    /// A cache entry whose netns is gone releases, unless another source
    /// still names the attachment.
    #[test]
    fn netns_gone() {
        let records = [rec("x", Some("n1"), 0), rec("y", Some("n1"), 0)];
        let gone = |cid: &str| Attachment {
            container_id: cid.into(),
            ifname: "eth0".into(),
            source: Source::Cache {
                file: format!("net-{cid}-eth0"),
                netns_gone: Some("/run/netns/gone".into()),
            },
        };
        let att = [
            gone("x"),
            gone("y"),
            Attachment {
                source: Source::List,
                ..gone("y")
            },
        ];
        let p = plan(&inputs(&records, &att, &[]));
        assert_eq!(ids(&p.release), ["x"]);
        assert_eq!(
            p.release[0].reason,
            Reason::NetnsGone {
                file: "net-x-eth0".into(),
                netns: "/run/netns/gone".into()
            }
        );
        assert_eq!(ids(&p.keep), ["y"]);
    }

    /// A bad cache file of this network blocks every release; one of
    /// another network does not.
    #[test]
    fn bad_cache_file_blocks() {
        let records = [rec("live", Some("n1"), 0), rec("leak", Some("n1"), 0)];
        let att = [cached("live")];
        let bad = [BadCacheFile {
            file: "net-leak-eth0".into(),
            error: "not JSON".into(),
            blocks: true,
        }];
        let p = plan(&inputs(&records, &att, &bad));
        assert!(p.release.is_empty());
        assert_eq!(
            p.blocked,
            Some(Blocked::BadCacheFiles {
                files: vec!["net-leak-eth0".into()]
            })
        );
        assert_eq!(ids(&p.keep), ["leak", "live"]);
        assert_eq!(p.keep[0].reason, Reason::Blocked);
        let other = [BadCacheFile {
            blocks: false,
            ..bad[0].clone()
        }];
        let p = plan(&inputs(&records, &att, &other));
        assert_eq!(ids(&p.release), ["leak"]);
        assert_eq!(p.blocked, None);
        // Nothing to release: nothing blocked either.
        let records = [rec("live", Some("n1"), 0)];
        let p = plan(&inputs(&records, &att, &bad));
        assert_eq!(p.blocked, None);
    }

    /// No attachment at all: refused unless allowed.
    #[test]
    fn empty_cache_refused_unless_allowed() {
        let records = [rec("a", Some("n1"), 0)];
        let p = plan(&inputs(&records, &[], &[]));
        assert_eq!(p.blocked, Some(Blocked::NoAttachments));
        assert!(p.release.is_empty());
        let p = plan(&Inputs {
            allow_empty: true,
            ..inputs(&records, &[], &[])
        });
        assert_eq!(ids(&p.release), ["a"]);
    }

    #[test]
    fn cache_entry_fields_and_unknown_fields() {
        let e = parse_cache_entry(
            br#"{"kind":"cniCacheV1","containerId":"abc","ifName":"eth0",
                "networkName":"net","config":"e30=","future":[1,2],
                "result":{"interfaces":[{"name":"br0"},
                  {"name":"eth0","sandbox":"/run/netns/x"}]}}"#,
        )
        .unwrap();
        assert_eq!(
            e,
            CacheEntry {
                container_id: "abc".into(),
                ifname: "eth0".into(),
                network: "net".into(),
                netns: Some("/run/netns/x".into()),
            }
        );
        let e = parse_cache_entry(
            br#"{"kind":"cniCacheV1","containerId":"abc","ifName":"eth0",
                "networkName":"net","netns":"/proc/1/ns/net"}"#,
        )
        .unwrap();
        assert_eq!(e.netns.as_deref(), Some("/proc/1/ns/net"));
        for (bad, want) in [
            (&b""[..], "not JSON"),
            (b"{\"kind\":\"cniCacheV1\",", "not JSON"),
            (b"[1]", "not a JSON object"),
            (br#"{"cniVersion":"0.4.0","ips":[]}"#, "legacy"),
            (br#"{"kind":"cniCacheV2"}"#, "expected"),
            (
                br#"{"kind":"cniCacheV1","containerId":"","ifName":"e","networkName":"n"}"#,
                "containerId",
            ),
            (
                br#"{"kind":"cniCacheV1","containerId":"c","ifName":1,"networkName":"n"}"#,
                "ifName",
            ),
            (
                br#"{"kind":"cniCacheV1","containerId":"c","ifName":"e"}"#,
                "networkName",
            ),
        ] {
            let err = parse_cache_entry(bad).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn file_names_of_a_network() {
        assert!(may_belong_to("net-abc-eth0", "net"));
        assert!(may_belong_to("net-x-abc-eth0", "net"));
        assert!(!may_belong_to("net", "net"));
        assert!(!may_belong_to("net-", "net"));
        assert!(!may_belong_to("network-abc-eth0", "net"));
        assert!(!may_belong_to("other-abc-eth0", "net"));
    }

    #[test]
    fn durations() {
        for (text, secs) in [
            ("0", 0),
            ("600", 600),
            ("90s", 90),
            ("10m", 600),
            ("1h30m", 5_400),
            ("2d", 172_800),
            (" 5m ", 300),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        for bad in [
            "",
            "-1",
            "10x",
            "m",
            "1.5h",
            "10 m",
            "99999999999999999999",
            "999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(grace_secs(Duration::from_millis(1)), 1);
        assert_eq!(grace_secs(Duration::from_secs(3)), 3);
    }
}

/// The examples these items documented while they were public API, kept as
/// tests (the items are private to the crate now).
#[cfg(test)]
mod examples {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn doc_example_parse_duration() {
        use crate::admin::reconcile::parse_duration;
        use std::time::Duration;
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("ten minutes").is_err());
    }
}
