//! HTTP layer (sans-IO): the push parser for the response to one of our outbound HTTP/1.1
//! requests (the webhook client).
//!
//! Owns the parse state of one response — positions in the caller's buffer, never references —
//! and, for a chunked body, the decoded bytes. The caller keeps every byte received so far and
//! hands the whole buffer to [`ResponseParser::feed`] after each read: `Ok(None)` means "need
//! more bytes", not an error, and `Ok(Some(_))` means the whole response (head and body) is in.
//! When the peer closes, the caller calls [`ResponseParser::finish_at_eof`]. An error is final:
//! later calls return it again.
//!
//! Framing follows RFC 9112 §6.3, for a request that is neither `HEAD` nor `CONNECT`: interim
//! 1xx responses are skipped and the next response parsed (101 is refused: we never ask to
//! upgrade); 204 and 304 have no body; a `Transfer-Encoding` whose final coding is `chunked` is
//! decoded (extensions ignored, trailers skipped) and overrides `Content-Length`; any other
//! `Transfer-Encoding`, or one in an HTTP/1.0 response, means the body ends at EOF; otherwise
//! `Content-Length` (repeated identical values allowed); otherwise the body ends at EOF.
//!
//! Invariants:
//! - Linear work: the end-of-head search resumes where the last call stopped (minus the 3 bytes
//!   a terminator can straddle) and the chunk decoder keeps its position, so a server that drips
//!   one byte at a time costs O(n), not O(n²); `httparse` runs once per head.
//! - Limits are checked before anything is kept: all heads together (interim ones included)
//!   end within `max_head` bytes, and the body as sent (chunk framing and trailers included)
//!   fits in `max_body`, so the caller never has to hold more than `max_head + max_body` bytes.
//! - No input panics; indices are only taken below the length of a buffer already checked.

use std::ops::Range;

/// Limits on one response, sized for an edge box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseLimits {
    /// Bytes of all heads together, interim 1xx heads included.
    pub max_head: usize,
    /// Bytes of the body as sent: the `Content-Length`, the bytes before EOF, or the chunked
    /// encoding with its framing and trailers.
    pub max_body: usize,
}

impl Default for ResponseLimits {
    fn default() -> Self {
        ResponseLimits {
            max_head: 8 * 1024,
            max_body: 64 * 1024,
        }
    }
}

/// At most this many header fields in one response head.
pub const MAX_RESPONSE_HEADERS: usize = 64;

/// Why a response is refused: one variant per rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    /// No end of head within `max_head` bytes.
    HeadTooLarge,
    /// More than [`MAX_RESPONSE_HEADERS`] header fields.
    TooManyHeaders,
    /// Not an HTTP/1.x status line and header fields.
    Malformed,
    /// `101 Switching Protocols`, but the request asked for no upgrade.
    UnexpectedUpgrade,
    /// A `Content-Length` that is not a decimal number.
    InvalidContentLength,
    /// `Content-Length` values that differ.
    ConflictingContentLength,
    /// The body exceeds `max_body`.
    BodyTooLarge,
    /// A chunk-size line that is not hex digits, optional extensions and CRLF.
    BadChunkSize,
    /// Chunk data, or the trailer section, not ended by CRLF.
    BadChunkFraming,
    /// The stream ended before the head was complete.
    IncompleteHead,
    /// The stream ended before the `Content-Length` or chunked body was complete.
    IncompleteBody,
    /// The response was already returned; the parser is spent.
    AlreadyComplete,
    /// The buffer is shorter than one passed before: bytes already received were dropped.
    BufferShrank,
}

impl ResponseError {
    pub fn message(self) -> &'static str {
        match self {
            ResponseError::HeadTooLarge => "response head too large",
            ResponseError::TooManyHeaders => "more than 64 response headers",
            ResponseError::Malformed => "malformed HTTP response head",
            ResponseError::UnexpectedUpgrade => {
                "101 Switching Protocols without an upgrade request"
            }
            ResponseError::InvalidContentLength => "invalid Content-Length",
            ResponseError::ConflictingContentLength => "conflicting Content-Length values",
            ResponseError::BodyTooLarge => "response body too large",
            ResponseError::BadChunkSize => "invalid chunk size line",
            ResponseError::BadChunkFraming => "chunk data or trailers not ended by CRLF",
            ResponseError::IncompleteHead => "connection closed before the response head",
            ResponseError::IncompleteBody => "connection closed before the end of the body",
            ResponseError::AlreadyComplete => "response already complete",
            ResponseError::BufferShrank => "response buffer shrank between calls",
        }
    }
}

