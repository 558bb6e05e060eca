//! The `CNI_*` environment variables: which command, which attachment, and
//! their validation (code 4, naming the variable).
//!
//! Requirements follow the spec and the reference plugins: `ADD` and `CHECK`
//! need `CNI_CONTAINERID`, `CNI_IFNAME`, `CNI_NETNS` and `CNI_PATH`; `DEL`
//! needs the same except `CNI_NETNS`; `VERSION`, `GC` and `STATUS` need only
//! `CNI_COMMAND`.

use std::ffi::OsString;

use super::error::CniError;
use crate::allocator::OwnerId;

/// A CNI command (`CNI_COMMAND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Allocate addresses for an attachment (idempotent).
    Add,
    /// Release an attachment's addresses (unknown attachments succeed).
    Del,
    /// Verify an attachment still holds what `prevResult` says.
    Check,
    /// Report the supported spec versions.
    Version,
    /// Release every attachment not in `cni.dev/valid-attachments` (1.1.0).
    Gc,
    /// Report whether the plugin can serve ADD (1.1.0).
    Status,
}

impl Command {
    /// Parses `CNI_COMMAND` (exact, upper case as the spec writes it).
    pub fn parse(s: &str) -> Option<Command> {
        match s {
            "ADD" => Some(Command::Add),
            "DEL" => Some(Command::Del),
            "CHECK" => Some(Command::Check),
            "VERSION" => Some(Command::Version),
            "GC" => Some(Command::Gc),
            "STATUS" => Some(Command::Status),
            _ => None,
        }
    }

    /// The `CNI_COMMAND` spelling (the inverse of [`Command::parse`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Gc => "GC",
            Command::Status => "STATUS",
        }
    }
}

/// The plugin's environment, as read at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID`, validated when present.
    pub container_id: Option<String>,
    /// `CNI_IFNAME`, validated when present.
    pub ifname: Option<String>,
    /// `CNI_NETNS` (unused by an IPAM plugin beyond being required).
    pub netns: Option<String>,
    /// `CNI_ARGS`, unparsed (see `super::args`).
    pub args: Option<String>,
    /// `CNI_PATH` (unused by this plugin beyond being required).
    pub path: Option<String>,
}

/// A complete environment for `command` (container `c1`, `eth0`, a netns
/// path, `CNI_PATH`, no `CNI_ARGS`), for unit tests to adjust with struct
/// update syntax.
#[cfg(test)]
pub(crate) fn test_env(command: Command) -> Env {
    Env {
        command,
        container_id: Some("c1".into()),
        ifname: Some("eth0".into()),
        netns: Some("/var/run/netns/c1".into()),
        args: None,
        path: Some("/opt/cni/bin".into()),
    }
}

impl Env {
    /// Reads the process environment.
    pub fn from_process() -> Result<Env, CniError> {
        Env::from_lookup(|k| std::env::var_os(k))
    }

    /// Reads and validates the variables through `lookup` (the process
    /// environment, or a map in tests). Empty values count as absent.
    pub fn from_lookup<F>(lookup: F) -> Result<Env, CniError>
    where
        F: Fn(&str) -> Option<OsString>,
    {
        let get = |var: &'static str| -> Result<Option<String>, CniError> {
            match lookup(var) {
                None => Ok(None),
                Some(v) if v.is_empty() => Ok(None),
                Some(v) => v.into_string().map(Some).map_err(|v| CniError::InvalidEnv {
                    var: var.into(),
                    value: v.to_string_lossy().into_owned(),
                    reason: "not valid UTF-8".into(),
                }),
            }
        };
        let raw_command = get("CNI_COMMAND")?.ok_or(CniError::MissingEnv { var: "CNI_COMMAND" })?;
        let command = Command::parse(&raw_command).ok_or_else(|| CniError::InvalidEnv {
            var: "CNI_COMMAND".into(),
            value: raw_command.clone(),
            reason: "expected ADD, DEL, CHECK, VERSION, GC or STATUS".into(),
        })?;
        let env = Env {
            command,
            container_id: get("CNI_CONTAINERID")?,
            ifname: get("CNI_IFNAME")?,
            netns: get("CNI_NETNS")?,
            args: get("CNI_ARGS")?,
            path: get("CNI_PATH")?,
        };
        env.validate()?;
        Ok(env)
    }

    /// Checks presence per command and the syntax of container ID and ifname.
    fn validate(&self) -> Result<(), CniError> {
        if let Some(id) = &self.container_id {
            check_container_id(id)?;
        }
        if let Some(name) = &self.ifname {
            check_ifname(name)?;
        }
        let required: &[(&'static str, bool)] = match self.command {
            Command::Add | Command::Check => &[
                ("CNI_CONTAINERID", self.container_id.is_some()),
                ("CNI_NETNS", self.netns.is_some()),
                ("CNI_IFNAME", self.ifname.is_some()),
                ("CNI_PATH", self.path.is_some()),
            ],
            Command::Del => &[
                ("CNI_CONTAINERID", self.container_id.is_some()),
                ("CNI_IFNAME", self.ifname.is_some()),
                ("CNI_PATH", self.path.is_some()),
            ],
            Command::Version | Command::Gc | Command::Status => &[],
        };
        match required.iter().find(|(_, present)| !present) {
            Some((var, _)) => Err(CniError::MissingEnv { var }),
            None => Ok(()),
        }
    }

    /// The attachment (`CNI_CONTAINERID`, `CNI_IFNAME`) this command acts on.
    pub fn owner(&self) -> Result<OwnerId, CniError> {
        let container_id = self.container_id.clone().ok_or(CniError::MissingEnv {
            var: "CNI_CONTAINERID",
        })?;
        let ifname = self
            .ifname
            .clone()
            .ok_or(CniError::MissingEnv { var: "CNI_IFNAME" })?;
        Ok(OwnerId {
            container_id,
            ifname,
        })
    }
}

