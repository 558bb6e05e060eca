//! Resolving the target of a command: the network (from the plugin's
//! config file, or from flags), the store, and the chunk size, which is
//! checked against the network's stored meta record exactly as the plugin
//! does (a disagreement is refused, never reinterpreted).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cli::TargetArgs;
use super::error::AdminError;
use crate::allocator::meta::Meta;
use crate::allocator::{
    default_chunk_bits, AllocError, Allocator, Keyspace, Network, Options, DEFAULT_PREFIX,
};
use crate::cni::config::{NetConf, StoreConf};
use crate::range::RangeSet;
use crate::store::any::AnyStore;
use crate::store::etcd::{EtcdConfig, EtcdStore};
use crate::store::local::LocalStore;
use crate::store::{Read, ReadResult, Store};

/// A resolved target: what to open and how.
#[derive(Clone, Debug)]
pub struct Target {
    /// The network (its range sets may be empty when no ranges were given).
    pub network: Network,
    /// The store.
    pub store: StoreConf,
    /// Allocator options.
    pub options: Options,
}

/// Reads a network config file ([`crate::cni::read_config_file`]: a
/// `.conflist` yields its first plugin with an `ipam` section).
pub fn read_config(path: &Path) -> Result<NetConf, AdminError> {
    crate::cni::read_config_file(path).map_err(|detail| AdminError::Config {
        path: path.to_path_buf(),
        detail,
    })
}

/// One range set of one range with host-local's defaults.
pub fn subnet_set(cidr: &str) -> Result<RangeSet, AdminError> {
    RangeSet::from_cidr(cidr).map_err(|e| AdminError::Usage(format!("--subnet {cidr}: {e}")))
}

impl Target {
    /// Resolves the flags. `default_network` is used when neither
    /// `--config` nor `--network` names one (the benchmark's own network).
    pub fn resolve(args: &TargetArgs, default_network: Option<&str>) -> Result<Target, AdminError> {
        if args.config.len() > 1 {
            return Err(AdminError::Usage(
                "only `metrics` takes several --config files; give one".into(),
            ));
        }
        let (mut target, store_required) = match args.config.first() {
            Some(path) => (Target::from_config(args, path)?, false),
            None => (Target::from_flags(args, default_network)?, true),
        };
        target.apply_store_flags(args, store_required)?;
        Ok(target)
    }

