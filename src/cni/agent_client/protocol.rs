//! The wire protocol between the plugin and the node agent, version 1.
//!
//! It lives with the plugin's side ([`super`]) and needs nothing of the
//! crate: serde for the JSON, tokio's I/O traits for the frames. The agent
//! (`crate::agent`, feature `cli`) imports it from here.
//!
//! A connection carries **one request and one reply**, each a *frame*: a
//! `u32` big-endian length, then that many bytes of JSON (UTF-8). A frame
//! longer than [`MAX_FRAME`] is refused without reading its body.
//!
//! Requests:
//!
//! ```json
//! {"v": 1, "env": {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0",
//!                  "CNI_NETNS": "/var/run/netns/c1", "CNI_ARGS": "...", "CNI_PATH": "/opt/cni/bin"},
//!  "stdin": "<the network config, as the runtime gave it>", "ack": true}
//! {"v": 1, "op": "status"}
//! ```
//!
//! `op` is `"cni"` when absent. `env` holds the plugin's `CNI_*` variables
//! (absent ones left out; others are ignored); the agent validates them as
//! the plugin does. `ack` (optional, default `false`) asks for an
//! acknowledgement.
//!
//! Replies:
//!
//! ```json
//! {"v": 1, "ack": true}
//! {"v": 1, "stdout": "<what the plugin prints, or null>", "exit": 0}
//! {"v": 1, "status": {...}}
//! {"v": 1, "error": "<why the request was not served>", "versions": [1]}
//! ```
//!
//! **Acknowledgement.** A CNI request with `"ack": true` gets an `ack`
//! frame as soon as the agent has read, decoded and accepted it (before
//! the command runs), then its CNI reply on the same connection. A plugin
//! that sees no acknowledgement within its `agentAckMs` takes the agent
//! for frozen, closes the connection and runs the command directly
//! ([`super`]). A request without `ack` gets no `ack`
//! frame, so both sides stay compatible within version 1: an agent of an
//! earlier build ignores the field and answers with the reply only (the
//! plugin then goes direct after `agentAckMs` while that agent also runs
//! the command, which is safe but costs the agent's benefit: upgrade the
//! agent first), and a plugin of an earlier build never asks.
//!
//! A CNI reply is exactly what the plugin would have printed and its exit
//! status (0 or 1; a CNI error is a CNI reply with its error JSON). An
//! `error` reply means the command was **not run**: the request was not a
//! frame, too large, not JSON, of an unknown version (`versions` lists the
//! ones the agent speaks), not complete within the agent's read timeout, or
//! from a peer that is not allowed. The agent closes the connection after
//! every reply.
//!
//! The client keeps its side open until the reply arrives: a connection
//! closed (or half-closed) by the client while its command runs cancels
//! the command — it is not committed if it was not yet, and an ADD that
//! committed meanwhile is released again (`crate::allocator::GroupCommit`).

// The agent's half (decoding requests, encoding replies) is used by the
// agent server, built only with the `cli` feature.
#![cfg_attr(not(feature = "cli"), allow(dead_code))]

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol version this build speaks.
pub const VERSION: u64 = 1;

/// Every version this build speaks.
pub const VERSIONS: [u64; 1] = [VERSION];

/// Largest frame body accepted or sent (1 MiB).
pub const MAX_FRAME: usize = 1 << 20;

/// Default of `ipam.agentAckMs`: the longest wait for the agent's
/// acknowledgement of a request before an `auto` plugin goes direct.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_millis(250);

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection inside a frame.
    #[error("connection closed after {got} of {want} bytes of a frame")]
    Truncated {
        /// Bytes received (length prefix included).
        got: usize,
        /// Bytes the frame needed.
        want: usize,
    },
    /// The length prefix exceeds [`MAX_FRAME`].
    #[error("frame of {len} bytes exceeds the limit of {MAX_FRAME} bytes")]
    TooLarge {
        /// The announced length.
        len: usize,
    },
    /// The connection failed.
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame body; `Ok(None)` when the peer closed the connection
/// before its first byte.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len_buf = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len_buf[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(FrameError::Truncated { got, want: 4 });
        }
        got += n;
    }
    let len = u32::from_be_bytes(len_buf) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge { len });
    }
    let mut body = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = r.read(&mut body[got..]).await?;
        if n == 0 {
            return Err(FrameError::Truncated {
                got: got + 4,
                want: len + 4,
            });
        }
        got += n;
    }
    Ok(Some(body))
}

