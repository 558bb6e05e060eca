//! `resolv.conf` parsing into the CNI `dns` object, with host-local's rules:
//! lines are trimmed; empty lines and lines starting with `#` or `;` are
//! skipped; a line needs a keyword and at least one value; `nameserver`
//! appends its first value, `domain` sets (last wins), `search` and
//! `options` append all their values; other keywords are ignored.

use std::path::Path;

use serde::Serialize;

use super::error::CniError;

/// The CNI `dns` object. Empty fields are omitted when serialized.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Dns {
    /// Name servers, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// Parses `resolv.conf` text.
pub fn parse(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(keyword), Some(first)) = (fields.next(), fields.next()) else {
            continue;
        };
        match keyword {
            "nameserver" => dns.nameservers.push(first.to_string()),
            "domain" => dns.domain = Some(first.to_string()),
            "search" => {
                dns.search.push(first.to_string());
                dns.search.extend(fields.map(str::to_string));
            }
            "options" => {
                dns.options.push(first.to_string());
                dns.options.extend(fields.map(str::to_string));
            }
            _ => {}
        }
    }
    dns
}

/// Reads and parses a `resolv.conf` file (code 5 naming the path on failure).
pub fn read(path: &Path) -> Result<Dns, CniError> {
    let bytes = std::fs::read(path).map_err(|source| CniError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse(&String::from_utf8_lossy(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_file() {
        let text = "# generated\n\
                    nameserver 1.1.1.1\n  ; a comment\n\
                    nameserver 8.8.8.8 ignored-extra\n\
                    domain first.example\n\
                    domain a.b\n\
                    search x.y z.w\n\
                    search q\n\
                    options ndots:5 rotate\n\
                    bogus line here\n\
                    nameserver\n\
                    \n\
                    \tnameserver   fd00::53  \n";
        let dns = parse(text);
        assert_eq!(dns.nameservers, ["1.1.1.1", "8.8.8.8", "fd00::53"]);
        assert_eq!(dns.domain.as_deref(), Some("a.b"));
        assert_eq!(dns.search, ["x.y", "z.w", "q"]);
        assert_eq!(dns.options, ["ndots:5", "rotate"]);
    }

    #[test]
    fn empty_file_serializes_as_empty_object() {
        let dns = parse("");
        assert_eq!(dns, Dns::default());
        assert_eq!(serde_json::to_string(&dns).ok().as_deref(), Some("{}"));
    }

    #[test]
    fn comment_marker_only_at_line_start() {
        let dns = parse("nameserver 10.0.0.1 # trailing\n#nameserver 10.0.0.2\n");
        assert_eq!(dns.nameservers, ["10.0.0.1"]);
    }

    #[test]
    fn missing_file_is_code_5_naming_the_path() {
        let e = read(Path::new("/nonexistent/host-etcd/resolv.conf")).err();
        assert_eq!(e.as_ref().map(CniError::code), Some(5));
        assert!(e.is_some_and(|e| e.to_string().contains("/nonexistent/host-etcd/resolv.conf")));
    }

    #[test]
    fn reads_a_real_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("resolv.conf");
        std::fs::write(&p, "nameserver 10.96.0.10\noptions ndots:5\n").expect("write");
        let dns = read(&p).expect("read");
        assert_eq!(dns.nameservers, ["10.96.0.10"]);
        assert_eq!(dns.options, ["ndots:5"]);
    }
}

/// The examples these items documented while they were public API, kept as
/// tests (the items are private to the crate now).
#[cfg(test)]
mod examples {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn doc_example_parse() {
        let dns = crate::cni::resolv::parse("# x\nnameserver 10.0.0.10\nsearch a.svc b\n");
        assert_eq!(dns.nameservers, ["10.0.0.10"]);
        assert_eq!(dns.search, ["a.svc", "b"]);
    }
}