    /// The network, store and options of a config file; the flags that
    /// would set the network again are refused.
    fn from_config(args: &TargetArgs, path: &Path) -> Result<Target, AdminError> {
        for (given, flag) in [
            (args.network.is_some(), "--network"),
            (!args.subnet.is_empty(), "--subnet"),
            (args.chunk_bits.is_some(), "--chunk-bits"),
            (args.prefix.is_some(), "--prefix"),
        ] {
            if given {
                return Err(AdminError::Usage(format!(
                    "{flag} cannot be combined with --config (the config file sets it)"
                )));
            }
        }
        let conf = read_config(path)?;
        let network = conf.network().map_err(|e| AdminError::Config {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        Ok(Target {
            network,
            store: conf.ipam.store.clone(),
            options: conf.options(),
        })
    }

    /// The network the flags describe (`--network` or `default_network`,
    /// `--subnet`, `--prefix`, `--chunk-bits`); its store is a placeholder
    /// that the store flags must replace.
    fn from_flags(args: &TargetArgs, default_network: Option<&str>) -> Result<Target, AdminError> {
        let name = args.network.as_deref().or(default_network).ok_or_else(|| {
            AdminError::Usage(
                "no network given: pass --config FILE, or --network NAME with --endpoints".into(),
            )
        })?;
        let sets = args
            .subnet
            .iter()
            .map(|s| subnet_set(s))
            .collect::<Result<Vec<_>, _>>()?;
        if !sets.is_empty() {
            crate::range::check_sets(&sets)
                .map_err(|e| AdminError::Usage(format!("--subnet: {e}")))?;
        }
        let network = Network {
            name: name.to_string(),
            prefix: args
                .prefix
                .as_deref()
                .unwrap_or(DEFAULT_PREFIX)
                .trim_end_matches('/')
                .to_string(),
            chunk_bits: args.chunk_bits.unwrap_or_else(|| default_chunk_bits(&sets)),
            sets,
        };
        let store = StoreConf::Local {
            data_dir: PathBuf::new(),
            lock_wait: Duration::from_secs(10),
        };
        Ok(Target {
            network,
            store,
            options: Options {
                adopt_stored_chunk_bits: args.chunk_bits.is_none(),
                ..Options::default()
            },
        })
    }

    /// Applies the store flags over the target's store: `--data-dir` or
    /// `--endpoints` replace it (the config's TLS settings kept unless
    /// flags give others), TLS flags alone amend an etcd store. With
    /// `store_required` (no config file) one of the two must be given.
    fn apply_store_flags(
        &mut self,
        args: &TargetArgs,
        store_required: bool,
    ) -> Result<(), AdminError> {
        let tls_given = args.cacert.is_some() || args.cert.is_some() || args.key.is_some();
        match (&args.data_dir, args.endpoints.is_empty()) {
            (Some(_), false) => {
                return Err(AdminError::Usage(
                    "--endpoints and --data-dir exclude each other".into(),
                ))
            }
            (Some(dir), true) => {
                self.store = StoreConf::Local {
                    data_dir: dir.clone(),
                    lock_wait: self.options.budget,
                };
            }
            (None, false) => {
                let base = match &self.store {
                    StoreConf::Etcd(c) => c.clone(),
                    StoreConf::Local { .. } => EtcdConfig::default(),
                };
                self.store = StoreConf::Etcd(EtcdConfig {
                    endpoints: args.endpoints.clone(),
                    trusted_ca_file: args.cacert.clone().or(base.trusted_ca_file.clone()),
                    cert_file: args.cert.clone().or(base.cert_file.clone()),
                    key_file: args.key.clone().or(base.key_file.clone()),
                    ..base
                });
            }
            (None, true) => {
                if store_required {
                    return Err(AdminError::Usage(
                        "no store given: pass --config FILE, --endpoints E or --data-dir DIR"
                            .into(),
                    ));
                }
                if tls_given {
                    if let StoreConf::Etcd(c) = &mut self.store {
                        c.trusted_ca_file = args.cacert.clone().or(c.trusted_ca_file.take());
                        c.cert_file = args.cert.clone().or(c.cert_file.take());
                        c.key_file = args.key.clone().or(c.key_file.take());
                    }
                }
            }
        }
        Ok(())
    }

    /// Resolves one target per `--config` file (each with the same store
    /// and TLS flags), or the one network the flags name.
    pub fn resolve_all(args: &TargetArgs) -> Result<Vec<Target>, AdminError> {
        if args.config.len() <= 1 {
            return Ok(vec![Target::resolve(args, None)?]);
        }
        args.config
            .iter()
            .map(|path| {
                let one = TargetArgs {
                    config: vec![path.clone()],
                    ..args.clone()
                };
                Target::resolve(&one, None)
            })
            .collect()
    }

    /// Whether the network has ranges (needed by `show` and `bench`).
    pub fn require_ranges(&self, command: &str) -> Result<(), AdminError> {
        if self.network.sets.is_empty() {
            return Err(AdminError::Usage(format!(
                "{command} needs the network's ranges: pass --config FILE or --subnet CIDR"
            )));
        }
        Ok(())
    }

    /// Opens the store and binds an allocator, taking the chunk size from
    /// the stored meta record when none was given, and refusing one that
    /// disagrees with it.
    pub async fn open(&self) -> Result<Allocator<AnyStore>, AdminError> {
        let store = open_store(&self.store).await?;
        let network = self.checked_network(&store).await?;
        Ok(Allocator::new(store, network, self.options.clone())?)
    }

    /// Opens the store and binds an allocator without reading the meta
    /// record (one etcd call less), for commands that only read owner
    /// records and index entries and never look at a chunk (`list`): the
    /// chunk size does not matter to them.
    pub async fn open_for_records(&self) -> Result<Allocator<AnyStore>, AdminError> {
        let store = open_store(&self.store).await?;
        Ok(Allocator::new(
            store,
            self.network.clone(),
            self.options.clone(),
        )?)
    }

    /// The network with the chunk size agreed with the store's meta record.
    pub async fn checked_network<S: Store>(&self, store: &S) -> Result<Network, AdminError> {
        let mut network = self.network.clone();
        let ks = Keyspace::new(&network.prefix, &network.name).map_err(AllocError::from)?;
        let key = ks.meta();
        let res = tokio::time::timeout(self.options.budget, store.read(&[Read::Get(key.clone())]))
            .await
            .map_err(|_| {
                crate::store::StoreError::Unavailable(format!(
                    "no answer within {:?} reading {key}",
                    self.options.budget
                ))
            })??;
        if let Some(ReadResult::Get(Some(v))) = res.into_iter().next() {
            let meta = Meta::decode(&v.value).map_err(|detail| AllocError::CorruptMeta {
                key: key.clone(),
                detail,
            })?;
            // The chunk size was left out (config or `--chunk-bits`): the
            // stored one applies, as it does for the allocator itself.
            if self.options.adopt_stored_chunk_bits {
                network.chunk_bits = meta.chunk_bits;
            } else if meta.chunk_bits != network.chunk_bits {
                return Err(AllocError::MetaMismatch {
                    key,
                    stored: meta.chunk_bits,
                    configured: network.chunk_bits,
                }
                .into());
            }
        }
        Ok(network)
    }
}

/// Opens the configured store.
pub async fn open_store(store: &StoreConf) -> Result<AnyStore, AdminError> {
    Ok(match store {
        StoreConf::Etcd(config) => AnyStore::Etcd(EtcdStore::connect(config).await?),
        StoreConf::Local {
            data_dir,
            lock_wait,
        } => AnyStore::Local(LocalStore::open(data_dir, *lock_wait)?),
    })
}
