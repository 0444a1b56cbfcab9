//! JSON payloads of the control frames. Unknown fields are rejected, so a
//! newer peer's extension is an explicit error, never silently ignored.

use serde::{Deserialize, Serialize};

/// Session-0 greeting, both ways.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    pub version: u8,
    /// `ignis-agent <version>` or `ignis <version>`.
    pub peer: String,
}

/// What an [`crate::Kind::Open`] frame asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Exec(ExecRequest),
    /// Stdin carries a tar stream unpacked at `path` (see [`CopyRequest`]).
    CopyIn(CopyRequest),
    /// Stdout carries a tar stream of `path`.
    CopyOut(CopyRequest),
    /// Clean shutdown: sync, stop the workload or the image's init, unmount,
    /// power off. Answered with Exit 0 before it happens.
    Shutdown,
    /// Fork-time identity change; answered with Exit 0 or Error.
    Configure(NetConfig),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    /// `KEY=VALUE` added to (and overriding) the default environment.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`.
    #[serde(default)]
    pub user: Option<String>,
    /// Run on a pseudo-terminal (stdout carries both streams).
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub rows: u16,
    #[serde(default)]
    pub cols: u16,
    /// Whether stdin frames will come (otherwise stdin is /dev/null).
    #[serde(default)]
    pub stdin: bool,
}

/// `docker cp` semantics: when `path` is an existing directory the tar's
/// entries land inside it; otherwise the tar's top-level entry is renamed
/// to `path`'s last component in its (existing) parent directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyRequest {
    pub path: String,
    /// CopyOut: a symlink at `path` itself is archived as its target
    /// (`cp -L`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow_link: bool,
}

/// Fork-time hooks: every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    #[serde(default)]
    pub hostname: Option<String>,
    /// `a.b.c.d/prefix` for eth0.
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub mac: Option<String>,
    /// `addr/prefix` for eth0's IPv6 address, replacing the global ones it
    /// has (a fork's source's); absent when the VM has no IPv6 (so older
    /// agents, which know no such field, are still understood).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    /// Entropy (hex) mixed into the kernel RNG, which is then reseeded.
    #[serde(default)]
    pub entropy: Option<String>,
    /// Wall clock to step to, nanoseconds since the epoch.
    #[serde(default)]
    pub clock_ns: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitMsg {
    /// Exit status, 128+signal when killed (as a shell reports it).
    pub code: i32,
    #[serde(default)]
    pub signal: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorMsg {
    pub message: String,
    /// For exec: the exit code a shell would give (126 cannot run, 127 not
    /// found).
    #[serde(default)]
    pub code: Option<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_and_strict() {
        let r = Request::Exec(ExecRequest {
            argv: vec!["sh".into()],
            tty: true,
            ..Default::default()
        });
        let j = serde_json::to_string(&r).unwrap();
        assert!(j.starts_with(r#"{"op":"exec","argv":["sh"]"#), "{j}");
        assert_eq!(serde_json::from_str::<Request>(&j).unwrap(), r);
        assert!(serde_json::from_str::<Request>(r#"{"op":"exec","argv":[],"evil":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"format_disk"}"#).is_err());
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"shutdown"}"#).unwrap(),
            Request::Shutdown
        );
    }
}
