//! The STATUS policy setting (`statusPolicy`, `statusGraceMs`): how STATUS
//! reports a store that does not answer. The network config holds it
//! ([`super::config`]); what it does is in [`super::status`].

use std::time::Duration;

use super::error::CniError;
use super::json::Obj;

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
    /// Reads `statusPolicy` and `statusGraceMs` of the `ipam` section.
    pub(crate) fn parse(ipam: &Obj<'_>) -> Result<StatusPolicy, CniError> {
        let grace = ipam.u64("statusGraceMs")?;
        match ipam.str("statusPolicy")? {
            None | Some("grace") => Ok(StatusPolicy::Grace(
                grace.map_or(DEFAULT_GRACE, Duration::from_millis),
            )),
            Some("strict") => match grace {
                None => Ok(StatusPolicy::Strict),
                Some(_) => Err(CniError::config(
                    ipam.field("statusGraceMs"),
                    "applies to statusPolicy \"grace\" only; remove it or the strict policy",
                )),
            },
            Some(other) => Err(CniError::config(
                ipam.field("statusPolicy"),
                format!("{other:?} is not a STATUS policy (expected \"grace\" or \"strict\")"),
            )),
        }
    }

    /// The grace, `None` when every failure is reported at once.
    pub(crate) fn grace(self) -> Option<Duration> {
        match self {
            StatusPolicy::Grace(g) if !g.is_zero() => Some(g),
            _ => None,
        }
    }
}
