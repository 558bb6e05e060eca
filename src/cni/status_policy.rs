//! The STATUS policy setting (`statusPolicy`, `statusGraceMs`): how STATUS
//! reports a store that does not answer. The network config holds it
//! ([`super::config`]); what it does is in [`super::status`].

use std::time::Duration;

/// Default `statusGraceMs`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);

/// How STATUS reports a store that does not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusPolicy {
    /// Code 50 only once the failure streak is this old (`statusPolicy`
    /// `"grace"`, the default).
    Grace(Duration),
    /// Code 50 on every failure (`statusPolicy` `"strict"`).
    Strict,
}

impl Default for StatusPolicy {
    fn default() -> Self {
        StatusPolicy::Grace(DEFAULT_GRACE)
    }
}

impl StatusPolicy {
    /// The grace, `None` when every failure is reported at once.
    pub(crate) fn grace(self) -> Option<Duration> {
        match self {
            StatusPolicy::Grace(g) if !g.is_zero() => Some(g),
            _ => None,
        }
    }
}
