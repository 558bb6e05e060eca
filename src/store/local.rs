//! The embedded single-host backend (`dataDir`) of the [`Store`](super::Store) contract (issue 5).
