//! The `host-etcd` CNI IPAM plugin binary (thin: see `host_etcd::cni`),
//! and with the first argument `agent` the node agent (`host_etcd::agent`).
//!
//! Reads the `CNI_*` environment and the network config on stdin, runs the
//! command, prints the result or the CNI error JSON on stdout, and exits with
//! status 0 (success) or 1 (error). Never prints a backtrace: a panic (a bug)
//! still produces a CNI error JSON with code 999.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use host_etcd::cni::{self, CniError, CniVersion, Env};

fn main() -> ExitCode {
    // `host-etcd agent ...`: the node agent (a runtime runs the plugin
    // without arguments).
    if std::env::args_os().nth(1).is_some_and(|a| a == "agent") {
        return host_etcd::agent::main(std::env::args_os().skip(1));
    }
    std::panic::set_hook(Box::new(|info| {
        let e = CniError::Internal(format!("plugin bug: {info}"));
        print_stdout(&e.to_json(CniVersion::LATEST));
        std::process::exit(1);
    }));

    if std::env::var_os("CNI_COMMAND").is_none() {
        // Run by hand: say what we are, like the reference plugins (stderr).
        let _ = writeln!(std::io::stderr().lock(), "{}", cni::about());
        return ExitCode::SUCCESS;
    }

    let mut stdin = Vec::new();
    let read = std::io::stdin()
        .lock()
        .read_to_end(&mut stdin)
        .map(|_| stdin.as_slice())
        .map_err(|source| CniError::Io {
            path: PathBuf::from("-"),
            source,
        });
    let response = cni::respond(Env::from_process(), read);
    if let Some(out) = &response.stdout {
        print_stdout(out);
    }
    if let Some(text) = &response.stderr {
        let _ = writeln!(std::io::stderr().lock(), "{text}");
    }
    if response.exit_code == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Writes a line to stdout, ignoring a closed pipe (never panics).
fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}
