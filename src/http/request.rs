//! HTTP layer: the request push parser.
//!
//! Owns nothing: it reads a caller's buffer. [`parse_request`] returns `Ok(None)` while the
//! request is incomplete and consumes nothing; a request is complete when its head and its
//! `Content-Length` body have arrived. The search for the end of the head starts where the last
//! call stopped (`scanned`), so a client that drips one byte at a time costs linear, not
//! quadratic, work; `httparse` runs once, on a complete head. Limits (head size, header count,
//! body size) are checked before anything is kept.

/// Limits on one request, sized for an edge box.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_head: usize,
    pub max_body: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_head: 8 * 1024,
            max_body: 64 * 1024,
        }
    }
}

/// At most this many headers; a 33rd is a 431.
pub const MAX_HEADERS: usize = 32;

/// Why a request is refused; each maps to one HTTP status and one error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    HeadTooLarge,
    TooManyHeaders,
    Malformed,
    BadContentLength,
    BodyTooLarge,
    ChunkedNotSupported,
}

impl HttpError {
    pub fn status(self) -> u16 {
        match self {
            HttpError::HeadTooLarge | HttpError::TooManyHeaders => 431,
            HttpError::BodyTooLarge => 413,
            HttpError::ChunkedNotSupported => 411,
            HttpError::Malformed | HttpError::BadContentLength => 400,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            HttpError::HeadTooLarge => "HEADERS_TOO_LARGE",
            HttpError::TooManyHeaders => "TOO_MANY_HEADERS",
            HttpError::Malformed => "MALFORMED_REQUEST",
            HttpError::BadContentLength => "BAD_CONTENT_LENGTH",
            HttpError::BodyTooLarge => "BODY_TOO_LARGE",
            HttpError::ChunkedNotSupported => "LENGTH_REQUIRED",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            HttpError::HeadTooLarge => "request head exceeds 8 KiB",
            HttpError::TooManyHeaders => "more than 32 request headers",
            HttpError::Malformed => "malformed HTTP request",
            HttpError::BadContentLength => "invalid Content-Length",
            HttpError::BodyTooLarge => "request body too large",
            HttpError::ChunkedNotSupported => {
                "chunked bodies are not accepted; send Content-Length"
            }
        }
    }
}

/// A complete request, borrowed from the caller's buffer.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path without the query string.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// HTTP minor version (1 for HTTP/1.1).
    pub version: u8,
    pub headers: Vec<(&'a str, &'a [u8])>,
    pub body: &'a [u8],
    /// Bytes of `buf` the request used (head + body).
    pub len: usize,
}

impl<'a> Request<'a> {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// The header as trimmed text, if present and ASCII-printable.
    pub fn header_str(&self, name: &str) -> Option<&'a str> {
        self.header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
    }

    /// Whether a comma-separated header contains `token` (case-insensitive).
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// Find the end of the head: the index just past the blank line. Scans from `*scanned` (minus
/// the 3 bytes a terminator can straddle) and records how far it got.
fn find_head_end(buf: &[u8], scanned: &mut usize) -> Option<usize> {
    let start = scanned.saturating_sub(3);
    for i in start..buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
    }
    *scanned = buf.len();
    None
}

/// Parse one request from the front of `buf`. `Ok(None)`: incomplete, come back with more.
/// `scanned` carries the end-of-head search position between calls for the same request.
pub fn parse_request<'a>(
    buf: &'a [u8],
    scanned: &mut usize,
    limits: &RequestLimits,
) -> Result<Option<Request<'a>>, HttpError> {
    let head_len = match find_head_end(buf, scanned) {
        Some(n) if n > limits.max_head => return Err(HttpError::HeadTooLarge),
        Some(n) => n,
        None if buf.len() > limits.max_head => return Err(HttpError::HeadTooLarge),
        None => return Ok(None),
    };
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut raw);
    match req.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HttpError::Malformed),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(_) => return Err(HttpError::Malformed),
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HttpError::Malformed);
    };
    let headers: Vec<(&str, &[u8])> = req.headers.iter().map(|h| (h.name, h.value)).collect();
    let mut content_length: Option<usize> = None;
    for (name, value) in &headers {
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::ChunkedNotSupported);
        }
        if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<usize>().ok())
                .ok_or(HttpError::BadContentLength)?;
            if content_length.is_some_and(|c| c != n) {
                return Err(HttpError::BadContentLength);
            }
            content_length = Some(n);
        }
    }
    let body_len = content_length.unwrap_or(0);
    if body_len > limits.max_body {
        return Err(HttpError::BodyTooLarge);
    }
    if buf.len() < head_len + body_len {
        return Ok(None);
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    Ok(Some(Request {
        method,
        path,
        query,
        version,
        headers,
        body: &buf[head_len..head_len + body_len],
        len: head_len + body_len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &[u8] = b"GET /echo?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn every_prefix_is_partial_then_complete() {
        let limits = RequestLimits::default();
        let mut scanned = 0;
        for cut in 0..UPGRADE.len() {
            assert!(
                parse_request(&UPGRADE[..cut], &mut scanned, &limits)
                    .unwrap()
                    .is_none(),
                "prefix {cut}"
            );
        }
        let req = parse_request(UPGRADE, &mut scanned, &limits)
            .unwrap()
            .unwrap();
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/echo");
        assert_eq!(req.query, Some("x=1"));
        assert_eq!(req.version, 1);
        assert_eq!(req.len, UPGRADE.len());
        assert!(req.header_has_token("connection", "upgrade"));
        assert_eq!(req.header_str("UPGRADE"), Some("websocket"));
    }

    #[test]
    fn body_waits_for_content_length() {
        let full = b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        let limits = RequestLimits::default();
        for cut in 0..full.len() {
            let mut s = 0;
            assert!(parse_request(&full[..cut], &mut s, &limits)
                .unwrap()
                .is_none());
        }
        let mut s = 0;
        let req = parse_request(full, &mut s, &limits).unwrap().unwrap();
        assert_eq!(req.body, b"hello");
    }

    #[test]
    fn limits_and_malformed() {
        let limits = RequestLimits {
            max_head: 64,
            max_body: 4,
        };
        let mut s = 0;
        assert_eq!(
            parse_request(&[b'a'; 65], &mut s, &limits).unwrap_err(),
            HttpError::HeadTooLarge
        );
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..33 {
            many.extend(format!("h{i}: v\r\n").as_bytes());
        }
        many.extend(b"\r\n");
        let mut s = 0;
        assert_eq!(
            parse_request(&many, &mut s, &RequestLimits::default()).unwrap_err(),
            HttpError::TooManyHeaders
        );
        let cases: [(&[u8], HttpError); 5] = [
            (
                b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
                HttpError::BodyTooLarge,
            ),
            (
                b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                HttpError::BadContentLength,
            ),
            (
                b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                HttpError::BadContentLength,
            ),
            (
                b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                HttpError::ChunkedNotSupported,
            ),
            (b"G\x01T / HTTP/1.1\r\n\r\n", HttpError::Malformed),
        ];
        for (input, want) in cases {
            let mut s = 0;
            assert_eq!(
                parse_request(input, &mut s, &limits).unwrap_err(),
                want,
                "{input:?}"
            );
        }
    }
}
