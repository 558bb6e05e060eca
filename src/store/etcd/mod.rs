//! The etcd backend of the [`Store`] contract, on the etcd-client crate.
//!
//! * [`Store::read`] sends **one** etcd `Txn` with no compares whose success
//!   branch holds one range request per [`Read`]; etcd evaluates them all on
//!   one revision, so the answers form one snapshot.
//! * [`Store::txn`] sends one etcd `Txn`: the [`Compare`](super::Compare)s
//!   become `create_revision == 0` / `mod_revision == r` compares, the
//!   [`Op`]s the success branch, and a get of every
//!   [`Txn::read_on_conflict`] key the failure branch, so a conflict is
//!   answered in the same round trip.
//! * Every call is bounded by `request_timeout`; errors are mapped into
//!   [`StoreError`] in `error`. etcd types never leave this module.
//!
//! etcd limits a transaction to `--max-txn-ops` operations per branch
//! (default 128) and a request to `--max-request-bytes` (default 1.5 MiB);
//! beyond those it refuses the request ([`StoreError::Refused`]).
//!
//! Connecting does not contact etcd unless a user is configured (then it
//! authenticates); an unreachable cluster shows on the first call.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, GetOptions, KeyValue, Txn as EtcdTxn, TxnOp,
    TxnOpResponse, TxnResponse,
};

use super::{Expect, Key, Op, Read, ReadResult, Store, StoreError, Txn, TxnOutcome, Versioned};

mod config;
mod error;
mod lease;

pub use config::EtcdConfig;
use error::{map_error, Phase};

/// Largest response accepted from etcd (tonic's default is 4 MiB; a range
/// read of many chunks may exceed it).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// How often one call may be re-sent after the connection to the chosen
/// endpoint was refused (the request never left this process).
const MAX_UNSENT_RETRIES: usize = 10;

