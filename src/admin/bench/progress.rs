//! The progress bars of the prefill and the in-process measured loop, on
//! stderr when it is a terminal (and without `--json`); hidden otherwise.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps labelled `what`, or a hidden one unless `show`.
pub(super) fn progress(len: u64, show: bool, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>8} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec})",
    ) {
        pb.set_style(style);
    }
    pb.set_message(what.to_string());
    pb
}
