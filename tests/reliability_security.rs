//! Security of the plugin's etcd connection, exercised through the plugin
//! binary: mutual TLS (right CA, wrong CA, no client certificate, an
//! expired client certificate) and etcd username/password auth with a role
//! limited to the plugin's prefix (inside the prefix works, another prefix
//! is refused with 104, a wrong password is a clear error).
//!
//! Throughout: no output of any run (stdout or stderr, success or failure)
//! contains the password or private key material, and the files holding
//! credentials (TLS files, an `ipamctl --config` file with a password) are
//! read, never written (bytes and mtime unchanged).
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::{json, Value};

use support::ipamctl::{ipamctl, text};
use support::plugin::{addresses, Call, Outcome};
use support::tls::TestPki;
use support::{EtcdCluster, EtcdServer};

const PASSWORD: &str = "Pl8gin-S3cret-Passw0rd";
const ROOT_PASSWORD: &str = "R00t-S3cret-Passw0rd";

/// Bytes and mtime of a file, to prove it was not written.
fn snapshot(p: &Path) -> (Vec<u8>, SystemTime) {
    (
        std::fs::read(p).unwrap(),
        std::fs::metadata(p).unwrap().modified().unwrap(),
    )
}

/// The base64 lines of a PEM private key (its secret material).
fn key_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_string)
        .collect()
}

/// Asserts no secret appears in an outcome's stdout or stderr.
fn assert_no_secrets(out: &Outcome, secrets: &[String]) {
    for s in secrets {
        assert!(
            !out.stdout.contains(s.as_str()) && !out.stderr.contains(s.as_str()),
            "output leaks a secret ({s:?}):\nstdout: {}\nstderr: {}",
            out.stdout,
            out.stderr
        );
    }
}

fn tls_conf(etcd: &EtcdServer, name: &str, ca: &Path, cert: Option<(&Path, &Path)>) -> Value {
    let mut ipam = json!({
        "type": "host-etcd",
        "endpoints": [etcd.url()],
        "ranges": [[{"subnet": "10.60.0.0/24"}]],
        "trustedcafile": ca,
        "budgetMs": 3000,
        "dialTimeoutMs": 1500,
        "requestTimeoutMs": 1500
    });
    if let Some((c, k)) = cert {
        ipam["certfile"] = json!(c);
        ipam["keyfile"] = json!(k);
    }
    json!({"cniVersion": "1.1.0", "name": name, "ipam": ipam})
}

/// A TLS rejection: code 7 (the TLS files are configuration), details
/// naming the endpoint, the files to check, and `why`.
fn assert_tls_rejected(out: &Outcome, why: &str) {
    let e = out.err(7);
    let d = e["details"].as_str().unwrap();
    for want in [
        "https://127.0.0.1:",
        "TLS certificate rejected",
        "trusted_ca_file",
        why,
    ] {
        assert!(d.contains(want), "details lack {want:?}: {e}");
    }
}

#[test]
fn mutual_tls_through_the_plugin() {
    let pki = TestPki::generate();
    let (expired_cert, expired_key) = pki.expired_client();
    let etcd = EtcdServer::start_with(EtcdCluster::builder().tls(pki.server_tls(true)));
    let files: Vec<PathBuf> = vec![
        pki.ca.clone(),
        pki.client_cert.clone(),
        pki.client_key.clone(),
        pki.other_ca.clone(),
        expired_cert.clone(),
        expired_key.clone(),
    ];
    let before: Vec<_> = files.iter().map(|f| snapshot(f)).collect();
    let mut secrets = key_lines(&pki.client_key);
    secrets.extend(key_lines(&expired_key));
    secrets.extend(key_lines(&pki.server_key));

    // Right CA, client certificate: works.
    let good = tls_conf(
        &etcd,
        "mtls",
        &pki.ca,
        Some((&pki.client_cert, &pki.client_key)),
    );
    let out = Call::add("c1", "eth0").config(&good).run();
    assert_no_secrets(&out, &secrets);
    assert_eq!(addresses(&out.ok_json()), ["10.60.0.2/24"]);

    // Wrong CA: the server certificate does not verify.
    let wrong_ca = tls_conf(
        &etcd,
        "mtls",
        &pki.other_ca,
        Some((&pki.client_cert, &pki.client_key)),
    );
    let out = Call::add("c2", "eth0").config(&wrong_ca).run();
    assert_no_secrets(&out, &secrets);
    assert_tls_rejected(&out, "invalid peer certificate");

    // No client certificate: the server refuses the handshake.
    let no_cert = tls_conf(&etcd, "mtls", &pki.ca, None);
    let out = Call::add("c3", "eth0").config(&no_cert).run();
    assert_no_secrets(&out, &secrets);
    assert_tls_rejected(&out, "BadCertificate");

    // An expired client certificate (valid during 2019 only).
    let expired = tls_conf(&etcd, "mtls", &pki.ca, Some((&expired_cert, &expired_key)));
    let out = Call::add("c4", "eth0").config(&expired).run();
    assert_no_secrets(&out, &secrets);
    // The server's alert does not say why; the client cannot either.
    assert_tls_rejected(&out, "BadCertificate");

    // Still fine with the right files; nothing was written by any run.
    Call::del("c1", "eth0").config(&good).run().ok_empty();
    let after: Vec<_> = files.iter().map(|f| snapshot(f)).collect();
    assert_eq!(before, after, "a TLS file was written");
}