/// A complete final response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: ResponseBody,
    /// Bytes of the caller's buffer the response used, interim responses included. Anything
    /// after it is not part of the response.
    pub end: usize,
}

/// Where a response body is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseBody {
    /// `buf[range]` of the caller's buffer: a `Content-Length` or EOF-delimited body (empty for
    /// 204 and 304).
    Range(Range<usize>),
    /// A chunked body, decoded (at most `max_body` bytes).
    Decoded(Vec<u8>),
}

impl Response {
    /// The body bytes, given the buffer the response was parsed from (empty if it is not).
    pub fn body<'a>(&'a self, buf: &'a [u8]) -> &'a [u8] {
        match &self.body {
            ResponseBody::Range(r) => buf.get(r.clone()).unwrap_or(&[]),
            ResponseBody::Decoded(v) => v,
        }
    }
}

/// The incremental parser for one response. See the module documentation for the contract.
#[derive(Debug)]
pub struct ResponseParser {
    limits: ResponseLimits,
    state: State,
    /// Length of the buffer at the last call; a shorter one means the caller dropped bytes.
    seen: usize,
    /// Bytes looked at by the head search and the chunk decoder (work is linear in the input).
    examined: u64,
}

#[derive(Debug)]
enum State {
    /// Searching for the end of the head that starts at `start`; the search reached `scanned`.
    Head {
        start: usize,
        scanned: usize,
    },
    /// The final head is in; its body starts at `start`.
    Body {
        status: u16,
        start: usize,
        framing: Framing,
    },
    Done,
    Failed(ResponseError),
}

#[derive(Debug)]
enum Framing {
    Length(usize),
    Close,
    Chunked(Chunked),
}

/// What a head says about what follows it.
enum Head {
    Interim,
    Final { status: u16, framing: Kind },
}

enum Kind {
    Empty,
    Length(usize),
    Chunked,
    Close,
}

impl Default for ResponseParser {
    fn default() -> Self {
        ResponseParser::new(ResponseLimits::default())
    }
}

impl ResponseParser {
    pub fn new(limits: ResponseLimits) -> Self {
        ResponseParser {
            limits,
            state: State::Head {
                start: 0,
                scanned: 0,
            },
            seen: 0,
            examined: 0,
        }
    }

    /// The final status, once its head is in (interim 1xx statuses are not reported).
    pub fn status(&self) -> Option<u16> {
        match self.state {
            State::Body { status, .. } => Some(status),
            _ => None,
        }
    }

    /// Parse further into `buf`, every byte received so far. `Ok(None)`: incomplete, call again
    /// with more. `Ok(Some(_))`: the whole response is in, and the parser is spent.
    pub fn feed(&mut self, buf: &[u8]) -> Result<Option<Response>, ResponseError> {
        let outcome = self.advance(buf);
        match &outcome {
            Ok(None) => {}
            Ok(Some(_)) => self.state = State::Done,
            Err(e) => self.state = State::Failed(*e),
        }
        outcome
    }

    /// The peer closed the stream after sending `buf`. A body that ends at EOF is complete; a
    /// head that never completed, or a `Content-Length` or chunked body cut short, is an error.
    pub fn finish_at_eof(&mut self, buf: &[u8]) -> Result<Response, ResponseError> {
        let outcome = match self.advance(buf) {
            Ok(Some(r)) => Ok(r),
            Err(e) => Err(e),
            Ok(None) => match &self.state {
                State::Body {
                    status,
                    start,
                    framing: Framing::Close,
                } => Ok(Response {
                    status: *status,
                    body: ResponseBody::Range(*start..buf.len()),
                    end: buf.len(),
                }),
                State::Body { .. } => Err(ResponseError::IncompleteBody),
                State::Head { .. } => Err(ResponseError::IncompleteHead),
                State::Done => Err(ResponseError::AlreadyComplete),
                State::Failed(e) => Err(*e),
            },
        };
        self.state = match &outcome {
            Ok(_) => State::Done,
            Err(e) => State::Failed(*e),
        };
        outcome
    }