/// Writes one frame (length prefix and body in one write).
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> Result<(), FrameError> {
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge { len: body.len() });
    }
    let mut buf = Vec::with_capacity(body.len() + 4);
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(body);
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// A decoded request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Run one CNI command.
    Cni {
        /// The `CNI_*` variables.
        env: BTreeMap<String, String>,
        /// The network config (the plugin's stdin).
        stdin: String,
        /// Whether the client wants an [`Reply::Ack`] before the reply.
        ack: bool,
    },
    /// Report the agent's state.
    Status,
}

/// The wire form of a CNI request.
#[derive(Serialize, Deserialize)]
struct CniWire {
    v: u64,
    env: BTreeMap<String, String>,
    stdin: String,
    #[serde(default)]
    ack: bool,
}

impl Request {
    /// The frame body of this request.
    pub fn encode(&self) -> Vec<u8> {
        let v = match self {
            Request::Cni { env, stdin, ack } => {
                let mut v = json!({"v": VERSION, "env": env, "stdin": stdin});
                if *ack {
                    v["ack"] = json!(true);
                }
                v
            }
            Request::Status => json!({"v": VERSION, "op": "status"}),
        };
        v.to_string().into_bytes()
    }

    /// Decodes a frame body; the error is the text of the `error` reply.
    pub fn decode(body: &[u8]) -> Result<Request, String> {
        let doc: Value = serde_json::from_slice(body)
            .map_err(|e| format!("request is not JSON ({e}); expected {{\"v\":{VERSION},...}}"))?;
        let Some(obj) = doc.as_object() else {
            return Err("request is not a JSON object".into());
        };
        match obj.get("v").and_then(Value::as_u64) {
            Some(VERSION) => {}
            Some(other) => {
                return Err(format!(
                    "protocol version {other} is not spoken here; this agent speaks versions {VERSIONS:?}"
                ))
            }
            None => {
                return Err(format!(
                    "request has no protocol version \"v\"; this agent speaks versions {VERSIONS:?}"
                ))
            }
        }
        match obj.get("op").map(|op| op.as_str()) {
            None | Some(Some("cni")) => {
                let wire: CniWire = serde_json::from_value(doc)
                    .map_err(|e| format!("CNI request: {e} (needs \"env\" and \"stdin\")"))?;
                Ok(Request::Cni {
                    env: wire.env,
                    stdin: wire.stdin,
                    ack: wire.ack,
                })
            }
            Some(Some("status")) => Ok(Request::Status),
            Some(_) => Err("\"op\" must be \"cni\" or \"status\"".into()),
        }
    }
}

/// A decoded reply.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// The CNI request was read and accepted; its reply follows (sent only
    /// to a request that asks for it).
    Ack,
    /// What the plugin would print and its exit status.
    Cni {
        /// stdout (`None`: nothing).
        stdout: Option<String>,
        /// Exit status.
        exit: i32,
    },
    /// The agent's state (see `server`'s status document).
    Status(Value),
    /// The request was not served; the command did not run.
    Error {
        /// Why.
        error: String,
        /// The versions the agent speaks.
        versions: Vec<u64>,
    },
}

impl Reply {
    /// An `error` reply.
    pub fn error(error: impl Into<String>) -> Reply {
        Reply::Error {
            error: error.into(),
            versions: VERSIONS.to_vec(),
        }
    }

    /// The frame body of this reply.
    pub fn encode(&self) -> Vec<u8> {
        let v = match self {
            Reply::Ack => json!({"v": VERSION, "ack": true}),
            Reply::Cni { stdout, exit } => json!({"v": VERSION, "stdout": stdout, "exit": exit}),
            Reply::Status(s) => json!({"v": VERSION, "status": s}),
            Reply::Error { error, versions } => {
                json!({"v": VERSION, "error": error, "versions": versions})
            }
        };
        v.to_string().into_bytes()
    }

