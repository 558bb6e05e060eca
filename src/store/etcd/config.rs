//! [`EtcdConfig`]: how to reach etcd, and its translation into etcd-client
//! connect options (endpoint URLs, mutual TLS, user/password, deadlines).
//!
//! Every problem found here is a [`StoreError::Config`] naming the field or
//! file at fault. Nothing secret (the password, key material) ever appears
//! in an error message or in `Debug` output.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

use crate::store::StoreError;

/// HTTP/2 ping interval; above etcd's default `--grpc-keepalive-min-time`.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Extra time granted to the gRPC-level deadline over `request_timeout`.
const TIMEOUT_MARGIN: Duration = Duration::from_millis(200);

/// How to reach etcd: [`EtcdConfig::default`] and the `with_*` methods
/// (`#[non_exhaustive]`: a new setting is a new method, not a breaking
/// change). The fields are public for reading.
///
/// ```
/// use std::time::Duration;
/// use host_etcd::store::etcd::EtcdConfig;
///
/// let config = EtcdConfig::default()
///     .with_endpoints(["10.0.0.1:2379", "https://10.0.0.2:2379"])
///     .with_trusted_ca_file("/etc/etcd/ca.pem")
///     .with_user("ipam", "s3cret")
///     .with_request_timeout(Duration::from_secs(5));
/// assert_eq!(config.endpoints.len(), 2);
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EtcdConfig {
    /// `host:port` or `http(s)://host:port` endpoints. A bare `host:port`
    /// uses `https://` when any TLS file is configured, `http://` otherwise.
    pub endpoints: Vec<String>,
    /// Client certificate (PEM) for mutual TLS; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS; needs `cert_file`.
    pub key_file: Option<PathBuf>,
    /// CA bundle (PEM) that signed the server certificates. Required for
    /// `https://` endpoints (this build carries no system root store).
    pub trusted_ca_file: Option<PathBuf>,
    /// etcd auth user; needs `password`.
    pub username: Option<String>,
    /// etcd auth password (never shown in `Debug` output or errors).
    pub password: Option<String>,
    /// Deadline to establish a connection (and to authenticate, with a user).
    pub dial_timeout: Duration,
    /// Deadline of each request.
    pub request_timeout: Duration,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["127.0.0.1:2379".into()],
            cert_file: None,
            key_file: None,
            trusted_ca_file: None,
            username: None,
            password: None,
            dial_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(2),
        }
    }
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("trusted_ca_file", &self.trusted_ca_file)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dial_timeout", &self.dial_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl EtcdConfig {
    /// The endpoints ([`EtcdConfig::endpoints`]), replacing the default
    /// `127.0.0.1:2379`.
    pub fn with_endpoints<I>(mut self, endpoints: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.endpoints = endpoints.into_iter().map(Into::into).collect();
        self
    }

    /// The CA bundle that signed the server certificates
    /// ([`EtcdConfig::trusted_ca_file`]).
    pub fn with_trusted_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.trusted_ca_file = Some(path.into());
        self
    }

    /// The client certificate for mutual TLS ([`EtcdConfig::cert_file`]).
    pub fn with_cert_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.cert_file = Some(path.into());
        self
    }

    /// The client key for mutual TLS ([`EtcdConfig::key_file`]).
    pub fn with_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.key_file = Some(path.into());
        self
    }

    /// No client certificate and key (TLS, when configured, verifies the
    /// server only).
    pub fn without_client_cert(mut self) -> Self {
        self.cert_file = None;
        self.key_file = None;
        self
    }

    /// etcd authentication ([`EtcdConfig::username`],
    /// [`EtcdConfig::password`]).
    pub fn with_user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.username = Some(name.into());
        self.password = Some(password.into());
        self
    }

    /// Deadline to connect ([`EtcdConfig::dial_timeout`]).
    pub fn with_dial_timeout(mut self, timeout: Duration) -> Self {
        self.dial_timeout = timeout;
        self
    }

    /// Deadline of each request ([`EtcdConfig::request_timeout`]).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Whether any TLS file is configured.
    pub(super) fn uses_tls(&self) -> bool {
        self.cert_file.is_some() || self.key_file.is_some() || self.trusted_ca_file.is_some()
    }

    /// The endpoints as full URLs, checked.
    pub(super) fn endpoint_urls(&self) -> Result<Vec<String>, StoreError> {
        if self.endpoints.is_empty() {
            return Err(StoreError::Config("etcd endpoints: none given".into()));
        }
        let tls = self.uses_tls();
        self.endpoints
            .iter()
            .map(|raw| {
                let e = raw.trim().trim_end_matches('/');
                if e.is_empty() || e.contains(char::is_whitespace) || e.contains(',') {
                    return Err(StoreError::Config(format!(
                        "etcd endpoint {raw:?} is not host:port or http(s)://host:port"
                    )));
                }
                let url = if let Some(rest) = e.strip_prefix("http://") {
                    if tls {
                        return Err(StoreError::Config(format!(
                            "etcd endpoint {raw:?} uses http:// but TLS files are configured; \
                             use https:// or host:port"
                        )));
                    }
                    check_host_port(raw, rest)?;
                    e.to_string()
                } else if let Some(rest) = e.strip_prefix("https://") {
                    if self.trusted_ca_file.is_none() {
                        return Err(StoreError::Config(format!(
                            "etcd endpoint {raw:?} uses https:// but no trusted_ca_file is \
                             configured to verify the server"
                        )));
                    }
                    check_host_port(raw, rest)?;
                    e.to_string()
                } else if e.contains("://") {
                    return Err(StoreError::Config(format!(
                        "etcd endpoint {raw:?}: only http:// and https:// are supported"
                    )));
                } else {
                    check_host_port(raw, e)?;
                    let scheme = if tls { "https" } else { "http" };
                    format!("{scheme}://{e}")
                };
                Ok(url)
            })
            .collect()
    }

    /// The etcd-client options: deadlines, keep-alive, TLS, credentials.
    pub(super) fn connect_options(&self) -> Result<ConnectOptions, StoreError> {
        if self.dial_timeout.is_zero() {
            return Err(StoreError::Config("etcd dial_timeout must be > 0".into()));
        }
        if self.request_timeout.is_zero() {
            return Err(StoreError::Config(
                "etcd request_timeout must be > 0".into(),
            ));
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.dial_timeout)
            // etcd learns the deadline (grpc-timeout); the margin lets the
            // caller's own deadline fire first, with one message for both.
            .with_timeout(self.request_timeout + TIMEOUT_MARGIN)
            // Detect a dead or frozen member even when idle, so the balancer
            // drops its connection instead of sending requests into it. etcd
            // sends GOAWAY to clients pinging more often than every 5 s
            // (--grpc-keepalive-min-time), so stay above that.
            .with_keep_alive(KEEP_ALIVE_INTERVAL, self.request_timeout)
            .with_keep_alive_while_idle(true)
            // Fail fast ("no leader") on a member cut off from its quorum
            // instead of waiting for the deadline.
            .with_require_leader(true);

        if self.uses_tls() {
            options = options.with_tls(self.tls_options()?);
        }

        match (&self.username, &self.password) {
            (Some(user), Some(password)) => {
                if user.is_empty() {
                    return Err(StoreError::Config("etcd username is empty".into()));
                }
                options = options
                    .with_user(user.clone(), password.clone())
                    .with_auto_token_refresh(true);
            }
            (Some(user), None) => {
                return Err(StoreError::Config(format!(
                    "etcd username {user:?} is given without a password"
                )));
            }
            (None, Some(_)) => {
                return Err(StoreError::Config(
                    "etcd password is given without a username".into(),
                ));
            }
            (None, None) => {}
        }
        Ok(options)
    }

    fn tls_options(&self) -> Result<TlsOptions, StoreError> {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &self.trusted_ca_file {
            let pem = read_pem(ca, "trusted_ca_file", "CERTIFICATE-----")?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                let cert_pem = read_pem(cert, "cert_file", "CERTIFICATE-----")?;
                let key_pem = read_pem(key, "key_file", "PRIVATE KEY-----")?;
                tls = tls.identity(Identity::from_pem(cert_pem, key_pem));
            }
            (Some(cert), None) => {
                return Err(StoreError::Config(format!(
                    "etcd cert_file {} is given without key_file",
                    cert.display()
                )));
            }
            (None, Some(key)) => {
                return Err(StoreError::Config(format!(
                    "etcd key_file {} is given without cert_file",
                    key.display()
                )));
            }
            (None, None) => {}
        }
        Ok(tls)
    }

    /// The configured TLS files, for error messages.
    pub(super) fn tls_files(&self) -> String {
        [
            ("trusted_ca_file", &self.trusted_ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ]
        .iter()
        .filter_map(|(name, p)| p.as_ref().map(|p| format!("{name} {}", p.display())))
        .collect::<Vec<_>>()
        .join(", ")
    }
}

