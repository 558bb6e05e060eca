//! The HTTP side of `ipamctl metrics`: a minimal HTTP/1.1 responder on
//! tokio's `TcpListener`, enough for Prometheus and curl, with no HTTP
//! crate.
//!
//! One request per connection (`Connection: close`). `GET` or `HEAD` of
//! `/metrics` answers the exposition text, `/` a pointer to it; other
//! paths 404, other methods 405, and anything that is not an HTTP/1.x
//! request line 400. The request head must arrive within the client
//! timeout and fit in [`MAX_HEAD`] bytes (else 408 or 431, or the
//! connection is just closed), the answer must be taken within the same
//! timeout, and at most [`MAX_CONNECTIONS`] connections are served at
//! once (further ones wait in the listen backlog). Nothing a client sends
//! can panic the process: parsing is total and every I/O error only ends
//! that connection.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::cli::MetricsArgs;
use super::error::AdminError;
use super::metrics::{Collector, ScrapeOptions};
use super::target::Target;

/// Largest request head read (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Content type of the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/metrics`.
    Metrics,
    /// `/`.
    Index,
}

/// A parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// What to answer.
    pub route: Route,
    /// `HEAD`: headers only.
    pub head_only: bool,
}

/// An HTTP error status and its reason phrase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status(pub u16, pub &'static str);

/// 400.
pub const BAD_REQUEST: Status = Status(400, "Bad Request");
/// 404.
pub const NOT_FOUND: Status = Status(404, "Not Found");
/// 405.
pub const METHOD_NOT_ALLOWED: Status = Status(405, "Method Not Allowed");
/// 408.
pub const REQUEST_TIMEOUT: Status = Status(408, "Request Timeout");
/// 431.
pub const HEAD_TOO_LARGE: Status = Status(431, "Request Header Fields Too Large");

/// Where the request head ends (after the empty line), if it is complete.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    (0..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if buf[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

/// Parses a complete request head (headers are not needed and ignored).
///
/// ```
/// use host_etcd::admin::exporter::{parse_request, Route, BAD_REQUEST, NOT_FOUND};
///
/// let r = parse_request(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
/// assert_eq!(r.route, Route::Metrics);
/// assert_eq!(parse_request(b"GET /x HTTP/1.1\r\n\r\n"), Err(NOT_FOUND));
/// assert_eq!(parse_request(b"\x16\x03\x01garbage"), Err(BAD_REQUEST));
/// ```
pub fn parse_request(head: &[u8]) -> Result<Request, Status> {
    let line_end = head.iter().position(|b| *b == b'\n').unwrap_or(head.len());
    let line = std::str::from_utf8(&head[..line_end]).map_err(|_| BAD_REQUEST)?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BAD_REQUEST);
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1")
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
    {
        return Err(BAD_REQUEST);
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Err(METHOD_NOT_ALLOWED),
    };
    let path = target.split(['?', '#']).next().unwrap_or(target);
    let route = match path {
        "/metrics" => Route::Metrics,
        "/" => Route::Index,
        _ => return Err(NOT_FOUND),
    };
    Ok(Request { route, head_only })
}

/// A full response.
pub fn response(status: Status, content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 160);
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        status.0,
        status.1,
        body.len()
    );
    if status == METHOD_NOT_ALLOWED {
        out.extend_from_slice(b"Allow: GET, HEAD\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

fn error_response(status: Status) -> Vec<u8> {
    let body = format!("{} {}\n", status.0, status.1);
    response(status, "text/plain; charset=utf-8", body.as_bytes(), false)
}

/// Reads the request head: `Ok(None)` when the client closed first.
async fn read_head(stream: &mut TcpStream) -> Result<Option<Vec<u8>>, Status> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|_| BAD_REQUEST)?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(BAD_REQUEST)
            };
        }
        buf.extend_from_slice(&chunk[..n]);
        // Only the new bytes (and 3 before them) can complete the head.
        let from = buf.len().saturating_sub(n + 3);
        if let Some(end) = head_end(&buf[from..]) {
            buf.truncate(from + end);
            return Ok(Some(buf));
        }
        if buf.len() > MAX_HEAD {
            return Err(HEAD_TOO_LARGE);
        }
    }
}

/// What `/metrics` answers: `ipamctl metrics`'s [`Collector`], or the
/// node agent's figures.
pub trait Scrape: Send + Sync + 'static {
    /// The exposition text.
    fn scrape(&self) -> impl std::future::Future<Output = Arc<String>> + Send;
}

impl Scrape for Collector {
    fn scrape(&self) -> impl std::future::Future<Output = Arc<String>> + Send {
        Collector::scrape(self)
    }
}