    fn advance(&mut self, buf: &[u8]) -> Result<Option<Response>, ResponseError> {
        match self.state {
            State::Failed(e) => return Err(e),
            State::Done => return Err(ResponseError::AlreadyComplete),
            _ => {}
        }
        if buf.len() < self.seen {
            return Err(ResponseError::BufferShrank);
        }
        self.seen = buf.len();
        let limits = self.limits;
        loop {
            match &mut self.state {
                State::Head { start, scanned } => {
                    let start = *start;
                    let Some(end) =
                        find_head_end(buf, start, scanned, limits.max_head, &mut self.examined)?
                    else {
                        return Ok(None);
                    };
                    let head = buf.get(start..end).ok_or(ResponseError::Malformed)?;
                    self.state = match parse_head(head)? {
                        Head::Interim => State::Head {
                            start: end,
                            scanned: end,
                        },
                        Head::Final { status, framing } => State::Body {
                            status,
                            start: end,
                            framing: match framing {
                                Kind::Empty => Framing::Length(0),
                                Kind::Length(n) if n > limits.max_body => {
                                    return Err(ResponseError::BodyTooLarge)
                                }
                                Kind::Length(n) => Framing::Length(n),
                                Kind::Close => Framing::Close,
                                Kind::Chunked => Framing::Chunked(Chunked::new(end)),
                            },
                        },
                    };
                }
                State::Body {
                    status,
                    start,
                    framing,
                } => {
                    let (status, start) = (*status, *start);
                    let cap = start.saturating_add(limits.max_body);
                    let (body, end) = match framing {
                        Framing::Length(n) => {
                            let end = start.saturating_add(*n);
                            if buf.len() < end {
                                return Ok(None);
                            }
                            (ResponseBody::Range(start..end), end)
                        }
                        Framing::Close if buf.len() > cap => {
                            return Err(ResponseError::BodyTooLarge)
                        }
                        Framing::Close => return Ok(None),
                        Framing::Chunked(c) => {
                            if !c.advance(buf, cap, limits.max_body, &mut self.examined)? {
                                if buf.len() > cap {
                                    return Err(ResponseError::BodyTooLarge);
                                }
                                return Ok(None);
                            }
                            (ResponseBody::Decoded(std::mem::take(&mut c.body)), c.at)
                        }
                    };
                    return Ok(Some(Response { status, body, end }));
                }
                State::Done => return Err(ResponseError::AlreadyComplete),
                State::Failed(e) => return Err(*e),
            }
        }
    }
}

/// Find the end of the head that starts at `start`: the index just past its blank line. Scans
/// from `*scanned` (minus the 3 bytes a terminator can straddle), never past `max_head`, and
/// records how far it got.
fn find_head_end(
    buf: &[u8],
    start: usize,
    scanned: &mut usize,
    max_head: usize,
    examined: &mut u64,
) -> Result<Option<usize>, ResponseError> {
    let stop = buf.len().min(max_head);
    let from = scanned.saturating_sub(3).max(start);
    for i in from..stop {
        *examined += 1;
        if buf[i] != b'\n' {
            continue;
        }
        let end = match (buf.get(i + 1), buf.get(i + 2)) {
            (Some(b'\n'), _) => i + 2,
            (Some(b'\r'), Some(b'\n')) => i + 3,
            _ => continue,
        };
        if end > max_head {
            return Err(ResponseError::HeadTooLarge);
        }
        return Ok(Some(end));
    }
    if buf.len() > max_head {
        return Err(ResponseError::HeadTooLarge);
    }
    *scanned = stop.max(*scanned);
    Ok(None)
}

/// Parse one complete head (status line, fields, blank line).
fn parse_head(head: &[u8]) -> Result<Head, ResponseError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut raw);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(_) => return Err(ResponseError::Malformed),
        Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::TooManyHeaders),
        Err(_) => return Err(ResponseError::Malformed),
    }
    let (Some(status), Some(version)) = (resp.code, resp.version) else {
        return Err(ResponseError::Malformed);
    };
    match status {
        0..=99 => Err(ResponseError::Malformed),
        101 => Err(ResponseError::UnexpectedUpgrade),
        100..=199 => Ok(Head::Interim),
        204 | 304 => Ok(Head::Final {
            status,
            framing: Kind::Empty,
        }),
        _ => Ok(Head::Final {
            status,
            framing: body_framing(resp.headers, version)?,
        }),
    }
}

/// The body framing a final response's fields declare (RFC 9112 §6.3, items 3 to 8).
fn body_framing(headers: &[httparse::Header<'_>], version: u8) -> Result<Kind, ResponseError> {
    let mut has_te = false;
    let mut last_coding: &[u8] = b"";
    for h in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
    {
        has_te = true;
        for coding in h.value.split(|&b| b == b',') {
            let name = coding.split(|&b| b == b';').next().unwrap_or(b"");
            let name = name.trim_ascii();
            if !name.is_empty() {
                last_coding = name;
            }
        }
    }
    if has_te {
        // In HTTP/1.0 the framing is faulty whatever it says: read to the close.
        let chunked = version == 1 && last_coding.eq_ignore_ascii_case(b"chunked");
        return Ok(if chunked { Kind::Chunked } else { Kind::Close });
    }
    let mut length = None;
    for h in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        for value in h.value.split(|&b| b == b',') {
            let n = parse_decimal(value.trim_ascii()).ok_or(ResponseError::InvalidContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(ResponseError::ConflictingContentLength);
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Kind::Close, Kind::Length))
}

/// A non-empty run of ASCII digits that fits in `usize`.
fn parse_decimal(s: &[u8]) -> Option<usize> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0usize, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(usize::from(b - b'0'))
    })
}

