//! More test certificates for a [`TestPki`]: a client certificate that
//! expired long ago, signed by the same CA (`openssl ca` with explicit
//! `-startdate`/`-enddate`, which OpenSSL 3.0 accepts; `req -x509
//! -not_after` needs 3.4).

use std::path::PathBuf;

use super::tls::{openssl, TestPki};

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

/// A client certificate (and key) signed by `pki`'s CA, valid only during
/// 2019: `(cert, key)` in `pki.dir()`.
pub fn expired_client(pki: &TestPki) -> (PathBuf, PathBuf) {
    let dir = pki.dir();
    std::fs::write(dir.join("ca-db.cnf"), CA_DB_CONFIG).expect("write openssl file");
    std::fs::write(dir.join("index.txt"), "").expect("write openssl file");
    std::fs::write(dir.join("serial"), "2001\n").expect("write openssl file");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
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