    /// Decodes a frame body.
    pub fn decode(body: &[u8]) -> Result<Reply, String> {
        let doc: Value =
            serde_json::from_slice(body).map_err(|e| format!("reply is not JSON: {e}"))?;
        if let Some(error) = doc.get("error") {
            return Ok(Reply::Error {
                error: error.as_str().unwrap_or("(no text)").to_string(),
                versions: doc
                    .get("versions")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default(),
            });
        }
        match doc.get("v").and_then(Value::as_u64) {
            Some(VERSION) => {}
            other => {
                return Err(format!(
                    "reply of protocol version {other:?}, not {VERSION}"
                ))
            }
        }
        if let Some(status) = doc.get("status") {
            return Ok(Reply::Status(status.clone()));
        }
        if doc.get("ack") == Some(&Value::Bool(true)) {
            return Ok(Reply::Ack);
        }
        let exit = doc
            .get("exit")
            .and_then(Value::as_i64)
            .and_then(|e| i32::try_from(e).ok())
            .ok_or("reply has no exit status")?;
        let stdout = match doc.get("stdout") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err("reply stdout is not a string".into()),
        };
        Ok(Reply::Cni { stdout, exit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_bad_frames_are_errors() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"{}").await.unwrap();
        write_frame(&mut buf, b"").await.unwrap();
        let mut r = &buf[..];
        assert_eq!(
            read_frame(&mut r).await.unwrap().as_deref(),
            Some(&b"{}"[..])
        );
        assert_eq!(read_frame(&mut r).await.unwrap().as_deref(), Some(&b""[..]));
        assert!(read_frame(&mut r).await.unwrap().is_none(), "clean EOF");

        let mut short = &[0u8, 0][..];
        assert!(matches!(
            read_frame(&mut short).await,
            Err(FrameError::Truncated { got: 2, want: 4 })
        ));
        let mut cut = &[0u8, 0, 0, 5, b'a'][..];
        assert!(matches!(
            read_frame(&mut cut).await,
            Err(FrameError::Truncated { got: 5, want: 9 })
        ));
        let mut huge = &u32::MAX.to_be_bytes()[..];
        assert!(matches!(
            read_frame(&mut huge).await,
            Err(FrameError::TooLarge { .. })
        ));
        let big = vec![b' '; MAX_FRAME + 1];
        assert!(write_frame(&mut Vec::new(), &big).await.is_err());
    }

    #[test]
    fn requests_round_trip_and_bad_ones_say_why() {
        let mut env = BTreeMap::new();
        env.insert("CNI_COMMAND".to_string(), "ADD".to_string());
        for ack in [false, true] {
            let req = Request::Cni {
                env: env.clone(),
                stdin: "{\"a\":1}".into(),
                ack,
            };
            assert_eq!(Request::decode(&req.encode()), Ok(req));
        }
        // A request of an earlier build (no "ack") asks for none.
        assert!(matches!(
            Request::decode(br#"{"v":1,"env":{},"stdin":""}"#),
            Ok(Request::Cni { ack: false, .. })
        ));
        assert_eq!(
            Request::decode(&Request::Status.encode()),
            Ok(Request::Status)
        );
        for (body, needle) in [
            (&b"garbage"[..], "not JSON"),
            (b"[1]", "not a JSON object"),
            (b"{}", "no protocol version"),
            (
                b"{\"v\":2,\"op\":\"status\"}",
                "version 2 is not spoken here",
            ),
            (b"{\"v\":1}", "needs \"env\" and \"stdin\""),
            (b"{\"v\":1,\"env\":{},\"stdin\":7}", "needs"),
            (b"{\"v\":1,\"op\":\"reboot\"}", "\"op\" must be"),
        ] {
            let e = Request::decode(body).expect_err("refused");
            assert!(e.contains(needle), "{e:?} lacks {needle:?}");
        }
    }

    #[test]
    fn replies_round_trip() {
        for reply in [
            Reply::Cni {
                stdout: Some("{}".into()),
                exit: 0,
            },
            Reply::Cni {
                stdout: None,
                exit: 1,
            },
            Reply::Status(json!({"healthy": true})),
            Reply::error("nope"),
            Reply::Ack,
        ] {
            assert_eq!(Reply::decode(&reply.encode()), Ok(reply));
        }
        assert!(Reply::decode(b"{\"v\":1}").is_err());
        assert!(Reply::decode(b"{\"v\":9,\"exit\":0}").is_err());
        assert!(Reply::decode(b"{\"v\":1,\"exit\":0,\"stdout\":3}").is_err());
    }
}
