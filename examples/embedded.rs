//! Allocate and release on the embedded store (what the plugin uses when a
//! network config has no etcd `endpoints`): state persists in a directory,
//! and any number of processes on the host may share it.
//!
//! ```sh
//! cargo run --example embedded [-- DATA_DIR]
//! ```
//!
//! Without `DATA_DIR` a fresh directory under the system temp dir is used
//! and removed at the end.

use std::path::PathBuf;
use std::time::Duration;

use host_etcd::{AllocRequest, Allocator, LocalStore, Network, Options, OwnerId, RangeSet};

type Error = Box<dyn std::error::Error>;

fn owner() -> OwnerId {
    OwnerId {
        container_id: "example-container".into(),
        ifname: "eth0".into(),
    }
}

fn open(dir: &std::path::Path) -> Result<Allocator<LocalStore>, Error> {
    let store = LocalStore::open(dir, Duration::from_secs(10))?;
    let network = Network::new("example", vec![RangeSet::from_cidr("10.89.0.0/16")?])?;
    Ok(Allocator::new(store, network, Options::default())?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let (dir, temporary) = match std::env::args_os().nth(1) {
        Some(d) => (PathBuf::from(d), false),
        None => (
            std::env::temp_dir().join(format!("host-etcd-example-{}", std::process::id())),
            true,
        ),
    };

    // First "process": allocate, then close the store.
    let ip = {
        let alloc = open(&dir)?;
        let got = alloc.allocate(&AllocRequest::new(owner())).await?;
        println!("allocated {} in {}", got.assigned[0].ip, dir.display());
        got.assigned[0].ip
    };

    // Second "process": the record survived; release it.
    let alloc = open(&dir)?;
    let record = alloc.owner(&owner()).await?.ok_or("owner record lost")?;
    if record.ips != vec![ip] {
        return Err(format!("reopened store holds {:?}, expected {ip}", record.ips).into());
    }
    alloc.release(&owner()).await?;
    println!("reopened, found {ip} held, released it");
    drop(alloc);

    if temporary {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}
