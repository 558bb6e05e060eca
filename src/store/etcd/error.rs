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
//! Refusals keep etcd's gRPC status code ([`Refusal::code`]). Causes are
//! recognised by their type, found on the error's source chain: a rejected
//! certificate is a [`rustls::Error`] about a certificate (ours rejected by
//! the server's alert, or theirs by our verifier; an alert that arrives
//! after the handshake carries only rustls' rendering of that error, which
//! is compared whole, see `is_certificate_problem`), a request never sent is
//! an [`std::io::Error`] of kind `ConnectionRefused` or `HostUnreachable`.
//! Only etcd's NOSPACE alarm is told from other `ResourceExhausted`
//! answers by its message: etcd gives both the same code.
//!
//! Messages name the endpoints and the failed call; they never contain the
//! password (etcd's own messages do not carry it either).

use std::error::Error as StdError;
use std::io;

use etcd_client::Error as EtcdError;
use rustls::AlertDescription;

use crate::store::{GrpcCode, Refusal, StoreError};

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
    if causes(&e).any(is_certificate_problem) {
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

/// gRPC status code numbers the unit tests use.
#[cfg(test)]
mod code {
    use super::GrpcCode;
    pub const INVALID_ARGUMENT: i32 = GrpcCode::InvalidArgument as i32;
    pub const PERMISSION_DENIED: i32 = GrpcCode::PermissionDenied as i32;
    pub const RESOURCE_EXHAUSTED: i32 = GrpcCode::ResourceExhausted as i32;
    pub const UNAVAILABLE: i32 = GrpcCode::Unavailable as i32;
}

/// Whether `e` proves the request never reached etcd: the connection to
/// the endpoint chosen for it could not be opened (refused, no route).
/// Timeouts and dropped connections do not qualify: the request may have
/// been applied.
pub(super) fn never_sent(e: &EtcdError) -> bool {
    let EtcdError::GRpcStatus(status) = e else {
        return false;
    };
    GrpcCode::from_i32(i32::from(status.code())) == Some(GrpcCode::Unavailable)
        && causes(e).any(|cause| {
            cause.downcast_ref::<io::Error>().is_some_and(|io| {
                matches!(
                    io.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::HostUnreachable
                )
            })
        })
}

/// Whether `e` shows the connection dropped under the request (the client
/// saw it closed: gRPC `Cancelled`; or reset, a broken pipe, an early end
/// of stream): what a server that wants a client certificate it did not
/// get does after a TLS 1.3 handshake.
pub(super) fn connection_dropped(e: &EtcdError) -> bool {
    if let EtcdError::GRpcStatus(status) = e {
        if GrpcCode::from_i32(i32::from(status.code())) == Some(GrpcCode::Cancelled) {
            return true;
        }
    }
    causes(e).any(|cause| {
        cause.downcast_ref::<io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            )
        })
    })
}

/// Maps a gRPC status code (as etcd uses them) to a [`StoreError`];
/// refusals keep the code.
fn map_status(code: i32, detail: &str, at: &str) -> StoreError {
    use GrpcCode::*;
    let message = format!("{at}: {detail}");
    match GrpcCode::from_i32(code) {
        // etcd: authentication failed, user name empty, too many ops in a
        // txn, request too large, key not provided.
        Some(
            code @ (InvalidArgument | Unauthenticated | PermissionDenied | FailedPrecondition
            | Unimplemented | OutOfRange | AlreadyExists | NotFound),
        ) => StoreError::Refused(Refusal::new(message).with_code(code)),
        // etcd: "database space exceeded" is an operator problem; "too many
        // requests" is load and passes. etcd answers both with the same
        // code; only the message tells them apart.
        Some(ResourceExhausted) if detail.contains("space exceeded") => {
            StoreError::NoSpace(Refusal::new(message).with_code(ResourceExhausted))
        }
        // Unavailable (no leader, connection refused), DeadlineExceeded,
        // Cancelled, Aborted, Unknown (transport), Internal, DataLoss,
        // ResourceExhausted (too many requests), Ok (never an error), and
        // codes outside the specification.
        _ => StoreError::Unavailable(message),
    }
}

/// The error and its causes, outermost first: for a gRPC status, the
/// status and the transport failure behind it; for etcd-client's
/// transport and I/O variants, the wrapped error (which etcd-client does
/// not expose as `source()`). An [`io::Error`] wrapping another error is
/// followed into that error (its `source()` would skip it).
fn causes(e: &EtcdError) -> impl Iterator<Item = &(dyn StdError + 'static)> {
    let first: &(dyn StdError + 'static) = match e {
        EtcdError::GRpcStatus(status) => status,
        EtcdError::TransportError(t) => t,
        EtcdError::IoError(io) => io,
        other => other,
    };
    std::iter::successors(Some(first), |&cause| next_cause(cause))
}

