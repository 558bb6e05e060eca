//! The HTTP side of both Prometheus endpoints, `ipamctl metrics` and the
//! node agent's `--metrics-listen`: hyper's HTTP/1 server (linked anyway,
//! through tonic) on tokio's `TcpListener`, enough for Prometheus and curl.
//!
//! One request per connection (`connection: close`). `GET` or `HEAD` of
//! `/metrics` answers the exposition text, `/` a pointer to it; other
//! paths 404, other methods 405, and anything that is not an HTTP/1.x
//! request with a method in capitals and a path as its target 400 (an
//! HTTP/2 connection preface is only closed: hyper's choice). The
//! request head must arrive within the client timeout and fit in
//! [`MAX_HEAD`] bytes (else 408 or 431), the answer must be taken within
//! the same timeout, and at most [`MAX_CONNECTIONS`] connections are
//! served at once (further ones wait in the listen backlog). Nothing a
//! client sends can panic the process: every error only ends that
//! connection.
//!
//! What `/metrics` answers comes from a [`Scrape`] through the one
//! [`ScrapeCache`]: scrapes that arrive while one is computed share its
//! result, and [`Scrape::reuse_for`] keeps it longer.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE as CONTENT_TYPE_HEADER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};

/// Largest request head read (request line and headers): hyper's read
/// buffer limit, of which 8 KiB is the smallest it takes.
pub const MAX_HEAD: usize = 8 * 1024;
const _: () = assert!(MAX_HEAD >= 8 * 1024, "hyper refuses a smaller read buffer");
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Content type of the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of the index and of error bodies.
const PLAIN: &str = "text/plain; charset=utf-8";

/// What `/metrics` answers: `ipamctl metrics`'s [`Collector`](super::metrics::Collector), or the
/// node agent's figures.
pub trait Scrape: Send + Sync + 'static {
    /// The exposition text, computed afresh (the [`ScrapeCache`] decides
    /// when).
    fn scrape(&self) -> impl Future<Output = String> + Send;

    /// How long a computed text is answered again. By default only to
    /// the scrapes that arrived while it was being computed.
    fn reuse_for(&self) -> Duration {
        Duration::ZERO
    }
}

/// The last exposition text and when it was computed. A scrape waits for
/// one being computed and takes its result, or takes one younger than
/// `max_age`, or computes a new one; so concurrent scrapes cost one read
/// of the store.
pub struct ScrapeCache {
    max_age: Duration,
    last: tokio::sync::Mutex<Option<(Instant, Bytes)>>,
}

impl ScrapeCache {
    /// A cache answering a text again for `max_age`.
    pub fn new(max_age: Duration) -> ScrapeCache {
        ScrapeCache {
            max_age,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// The text: one finished after this call began, one younger than
    /// `max_age`, or `compute`'s.
    pub async fn get(&self, compute: impl Future<Output = String>) -> Bytes {
        let asked = Instant::now();
        let mut last = self.last.lock().await;
        if let Some((done, text)) = &*last {
            if *done >= asked || done.elapsed() < self.max_age {
                return text.clone();
            }
        }
        let text = Bytes::from(compute.await);
        *last = Some((Instant::now(), text.clone()));
        text
    }
}

/// One endpoint: what it serves and how.
struct Endpoint<C> {
    source: Arc<C>,
    cache: ScrapeCache,
    http: http1::Builder,
    client_timeout: Duration,
}

type Body = Full<Bytes>;

/// A response with a body of this content type.
fn response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE_HEADER, HeaderValue::from_static(content_type));
    r
}

