//! The time bound of one command, shared by the direct path
//! ([`super::command`]), the plugin's exchange with the node agent
//! ([`super::agent_client`]) and the agent's own run of the command
//! (`crate::agent`): [`deadline`] and the error when it passes,
//! [`timed_out`].

use std::time::Duration;

use super::config::{NetConf, StoreConf};
use super::env::Command;
use super::error::CniError;
use crate::store::StoreError;

/// The whole deadline of one command: the budget plus the connect
/// allowance of its store.
pub fn deadline(conf: &NetConf) -> Duration {
    conf.ipam.budget + connect_allowance(&conf.ipam.store)
}

/// The error for a command that did not finish within `deadline`.
pub fn timed_out(command: Command, deadline: Duration) -> CniError {
    let budget_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
    match command {
        // A store that does not answer: `command::conclude` applies the
        // STATUS policy to it like to any other store failure.
        Command::Status => CniError::Store(StoreError::Unavailable(format!(
            "no answer within {budget_ms} ms"
        ))),
        _ => CniError::BudgetExceeded { budget_ms },
    }
}

/// Time allowed for connecting on top of the operation budget.
fn connect_allowance(store: &StoreConf) -> Duration {
    match store {
        StoreConf::Etcd(c) => c.dial_timeout,
        StoreConf::Local { lock_wait, .. } => *lock_wait,
    }
}
