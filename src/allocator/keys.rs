//! The keyspace of one network ([`Keyspace`]): the keys of its meta record,
//! chunks, full-sets, owner records and sticky bindings, and the checks that
//! make names safe to use in a key.

use crate::range::Family;

/// Characters allowed in a network name, container ID, ifname or node name
/// used in a key.
pub(crate) fn key_safe(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'\\')
}

/// Key builder for one network: its keyspace (`{p}` = prefix, `{net}` =
/// network name) is:
///
/// | key | value |
/// |---|---|
/// | `{p}/{net}/meta` | JSON meta record (`{"version":1,"chunkBits":8}`): format version and chunk size k |
/// | `{p}/{net}/chunks/{4\|6}/{base}` | an encoded chunk ([`crate::codec`]) |
/// | `{p}/{net}/full/{4\|6}/{region}` | roaring treemap of full chunk indices |
/// | `{p}/{net}/owners/{containerID}/{ifname}` | JSON [`OwnerRecord`](super::OwnerRecord) |
/// | `{p}/{net}/sticky/{namespace}/{podName}/{ifname}` | JSON [`Binding`](super::Binding) (sticky addresses only) |
/// | `{p}/{net}/nodes/{node}/{containerID}/{ifname}` | the per-node index: the same bytes as the owner record of a record that names its node |
///
/// `{base}` is the chunk's first address as fixed-width lower-case hex (8
/// digits for IPv4, 32 for IPv6), so byte order of keys is address order and
/// a range read walks chunks in address order. A chunk index is
/// `address >> k`; a full-set *region* holds the indices that share their
/// bits above the low 64 (`{region}` is `index >> 64` in hex: always `0` for
/// IPv4 and for any IPv6 range longer than /54 at k = 10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyspace {
    root: String,
}

/// Why a key could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} cannot be used in a store key: it must be non-empty printable ASCII without '/' or '\\'")]
pub struct BadKeyPart {
    /// What the value is (network name, container ID, ifname).
    pub what: &'static str,
    /// The value.
    pub value: String,
}

impl Keyspace {
    /// Keys of network `name` under `prefix` (a trailing `/` is ignored).
    pub fn new(prefix: &str, name: &str) -> Result<Self, BadKeyPart> {
        if !key_safe(name) {
            return Err(BadKeyPart {
                what: "network name",
                value: name.into(),
            });
        }
        let prefix = prefix.trim_end_matches('/');
        Ok(Keyspace {
            root: format!("{prefix}/{name}"),
        })
    }

    /// `{p}/{net}` — every key of the network starts with this plus `/`.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The meta key.
    pub fn meta(&self) -> String {
        format!("{}/meta", self.root)
    }

    /// The key STATUS's write probe names (`{p}/{net}/write-probe`): its
    /// transaction's compare never holds, so it is never written.
    pub fn write_probe(&self) -> String {
        format!("{}/write-probe", self.root)
    }

    /// Prefix of every chunk of `family`.
    pub fn chunks_prefix(&self, family: Family) -> String {
        format!("{}/chunks/{}/", self.root, family.as_str())
    }

    /// The key of chunk `index` (= base address >> k).
    pub fn chunk(&self, family: Family, chunk_bits: u8, index: u128) -> String {
        let base = index << chunk_bits;
        match family {
            Family::V4 => format!("{}{:08x}", self.chunks_prefix(family), base),
            Family::V6 => format!("{}{:032x}", self.chunks_prefix(family), base),
        }
    }

    /// Parses a chunk key back into its index; `None` if it is not one.
    pub fn parse_chunk(&self, family: Family, chunk_bits: u8, key: &str) -> Option<u128> {
        let hex = key.strip_prefix(&self.chunks_prefix(family))?;
        let width = match family {
            Family::V4 => 8,
            Family::V6 => 32,
        };
        if hex.len() != width || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let base = u128::from_str_radix(hex, 16).ok()?;
        if base & ((1u128 << chunk_bits) - 1) != 0 {
            return None;
        }
        Some(base >> chunk_bits)
    }

    /// The full-set key of the region holding chunk `index`.
    pub fn full(&self, family: Family, index: u128) -> String {
        format!("{}/full/{}/{:x}", self.root, family.as_str(), index >> 64)
    }

    /// Prefix of every owner record.
    pub fn owners_prefix(&self) -> String {
        format!("{}/owners/", self.root)
    }

    /// The owner key of a container interface.
    pub fn owner(&self, container_id: &str, ifname: &str) -> Result<String, BadKeyPart> {
        if !key_safe(container_id) {
            return Err(BadKeyPart {
                what: "container ID",
                value: container_id.into(),
            });
        }
        if !key_safe(ifname) {
            return Err(BadKeyPart {
                what: "interface name",
                value: ifname.into(),
            });
        }
        Ok(format!("{}{container_id}/{ifname}", self.owners_prefix()))
    }

    /// Prefix of the whole per-node index (every node).
    pub fn nodes_prefix(&self) -> String {
        format!("{}/nodes/", self.root)
    }

    /// Prefix of one node's index entries; `None` when the node name cannot
    /// be used in a key (such a node's records are not indexed).
    pub fn node_prefix(&self, node: &str) -> Option<String> {
        key_safe(node).then(|| format!("{}{node}/", self.nodes_prefix()))
    }

