//! Allocate and release on the in-memory store: the smallest embedding of
//! the allocator (the memory store is the reference implementation of the
//! `Store` contract; state is gone when the process ends).
//!
//! ```sh
//! cargo run --example memory
//! ```

use host_etcd::{AllocRequest, Allocator, MemoryStore, Network, Options, OwnerId, RangeSet};

type Error = Box<dyn std::error::Error>;

fn request(container: &str) -> AllocRequest {
    AllocRequest::new(OwnerId {
        container_id: container.into(),
        ifname: "eth0".into(),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    // Dual stack: one IPv4 and one IPv6 address per owner.
    let network = Network::new(
        "example",
        vec![
            RangeSet::from_cidr("10.88.0.0/24")?,
            RangeSet::from_cidr("fd00:88::/64")?,
        ],
    )?;
    let alloc = Allocator::new(MemoryStore::new(), network, Options::default())?;

    let mut held = Vec::new();
    for id in ["c1", "c2", "c3"] {
        let got = alloc.allocate(&request(id)).await?;
        let ips: Vec<String> = got.assigned.iter().map(|a| a.ip.to_string()).collect();
        println!("allocated {id}: {}", ips.join(", "));
        held.push(got);
    }
    let v4: Vec<_> = held.iter().map(|a| a.assigned[0].ip).collect();
    if v4[0] == v4[1] || v4[1] == v4[2] || v4[0] == v4[2] {
        return Err(format!("two owners got the same address: {v4:?}").into());
    }

    let owner = request("c2").owner;
    let released = alloc.release(&owner).await?.ok_or("c2 held no addresses")?;
    println!("released c2: {:?}", released.ips);
    if alloc.owner(&owner).await?.is_some() {
        return Err("c2 still has an owner record after release".into());
    }
    println!("owners now: {}", alloc.owners().await?.len());
    Ok(())
}
