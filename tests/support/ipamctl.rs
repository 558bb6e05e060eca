//! Running the `ipamctl` binary from tests: stdin closed (never a
//! terminal), exit status checked, output shown when an assertion fails.

use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// The `ipamctl` binary cargo built for this test run.
pub const EXE: &str = env!("CARGO_BIN_EXE_ipamctl");

/// Runs `ipamctl ARGS` with stdin closed.
pub fn ipamctl(args: &[&str]) -> Output {
    Command::new(EXE)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {EXE}: {e}"))
}

/// A process's exit status, stdout and stderr, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `ipamctl ARGS` and asserts exit status `code`.
pub fn expect_exit(code: i32, args: &[&str]) -> Output {
    let out = ipamctl(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "ipamctl {args:?}\n{}",
        text(&out)
    );
    out
}

/// Runs `ipamctl ARGS`, asserts exit status `code`, parses stdout as JSON.
pub fn json(code: i32, args: &[&str]) -> Value {
    let out = expect_exit(code, args);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ipamctl {args:?}: {e}\n{}", text(&out)))
}
