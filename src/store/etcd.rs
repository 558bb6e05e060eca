//! The etcd backend of the [`Store`](super::Store) contract (issue 3).