/// A container ID: non-empty; alphanumerics, `_`, `.`, `-` only (so it is
/// also safe inside a store key).
pub fn check_container_id(id: &str) -> Result<(), CniError> {
    let bad = |reason: &str| CniError::InvalidEnv {
        var: "CNI_CONTAINERID".into(),
        value: id.into(),
        reason: reason.into(),
    };
    if id.is_empty() {
        return Err(bad("empty"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(bad(&format!(
            "character {c:?} not allowed (alphanumerics, '_', '.', '-' only)"
        )));
    }
    Ok(())
}

/// An interface name per Linux rules: non-empty, at most 15 bytes, not `.`
/// or `..`, no `/`, `:` or whitespace.
pub fn check_ifname(name: &str) -> Result<(), CniError> {
    let bad = |reason: &str| CniError::InvalidEnv {
        var: "CNI_IFNAME".into(),
        value: name.into(),
        reason: reason.into(),
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > 15 {
        return Err(bad("longer than 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(bad("'.' and '..' are not interface names"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace())
    {
        return Err(bad(&format!("character {c:?} not allowed")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Result<Env, CniError> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        Env::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn command_spelling_round_trips() {
        use Command::*;
        for c in [Add, Del, Check, Version, Gc, Status] {
            assert_eq!(Command::parse(c.as_str()), Some(c));
        }
        assert_eq!(Command::parse("add"), None);
    }

    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc_1.2-3"),
        ("CNI_NETNS", "/var/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        ("CNI_ARGS", "IgnoreUnknown=1"),
    ];

    fn without(
        vars: &[(&'static str, &'static str)],
        drop: &str,
    ) -> Vec<(&'static str, &'static str)> {
        vars.iter().filter(|(k, _)| *k != drop).copied().collect()
    }

    fn missing_var(r: Result<Env, CniError>) -> Option<&'static str> {
        match r {
            Err(CniError::MissingEnv { var }) => Some(var),
            _ => None,
        }
    }

    fn invalid_var(r: Result<Env, CniError>) -> Option<String> {
        match r {
            Err(CniError::InvalidEnv { var, .. }) => Some(var),
            _ => None,
        }
    }

    #[test]
    fn full_add_environment_parses() {
        let e = env(ADD).expect("valid");
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.args.as_deref(), Some("IgnoreUnknown=1"));
        let o = e.owner().expect("owner");
        assert_eq!(o.container_id, "abc_1.2-3");
        assert_eq!(o.ifname, "eth0");
    }

    #[test]
    fn missing_variables_are_named() {
        for var in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"] {
            assert_eq!(missing_var(env(&without(ADD, var))), Some(var));
        }
        assert_eq!(
            missing_var(env(&without(ADD, "CNI_COMMAND"))),
            Some("CNI_COMMAND")
        );
    }

    #[test]
    fn del_does_not_need_netns() {
        let mut vars = without(ADD, "CNI_NETNS");
        vars[0] = ("CNI_COMMAND", "DEL");
        assert_eq!(env(&vars).map(|e| e.command).ok(), Some(Command::Del));
    }

    #[test]
    fn version_gc_status_need_only_the_command() {
        for (c, cmd) in [
            ("VERSION", Command::Version),
            ("GC", Command::Gc),
            ("STATUS", Command::Status),
        ] {
            assert_eq!(
                env(&[("CNI_COMMAND", c)]).map(|e| e.command).ok(),
                Some(cmd)
            );
        }
    }

    #[test]
    fn unknown_command_is_code_4() {
        let r = env(&[("CNI_COMMAND", "add")]);
        assert_eq!(invalid_var(r), Some("CNI_COMMAND".to_string()));
    }

    #[test]
    fn container_id_characters() {
        assert!(check_container_id("3f6940ab5ab4_x.y-z").is_ok());
        for bad in ["a b", "a/b", "a;b", "é", "../x"] {
            let mut vars = ADD.to_vec();
            vars[1] = ("CNI_CONTAINERID", bad);
            assert_eq!(
                invalid_var(env(&vars)),
                Some("CNI_CONTAINERID".to_string()),
                "{bad}"
            );
        }
    }

    #[test]
    fn ifname_rules() {
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("a23456789012345").is_ok());
        for bad in [
            "a234567890123456",
            ".",
            "..",
            "eth/0",
            "eth:0",
            "eth 0",
            "eth\t0",
        ] {
            let mut vars = ADD.to_vec();
            vars[3] = ("CNI_IFNAME", bad);
            let e = env(&vars);
            assert_eq!(invalid_var(e), Some("CNI_IFNAME".to_string()), "{bad:?}");
        }
    }

    #[test]
    fn empty_value_counts_as_missing() {
        let mut vars = ADD.to_vec();
        vars[3] = ("CNI_IFNAME", "");
        assert_eq!(missing_var(env(&vars)), Some("CNI_IFNAME"));
    }
}