/// Serves one connection; every failure only ends it.
async fn serve_one<C: Scrape>(mut stream: TcpStream, collector: Arc<C>, timeout: Duration) {
    let reply = match tokio::time::timeout(timeout, read_head(&mut stream)).await {
        Err(_) => error_response(REQUEST_TIMEOUT),
        Ok(Ok(None)) => return,
        Ok(Err(status)) => error_response(status),
        Ok(Ok(Some(head))) => match parse_request(&head) {
            Err(status) => error_response(status),
            Ok(req) => match req.route {
                Route::Metrics => {
                    let text = collector.scrape().await;
                    response(
                        Status(200, "OK"),
                        CONTENT_TYPE,
                        text.as_bytes(),
                        req.head_only,
                    )
                }
                Route::Index => response(
                    Status(200, "OK"),
                    "text/plain; charset=utf-8",
                    b"host-etcd IPAM metrics: GET /metrics\n",
                    req.head_only,
                ),
            },
        },
    };
    let _ = tokio::time::timeout(timeout, async {
        stream.write_all(&reply).await?;
        stream.shutdown().await
    })
    .await;
}

/// Accepts connections forever, each served on its own task.
pub async fn serve<C: Scrape>(listener: TcpListener, collector: Arc<C>, timeout: Duration) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return; // the semaphore is never closed
        };
        match listener.accept().await {
            Ok((stream, _peer)) => {
                let collector = collector.clone();
                tokio::spawn(async move {
                    serve_one(stream, collector, timeout).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: wait, go on.
                eprintln!("ipamctl metrics: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn secs(flag: &str, v: f64, min: f64) -> Result<Duration, AdminError> {
    if !v.is_finite() || v < min || v > 86_400.0 {
        return Err(AdminError::Usage(format!(
            "{flag} {v}: must be a number of seconds in {min}..=86400"
        )));
    }
    Ok(Duration::from_secs_f64(v))
}

/// `ipamctl metrics`: resolves every network, binds `--listen`, prints
/// the address it serves on, and serves until killed.
pub async fn metrics_command(
    targets: Vec<Target>,
    args: &MetricsArgs,
    out: &mut dyn Write,
) -> Result<u8, AdminError> {
    let options = ScrapeOptions {
        cache: secs("--cache-secs", args.cache_secs, 0.0)?,
        check_interval: match args.check_interval_secs {
            None => None,
            Some(v) => Some(secs("--check-interval-secs", v, 1.0)?),
        },
        timeout: secs("--scrape-timeout-secs", args.scrape_timeout_secs, 0.001)?,
        reap: match args.reap_after {
            None => None,
            Some(after) if after.is_zero() || args.reap_interval.is_zero() => {
                return Err(AdminError::Usage(
                    "--reap-after and --reap-interval must be more than 0".into(),
                ))
            }
            Some(after) => Some((after, args.reap_interval)),
        },
    };
    let client_timeout = secs("--client-timeout-secs", args.client_timeout_secs, 0.001)?;
    let collector = Arc::new(Collector::new(targets, options)?);
    tokio::spawn(collector.clone().run_checks());
    tokio::spawn(collector.clone().run_reaper());
    let listener = TcpListener::bind(args.listen.as_str())
        .await
        .map_err(|source| AdminError::Listen {
            addr: args.listen.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| AdminError::Listen {
        addr: args.listen.clone(),
        source,
    })?;
    writeln!(
        out,
        "serving metrics of network {} on http://{local}/metrics",
        collector.networks().join(", ")
    )?;
    out.flush()?;
    serve(listener, collector, client_timeout).await;
    Ok(super::error::EXIT_OK)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn request_lines() {
        let ok = |s: &[u8]| parse_request(s).unwrap();
        assert_eq!(
            ok(b"GET /metrics HTTP/1.0\n\n"),
            Request {
                route: Route::Metrics,
                head_only: false
            }
        );
        assert!(ok(b"HEAD /metrics HTTP/1.1\r\n\r\n").head_only);
        assert_eq!(ok(b"GET / HTTP/1.1\r\n\r\n").route, Route::Index);
        assert_eq!(
            parse_request(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Err(METHOD_NOT_ALLOWED)
        );
        for bad in [
            &b""[..],
            b"\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /metrics\r\n\r\n",
            b"GET /metrics HTTP/2.0\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"get /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1 x\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\xff\xfe /metrics HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse_request(bad), Err(BAD_REQUEST), "{bad:?}");
        }
    }

    #[test]
    fn head_ends() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(head_end(b""), None);
    }

    #[test]
    fn responses() {
        let r = response(Status(200, "OK"), CONTENT_TYPE, b"x 1\n", false);
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Length: 4\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nx 1\n"), "{text}");
        let head = response(Status(200, "OK"), CONTENT_TYPE, b"x 1\n", true);
        assert!(String::from_utf8(head).unwrap().ends_with("\r\n\r\n"));
        let e = String::from_utf8(error_response(METHOD_NOT_ALLOWED)).unwrap();
        assert!(e.contains("Allow: GET, HEAD"), "{e}");
    }
}
