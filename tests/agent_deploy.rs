//! The deployment files of the node agent, exercised for real:
//! `deploy/install.sh` installs the built binary into a temporary CNI bin
//! directory (atomically, refusing a binary that does not run), and
//! `systemd-analyze verify` accepts `deploy/systemd/host-etcd-agent.service`.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_host-etcd"))
}

fn install(dest: &Path, binary: &Path) -> Output {
    Command::new("sh")
        .arg(repo().join("deploy/install.sh"))
        .arg(dest)
        .arg(binary)
        .output()
        .expect("run install.sh")
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn install_sh_installs_atomically_and_refuses_a_broken_binary() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("opt/cni/bin");
    let out = install(&dest, &binary());
    assert!(out.status.success(), "{out:?}");
    let installed = dest.join("host-etcd");
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(binary()).unwrap()
    );
    let meta = std::fs::metadata(&installed).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o755);
    assert_eq!(names(&dest), ["host-etcd"], "no temporary file left");
    // The installed copy runs, as the plugin and as the agent.
    let about = Command::new(&installed).output().unwrap();
    assert!(String::from_utf8_lossy(&about.stderr).contains("CNI host-etcd plugin version"));
    let help = Command::new(&installed)
        .args(["agent", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success(), "{help:?}");
    assert!(String::from_utf8_lossy(&help.stdout).contains("--socket"));

    // Again: replaced by rename (a new inode), never written in place, so a
    // process running the old file is not disturbed.
    let old_ino = meta.ino();
    let out = install(&dest, &binary());
    assert!(out.status.success(), "{out:?}");
    assert_ne!(std::fs::metadata(&installed).unwrap().ino(), old_ino);
    assert_eq!(names(&dest), ["host-etcd"]);

    // A binary that does not run as the plugin, and a missing one: refused,
    // the installed file untouched, nothing left behind.
    let bad = dir.path().join("bad");
    std::fs::write(&bad, b"#!/bin/sh\necho hello\n").unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o755)).unwrap();
    for src in [bad.clone(), dir.path().join("missing")] {
        let out = install(&dest, &src);
        assert_eq!(out.status.code(), Some(1), "{src:?}: {out:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
        assert_eq!(
            std::fs::read(&installed).unwrap(),
            std::fs::read(binary()).unwrap()
        );
        assert_eq!(names(&dest), ["host-etcd"]);
    }
    // Bad usage.
    let out = Command::new("sh")
        .arg(repo().join("deploy/install.sh"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let unit =
        std::fs::read_to_string(repo().join("deploy/systemd/host-etcd-agent.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/opt/cni/bin/host-etcd agent --socket /run/host-etcd/agent.sock")
    );
    assert!(unit.contains("RuntimeDirectory=host-etcd"));
    // verify checks that ExecStart's binary exists: point it at the built
    // binary (nothing else changes).
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("host-etcd-agent.service");
    std::fs::write(
        &copy,
        unit.replace("/opt/cni/bin/host-etcd", binary().to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .current_dir(dir.path())
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    assert!(
        !stderr.contains("host-etcd-agent.service"),
        "warnings about the unit:\n{stderr}"
    );
}
