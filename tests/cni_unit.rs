//! The plugin binary run as a subprocess, the way a runtime calls it, on the
//! paths that need no store: VERSION, the "about" line, environment and
//! decode errors.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

/// Runs the plugin with exactly `env` (nothing inherited) and `stdin`.
fn plugin(env: &[(&str, &str)], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_host-etcd"))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn host-etcd");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {s}"))
}

const ADD_ENV: &[(&str, &str)] = &[
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "ctr1"),
    ("CNI_NETNS", "/var/run/netns/ctr1"),
    ("CNI_IFNAME", "eth0"),
    ("CNI_PATH", "/opt/cni/bin"),
];

#[test]
fn version_command() {
    let (code, out, _) = plugin(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.0.0"}"#);
    assert_eq!(code, 0);
    let v = json(&out);
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(
        v["supportedVersions"],
        serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
}

#[test]
fn no_command_prints_about_on_stderr() {
    let (code, out, err) = plugin(&[], "");
    assert_eq!(code, 0);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("CNI host-etcd plugin"), "{err}");
    assert!(err.contains("1.1.0"), "{err}");
}

#[test]
fn missing_env_is_code_4_json_on_stdout() {
    let env: Vec<(&str, &str)> = ADD_ENV
        .iter()
        .copied()
        .filter(|(k, _)| *k != "CNI_IFNAME")
        .collect();
    let (code, out, err) = plugin(&env, "{}");
    assert_eq!(code, 1);
    assert!(err.is_empty(), "no backtrace or log noise: {err}");
    let v = json(&out);
    assert_eq!(v["code"], 4);
    assert!(v["details"]
        .as_str()
        .is_some_and(|d| d.contains("CNI_IFNAME")));
}

#[test]
fn invalid_ifname_is_code_4() {
    let mut env = ADD_ENV.to_vec();
    env[3] = ("CNI_IFNAME", "eth0/evil");
    let (code, out, _) = plugin(&env, "{}");
    assert_eq!(code, 1);
    assert_eq!(json(&out)["code"], 4);
}

#[test]
fn trailing_comma_is_code_6_naming_line_and_column() {
    let stdin = "{\"cniVersion\": \"0.3.1\", \"name\": \"n\",\n \"ipam\": {\"routes\": [{\"dst\": \"0.0.0.0/0\"},\n ]}}";
    let (code, out, _) = plugin(ADD_ENV, stdin);
    assert_eq!(code, 1);
    let v = json(&out);
    assert_eq!(v["code"], 6);
    assert!(
        v["details"]
            .as_str()
            .is_some_and(|d| d.contains("trailing comma at line 3 column 2")),
        "{v}"
    );
}

#[test]
fn unsupported_version_is_code_1() {
    let (code, out, _) = plugin(
        ADD_ENV,
        r#"{"cniVersion":"0.2.0","name":"n","ipam":{"subnet":"10.0.0.0/24"}}"#,
    );
    assert_eq!(code, 1);
    assert_eq!(json(&out)["code"], 1);
}

#[test]
fn wrong_type_is_code_7_naming_the_field_in_the_config_version() {
    let (code, out, _) = plugin(
        ADD_ENV,
        r#"{"cniVersion":"0.4.0","name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24","rangeEnd":5}]]}}"#,
    );
    assert_eq!(code, 1);
    let v = json(&out);
    assert_eq!(v["code"], 7);
    assert_eq!(v["cniVersion"], "0.4.0");
    assert!(
        v["details"]
            .as_str()
            .is_some_and(|d| d.starts_with("ipam.ranges[0][0].rangeEnd:")),
        "{v}"
    );
}
