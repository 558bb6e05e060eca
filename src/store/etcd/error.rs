//! Mapping of etcd-client, tonic and transport errors into [`StoreError`].
//!
//! The one place where etcd's error vocabulary is translated:
//!
//! * cannot reach a member, deadline passed, no leader, leader changed,
//!   server overloaded → [`StoreError::Unavailable`] (transient);
//! * authentication failed, permission denied, request too large, too many
//!   operations in one transaction → [`StoreError::Refused`];
//! * database space exceeded (the NOSPACE alarm) → [`StoreError::NoSpace`]
//!   (deletions still pass, so a release can fall back to them);
//! * a TLS certificate rejected by either side, malformed endpoint or TLS
//!   material → [`StoreError::Config`].
//!
//! Messages name the endpoints and the failed call; they never contain the
//! password (etcd's own messages do not carry it either).

use std::error::Error as StdError;

use etcd_client::Error as EtcdError;

use crate::store::StoreError;

/// Phase in which an error happened: while connecting, local problems
/// (bad URI, bad TLS material) are configuration errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// `EtcdStore::connect`.
    Connect,
    /// A request on an established client.
    Request,
}

/// Maps one etcd-client error. `what` names the call ("read", "txn",
/// "connect"); `endpoints` the comma-separated endpoint list.
pub(super) fn map_error(e: EtcdError, phase: Phase, what: &str, endpoints: &str) -> StoreError {
    let detail = chain(&e);
    let at = format!("etcd {what} at {endpoints}");
    if is_certificate_problem(&detail) {
        return StoreError::Config(format!(
            "{at}: TLS certificate rejected (check trusted_ca_file, cert_file, key_file): {detail}"
        ));
    }
    match &e {
        EtcdError::GRpcStatus(status) => map_status(i32::from(status.code()), &detail, &at),
        EtcdError::InvalidArgs(_) | EtcdError::InvalidUri(_) | EtcdError::EndpointError(_) => {
            StoreError::Config(format!("{at}: {detail}"))
        }
        EtcdError::TransportError(_) if phase == Phase::Connect => {
            StoreError::Config(format!("{at}: {detail}"))
        }
        EtcdError::InvalidMetadataValue(_) => {
            // The auth token or user name cannot be sent as a header.
            StoreError::Config(format!("{at}: invalid credentials encoding: {detail}"))
        }
        _ => StoreError::Unavailable(format!("{at}: {detail}")),
    }
}

/// gRPC status codes (fixed by the gRPC specification), named here so the
/// mapping needs no direct dependency on tonic.
mod code {
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const NOT_FOUND: i32 = 5;
    pub const ALREADY_EXISTS: i32 = 6;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const OUT_OF_RANGE: i32 = 11;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// Whether `e` proves the request never reached etcd: the connection to
/// the endpoint chosen for it could not be opened (refused, no route).
/// Timeouts and dropped connections do not qualify: the request may have
/// been applied.
pub(super) fn never_sent(e: &EtcdError) -> bool {
    let EtcdError::GRpcStatus(status) = e else {
        return false;
    };
    if i32::from(status.code()) != code::UNAVAILABLE {
        return false;
    }
    let detail = chain(e).to_ascii_lowercase();
    detail.contains("tcp connect error")
        && (detail.contains("connection refused") || detail.contains("no route to host"))
}

/// Maps a gRPC status code (as etcd uses them) to a [`StoreError`].
fn map_status(code: i32, detail: &str, at: &str) -> StoreError {
    let refused = || StoreError::Refused(format!("{at}: {detail}"));
    let unavailable = || StoreError::Unavailable(format!("{at}: {detail}"));
    match code {
        // etcd: authentication failed, user name empty, too many ops in a
        // txn, request too large, key not provided.
        code::INVALID_ARGUMENT
        | code::UNAUTHENTICATED
        | code::PERMISSION_DENIED
        | code::FAILED_PRECONDITION
        | code::UNIMPLEMENTED
        | code::OUT_OF_RANGE
        | code::ALREADY_EXISTS
        | code::NOT_FOUND => refused(),
        // etcd: "database space exceeded" is an operator problem; "too many
        // requests" is load and passes.
        code::RESOURCE_EXHAUSTED if detail.contains("space exceeded") => {
            StoreError::NoSpace(format!("{at}: {detail}"))
        }
        // Unavailable (no leader, connection refused), DeadlineExceeded,
        // Cancelled, Aborted, Unknown (transport), Internal, DataLoss,
        // ResourceExhausted (too many requests), Ok (never an error).
        _ => unavailable(),
    }
}

/// An error and all its sources, joined by ": ", repeats removed.
fn chain(e: &EtcdError) -> String {
    if let EtcdError::GRpcStatus(status) = e {
        // The message, then the transport failure behind it, if any.
        let mut out = format!("{:?}: {}", status.code(), status.message());
        if let Some(source) = status.source() {
            append_chain(&mut out, source);
        }
        return out;
    }
    let mut out = e.to_string();
    if let Some(source) = e.source() {
        append_chain(&mut out, source);
    }
    // etcd-client's own variants carry their inner error without exposing
    // it as source(); walk the wrapped transport error too.
    if let EtcdError::TransportError(t) = e {
        if let Some(source) = t.source() {
            append_chain(&mut out, source);
        }
    }
    out
}

fn append_chain(out: &mut String, first: &(dyn StdError + 'static)) {
    let mut next = Some(first);
    while let Some(err) = next {
        let text = err.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = err.source();
    }
}

/// Whether a failure text says a TLS peer rejected a certificate (ours or
/// theirs). rustls and the server's alerts both mention "certificate".
fn is_certificate_problem(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    d.contains("certificate") || d.contains("unknownissuer") || d.contains("unknown ca")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_variants() {
        let at = "etcd txn at http://a:1";
        assert!(matches!(
            map_status(code::UNAVAILABLE, "etcdserver: no leader", at),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(map_status(4, "x", at), StoreError::Unavailable(_)));
        assert!(matches!(
            map_status(
                code::INVALID_ARGUMENT,
                "etcdserver: authentication failed, invalid user ID or password",
                at
            ),
            StoreError::Refused(_)
        ));
        assert!(matches!(
            map_status(code::PERMISSION_DENIED, "etcdserver: permission denied", at),
            StoreError::Refused(_)
        ));
        assert!(matches!(
            map_status(
                code::RESOURCE_EXHAUSTED,
                "etcdserver: too many requests",
                at
            ),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            map_status(
                code::RESOURCE_EXHAUSTED,
                "etcdserver: mvcc: database space exceeded",
                at
            ),
            StoreError::NoSpace(_)
        ));
    }
}
