//! Allocate and release on etcd over TLS with a client certificate: how a
//! cluster-wide allocator is opened.
//!
//! ```sh
//! cargo run --example etcd_tls -- \
//!     --endpoints https://10.0.0.1:2379,https://10.0.0.2:2379 \
//!     --ca ca.pem [--cert client.pem --key client-key.pem] [--network NAME]
//! ```
//!
//! Every write is a compare-and-swap in etcd, so this program may run on
//! many hosts at once against the same network. It allocates one address,
//! reads its owner record back, and releases it.

use std::path::PathBuf;
use std::time::Duration;

use host_etcd::{
    AllocRequest, Allocator, EtcdConfig, EtcdStore, Network, Options, OwnerId, RangeSet,
};

type Error = Box<dyn std::error::Error>;

/// The command line, read by hand (the example needs no argument parser).
fn config_from_args() -> Result<(EtcdConfig, String), Error> {
    let mut config = EtcdConfig::default()
        .with_dial_timeout(Duration::from_secs(5))
        .with_request_timeout(Duration::from_secs(5));
    let mut network = "example".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--endpoints" => config.endpoints = value.split(',').map(String::from).collect(),
            "--ca" => config.trusted_ca_file = Some(PathBuf::from(value)),
            "--cert" => config.cert_file = Some(PathBuf::from(value)),
            "--key" => config.key_file = Some(PathBuf::from(value)),
            "--network" => network = value,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok((config, network))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let (config, name) = config_from_args()?;
    let store = EtcdStore::connect(&config).await?;
    let network = Network::new(name, vec![RangeSet::from_cidr("10.90.0.0/16")?])?;
    let alloc = Allocator::new(store, network, Options::default())?;

    let owner = OwnerId {
        container_id: format!("example-{}", std::process::id()),
        ifname: "eth0".into(),
    };
    let got = alloc.allocate(&AllocRequest::new(owner.clone())).await?;
    let ip = got.assigned[0].ip;
    println!("allocated {ip} on {}", config.endpoints.join(","));

    let record = alloc.owner(&owner).await?.ok_or("owner record missing")?;
    if record.ips != vec![ip] {
        return Err(format!("etcd holds {:?}, expected {ip}", record.ips).into());
    }
    alloc.release(&owner).await?.ok_or("nothing to release")?;
    println!("released {ip}");
    Ok(())
}