/// An error status, its code and reason as the body.
fn error_response(status: StatusCode) -> Response<Body> {
    let reason = status.canonical_reason().unwrap_or_default();
    let body = format!("{} {reason}\n", status.as_u16());
    let mut r = response(status, PLAIN, Bytes::from(body));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    r
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/metrics`.
    Metrics,
    /// `/`.
    Index,
}

/// The route of a request hyper parsed, or the error status it gets.
/// Methods outside capital letters and targets other than a path (`*`,
/// `http://host/metrics`, `host:443`) are refused as malformed, as
/// before hyper; then anything but `GET` and `HEAD` is 405, an unknown
/// path 404. The query is ignored.
pub fn route(method: &Method, uri: &hyper::Uri) -> Result<Route, StatusCode> {
    let capitals = method.as_str().bytes().all(|b| b.is_ascii_uppercase());
    if !capitals || uri.scheme().is_some() || !uri.path().starts_with('/') {
        return Err(StatusCode::BAD_REQUEST);
    }
    if method != Method::GET && method != Method::HEAD {
        return Err(StatusCode::METHOD_NOT_ALLOWED);
    }
    match uri.path() {
        "/metrics" => Ok(Route::Metrics),
        "/" => Ok(Route::Index),
        _ => Err(StatusCode::NOT_FOUND),
    }
}

/// The answer to one request (hyper leaves out the body of a `HEAD`'s).
async fn answer<C: Scrape>(req: Request<Incoming>, endpoint: &Endpoint<C>) -> Response<Body> {
    match route(req.method(), req.uri()) {
        Err(status) => error_response(status),
        Ok(Route::Metrics) => {
            let text = endpoint.cache.get(endpoint.source.scrape()).await;
            response(StatusCode::OK, CONTENT_TYPE, text)
        }
        Ok(Route::Index) => response(
            StatusCode::OK,
            PLAIN,
            Bytes::from_static(b"host-etcd IPAM metrics: GET /metrics\n"),
        ),
    }
}

/// Serves one connection; every failure only ends it.
async fn serve_one<C: Scrape>(mut stream: TcpStream, endpoint: Arc<Endpoint<C>>) {
    let timeout = endpoint.client_timeout;
    let answered = Notify::new();
    let served = {
        let service = service_fn(|req| {
            let endpoint = endpoint.clone();
            let answered = &answered;
            async move {
                let response = answer(req, &endpoint).await;
                answered.notify_one();
                Ok::<_, Infallible>(response)
            }
        });
        let conn = endpoint
            .http
            .serve_connection(TokioIo::new(&mut stream), service);
        tokio::select! {
            served = conn => served,
            // A client that does not take its answer in time is dropped.
            () = async {
                answered.notified().await;
                tokio::time::sleep(timeout).await;
            } => return,
        }
    };
    if let Err(e) = served {
        if e.is_timeout() {
            answer_late_head(&mut stream, timeout).await;
        }
    }
}

/// A request read from memory, standing in for the one that did not
/// arrive in time (see [`answer_late_head`]).
const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\n\r\n";

/// Answers 408 to a client whose request head did not arrive within the
/// timeout. hyper ends such a connection without a word: it answers only
/// requests it parsed, and by itself only those it could not parse (400,
/// 431). So the 408 is hyper's answer to a stand-in request read from
/// memory, written to the client's socket: what goes on the wire is
/// still written by hyper.
async fn answer_late_head(stream: &mut TcpStream, timeout: Duration) {
    let io = TokioIo::new(tokio::io::join(STAND_IN, stream));
    let service =
        service_fn(|_| async { Ok::<_, Infallible>(error_response(StatusCode::REQUEST_TIMEOUT)) });
    let conn = http1::Builder::new()
        .keep_alive(false)
        .half_close(true)
        .serve_connection(io, service);
    let _ = tokio::time::timeout(timeout, conn).await;
}

/// Accepts connections forever, each served on its own task: `/metrics`
/// answers `source`'s text through a [`ScrapeCache`] of
/// [`Scrape::reuse_for`], and a client has `client_timeout` to send its
/// request head and as long to take the answer.
pub async fn serve<C: Scrape>(listener: TcpListener, source: Arc<C>, client_timeout: Duration) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(client_timeout)
        .max_buf_size(MAX_HEAD)
        .keep_alive(false)
        .half_close(true);
    let endpoint = Arc::new(Endpoint {
        cache: ScrapeCache::new(source.reuse_for()),
        source,
        http,
        client_timeout,
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return; // the semaphore is never closed
        };
        match listener.accept().await {
            Ok((stream, _peer)) => {
                let endpoint = endpoint.clone();
                tokio::spawn(async move {
                    serve_one(stream, endpoint).await;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn routes() {
        let uri = |s: &str| s.parse::<hyper::Uri>().unwrap();
        assert_eq!(route(&Method::GET, &uri("/metrics")), Ok(Route::Metrics));
        assert_eq!(route(&Method::HEAD, &uri("/metrics")), Ok(Route::Metrics));
        assert_eq!(
            route(&Method::GET, &uri("/metrics?x=1")),
            Ok(Route::Metrics)
        );
        assert_eq!(route(&Method::GET, &uri("/")), Ok(Route::Index));
        assert_eq!(route(&Method::HEAD, &uri("/")), Ok(Route::Index));
        assert_eq!(
            route(&Method::POST, &uri("/metrics")),
            Err(StatusCode::METHOD_NOT_ALLOWED)
        );
        assert_eq!(route(&Method::GET, &uri("/x")), Err(StatusCode::NOT_FOUND));
        let lower = Method::from_bytes(b"get").unwrap();
        for (method, target) in [
            (&lower, "/metrics"),
            (&Method::GET, "*"),
            (&Method::GET, "http://a/metrics"),
            (&Method::CONNECT, "a:443"),
        ] {
            assert_eq!(
                route(method, &uri(target)),
                Err(StatusCode::BAD_REQUEST),
                "{method} {target}"
            );
        }
    }

    #[test]
    fn error_bodies_name_the_status() {
        let r = error_response(StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[ALLOW], "GET, HEAD");
        assert_eq!(r.headers()[CONTENT_TYPE_HEADER], PLAIN);
        let r = error_response(StatusCode::REQUEST_TIMEOUT);
        assert_eq!(r.status(), 408);
        assert!(r.headers().get(ALLOW).is_none());
    }

    /// A fixed exposition text.
    struct Fixed;

    impl Scrape for Fixed {
        async fn scrape(&self) -> String {
            "x_total 1\n".into()
        }
    }

    /// Sends `request` to `addr`, returns everything answered until the
    /// server closes.
    async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn answers_over_tcp_with_hyper() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, Arc::new(Fixed), Duration::from_secs(2)));
        let status = |a: &str| a.split_whitespace().nth(1).unwrap_or_default().to_string();

        let ok = exchange(addr, b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert_eq!(status(&ok), "200", "{ok}");
        assert!(
            ok.contains(&format!("content-type: {CONTENT_TYPE}\r\n")),
            "{ok}"
        );
        assert!(ok.contains("connection: close\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nx_total 1\n"), "{ok}");
        let head = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
        assert!(head.contains("content-length: 10\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "{head}");
        let index = exchange(addr, b"GET / HTTP/1.0\r\n\r\n").await;
        assert!(index.ends_with("GET /metrics\n"), "{index}");
        let post = exchange(addr, b"POST /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(status(&post), "405", "{post}");
        assert!(post.contains("allow: GET, HEAD\r\n"), "{post}");
        assert_eq!(
            status(&exchange(addr, b"GET /x HTTP/1.1\r\n\r\n").await),
            "404"
        );
        assert_eq!(
            status(&exchange(addr, b"\x16\x03\x01garbage\r\n\r\n").await),
            "400"
        );
        assert_eq!(status(&exchange(addr, b"hello\n\n").await), "400");
        let huge = format!(
            "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD)
        );
        assert_eq!(status(&exchange(addr, huge.as_bytes()).await), "431");
        // Half a request, then nothing: hyper's 408 to the stand-in.
        let late = exchange(addr, b"GET /metr").await;
        assert_eq!(status(&late), "408", "{late}");
        assert!(late.ends_with("408 Request Timeout\n"), "{late}");
        // Still serving.
        assert_eq!(
            status(&exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await),
            "200"
        );
        server.abort();
    }

    #[tokio::test]
    async fn the_cache_shares_a_running_scrape_and_keeps_a_result_its_max_age() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let compute = || async {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::task::yield_now().await;
            format!("text {n}\n")
        };
        let fresh = ScrapeCache::new(Duration::ZERO);
        let (a, b) = tokio::join!(fresh.get(compute()), fresh.get(compute()));
        // The second waited for the first and took its text.
        assert_eq!(
            (a.as_ref(), b.as_ref()),
            (&b"text 0\n"[..], &b"text 0\n"[..])
        );
        assert_eq!(fresh.get(compute()).await.as_ref(), b"text 1\n");
        let kept = ScrapeCache::new(Duration::from_secs(3600));
        assert_eq!(kept.get(compute()).await.as_ref(), b"text 2\n");
        assert_eq!(kept.get(compute()).await.as_ref(), b"text 2\n");
    }
}
