//! Target `libcni_cache`: bytes as a libcni cache file, the files
//! `ipamctl reconcile` reads from the runtime's cache directory.

use crate::admin::reconcile::{may_belong_to, parse_cache_entry};

/// Target `libcni_cache`: decoding never panics; an accepted entry has
/// non-empty `containerId`, `ifName` and `networkName` (and a netns, when
/// it has one, that is not empty), and the file libcni would name for it
/// (`<network>-<containerID>-<ifname>`) is recognised as a possible entry
/// of its network. The name check never panics on any name either.
pub fn libcni_cache(bytes: &[u8]) {
    let name = String::from_utf8_lossy(bytes);
    let _ = may_belong_to(&name, "net");
    let _ = may_belong_to("net-x-eth0", &name);
    let Ok(entry) = parse_cache_entry(bytes) else {
        return;
    };
    for (what, v) in [
        ("containerId", &entry.container_id),
        ("ifName", &entry.ifname),
        ("networkName", &entry.network),
    ] {
        assert!(!v.is_empty(), "accepted an empty {what}");
    }
    assert!(
        entry.netns.as_ref().is_none_or(|n| !n.is_empty()),
        "accepted an empty netns"
    );
    let file = format!("{}-{}-{}", entry.network, entry.container_id, entry.ifname);
    assert!(
        may_belong_to(&file, &entry.network),
        "libcni's own file name {file:?} not recognised for network {:?}",
        entry.network
    );
}
