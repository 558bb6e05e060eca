//! What one invocation prints and how it exits: the [`Response`] the
//! direct path ([`super::command`]) and the node agent's answer
//! ([`super::agent_client`]) both end in.

/// What the plugin prints and how it exits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Text for stdout (a result, the VERSION answer, or an error JSON).
    pub stdout: Option<String>,
    /// Text for stderr: a failure STATUS did not report (within its grace),
    /// a log file that cannot be written. Never needed to read the result.
    pub stderr: Option<String>,
    /// Process exit code: 0 on success, 1 on error.
    pub exit_code: i32,
}