/// The cause behind `cause` (see [`causes`]).
fn next_cause<'a>(cause: &'a (dyn StdError + 'static)) -> Option<&'a (dyn StdError + 'static)> {
    match cause
        .downcast_ref::<io::Error>()
        .and_then(io::Error::get_ref)
    {
        Some(inner) => Some(inner as &(dyn StdError + 'static)),
        None => cause.source(),
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

/// The TLS alerts a peer sends when it rejects a certificate (or its
/// absence).
const CERTIFICATE_ALERTS: [AlertDescription; 11] = [
    AlertDescription::NoCertificate,
    AlertDescription::BadCertificate,
    AlertDescription::UnsupportedCertificate,
    AlertDescription::CertificateRevoked,
    AlertDescription::CertificateExpired,
    AlertDescription::CertificateUnknown,
    AlertDescription::UnknownCA,
    AlertDescription::CertificateUnobtainable,
    AlertDescription::BadCertificateStatusResponse,
    AlertDescription::BadCertificateHashValue,
    AlertDescription::CertificateRequired,
];

/// Whether `cause` is a TLS peer rejecting a certificate: our verifier
/// rejecting the server's, or the server's alert rejecting ours (or its
/// absence).
///
/// A [`rustls::Error`] is recognised by its variant. An alert the server
/// sends after the handshake (TLS 1.3: a missing or rejected client
/// certificate) reaches this crate through tokio-rustls and hyper as an
/// [`io::Error`] of kind `InvalidData` carrying only the rustls error's
/// text; that text is compared whole with rustls' own rendering of each
/// certificate alert, so the kind is still rustls', not a guess from words.
fn is_certificate_problem(cause: &(dyn StdError + 'static)) -> bool {
    if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
        return match tls {
            rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::InvalidCertRevocationList(_) => true,
            rustls::Error::AlertReceived(alert) => CERTIFICATE_ALERTS.contains(alert),
            _ => false,
        };
    }
    let Some(io) = cause.downcast_ref::<io::Error>() else {
        return false;
    };
    match io.get_ref() {
        Some(inner) if io.kind() == io::ErrorKind::InvalidData && !inner.is::<rustls::Error>() => {
            let text = inner.to_string();
            CERTIFICATE_ALERTS
                .iter()
                .any(|alert| rustls::Error::AlertReceived(*alert).to_string() == text)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An I/O error carrying `inner`, as tokio-rustls reports TLS failures.
    fn io_of(inner: rustls::Error) -> EtcdError {
        EtcdError::IoError(io::Error::new(io::ErrorKind::InvalidData, inner))
    }

    #[test]
    fn rejected_certificates_are_found_by_type() {
        let at = "http://a:1";
        for e in [
            io_of(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
            io_of(rustls::Error::AlertReceived(
                AlertDescription::CertificateRequired,
            )),
            io_of(rustls::Error::AlertReceived(AlertDescription::UnknownCA)),
            io_of(rustls::Error::NoCertificatesPresented),
        ] {
            let mapped = map_error(e, Phase::Request, "read", at);
            assert!(
                matches!(&mapped, StoreError::Config(m) if m.contains("TLS certificate rejected")),
                "{mapped:?}"
            );
        }
        // A server's alert handed up as rustls' text only (tokio-rustls
        // after the handshake) is the same rejection.
        let text = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::BadCertificate).to_string(),
        );
        let mapped = map_error(EtcdError::IoError(text), Phase::Request, "read", at);
        assert!(matches!(mapped, StoreError::Config(_)), "{mapped:?}");
        // Other TLS failures, and texts that merely say "certificate", are
        // not certificate rejections.
        for e in [
            io_of(rustls::Error::AlertReceived(
                AlertDescription::HandshakeFailure,
            )),
            EtcdError::IoError(io::Error::new(
                io::ErrorKind::InvalidData,
                "received fatal alert: HandshakeFailure",
            )),
            EtcdError::IoError(io::Error::other("certificate unknown")),
        ] {
            let mapped = map_error(e, Phase::Request, "read", at);
            assert!(matches!(mapped, StoreError::Unavailable(_)), "{mapped:?}");
        }
    }

    #[test]
    fn dropped_connections_are_found_by_kind() {
        for kind in [
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::BrokenPipe,
            io::ErrorKind::UnexpectedEof,
        ] {
            assert!(connection_dropped(&EtcdError::IoError(io::Error::new(
                kind, "x"
            ))));
        }
        assert!(!connection_dropped(&EtcdError::IoError(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "connection reset by peer"
        ))));
        assert!(!connection_dropped(&io_of(
            rustls::Error::InvalidCertificate(rustls::CertificateError::Expired)
        )));
    }

    #[test]
    fn refusals_keep_the_status_code() {
        let at = "etcd txn at http://a:1";
        let e = map_status(code::PERMISSION_DENIED, "etcdserver: permission denied", at);
        assert_eq!(e.grpc_code(), Some(GrpcCode::PermissionDenied));
        let e = map_status(
            code::RESOURCE_EXHAUSTED,
            "mvcc: database space exceeded",
            at,
        );
        assert!(
            matches!(&e, StoreError::NoSpace(r) if r.code() == Some(GrpcCode::ResourceExhausted))
        );
        let e = map_status(code::UNAVAILABLE, "etcdserver: no leader", at);
        assert_eq!(e.grpc_code(), None);
        assert_eq!(GrpcCode::from_i32(16), Some(GrpcCode::Unauthenticated));
        assert_eq!(GrpcCode::from_i32(17), None);
    }

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