/// A [`Store`] on an etcd cluster. Cheap to share by reference across tasks.
pub struct EtcdStore {
    /// Boxed: the client is large, and [`AnyStore`](super::any::AnyStore)
    /// holds this store inline.
    client: Box<Client>,
    /// Endpoint URLs joined by ",", for error messages.
    endpoints: String,
    /// Number of endpoints.
    members: usize,
    request_timeout: Duration,
    /// Added to errors of TLS connections the server drops, when no client
    /// certificate is configured.
    hint: Option<&'static str>,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects (bounded by `dial_timeout`). Checks the configuration and
    /// reads the TLS files; with a username, also authenticates.
    ///
    /// Errors: [`StoreError::Config`] for a bad endpoint or unreadable or
    /// invalid TLS file (naming it), [`StoreError::Refused`] for rejected
    /// credentials, [`StoreError::Unavailable`] when etcd cannot be reached
    /// in time.
    pub async fn connect(config: &EtcdConfig) -> Result<EtcdStore, StoreError> {
        let urls = config.endpoint_urls()?;
        let options = config.connect_options()?;
        let endpoints = urls.join(",");
        let connecting = Client::connect(&urls, Some(options));
        let client = match tokio::time::timeout(config.dial_timeout, connecting).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                return Err(match map_error(e, Phase::Connect, "connect", &endpoints) {
                    StoreError::Config(m) if config.uses_tls() => {
                        StoreError::Config(format!("{m} (TLS files: {})", config.tls_files()))
                    }
                    other => other,
                });
            }
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "etcd connect at {endpoints} timed out after {:?}",
                    config.dial_timeout
                )));
            }
        };
        let hint = (config.uses_tls() && config.cert_file.is_none()).then_some(
            "the server may require a client certificate: cert_file and key_file are not set",
        );
        Ok(EtcdStore {
            client: Box::new(client),
            endpoints,
            members: urls.len(),
            request_timeout: config.request_timeout,
            hint,
        })
    }

    /// A store on a client the embedder already has (connected, with its
    /// own TLS and credentials), sharing its connections: no connect, no
    /// check. From `config` only the request deadline
    /// ([`EtcdConfig::request_timeout`]) and the endpoints are taken; the
    /// endpoints name the cluster in error messages (give the ones the
    /// client was built with) and, when there are several, let a request
    /// the chosen member refused before it was sent go to another one.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use host_etcd::store::etcd::{EtcdConfig, EtcdStore};
    ///
    /// let endpoints = ["http://10.0.0.1:2379", "http://10.0.0.2:2379"];
    /// let client = etcd_client::Client::connect(endpoints, None).await?;
    /// let config = EtcdConfig::default()
    ///     .with_endpoints(endpoints)
    ///     .with_request_timeout(Duration::from_secs(5));
    /// let store = EtcdStore::from_client(client, &config);
    /// # drop(store);
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_client(client: Client, config: &EtcdConfig) -> EtcdStore {
        EtcdStore {
            client: Box::new(client),
            endpoints: config.endpoints.join(","),
            members: config.endpoints.len(),
            request_timeout: config.request_timeout,
            hint: None,
        }
    }

    /// The endpoint URLs this store talks to, comma-separated.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// Sends one etcd transaction, bounded by `request_timeout`.
    ///
    /// The client balances requests over every endpoint. A member that is
    /// down refuses the connection, so a request routed to it was never
    /// sent; such a request is sent again (to another endpoint, while the
    /// deadline lasts, at most [`MAX_UNSENT_RETRIES`] times). Nothing that
    /// may have reached etcd is ever resent here: callers converge with
    /// compares (contract point 6).
    async fn send(&self, what: &str, txn: EtcdTxn) -> Result<TxnResponse, StoreError> {
        let kv = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        let retries = if self.members > 1 {
            MAX_UNSENT_RETRIES
        } else {
            0
        };
        let call = async move {
            let mut attempt = 0;
            loop {
                match kv.clone().txn(txn.clone()).await {
                    Err(e) if attempt < retries && error::never_sent(&e) => attempt += 1,
                    other => return other,
                }
            }
        };
        match tokio::time::timeout(self.request_timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let dropped = error::connection_dropped(&e);
                let mapped = map_error(e, Phase::Request, what, &self.endpoints);
                Err(self.with_hint(mapped, dropped))
            }
            Err(_) => Err(StoreError::Unavailable(format!(
                "etcd {what} at {} timed out after {:?}",
                self.endpoints, self.request_timeout
            ))),
        }
    }

    /// Adds the missing-client-certificate hint to a dropped TLS connection
    /// (`dropped`: [`error::connection_dropped`] of the etcd error).
    fn with_hint(&self, e: StoreError, dropped: bool) -> StoreError {
        match (e, &self.hint) {
            (StoreError::Unavailable(m), Some(hint)) if dropped => {
                StoreError::Unavailable(format!("{m} ({hint})"))
            }
            (e, _) => e,
        }
    }

    fn corrupt(&self, detail: String) -> StoreError {
        StoreError::CorruptDatabase {
            path: self.endpoints.clone().into(),
            detail,
        }
    }

    /// A stored key-value pair as the seam's types.
    fn versioned(&self, kv: KeyValue) -> Result<(Key, Versioned), StoreError> {
        let mod_revision = kv.mod_revision();
        let create_revision = kv.create_revision();
        let (key, value) = kv.into_key_value();
        let key = String::from_utf8(key).map_err(|e| {
            self.corrupt(format!(
                "key {:?} is not UTF-8",
                String::from_utf8_lossy(e.as_bytes())
            ))
        })?;
        Ok((
            key,
            Versioned {
                value,
                mod_revision,
                create_revision,
            },
        ))
    }

    /// The value of `key` from a get response (absent when not found).
    fn single(
        &self,
        key: &str,
        resp: Option<TxnOpResponse>,
    ) -> Result<Option<Versioned>, StoreError> {
        let Some(TxnOpResponse::Get(mut get)) = resp else {
            return Err(self.unexpected(key));
        };
        for kv in get.take_kvs() {
            let (k, v) = self.versioned(kv)?;
            if k == key {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    fn unexpected(&self, key: &str) -> StoreError {
        StoreError::Unavailable(format!(
            "etcd at {} answered the request for key {key:?} with a response of the wrong shape",
            self.endpoints
        ))
    }

    /// The keys, `more` and key count of a range read's answer, the next
    /// of `answers` when the read was `sent` (an empty interval, never
    /// sent, has none).
    fn range_answer(
        &self,
        start: &str,
        sent: bool,
        answers: &mut impl Iterator<Item = TxnOpResponse>,
    ) -> Result<RangeAnswer, StoreError> {
        if !sent {
            return Ok((Vec::new(), false, 0));
        }
        let Some(TxnOpResponse::Get(mut get)) = answers.next() else {
            return Err(self.unexpected(start));
        };
        let (more, total) = (get.more(), u64::try_from(get.count()).unwrap_or(0));
        let kvs = get
            .take_kvs()
            .into_iter()
            .map(|kv| self.versioned(kv))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((kvs, more, total))
    }
}

/// A range read's keys, whether more remain, and the interval's key count.
type RangeAnswer = (Vec<(Key, Versioned)>, bool, u64);

/// The etcd form of a read, or `None` for a range read whose interval is
/// empty (answered without asking etcd). etcd reads an empty `range_end`
/// as "this key only" and `"\0"` as "to the end", so those never reach it.
/// A [`Read::Changed`] is a range read with a `min_mod_revision` filter,
/// which etcd applies after counting (its `count` is every key of the
/// interval) and before the limit.
fn read_op(read: &Read) -> Option<TxnOp> {
    let (start, end, limit, after) = match read {
        Read::Get(key) => return Some(TxnOp::get(key.as_str(), None)),
        Read::Range { start, end, limit } => (start, end, limit, 0),
        Read::Changed {
            start,
            end,
            after,
            limit,
        } => (start, end, limit, *after),
    };
    // Keys are non-empty, so every key is >= "\0": an empty start means "\0".
    let start = if start.is_empty() { "\0" } else { start };
    if end.as_str() <= start {
        return None;
    }
    let limit = i64::try_from(*limit).unwrap_or(i64::MAX);
    let options = GetOptions::new().with_range(end.as_str()).with_limit(limit);
    // 0 means "no filter" to etcd, as `after <= 0` means here.
    let options = if after > 0 {
        options.with_min_mod_revision(after.saturating_add(1))
    } else {
        options
    };
    Some(TxnOp::get(start, Some(options)))
}

/// The etcd form of a [`Compare`](super::Compare). etcd compares an absent
/// key as if its revisions were 0, so `ModRevision(r)` with `r <= 0` (which
/// the contract says never holds) becomes `mod_revision < 0`: always false.
fn compare(c: &super::Compare) -> EtcdCompare {
    let key = c.key.as_str();
    match &c.expect {
        Expect::Absent => EtcdCompare::create_revision(key, CompareOp::Equal, 0),
        Expect::ModRevision(r) if *r <= 0 => EtcdCompare::mod_revision(key, CompareOp::Less, 0),
        Expect::ModRevision(r) => EtcdCompare::mod_revision(key, CompareOp::Equal, *r),
        // etcd fails a value compare on an absent key, as the contract says.
        Expect::Value(bytes) => EtcdCompare::value(key, CompareOp::Equal, bytes.clone()),
    }
}

/// The ops with only the last op per key kept (at the position of the
/// key's first op). etcd refuses a transaction that writes one key twice
/// ("duplicate key given in txn request"); the contract says the last op
/// wins, and ops on different keys commute, so this is the same effect.
/// One difference remains: `Delete(k), Put(k)` on a present key becomes a
/// plain put, which keeps `k`'s `create_revision`.
fn last_op_per_key(ops: Vec<Op>) -> Vec<TxnOp> {
    let mut slot: HashMap<Key, usize> = HashMap::with_capacity(ops.len());
    let mut kept: Vec<Op> = Vec::with_capacity(ops.len());
    for op in ops {
        let key = match &op {
            Op::Put(k, _) | Op::Delete(k) => k.clone(),
        };
        match slot.get(&key) {
            Some(&i) => kept[i] = op,
            None => {
                slot.insert(key, kept.len());
                kept.push(op);
            }
        }
    }
    kept.into_iter()
        .map(|op| match op {
            Op::Put(key, value) => TxnOp::put(key, value, None),
            Op::Delete(key) => TxnOp::delete(key, None),
        })
        .collect()
}

impl Store for EtcdStore {
    async fn read(&self, reads: &[Read]) -> Result<Vec<ReadResult>, StoreError> {
        let mut ops = Vec::with_capacity(reads.len());
        let mut sent = Vec::with_capacity(reads.len());
        for read in reads {
            let op = read_op(read);
            sent.push(op.is_some());
            ops.extend(op);
        }
        let (mut answers, revision) = if ops.is_empty() {
            (Vec::new().into_iter(), 0)
        } else {
            let resp = self.send("read", EtcdTxn::new().and_then(ops)).await?;
            let revision = resp.header().map_or(0, |h| h.revision());
            (resp.op_responses().into_iter(), revision)
        };
        let mut results = Vec::with_capacity(reads.len());
        for (read, sent) in reads.iter().zip(sent) {
            let result = match read {
                Read::Get(key) => ReadResult::Get(self.single(key, answers.next())?),
                Read::Range { start, .. } => {
                    let (kvs, more, _) = self.range_answer(start, sent, &mut answers)?;
                    ReadResult::Range { kvs, more }
                }
                Read::Changed { start, .. } => {
                    let (kvs, more, total) = self.range_answer(start, sent, &mut answers)?;
                    let revision = if sent { revision } else { 0 };
                    ReadResult::Changed {
                        kvs,
                        more,
                        total,
                        revision,
                    }
                }
            };
            results.push(result);
        }
        Ok(results)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let compares: Vec<EtcdCompare> = txn.compares.iter().map(compare).collect();
        let success = last_op_per_key(txn.ops);
        let failure: Vec<TxnOp> = txn
            .read_on_conflict
            .iter()
            .map(|key| TxnOp::get(key.as_str(), None))
            .collect();
        let request = EtcdTxn::new()
            .when(compares)
            .and_then(success)
            .or_else(failure);
        let mut resp = self.send("txn", request).await?;
        if resp.succeeded() {
            let revision = resp.take_header().map(|h| h.revision()).ok_or_else(|| {
                StoreError::Unavailable(format!(
                    "etcd at {} answered a txn without a response header",
                    self.endpoints
                ))
            })?;
            return Ok(TxnOutcome::Committed { revision });
        }
        let mut answers = resp.op_responses().into_iter();
        let mut current = Vec::with_capacity(txn.read_on_conflict.len());
        for key in txn.read_on_conflict {
            let value = self.single(&key, answers.next())?;
            current.push((key, value));
        }
        Ok(TxnOutcome::Conflict { current })
    }
}
