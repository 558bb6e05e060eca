//! How often nodes share a starting chunk, for several start-window sizes:
//! the measurement behind the planner's `START_WINDOW` (src/allocator/plan/).
//!
//! Nodes named like a cluster's (`node-1`…`node-N` and `ip-10-0-x-y`) get
//! their start chunk from the real spreading function; for each window size
//! the table gives the share of nodes whose start chunk another node also
//! starts in (those nodes' caches go stale on each other's writes: each of
//! their ADDs risks one more transaction), and the longest IPv6 address
//! suffix the window can produce at k = 8.
//!
//! ```sh
//! cargo run --release --example start_window
//! ```

use std::collections::HashMap;

use host_etcd::allocator::internals::spread;
use host_etcd::allocator::node_seed_from;

fn shared_share(names: &[String], window: u128) -> f64 {
    let mut count: HashMap<u128, usize> = HashMap::new();
    let starts: Vec<u128> = names
        .iter()
        .map(|n| spread(node_seed_from(n), window))
        .collect();
    for s in &starts {
        *count.entry(*s).or_default() += 1;
    }
    let shared = starts.iter().filter(|s| count[s] > 1).count();
    shared as f64 / names.len() as f64
}

fn main() {
    let windows: [u128; 6] = [16, 64, 256, 1024, 4096, 65536];
    println!(
        "| nodes | naming | {} |",
        windows.map(|w| format!("W={w}")).join(" | ")
    );
    println!("|---:|---|{}", "---:|".repeat(windows.len()));
    for n in [8usize, 16, 64, 256, 1000] {
        for (naming, names) in [
            (
                "node-i",
                (1..=n).map(|i| format!("node-{i}")).collect::<Vec<_>>(),
            ),
            (
                "ip-10-0-x-y",
                (1..=n)
                    .map(|i| format!("ip-10-0-{}-{}", i / 250, i % 250))
                    .collect(),
            ),
        ] {
            let cells: Vec<String> = windows
                .iter()
                .map(|w| format!("{:.0}%", 100.0 * shared_share(&names, *w)))
                .collect();
            println!("| {n} | {naming} | {} |", cells.join(" | "));
        }
    }
    println!();
    for w in windows {
        let last = (w << 8) - 1;
        println!(
            "W={w}: addresses up to 2001:db8:1::{:x}:{:x}",
            last >> 16,
            last & 0xffff
        );
    }
}
