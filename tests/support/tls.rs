//! A throwaway PKI made with the `openssl` CLI: a CA, a server certificate
//! for 127.0.0.1/localhost, a client certificate, and a second unrelated CA
//! (for "wrong CA" tests). EC P-256 keys (fast to generate), valid 2 days.
//! On request ([`TestPki::expired_client`]) also a client certificate that
//! expired long ago, signed by the same CA (`openssl ca` with explicit
//! `-startdate`/`-enddate`, which OpenSSL 3.0 accepts; `req -x509
//! -not_after` needs 3.4).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::ServerTls;

const CA_CONFIG: &str = "\
[req]
distinguished_name = dn
x509_extensions = v3_ca
prompt = no
[dn]
CN = host-etcd test CA
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
";

const LEAF_CONFIG: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = host-etcd test
";

const SERVER_EXT: &str = "\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
";

const CLIENT_EXT: &str = "\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
";

/// An `openssl ca` database config for [`TestPki::expired_client`]: the
/// test CA signs a CSR with explicit dates and the client extensions.
const CA_DB_CONFIG: &str = "\
[ca]
default_ca = test_ca
[test_ca]
dir = .
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[any]
commonName = supplied
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
";

/// Files of a generated test PKI (removed on drop).
pub struct TestPki {
    /// The CA that signed `server_cert` and `client_cert`.
    pub ca: PathBuf,
    /// Server certificate with SAN IP:127.0.0.1, DNS:localhost.
    pub server_cert: PathBuf,
    /// Server key.
    pub server_key: PathBuf,
    /// Client certificate (clientAuth).
    pub client_cert: PathBuf,
    /// Client key.
    pub client_key: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
    dir: tempfile::TempDir,
}

/// Runs `openssl` in `dir`; panics with its stderr when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("openssl not runnable ({e}): install it with `apt-get install openssl`")
        });
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl req` with a fresh EC P-256 key (unencrypted), then `args`.
fn req_new_key(dir: &Path, args: &[&str]) {
    let mut all = vec![
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    all.extend_from_slice(args);
    openssl(dir, &all);
}

fn new_ca(dir: &Path, name: &str) {
    req_new_key(
        dir,
        &[
            "-x509",
            "-days",
            "2",
            "-config",
            "ca.cnf",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

fn new_leaf(dir: &Path, name: &str, ext: &str, serial: &str) {
    req_new_key(
        dir,
        &[
            "-config",
            "leaf.cnf",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            serial,
            "-days",
            "2",
            "-extfile",
            ext,
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

impl TestPki {
    /// Generates every file in a fresh temp dir.
    pub fn generate() -> TestPki {
        let dir = tempfile::Builder::new()
            .prefix("host-etcd-pki-")
            .tempdir()
            .expect("create pki dir");
        let p = dir.path();
        for (name, text) in [
            ("ca.cnf", CA_CONFIG),
            ("leaf.cnf", LEAF_CONFIG),
            ("server.ext", SERVER_EXT),
            ("client.ext", CLIENT_EXT),
        ] {
            std::fs::write(p.join(name), text).expect("write openssl config");
        }
        new_ca(p, "ca");
        new_ca(p, "other-ca");
        new_leaf(p, "server", "server.ext", "1001");
        new_leaf(p, "client", "client.ext", "1002");
        TestPki {
            ca: p.join("ca.pem"),
            server_cert: p.join("server.pem"),
            server_key: p.join("server.key"),
            client_cert: p.join("client.pem"),
            client_key: p.join("client.key"),
            other_ca: p.join("other-ca.pem"),
            dir,
        }
    }

    /// Server TLS for the harness, requiring client certificates when
    /// `client_cert_auth`.
    pub fn server_tls(&self, client_cert_auth: bool) -> ServerTls {
        ServerTls {
            ca: self.ca.clone(),
            cert: self.server_cert.clone(),
            key: self.server_key.clone(),
            client_cert_auth,
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        }
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client certificate (and key) signed by the CA, valid only during
    /// 2019: `(cert, key)` in [`TestPki::dir`].
    pub fn expired_client(&self) -> (PathBuf, PathBuf) {
        let dir = self.dir();
        std::fs::write(dir.join("ca-db.cnf"), CA_DB_CONFIG).expect("write openssl file");
        std::fs::write(dir.join("index.txt"), "").expect("write openssl file");
        std::fs::write(dir.join("serial"), "2001\n").expect("write openssl file");
        req_new_key(
            dir,
            &[
                "-subj",
                "/CN=host-etcd expired client",
                "-keyout",
                "expired.key",
                "-out",
                "expired.csr",
            ],
        );
        openssl(
            dir,
            &[
                "ca",
                "-batch",
                "-config",
                "ca-db.cnf",
                "-cert",
                "ca.pem",
                "-keyfile",
                "ca.key",
                "-extensions",
                "client_ext",
                "-startdate",
                "20190101000000Z",
                "-enddate",
                "20200101000000Z",
                "-notext",
                "-in",
                "expired.csr",
                "-out",
                "expired.pem",
            ],
        );
        (dir.join("expired.pem"), dir.join("expired.key"))
    }
}
