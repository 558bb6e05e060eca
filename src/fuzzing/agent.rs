//! Target `agent`: bytes as what a peer sends on the agent's socket (or
//! what the agent answers the plugin): frame reading, then request and
//! reply decoding.

use crate::cni::agent_client::protocol::{read_frame, write_frame, Reply, Request, MAX_FRAME};

/// Target `agent`: `bytes` as a connection's incoming byte stream. Reading
/// frames never panics and yields at most `MAX_FRAME` bytes each, exactly
/// as announced; every frame body is decoded both as a request (what the
/// agent reads) and as a reply (what the plugin reads), which never panics;
/// whatever decodes re-encodes to a body that decodes to the same value,
/// and every frame written is read back unchanged.
pub fn agent(bytes: &[u8]) {
    let rt = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => panic!("tokio runtime: {e}"),
    };
    rt.block_on(async {
        let mut input = bytes;
        // A connection carries one request, but a peer may send more: read
        // until the bytes end or a frame is refused.
        for _ in 0..8 {
            let before = input.len();
            let body = match read_frame(&mut input).await {
                Ok(Some(body)) => body,
                Ok(None) | Err(_) => return,
            };
            assert!(body.len() <= MAX_FRAME, "a frame over the limit was read");
            assert_eq!(
                before - input.len(),
                body.len() + 4,
                "a frame consumed other than its prefix and body"
            );
            check_bodies(&body);
            check_frame_round_trip(&body).await;
        }
    });
}

/// Decodes `body` as a request and as a reply; what decodes round-trips.
fn check_bodies(body: &[u8]) {
    if let Ok(req) = Request::decode(body) {
        let again = Request::decode(&req.encode());
        assert_eq!(again.as_ref(), Ok(&req), "request does not round-trip");
    }
    if let Ok(reply) = Reply::decode(body) {
        let again = Reply::decode(&reply.encode());
        assert_eq!(again.as_ref(), Ok(&reply), "reply does not round-trip");
    }
}

async fn check_frame_round_trip(body: &[u8]) {
    let mut wire = Vec::new();
    if let Err(e) = write_frame(&mut wire, body).await {
        panic!("a body read as a frame cannot be written as one: {e}");
    }
    let mut r = &wire[..];
    match read_frame(&mut r).await {
        Ok(Some(back)) => assert_eq!(back, body, "frame does not round-trip"),
        other => panic!("a written frame does not read back: {other:?}"),
    }
    assert!(r.is_empty(), "a written frame left bytes behind");
}
