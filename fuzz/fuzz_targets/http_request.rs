//! Fuzzes the HTTP/1.1 request push parser, `augmentos_edge::http::parse_request`, and the
//! WebSocket upgrade check run on what it parses, `ws::handshake::validate_upgrade`.
//!
//! Input layout: byte 0's low 3 bits give `n`, the number of chunk-size bytes that follow (each
//! chunk is `1 + byte` long, cycled); bit 3 picks small limits (head 256, body 64) instead of the
//! defaults; the rest is the byte stream. The stream is fed as a connection would: appended to a
//! buffer chunk by chunk, parsed with `scanned` carried between calls, a complete request
//! drained by its `len` (with `scanned` reset) and the next one parsed from what is left.
//!
//! Invariants checked:
//! - no panic; a request's `len` is > 0 and <= the buffer; its body is the last `body.len()`
//!   bytes of it and within `max_body`; `scanned` never runs past the buffer;
//! - while `Ok(None)` (need more), the buffer is within `max_head + max_body`;
//! - the incremental search (`scanned` carried over) gives the same result as a fresh parse of
//!   the same buffer (`scanned = 0`);
//! - chunking does not change the outcome: the sequence of requests (method, path, query,
//!   version, len, body, upgrade verdict) and the final error, if any, are the same as for the
//!   whole stream fed at once;
//! - an accepted upgrade is a GET with a 24-character key.

#![no_main]

use augmentos_edge::http::{parse_request, HttpError, Request, RequestLimits};
use augmentos_edge::ws::handshake::{validate_upgrade, UpgradeError};
use libfuzzer_sys::fuzz_target;

/// What one complete request looked like, owned.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    method: String,
    path: String,
    query: Option<String>,
    version: u8,
    len: usize,
    body: Vec<u8>,
    upgrade: Result<String, UpgradeError>,
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    requests: Vec<Seen>,
    error: Option<HttpError>,
    /// Bytes left unparsed at the end (an incomplete request), when there was no error.
    leftover: usize,
}

/// A short, comparable summary of one parse result.
fn kind(
    r: &Result<Option<Request<'_>>, HttpError>,
) -> Result<Option<(usize, String, String)>, HttpError> {
    match r {
        Ok(None) => Ok(None),
        Ok(Some(req)) => Ok(Some((req.len, req.method.to_owned(), req.path.to_owned()))),
        Err(e) => Err(*e),
    }
}

fn check_request(req: &Request<'_>, buf: &[u8], limits: &RequestLimits) -> Seen {
    assert!(req.len > 0, "an empty request");
    assert!(
        req.len <= buf.len(),
        "len {} past the buffer {}",
        req.len,
        buf.len()
    );
    assert!(req.body.len() <= limits.max_body);
    assert!(
        req.len - req.body.len() <= limits.max_head,
        "head past max_head"
    );
    assert_eq!(req.body, &buf[req.len - req.body.len()..req.len]);
    let upgrade = validate_upgrade(req).map(str::to_owned);
    if let Ok(key) = &upgrade {
        assert_eq!(req.method, "GET");
        assert_eq!(key.len(), 24);
    }
    Seen {
        method: req.method.to_owned(),
        path: req.path.to_owned(),
        query: req.query.map(str::to_owned),
        version: req.version,
        len: req.len,
        body: req.body.to_vec(),
        upgrade,
    }
}

fn drive(stream: &[u8], sizes: &[usize], limits: &RequestLimits) -> Outcome {
    let mut buf: Vec<u8> = Vec::new();
    let mut scanned = 0usize;
    let mut out = Outcome {
        requests: Vec::new(),
        error: None,
        leftover: 0,
    };
    let mut pos = 0;
    let mut turn = 0;
    'feed: while pos < stream.len() {
        let size = sizes
            .get(turn % sizes.len().max(1))
            .copied()
            .unwrap_or(stream.len());
        turn += 1;
        let end = (pos + size).min(stream.len());
        buf.extend_from_slice(&stream[pos..end]);
        pos = end;

        loop {
            let result = parse_request(&buf, &mut scanned, limits);
            let mut fresh_scanned = 0;
            let fresh = parse_request(&buf, &mut fresh_scanned, limits);
            assert_eq!(
                kind(&result),
                kind(&fresh),
                "incremental and fresh parses differ"
            );
            match result {
                Ok(None) => {
                    assert!(scanned <= buf.len(), "scanned {scanned} past {}", buf.len());
                    assert!(
                        buf.len() <= limits.max_head + limits.max_body,
                        "{} bytes held for an incomplete request",
                        buf.len()
                    );
                    break;
                }
                Ok(Some(req)) => {
                    let seen = check_request(&req, &buf, limits);
                    let used = seen.len;
                    out.requests.push(seen);
                    buf.drain(..used);
                    scanned = 0;
                    if buf.is_empty() {
                        break;
                    }
                }
                Err(e) => {
                    out.error = Some(e);
                    break 'feed;
                }
            }
        }
    }
    if out.error.is_none() {
        out.leftover = buf.len();
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let limits = if first & 8 != 0 {
        RequestLimits {
            max_head: 256,
            max_body: 64,
        }
    } else {
        RequestLimits::default()
    };
    let n = ((first & 7) as usize).min(rest.len());
    let sizes: Vec<usize> = rest[..n].iter().map(|&b| 1 + b as usize).collect();
    let stream = &rest[n..];

    let whole = drive(stream, &[], &limits);
    let chunked = drive(stream, &sizes, &limits);
    assert_eq!(whole, chunked, "chunking {sizes:?} changed the outcome");
});
