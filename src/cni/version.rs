//! CNI specification versions this plugin speaks, and the one decision that
//! depends on them for an IPAM plugin: whether `ips[].version` is written.

use std::fmt;

/// A CNI specification version the plugin supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    /// 0.3.0: `ips` carry `"version": "4"|"6"`.
    V0_3_0,
    /// 0.3.1: same result shape as 0.3.0.
    V0_3_1,
    /// 0.4.0: adds CHECK; same result shape as 0.3.x.
    V0_4_0,
    /// 1.0.0: `ips[].version` removed.
    V1_0_0,
    /// 1.1.0: adds GC and STATUS.
    V1_1_0,
}

/// Every supported version, oldest first, as reported by `VERSION`.
pub const SUPPORTED: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

impl CniVersion {
    /// The newest supported version.
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    /// Parses a version string; `None` if the plugin does not support it.
    ///
    /// ```
    /// use host_etcd::cni::CniVersion;
    /// assert_eq!(CniVersion::parse("0.3.1"), Some(CniVersion::V0_3_1));
    /// assert_eq!(CniVersion::parse("0.2.0"), None);
    /// ```
    pub fn parse(s: &str) -> Option<CniVersion> {
        match s {
            "0.3.0" => Some(CniVersion::V0_3_0),
            "0.3.1" => Some(CniVersion::V0_3_1),
            "0.4.0" => Some(CniVersion::V0_4_0),
            "1.0.0" => Some(CniVersion::V1_0_0),
            "1.1.0" => Some(CniVersion::V1_1_0),
            _ => None,
        }
    }

    /// The version string, e.g. `"1.0.0"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Whether results of this version carry `ips[].version` (`"4"`/`"6"`):
    /// true before 1.0.0.
    pub fn ip_version_field(self) -> bool {
        self < CniVersion::V1_0_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_string_round_trips() {
        for s in SUPPORTED {
            let v = CniVersion::parse(s);
            assert_eq!(v.map(CniVersion::as_str), Some(s));
        }
    }

    #[test]
    fn unknown_versions_are_refused() {
        for s in ["", "0.1.0", "0.2.0", "1.2.0", "1.0", "v1.0.0"] {
            assert_eq!(CniVersion::parse(s), None, "{s}");
        }
    }

    #[test]
    fn version_field_only_before_one_zero() {
        assert!(CniVersion::V0_4_0.ip_version_field());
        assert!(!CniVersion::V1_0_0.ip_version_field());
        assert!(!CniVersion::V1_1_0.ip_version_field());
    }
}