/// The chunked decoder: where it is in the caller's buffer and in the grammar.
#[derive(Debug)]
struct Chunked {
    /// Position in the caller's buffer of the next byte to decode.
    at: usize,
    step: Step,
    body: Vec<u8>,
}

/// Where the decoder is in `chunked-body` (RFC 9112 §7.1). `n`: the chunk size read so far.
#[derive(Debug, Clone, Copy)]
enum Step {
    Size {
        n: usize,
        digits: bool,
    },
    /// Whitespace after the size, before `;` or the end of line.
    SizeWs {
        n: usize,
    },
    /// A chunk extension, ignored to the end of line.
    Ext {
        n: usize,
    },
    /// After the CR of the size line.
    SizeLf {
        n: usize,
    },
    /// Chunk data; `left` bytes to go (never 0).
    Data {
        left: usize,
    },
    /// After chunk data: expecting CRLF.
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final blank line.
    TrailerStart,
    /// Inside a trailer field line, skipped.
    Trailer,
    /// After the CR of the final blank line.
    TrailerLf,
}

impl Chunked {
    fn new(at: usize) -> Self {
        Chunked {
            at,
            step: Step::Size {
                n: 0,
                digits: false,
            },
            body: Vec::new(),
        }
    }

    /// Decode from `self.at` up to `cap` (or the end of `buf`). `Ok(true)`: the last chunk and
    /// the trailer section are in, and `self.at` is the end of the response.
    fn advance(
        &mut self,
        buf: &[u8],
        cap: usize,
        max_body: usize,
        examined: &mut u64,
    ) -> Result<bool, ResponseError> {
        let stop = buf.len().min(cap);
        while self.at < stop {
            if let Step::Data { left } = self.step {
                let take = left.min(stop - self.at);
                self.body.extend_from_slice(&buf[self.at..self.at + take]);
                self.at += take;
                *examined += take as u64;
                self.step = if take == left {
                    Step::DataCr
                } else {
                    Step::Data { left: left - take }
                };
                continue;
            }
            let b = buf[self.at];
            self.at += 1;
            *examined += 1;
            let room = max_body.saturating_sub(self.body.len());
            match self.step.next(b, room)? {
                Some(step) => self.step = step,
                None => return Ok(true),
            }
        }
        Ok(false)
    }
}

impl Step {
    /// The step after framing byte `b`; `None` when the chunked body is complete. `room`: how
    /// many more decoded bytes `max_body` allows.
    fn next(self, b: u8, room: usize) -> Result<Option<Step>, ResponseError> {
        use Step::*;
        let line_end = |n: usize| {
            if n == 0 {
                TrailerStart
            } else {
                Data { left: n }
            }
        };
        if let (Size { n, .. }, Some(d)) = (self, hex_digit(b)) {
            let n = n
                .checked_mul(16)
                .and_then(|n| n.checked_add(d))
                .ok_or(ResponseError::BadChunkSize)?;
            if n > room {
                return Err(ResponseError::BodyTooLarge);
            }
            return Ok(Some(Size { n, digits: true }));
        }
        let next = match (self, b) {
            (Size { digits: false, .. }, _) => return Err(ResponseError::BadChunkSize),
            (Size { n, .. } | SizeWs { n }, b' ' | b'\t') => SizeWs { n },
            (Size { n, .. } | SizeWs { n }, b';') => Ext { n },
            (Size { n, .. } | SizeWs { n } | Ext { n }, b'\r') => SizeLf { n },
            (Size { n, .. } | SizeWs { n } | Ext { n } | SizeLf { n }, b'\n') => line_end(n),
            (Size { .. } | SizeWs { .. } | SizeLf { .. }, _) => {
                return Err(ResponseError::BadChunkSize)
            }
            (Ext { n }, _) => Ext { n },
            // Not reached: `Chunked::advance` copies data in bulk.
            (Data { .. }, _) => return Err(ResponseError::BadChunkFraming),
            (DataCr, b'\r') => DataLf,
            (DataCr | DataLf, b'\n') => Size {
                n: 0,
                digits: false,
            },
            (DataCr | DataLf, _) => return Err(ResponseError::BadChunkFraming),
            (TrailerStart, b'\r') => TrailerLf,
            (TrailerStart | TrailerLf, b'\n') => return Ok(None),
            (TrailerLf, _) => return Err(ResponseError::BadChunkFraming),
            (Trailer, b'\n') => TrailerStart,
            (TrailerStart | Trailer, _) => Trailer,
        };
        Ok(Some(next))
    }
}