    /// The index entry of an owner record written by `node`; `None` when a
    /// part cannot be used in a key.
    pub fn node_entry(&self, node: &str, container_id: &str, ifname: &str) -> Option<String> {
        let prefix = self.node_prefix(node)?;
        (key_safe(container_id) && key_safe(ifname))
            .then(|| format!("{prefix}{container_id}/{ifname}"))
    }

    /// Parses an index key into its node and owner; `None` if it is not one.
    pub fn parse_node_entry<'a>(&self, key: &'a str) -> Option<(&'a str, &'a str, &'a str)> {
        let rest = key
            .strip_prefix(self.root.as_str())?
            .strip_prefix("/nodes/")?;
        let mut parts = rest.split('/');
        let (node, cid, ifname) = (parts.next()?, parts.next()?, parts.next()?);
        (parts.next().is_none() && key_safe(node) && key_safe(cid) && key_safe(ifname))
            .then_some((node, cid, ifname))
    }

    /// Parses an owner key into its container ID and ifname.
    pub fn parse_owner<'a>(&self, key: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = key
            .strip_prefix(self.root.as_str())?
            .strip_prefix("/owners/")?;
        let (cid, ifname) = rest.split_once('/')?;
        (key_safe(cid) && key_safe(ifname)).then_some((cid, ifname))
    }

    /// Prefix of every sticky-address binding.
    pub fn sticky_prefix(&self) -> String {
        format!("{}/sticky/", self.root)
    }

    /// Prefix of the bindings of one pod (every interface).
    pub fn sticky_pod_prefix(&self, namespace: &str, name: &str) -> Result<String, BadKeyPart> {
        if !key_safe(namespace) {
            return Err(BadKeyPart {
                what: "pod namespace",
                value: namespace.into(),
            });
        }
        if !key_safe(name) {
            return Err(BadKeyPart {
                what: "pod name",
                value: name.into(),
            });
        }
        Ok(format!("{}{namespace}/{name}/", self.sticky_prefix()))
    }

    /// The binding key of a pod's interface.
    pub fn sticky(&self, namespace: &str, name: &str, ifname: &str) -> Result<String, BadKeyPart> {
        let prefix = self.sticky_pod_prefix(namespace, name)?;
        if !key_safe(ifname) {
            return Err(BadKeyPart {
                what: "interface name",
                value: ifname.into(),
            });
        }
        Ok(format!("{prefix}{ifname}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_keys_sort_in_address_order_and_round_trip() {
        let ks = Keyspace::new("/host-etcd/", "net1").unwrap();
        let a = ks.chunk(Family::V4, 10, 5);
        let b = ks.chunk(Family::V4, 10, 40);
        assert!(a < b);
        assert_eq!(a, "/host-etcd/net1/chunks/4/00001400");
        assert_eq!(ks.parse_chunk(Family::V4, 10, &a), Some(5));
        let top = (1u128 << 118) - 1;
        let k6 = ks.chunk(Family::V6, 10, top);
        assert_eq!(ks.parse_chunk(Family::V6, 10, &k6), Some(top));
        assert_eq!(
            ks.parse_chunk(Family::V6, 10, "/host-etcd/net1/chunks/6/zz"),
            None
        );
        assert_eq!(
            ks.full(Family::V6, top),
            "/host-etcd/net1/full/6/3fffffffffffff"
        );
    }

    #[test]
    fn unsafe_names_are_refused() {
        assert!(Keyspace::new("/p", "a/b").is_err());
        assert!(Keyspace::new("/p", "").is_err());
        let ks = Keyspace::new("/p", "n").unwrap();
        assert!(ks.owner("..", "eth0").is_err());
        assert!(ks.owner("abc", "et h0").is_err());
        assert_eq!(ks.owner("abc", "eth0").unwrap(), "/p/n/owners/abc/eth0");
        assert_eq!(
            ks.sticky("default", "web-0", "eth0").unwrap(),
            "/p/n/sticky/default/web-0/eth0"
        );
        assert!(ks.sticky("a/b", "web-0", "eth0").is_err());
        let entry = ks.node_entry("node-1", "abc", "eth0").unwrap();
        assert_eq!(entry, "/p/n/nodes/node-1/abc/eth0");
        assert_eq!(ks.parse_node_entry(&entry), Some(("node-1", "abc", "eth0")));
        assert_eq!(
            ks.parse_owner("/p/n/owners/abc/eth0"),
            Some(("abc", "eth0"))
        );
        assert!(ks.node_entry("a b", "abc", "eth0").is_none());
        assert!(ks.node_prefix("").is_none());
        assert!(ks.parse_node_entry("/p/n/nodes/x/abc").is_none());
        // One node's prefix never covers another node whose name extends it.
        assert!(!ks
            .node_entry("node-10", "abc", "eth0")
            .unwrap()
            .starts_with(&ks.node_prefix("node-1").unwrap()));
        assert!(ks.sticky("default", "", "eth0").is_err());
        // One pod's prefix never covers another pod whose name extends it.
        assert!(!ks
            .sticky("default", "web-01", "eth0")
            .unwrap()
            .starts_with(&ks.sticky_pod_prefix("default", "web-0").unwrap()));
    }
}
