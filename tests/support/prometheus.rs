//! Prometheus' own tools for tests: `promtool check metrics` on an
//! exposition (Debian's `prometheus` package; `scripts/setup.sh` installs
//! it).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A binary of the `prometheus` package; panics saying how to install it.
pub fn bin(name: &str) -> PathBuf {
    let path = Path::new("/usr/bin").join(name);
    assert!(
        path.is_file(),
        "{name} not found: install it with `apt-get install prometheus` \
         (scripts/setup.sh, run by the README's test command, does this)"
    );
    path
}

/// Asserts that `promtool check metrics` accepts `text` without a word.
pub fn assert_lint_clean(text: &str) {
    let mut lint = Command::new(bin("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    lint.stdin
        .take()
        .expect("promtool stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let lint = lint.wait_with_output().expect("wait for promtool");
    assert!(
        lint.status.success() && lint.stdout.is_empty() && lint.stderr.is_empty(),
        "promtool check metrics:\n{}{}\n{text}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
}
