//! Sticky addresses, the administrative side: list the bindings DELs left
//! ([`Allocator::bindings`]), delete one pod's
//! ([`Allocator::release_binding`]) or every expired one
//! ([`Allocator::expire_bindings`]).
//!
//! The protocol side — a DEL writes a [`Binding`] in the transaction that
//! frees the addresses, the pod's next ADD takes the still-free addresses
//! back and deletes it in its own transaction — is in `plan::sticky`
//! (`sticky_step`, `pick_sticky`, `sticky_bind`). Every deletion here is planned by
//! [`plan::plan_drop_binding`] and run by the one retry loop of `engine`: a
//! compare-and-swap on the binding, so a binding rewritten meanwhile (a
//! newer DEL) is never deleted by an expiry that saw the older one.
//!
//! `check` does not look at bindings: they are preferences, not holdings
//! (the chunk bits stay the truth). A binding that does not decode is
//! listed with its error, skipped by expiry and by ADD, and deleted by
//! [`Allocator::release_binding`].

use super::plan;
use super::state::Pending;
use super::{AllocError, Allocator, Binding};
use crate::store::Store;

/// A stored binding: its key, and its value or why the value does not
/// decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingEntry {
    /// The key (`{p}/{net}/sticky/{namespace}/{name}/{ifname}`).
    pub key: String,
    /// The decoded binding, or the decoding error.
    pub binding: Result<Binding, String>,
}

impl<S: Store> Allocator<S> {
    /// Every stored binding of the network, in key order (whether or not
    /// sticky addresses are on in this allocator's options).
    pub async fn bindings(&self) -> Result<Vec<BindingEntry>, AllocError> {
        Ok(self
            .scan(&self.keyspace.sticky_prefix(), 1000)
            .await?
            .into_iter()
            .map(|(key, v)| BindingEntry {
                binding: serde_json::from_slice(&v.value).map_err(|e| e.to_string()),
                key,
            })
            .collect())
    }

    /// Deletes the bindings of pod `namespace`/`name` (every interface,
    /// corrupt ones included): its next container gets fresh addresses.
    /// Returns what was deleted.
    pub async fn release_binding(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<BindingEntry>, AllocError> {
        let prefix = self.keyspace.sticky_pod_prefix(namespace, name)?;
        let mut out = Vec::new();
        for (key, _) in self.scan(&prefix, 1000).await? {
            if let Some(binding) = self.drop_binding(&key, None).await? {
                out.push(BindingEntry { key, binding });
            }
        }
        Ok(out)
    }

    /// Deletes every binding expired at `now` (seconds since the epoch),
    /// each by a compare-and-swap that re-checks its expiry; returns the
    /// bindings deleted. Corrupt bindings are left alone.
    pub async fn expire_bindings(&self, now: u64) -> Result<Vec<Binding>, AllocError> {
        let mut out = Vec::new();
        for entry in self.bindings().await? {
            if !matches!(&entry.binding, Ok(b) if b.expired(now)) {
                continue;
            }
            if let Some(Ok(b)) = self.drop_binding(&entry.key, Some(now)).await? {
                out.push(b);
            }
        }
        Ok(out)
    }

    async fn drop_binding(
        &self,
        key: &str,
        expired_at: Option<u64>,
    ) -> Result<Option<Result<Binding, String>>, AllocError> {
        let key = key.to_string();
        self.run(vec![Pending::Get(key.clone())], &[], |_, known| {
            plan::plan_drop_binding(known, &key, expired_at)
        })
        .await
    }
}
