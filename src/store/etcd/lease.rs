//! etcd leases for node liveness: the one thing outside the [`Store`]
//! contract, used only by the node agent's liveness key
//! (`crate::liveness`). A key attached to a lease is deleted by etcd when
//! the lease is not kept alive for its TTL.
//!
//! [`Store`]: crate::store::Store

use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn as EtcdTxn, TxnOp};

use super::error::{map_error, Phase};
use super::EtcdStore;
use crate::store::StoreError;

impl EtcdStore {
    /// Grants a lease of `ttl` (whole seconds, at least 1); its id.
    pub async fn grant_lease(&self, ttl: Duration) -> Result<i64, StoreError> {
        let secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let mut lease = self.client.lease_client();
        let call = lease.grant(secs, None);
        match tokio::time::timeout(self.request_timeout, call).await {
            Ok(Ok(r)) => Ok(r.id()),
            Ok(Err(e)) => Err(map_error(e, Phase::Request, "lease grant", &self.endpoints)),
            Err(_) => Err(self.timed_out("lease grant")),
        }
    }

    /// Renews lease `id` once; the TTL left in seconds (0: the lease has
    /// expired and is gone).
    pub async fn keep_lease_alive(&self, id: i64) -> Result<i64, StoreError> {
        let mut lease = self.client.lease_client();
        let call = async move {
            let (mut keeper, mut stream) = lease.keep_alive(id).await?;
            keeper.keep_alive().await?;
            stream.message().await
        };
        match tokio::time::timeout(self.request_timeout, call).await {
            Ok(Ok(Some(r))) => Ok(r.ttl()),
            Ok(Ok(None)) => Err(StoreError::Unavailable(format!(
                "etcd lease keep-alive at {}: the stream closed",
                self.endpoints
            ))),
            Ok(Err(e)) => Err(map_error(
                e,
                Phase::Request,
                "lease keep-alive",
                &self.endpoints,
            )),
            Err(_) => Err(self.timed_out("lease keep-alive")),
        }
    }

    /// Puts `key` = `value` attached to lease `lease`, as a compare-and-swap:
    /// only when the key is absent or already attached to this lease (a key
    /// held by another lease, e.g. a second agent with the same node name,
    /// is left alone). Whether it was written.
    pub async fn put_leased(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: i64,
    ) -> Result<bool, StoreError> {
        let put = TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease)));
        let absent = EtcdTxn::new()
            .when(vec![Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then(vec![put.clone()]);
        let own = EtcdTxn::new()
            .when(vec![Compare::lease(key, CompareOp::Equal, lease)])
            .and_then(vec![put]);
        for txn in [absent, own] {
            if self.send("leased put", txn).await?.succeeded() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn timed_out(&self, what: &str) -> StoreError {
        StoreError::Unavailable(format!(
            "etcd {what} at {} timed out after {:?}",
            self.endpoints, self.request_timeout
        ))
    }
}