fn hex_digit(b: u8) -> Option<usize> {
    let d = match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => return None,
    };
    Some(usize::from(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LENGTH: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}";
    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n6;name=\"v\"\r\npedia \r\nE \r\nin \r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\n";
    const CHUNKED_BODY: &[u8] = b"Wikipedia in \r\n\r\nchunks.";
    const INTERIM: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";

    /// The outcome of a parse that sees `input` arrive cut at `cuts` (ascending), then EOF.
    type Outcome = Result<(u16, Vec<u8>, usize), ResponseError>;

    fn run(input: &[u8], cuts: &[usize], limits: ResponseLimits) -> Outcome {
        let mut p = ResponseParser::new(limits);
        let seen = |r: Response| (r.status, r.body(input).to_vec(), r.end);
        for &cut in cuts {
            if let Some(r) = p.feed(&input[..cut])? {
                return Ok(seen(r));
            }
        }
        p.finish_at_eof(input).map(seen)
    }

    fn one_shot(input: &[u8]) -> Outcome {
        run(input, &[input.len()], ResponseLimits::default())
    }

    fn every_prefix_partial_then(input: &[u8], status: u16, body: &[u8]) {
        let mut p = ResponseParser::default();
        for cut in 0..input.len() {
            assert_eq!(p.feed(&input[..cut]), Ok(None), "prefix {cut}");
            let mut fresh = ResponseParser::default();
            assert_eq!(fresh.feed(&input[..cut]), Ok(None), "fresh prefix {cut}");
        }
        let r = p.feed(input).unwrap().unwrap();
        assert_eq!(r.status, status);
        assert_eq!(r.body(input), body);
        assert_eq!(r.end, input.len());
        assert_eq!(p.feed(input), Err(ResponseError::AlreadyComplete));
    }

    #[test]
    fn content_length_every_prefix_partial_then_complete() {
        every_prefix_partial_then(LENGTH, 200, b"{\"ok\":true}");
        let r = ResponseParser::default().feed(LENGTH).unwrap().unwrap();
        assert_eq!(r.body, ResponseBody::Range(LENGTH.len() - 11..LENGTH.len()));
    }

    #[test]
    fn chunked_every_prefix_partial_then_complete() {
        every_prefix_partial_then(CHUNKED, 200, CHUNKED_BODY);
        let r = ResponseParser::default().feed(CHUNKED).unwrap().unwrap();
        assert_eq!(r.body, ResponseBody::Decoded(CHUNKED_BODY.to_vec()));
    }

    #[test]
    fn interim_responses_are_skipped() {
        every_prefix_partial_then(INTERIM, 201, b"ok");
        let mut p = ResponseParser::default();
        assert_eq!(p.feed(&INTERIM[..25]), Ok(None));
        assert_eq!(p.status(), None, "an interim status is not the status");
        assert_eq!(p.feed(&INTERIM[..INTERIM.len() - 1]), Ok(None));
        assert_eq!(p.status(), Some(201));
    }

    #[test]
    fn extra_bytes_after_the_response_are_not_part_of_it() {
        let mut input = LENGTH.to_vec();
        input.extend_from_slice(b"HTTP/1.1 500 junk");
        let r = ResponseParser::default().feed(&input).unwrap().unwrap();
        assert_eq!(r.end, LENGTH.len());
        let mut input = CHUNKED.to_vec();
        input.extend_from_slice(b"junk");
        let r = ResponseParser::default().feed(&input).unwrap().unwrap();
        assert_eq!(r.end, CHUNKED.len());
    }

    #[test]
    fn dripping_one_byte_at_a_time_is_linear() {
        let mut input = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..60 {
            input.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "v".repeat(100)).as_bytes());
        }
        input.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        for _ in 0..1000 {
            input.extend_from_slice(b"a;e=1\r\n0123456789\r\n");
        }
        input.extend_from_slice(b"0\r\n\r\n");
        let limits = ResponseLimits {
            max_head: 16 * 1024,
            max_body: 64 * 1024,
        };
        let mut p = ResponseParser::new(limits);
        for cut in 0..input.len() {
            assert_eq!(p.feed(&input[..cut]), Ok(None));
        }
        let r = p.feed(&input).unwrap().unwrap();
        assert_eq!(r.body(&input).len(), 10_000);
        let n = input.len() as u64;
        assert!(p.examined <= 4 * n, "{} bytes examined for {n}", p.examined);
    }

    #[test]
    fn no_body_for_204_and_304() {
        let input = b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n";
        assert_eq!(one_shot(input), Ok((204, vec![], input.len())));
        // A 304's Content-Length describes the representation, not a body.
        let input = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 42\r\n\r\n";
        assert_eq!(one_shot(input), Ok((304, vec![], input.len())));
        let mut p = ResponseParser::default();
        let r = p.feed(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap().unwrap();
        assert_eq!(r.body, ResponseBody::Range(27..27));
    }

    #[test]
    fn body_without_length_ends_at_eof() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello";
        let mut p = ResponseParser::default();
        for cut in 0..=input.len() {
            assert_eq!(p.feed(&input[..cut]), Ok(None));
        }
        let r = p.finish_at_eof(input).unwrap();
        assert_eq!(
            (r.status, r.body(input), r.end),
            (200, &b"hello"[..], input.len())
        );
        assert_eq!(p.finish_at_eof(input), Err(ResponseError::AlreadyComplete));
        // HTTP/1.0, no reason phrase, bare LF line ends.
        assert_eq!(
            one_shot(b"HTTP/1.0 200\nServer: old\n\nbye"),
            Ok((200, b"bye".to_vec(), 29))
        );
        // A Transfer-Encoding that does not end in chunked, or one in HTTP/1.0: read to EOF.
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nzz";
        assert_eq!(one_shot(input), Ok((200, b"zz".to_vec(), input.len())));
        let input = b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nzz";
        assert_eq!(one_shot(input), Ok((200, b"2\r\nzz".to_vec(), input.len())));
    }

    #[test]
    fn transfer_encoding_overrides_content_length() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: CHUNKED\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
        assert_eq!(one_shot(input), Ok((200, b"hi".to_vec(), input.len())));
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(one_shot(input), Ok((200, b"hello".to_vec(), input.len())));
    }

    #[test]
    fn stream_ends_too_early() {
        assert_eq!(one_shot(b""), Err(ResponseError::IncompleteHead));
        assert_eq!(
            one_shot(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"),
            Err(ResponseError::IncompleteHead)
        );
        assert_eq!(
            one_shot(b"HTTP/1.1 100 Continue\r\n\r\n"),
            Err(ResponseError::IncompleteHead)
        );
        assert_eq!(
            one_shot(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhell"),
            Err(ResponseError::IncompleteBody)
        );
        assert_eq!(
            one_shot(&CHUNKED[..CHUNKED.len() - 1]),
            Err(ResponseError::IncompleteBody)
        );
        assert_eq!(
            one_shot(&CHUNKED[..CHUNKED.len() - 20]),
            Err(ResponseError::IncompleteBody)
        );
    }

    #[test]
    fn head_too_large() {
        let limits = ResponseLimits {
            max_head: 64,
            max_body: 16,
        };
        let mut p = ResponseParser::new(limits);
        assert_eq!(p.feed(&[b'a'; 64]), Ok(None));
        assert_eq!(p.feed(&[b'a'; 65]), Err(ResponseError::HeadTooLarge));
        assert_eq!(
            p.feed(&[b'a'; 66]),
            Err(ResponseError::HeadTooLarge),
            "sticky"
        );
        // A head ending exactly at the limit fits; one byte over does not.
        let mut exact = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX: ".to_vec();
        exact.resize(60, b'x');
        exact.extend_from_slice(b"\r\n\r\n");
        assert_eq!(run(&exact, &[exact.len()], limits).unwrap().0, 200);
        exact.insert(50, b'x');
        assert_eq!(
            run(&exact, &[exact.len()], limits),
            Err(ResponseError::HeadTooLarge)
        );
        // Interim heads count toward the limit: a stream of 100s cannot grow the buffer.
        let many = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(400);
        assert_eq!(one_shot(&many), Err(ResponseError::HeadTooLarge));
        let mut too_many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_RESPONSE_HEADERS {
            too_many.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
        }
        too_many.extend_from_slice(b"\r\n");
        assert_eq!(one_shot(&too_many), Err(ResponseError::TooManyHeaders));
    }

    #[test]
    fn body_too_large() {
        let limits = ResponseLimits {
            max_head: 1024,
            max_body: 12,
        };
        let cases: [(&[u8], Outcome); 7] = [
            // Refused from the head alone, before any body byte arrives.
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n",
                Err(ResponseError::BodyTooLarge),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n123456789012",
                Ok((200, b"123456789012".to_vec(), 51)),
            ),
            (
                b"HTTP/1.1 200 OK\r\n\r\n1234567890123",
                Err(ResponseError::BodyTooLarge),
            ),
            // A declared chunk size over the limit is refused before its data.
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nd",
                Err(ResponseError::BodyTooLarge),
            ),
            // Framing counts: 5 bytes decoded, 15 sent.
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                Err(ResponseError::BodyTooLarge),
            ),
            // So do trailers.
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: 1\r\n\r\n",
                Err(ResponseError::BodyTooLarge),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nh\r\n0\r\n\r\n",
                Ok((200, b"h".to_vec(), 58)),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(run(input, &[input.len()], limits), want, "{input:?}");
        }
        let mut p = ResponseParser::new(limits);
        let input = b"HTTP/1.1 200 OK\r\n\r\n123456789012";
        assert_eq!(p.feed(input), Ok(None));
        assert_eq!(p.finish_at_eof(input).unwrap().body(input), b"123456789012");
    }

    #[test]
    fn bad_chunks() {
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let cases: [(&[u8], ResponseError); 9] = [
            (b"zz\r\n", ResponseError::BadChunkSize),
            (b"\r\n", ResponseError::BadChunkSize),
            (b";ext\r\n", ResponseError::BadChunkSize),
            (b"1x\r\nh\r\n0\r\n\r\n", ResponseError::BadChunkSize),
            (b"1 2\r\n", ResponseError::BadChunkSize),
            (b"1\rh", ResponseError::BadChunkSize),
            (b"-1\r\n", ResponseError::BadChunkSize),
            (b"1\r\nhX\r\n", ResponseError::BadChunkFraming),
            (b"0\r\n\rX", ResponseError::BadChunkFraming),
        ];
        for (chunks, want) in cases {
            let input = [&head[..], chunks].concat();
            assert_eq!(one_shot(&input), Err(want), "{chunks:?}");
        }
        // A size that overflows is refused, whatever the limit.
        let limits = ResponseLimits {
            max_head: 1024,
            max_body: usize::MAX,
        };
        let input = [&head[..], b"1ffffffffffffffffffff\r\n"].concat();
        let err = run(&input, &[input.len()], limits).unwrap_err();
        assert_eq!(err, ResponseError::BadChunkSize);
        // Whitespace before an extension, bare LF line ends, leading zeros, trailers.
        let input = [&head[..], b"0002 ;a=b\nhi\n0\nX-T: 1\n\n"].concat();
        assert_eq!(one_shot(&input), Ok((200, b"hi".to_vec(), input.len())));
    }

    #[test]
    fn content_length_rules() {
        let cases: [(&[u8], ResponseError); 6] = [
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                ResponseError::ConflictingContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nab",
                ResponseError::ConflictingContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                ResponseError::InvalidContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
                ResponseError::InvalidContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
                ResponseError::InvalidContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                ResponseError::InvalidContentLength,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(one_shot(input), Err(want), "{input:?}");
        }
    }

    #[test]
    fn malformed_and_misuse() {
        let cases: [(&[u8], ResponseError); 5] = [
            (b"HTTP/1.1 OK\r\n\r\n", ResponseError::Malformed),
            (b"HTTP/2 200 OK\r\n\r\n", ResponseError::Malformed),
            (b"HTTP/1.1 099 Low\r\n\r\n", ResponseError::Malformed),
            (b"\r\n\r\n", ResponseError::Malformed),
            (
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
                ResponseError::UnexpectedUpgrade,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(one_shot(input), Err(want), "{input:?}");
        }
        let mut p = ResponseParser::default();
        assert_eq!(p.feed(b"HTTP/1.1 2"), Ok(None));
        assert_eq!(p.feed(b"HTTP"), Err(ResponseError::BufferShrank));
        assert_eq!(p.feed(LENGTH), Err(ResponseError::BufferShrank), "sticky");
        for e in [
            ResponseError::HeadTooLarge,
            ResponseError::AlreadyComplete,
            ResponseError::BufferShrank,
        ] {
            assert!(!e.message().is_empty());
        }
    }

    /// xorshift64: a deterministic source for the property tests, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            let alphabet = b"ab\r\n0:;, \tHTTP/1.1";
            (0..n)
                .map(|_| {
                    if self.below(4) == 0 {
                        self.next() as u8
                    } else {
                        alphabet[self.below(alphabet.len())]
                    }
                })
                .collect()
        }

        /// Ascending cut points in `0..=len`, ending at `len`.
        fn cuts(&mut self, len: usize) -> Vec<usize> {
            let mut cuts = Vec::new();
            let mut at = 0;
            while at < len {
                let step = if self.below(3) == 0 { 2 } else { 40 };
                at += 1 + self.below(step);
                cuts.push(at.min(len));
            }
            cuts.push(len);
            cuts
        }
    }

    /// A random valid response and its status and body.
    fn generate(rng: &mut Rng) -> (Vec<u8>, u16, Vec<u8>) {
        let eol: &[u8] = if rng.below(8) == 0 { b"\n" } else { b"\r\n" };
        let mut out = Vec::new();
        for _ in 0..rng.below(3) {
            let code = [100, 102, 103][rng.below(3)];
            out.extend_from_slice(format!("HTTP/1.1 {code} Interim").as_bytes());
            out.extend_from_slice(eol);
            if rng.below(2) == 0 {
                out.extend_from_slice(b"Link: </x>");
                out.extend_from_slice(eol);
            }
            out.extend_from_slice(eol);
        }
        let status = [200, 201, 202, 204, 304, 400, 404, 500][rng.below(8)];
        out.extend_from_slice(format!("HTTP/1.1 {status} Whatever").as_bytes());
        out.extend_from_slice(eol);
        for i in 0..rng.below(5) {
            out.extend_from_slice(format!("X-{i}: {}", "v".repeat(rng.below(30))).as_bytes());
            out.extend_from_slice(eol);
        }
        let body_len = rng.below(300);
        let body = rng.bytes(body_len);
        let empty = status == 204 || status == 304;
        match rng.below(3) {
            0 => {
                out.extend_from_slice(format!("Content-Length: {}", body.len()).as_bytes());
                out.extend_from_slice(eol);
                out.extend_from_slice(eol);
                if !empty {
                    out.extend_from_slice(&body);
                }
            }
            1 => {
                out.extend_from_slice(b"Transfer-Encoding: chunked");
                out.extend_from_slice(eol);
                out.extend_from_slice(eol);
                if !empty {
                    let mut rest = &body[..];
                    while !rest.is_empty() {
                        let n = 1 + rng.below(rest.len().min(64));
                        out.extend_from_slice(format!("{n:x}").as_bytes());
                        if rng.below(3) == 0 {
                            out.extend_from_slice(b" ;k=\"v\"");
                        }
                        out.extend_from_slice(eol);
                        out.extend_from_slice(&rest[..n]);
                        out.extend_from_slice(eol);
                        rest = &rest[n..];
                    }
                    out.extend_from_slice(b"0");
                    out.extend_from_slice(eol);
                    if rng.below(2) == 0 {
                        out.extend_from_slice(b"X-Trailer: t");
                        out.extend_from_slice(eol);
                    }
                    out.extend_from_slice(eol);
                }
            }
            _ => {
                out.extend_from_slice(eol);
                if !empty {
                    out.extend_from_slice(&body);
                }
            }
        }
        (out, status, if empty { Vec::new() } else { body })
    }

    #[test]
    fn random_splits_give_the_one_shot_outcome() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let limits = ResponseLimits::default();
        for case in 0..3000 {
            let (input, status, body) = generate(&mut rng);
            let whole = run(&input, &[input.len()], limits);
            assert_eq!(whole, Ok((status, body, input.len())), "case {case}");
            let cuts = rng.cuts(input.len());
            assert_eq!(run(&input, &cuts, limits), whole, "case {case} {cuts:?}");
        }
    }

    #[test]
    fn mutated_and_random_input_never_panics_and_ignores_splits() {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        for case in 0..5000 {
            let mut input = if rng.below(4) == 0 {
                let n = rng.below(200);
                rng.bytes(n)
            } else {
                generate(&mut rng).0
            };
            for _ in 0..rng.below(4) {
                let at = rng.below(input.len() + 1);
                match rng.below(3) {
                    0 if at < input.len() => input[at] = rng.bytes(1)[0],
                    1 if at < input.len() => {
                        input.remove(at);
                    }
                    _ => input.insert(at, rng.bytes(1)[0]),
                }
            }
            let limits = ResponseLimits {
                max_head: 16 + rng.below(300),
                max_body: rng.below(400),
            };
            let whole = run(&input, &[input.len()], limits);
            let cuts = rng.cuts(input.len());
            assert_eq!(run(&input, &cuts, limits), whole, "case {case} {input:?}");
        }
    }
}