/// Runs etcdctl as root (after auth is enabled).
fn etcdctl_root(etcd: &EtcdServer, args: &[&str]) -> std::process::Output {
    let user = format!("--user=root:{ROOT_PASSWORD}");
    let mut all = vec![user.as_str()];
    all.extend_from_slice(args);
    etcd.etcdctl(&all)
}

fn etcdctl_ok(etcd: &EtcdServer, args: &[&str]) {
    let out = etcd.etcdctl(args);
    assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
}

fn auth_conf(etcd: &EtcdServer, prefix: &str, password: &str) -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": "authnet",
        "ipam": {
            "type": "host-etcd",
            "endpoints": [etcd.url()],
            "ranges": [[{"subnet": "10.61.0.0/24"}]],
            "username": "cni",
            "password": password,
            "prefix": prefix,
            "budgetMs": 3000,
            "dialTimeoutMs": 1500,
            "requestTimeoutMs": 1500
        }
    })
}

#[test]
fn username_password_with_a_role_limited_to_the_prefix() {
    let etcd = EtcdServer::start();
    etcdctl_ok(&etcd, &["user", "add", &format!("root:{ROOT_PASSWORD}")]);
    etcdctl_ok(&etcd, &["role", "add", "cni"]);
    etcdctl_ok(
        &etcd,
        &[
            "role",
            "grant-permission",
            "cni",
            "--prefix=true",
            "readwrite",
            "/host-etcd/",
        ],
    );
    etcdctl_ok(&etcd, &["user", "add", &format!("cni:{PASSWORD}")]);
    etcdctl_ok(&etcd, &["user", "grant-role", "cni", "cni"]);
    etcdctl_ok(&etcd, &["auth", "enable"]);
    let secrets = vec![PASSWORD.to_string(), ROOT_PASSWORD.to_string()];

    // Inside the prefix: works.
    let good = auth_conf(&etcd, "/host-etcd", PASSWORD);
    let out = Call::add("c1", "eth0").config(&good).run();
    assert_no_secrets(&out, &secrets);
    let held = addresses(&out.ok_json());
    let out = Call::check("c1", "eth0").config(&good).run();
    assert_no_secrets(&out, &secrets);
    out.ok_empty();
    // Unauthenticated reads are refused by etcd; root sees the record.
    let rec = etcdctl_root(
        &etcd,
        &[
            "get",
            "/host-etcd/authnet/owners/c1/eth0",
            "--print-value-only",
        ],
    );
    assert!(
        String::from_utf8_lossy(&rec.stdout).contains(held[0].split('/').next().unwrap()),
        "{rec:?}"
    );

    // Another prefix: refused with 104.
    let other = auth_conf(&etcd, "/elsewhere", PASSWORD);
    for call in [
        Call::add("c2", "eth0"),
        Call::del("c1", "eth0"),
        Call::check("c1", "eth0"),
    ] {
        let out = call.config(&other).run();
        assert_no_secrets(&out, &secrets);
        let e = out.err(104);
        assert!(
            e["details"].as_str().unwrap().contains("permission denied"),
            "{e}"
        );
    }

    // Wrong password: a clear error that does not echo either password.
    let wrong_pw = "Wr0ng-Guess-Passw0rd";
    let wrong = auth_conf(&etcd, "/host-etcd", wrong_pw);
    let mut all_secrets = secrets.clone();
    all_secrets.push(wrong_pw.to_string());
    for call in [Call::add("c3", "eth0"), Call::del("c1", "eth0")] {
        let out = call.config(&wrong).run();
        assert_no_secrets(&out, &all_secrets);
        let e = out.err(104);
        let d = e["details"].as_str().unwrap();
        assert!(d.contains("authentication failed"), "{e}");
    }

    // ipamctl reads a config file with the password and never writes it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authnet.conf");
    std::fs::write(&path, serde_json::to_vec_pretty(&good).unwrap()).unwrap();
    let wrong_path = dir.path().join("wrong.conf");
    std::fs::write(&wrong_path, serde_json::to_vec_pretty(&wrong).unwrap()).unwrap();
    let before = (snapshot(&path), snapshot(&wrong_path));
    for (p, ok) in [(&path, true), (&wrong_path, false)] {
        for cmd in ["show", "list", "check"] {
            let out = ipamctl(&["--config", p.to_str().unwrap(), cmd]);
            let text = text(&out);
            for s in &all_secrets {
                assert!(
                    !text.contains(s.as_str()),
                    "ipamctl {cmd} leaks {s}: {text}"
                );
            }
            assert_eq!(out.status.success(), ok, "ipamctl {cmd}: {text}");
            if !ok {
                assert!(text.contains("authentication failed"), "{text}");
            }
        }
    }
    assert_eq!(
        before,
        (snapshot(&path), snapshot(&wrong_path)),
        "a config file was written"
    );
    Call::del("c1", "eth0").config(&good).run().ok_empty();
}