/// `host:port` with a non-empty host and a numeric port.
fn check_host_port(raw: &str, host_port: &str) -> Result<(), StoreError> {
    let bad = || {
        StoreError::Config(format!(
            "etcd endpoint {raw:?} is not host:port or http(s)://host:port"
        ))
    };
    let (host, port) = host_port.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains('/') || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(())
}

/// Reads a PEM file and checks it holds a block ending with `marker`. The
/// error names the field and the path, never the content.
fn read_pem(path: &Path, field: &str, marker: &str) -> Result<Vec<u8>, StoreError> {
    let bytes = std::fs::read(path).map_err(|e| {
        StoreError::Config(format!("cannot read etcd {field} {}: {e}", path.display()))
    })?;
    let text = String::from_utf8_lossy(&bytes);
    if !(text.contains("-----BEGIN ") && text.contains(marker)) {
        return Err(StoreError::Config(format!(
            "etcd {field} {} holds no PEM block ending in {:?}",
            path.display(),
            marker.trim_end_matches('-')
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_endpoints_get_a_scheme() {
        let c = EtcdConfig {
            endpoints: vec!["a:1".into(), "http://b:2/".into()],
            ..EtcdConfig::default()
        };
        assert_eq!(
            c.endpoint_urls().expect("valid endpoints"),
            ["http://a:1", "http://b:2"]
        );
    }

    #[test]
    fn bad_endpoints_are_config_errors() {
        for e in ["", "a", "a:x", "ftp://a:1", "https://a:1", ":1", "a:1,b:2"] {
            let c = EtcdConfig {
                endpoints: vec![e.into()],
                ..EtcdConfig::default()
            };
            assert!(
                matches!(c.endpoint_urls(), Err(StoreError::Config(_))),
                "{e:?}"
            );
        }
        let none = EtcdConfig {
            endpoints: vec![],
            ..EtcdConfig::default()
        };
        assert!(matches!(none.endpoint_urls(), Err(StoreError::Config(_))));
    }

    #[test]
    fn tls_makes_bare_endpoints_https_and_refuses_http() {
        let c = EtcdConfig {
            endpoints: vec!["a:1".into()],
            trusted_ca_file: Some("/nonexistent/ca.pem".into()),
            ..EtcdConfig::default()
        };
        assert_eq!(c.endpoint_urls().expect("valid endpoints"), ["https://a:1"]);
        let c = EtcdConfig {
            endpoints: vec!["http://a:1".into()],
            ..c
        };
        assert!(matches!(c.endpoint_urls(), Err(StoreError::Config(_))));
    }

    #[test]
    fn unreadable_tls_file_names_the_path() {
        let c = EtcdConfig {
            trusted_ca_file: Some("/nonexistent/ca.pem".into()),
            ..EtcdConfig::default()
        };
        match c.connect_options() {
            Err(StoreError::Config(m)) => {
                assert!(m.contains("trusted_ca_file /nonexistent/ca.pem"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn password_is_never_shown() {
        let c = EtcdConfig {
            username: Some("root".into()),
            password: Some("hunter2".into()),
            ..EtcdConfig::default()
        };
        let debug = format!("{c:?}");
        assert!(
            debug.contains("root") && !debug.contains("hunter2"),
            "{debug}"
        );
        let c = EtcdConfig {
            username: None,
            ..c
        };
        match c.connect_options() {
            Err(StoreError::Config(m)) => assert!(!m.contains("hunter2"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
