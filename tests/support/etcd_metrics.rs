//! etcd's own count of the requests it handled, read from its `/metrics`
//! endpoint (`grpc_server_handled_total`), so tests count transactions the
//! way an operator would, not through the client. The etcd store sends its
//! multi-key consistent reads as read-only transactions, so etcd counts a
//! read as a `Txn` too: [`KvCounts::calls`] is what costs etcd a request.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Requests etcd's KV service has handled so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvCounts {
    /// `Range` calls (reads).
    pub range: u64,
    /// `Txn` calls (transactions).
    pub txn: u64,
}

impl KvCounts {
    /// Every KV request (reads and writes alike).
    pub fn calls(self) -> u64 {
        self.range + self.txn
    }

    /// What happened between `before` and `self`.
    pub fn since(self, before: KvCounts) -> KvCounts {
        KvCounts {
            range: self.range - before.range,
            txn: self.txn - before.txn,
        }
    }
}

/// Scrapes `http://host:port/metrics` of the etcd at `url`
/// (`http://127.0.0.1:PORT`) and sums the KV service's handled calls.
pub fn kv_counts(url: &str) -> KvCounts {
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut conn = TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        conn,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut body = String::new();
    conn.read_to_string(&mut body).expect("read /metrics");
    let mut counts = KvCounts::default();
    for line in body.lines() {
        if !line.starts_with("grpc_server_handled_total{")
            || !line.contains("grpc_service=\"etcdserverpb.KV\"")
        {
            continue;
        }
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("bad metrics line {line}"));
        if line.contains("grpc_method=\"Range\"") {
            counts.range += value as u64;
        } else if line.contains("grpc_method=\"Txn\"") {
            counts.txn += value as u64;
        }
    }
    counts
}
