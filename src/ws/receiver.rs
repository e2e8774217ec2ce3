//! WebSocket layer: the inbound message assembler for one connection.
//!
//! Owns the fragment state of one connection (and, only while a fragmented message is in
//! flight, the buffer that assembles it). [`Receiver::next`] takes the connection's unread
//! bytes, finds one complete frame in place, unmasks it in place and hands out a borrowed
//! [`Message`]. It consumes nothing on short input and never reserves memory before the header
//! proves the size fits the limits.
//!
//! Invariants: an unfragmented data frame is delivered straight from the caller's buffer (no
//! copy, no allocation); text is valid UTF-8 when delivered, and a fragmented text message is
//! refused as soon as its bytes so far cannot start valid UTF-8; control frames may interleave
//! with fragments; after a Close or an error the receiver delivers nothing more.

use super::frame::{is_valid_close_code, parse_header, FrameError, Opcode, Role};
use super::mask::apply_mask;

/// One inbound message, borrowed from the read buffer or the fragment buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// The peer's close: `None` for an empty close payload.
    Close(Option<(u16, &'a str)>),
}

/// Every way inbound bytes can break RFC 6455, each mapped to a close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsError {
    Frame(FrameError),
    /// Continuation frame with no fragmented message in progress (§5.4).
    ContinuationWithoutStart,
    /// A new Text/Binary frame while a fragmented message is in progress (§5.4).
    DataInsideFragmented,
    /// Text, or a close reason, that is not UTF-8 (§8.1).
    InvalidUtf8,
    /// A close frame with a 1-byte payload (§5.5.1).
    CloseTooShort,
    /// A close code not allowed on the wire (§7.4).
    InvalidCloseCode,
    /// A message larger than the configured message limit.
    MessageTooBig,
}

impl WsError {
    pub fn close_code(self) -> u16 {
        match self {
            WsError::Frame(e) => e.close_code(),
            WsError::InvalidUtf8 => 1007,
            WsError::MessageTooBig => 1009,
            _ => 1002,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            WsError::Frame(e) => e.reason(),
            WsError::ContinuationWithoutStart => "continuation without a started message",
            WsError::DataInsideFragmented => "new data frame inside a fragmented message",
            WsError::InvalidUtf8 => "invalid UTF-8",
            WsError::CloseTooShort => "close payload of one byte",
            WsError::InvalidCloseCode => "invalid close code",
            WsError::MessageTooBig => "message too big",
        }
    }
}

/// Limits checked from headers, before any memory is reserved.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_frame: usize,
    pub max_message: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: 64 * 1024,
            max_message: 64 * 1024,
        }
    }
}

/// The result of one [`Receiver::next`] call: how many bytes of the input it used up, and the
/// message that completed, if any. `consumed == 0` means: come back with more bytes.
#[derive(Debug)]
pub struct Step<'a> {
    pub consumed: usize,
    pub message: Option<Message<'a>>,
}

struct Fragmented {
    text: bool,
    buf: Vec<u8>,
    /// Prefix of `buf` already proven to be valid UTF-8.
    valid_upto: usize,
}

pub struct Receiver {
    role: Role,
    limits: Limits,
    /// Boxed: every connection has a receiver, few ever send a fragmented message.
    frag: Option<Box<Fragmented>>,
    /// The fragment buffer was handed out by the last call; free it on the next.
    frag_delivered: bool,
    done: bool,
}

impl Receiver {
    pub fn new(role: Role, limits: Limits) -> Receiver {
        Receiver {
            role,
            limits,
            frag: None,
            frag_delivered: false,
            done: false,
        }
    }

    /// True after a Close was delivered or an error returned.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Bytes held by an in-progress fragmented message.
    pub fn buffered(&self) -> usize {
        self.frag.as_ref().map_or(0, |f| f.buf.capacity())
    }

    /// Parse at most one frame from the front of `buf`, unmasking it in place.
    pub fn next<'a>(&'a mut self, buf: &'a mut [u8]) -> Result<Step<'a>, WsError> {
        if self.frag_delivered {
            self.frag = None;
            self.frag_delivered = false;
        }
        if self.done {
            return Ok(Step {
                consumed: 0,
                message: None,
            });
        }
        let (consumed, found) = match self.next_frame(buf) {
            Ok(r) => r,
            Err(e) => return Err(self.fail(e)),
        };
        // Positions, not references, come out of `next_frame`; the borrow is made here.
        let message = match found {
            Found::Nothing => None,
            Found::Data { text, start } => match data_message(text, &buf[start..consumed]) {
                Ok(m) => Some(m),
                Err(e) => return Err(self.fail(e)),
            },
            Found::Ping { start } => Some(Message::Ping(&buf[start..consumed])),
            Found::Pong { start } => Some(Message::Pong(&buf[start..consumed])),
            Found::Close { start } => Some(close_message(&buf[start..consumed])?),
            Found::Assembled => match &self.frag {
                Some(f) => Some(data_message(f.text, &f.buf)?),
                None => None,
            },
        };
        Ok(Step { consumed, message })
    }

    fn fail(&mut self, e: WsError) -> WsError {
        self.done = true;
        self.frag = None;
        e
    }

    /// Find and unmask one complete frame; returns its length and where its message is.
    fn next_frame(&mut self, buf: &mut [u8]) -> Result<(usize, Found), WsError> {
        let h = match parse_header(buf, self.role, self.limits.max_frame).map_err(WsError::Frame)? {
            Some(h) => h,
            None => return Ok((0, Found::Nothing)),
        };
        // Refuse on the header, before the payload arrives, where the header already proves it.
        match (h.opcode, &self.frag) {
            (Opcode::Continuation, None) => return Err(WsError::ContinuationWithoutStart),
            (Opcode::Text | Opcode::Binary, Some(_)) => return Err(WsError::DataInsideFragmented),
            (Opcode::Continuation, Some(f))
                if f.buf.len() + h.payload_len > self.limits.max_message =>
            {
                return Err(WsError::MessageTooBig)
            }
            (Opcode::Text | Opcode::Binary, None) if h.payload_len > self.limits.max_message => {
                return Err(WsError::MessageTooBig)
            }
            _ => {}
        }
        let total = h.frame_len();
        if buf.len() < total {
            return Ok((0, Found::Nothing));
        }
        let start = h.header_len;
        let payload = &mut buf[start..total];
        if let Some(mask) = h.mask {
            apply_mask(payload, mask);
        }
        let found = match h.opcode {
            Opcode::Text | Opcode::Binary if h.fin => Found::Data {
                text: h.opcode == Opcode::Text,
                start,
            },
            Opcode::Text | Opcode::Binary => {
                let mut buf =
                    Vec::with_capacity(payload.len().clamp(256, self.limits.max_message.max(256)));
                buf.extend_from_slice(payload);
                let mut f = Fragmented {
                    text: h.opcode == Opcode::Text,
                    buf,
                    valid_upto: 0,
                };
                check_partial_utf8(&mut f)?;
                self.frag = Some(Box::new(f));
                Found::Nothing
            }
            Opcode::Continuation => {
                let f = self
                    .frag
                    .as_mut()
                    .ok_or(WsError::ContinuationWithoutStart)?;
                f.buf.extend_from_slice(payload);
                check_partial_utf8(f)?;
                if !h.fin {
                    Found::Nothing
                } else if f.text && f.valid_upto != f.buf.len() {
                    return Err(WsError::InvalidUtf8);
                } else {
                    self.frag_delivered = true;
                    Found::Assembled
                }
            }
            Opcode::Ping => Found::Ping { start },
            Opcode::Pong => Found::Pong { start },
            Opcode::Close => {
                close_message(payload)?;
                self.done = true;
                Found::Close { start }
            }
        };
        Ok((total, found))
    }
}

/// Where the message of a frame is, by position (so no borrow outlives the parse).
enum Found {
    Nothing,
    Data { text: bool, start: usize },
    Assembled,
    Ping { start: usize },
    Pong { start: usize },
    Close { start: usize },
}

fn data_message(text: bool, payload: &[u8]) -> Result<Message<'_>, WsError> {
    if text {
        std::str::from_utf8(payload)
            .map(Message::Text)
            .map_err(|_| WsError::InvalidUtf8)
    } else {
        Ok(Message::Binary(payload))
    }
}

fn close_message(payload: &[u8]) -> Result<Message<'_>, WsError> {
    match payload {
        [] => Ok(Message::Close(None)),
        [_] => Err(WsError::CloseTooShort),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_close_code(code) {
                return Err(WsError::InvalidCloseCode);
            }
            let reason = std::str::from_utf8(reason).map_err(|_| WsError::InvalidUtf8)?;
            Ok(Message::Close(Some((code, reason))))
        }
    }
}

/// Advance the proven-valid prefix of a fragmented text message; fail as soon as the bytes so
/// far cannot be the start of valid UTF-8 (a truncated final character is allowed until FIN).
fn check_partial_utf8(f: &mut Fragmented) -> Result<(), WsError> {
    if !f.text {
        return Ok(());
    }
    match std::str::from_utf8(&f.buf[f.valid_upto..]) {
        Ok(_) => f.valid_upto = f.buf.len(),
        Err(e) if e.error_len().is_none() => f.valid_upto += e.valid_up_to(),
        Err(_) => return Err(WsError::InvalidUtf8),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::write_masked_frame;

    const M: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn frame(fin: bool, op: Opcode, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        write_masked_frame(&mut v, fin, op, payload, M);
        v
    }

    /// Feed `input` to a receiver as a connection would and collect what it delivers.
    fn run(input: &[u8]) -> (Vec<String>, Option<WsError>) {
        let mut rx = Receiver::new(
            Role::Server,
            Limits {
                max_frame: 1000,
                max_message: 2000,
            },
        );
        let mut buf = input.to_vec();
        let mut at = 0;
        let mut out = Vec::new();
        loop {
            match rx.next(&mut buf[at..]) {
                Ok(Step { consumed: 0, .. }) => return (out, None),
                Ok(step) => {
                    at += step.consumed;
                    if let Some(m) = step.message {
                        out.push(format!("{m:?}"));
                    }
                }
                Err(e) => return (out, Some(e)),
            }
        }
    }

    #[test]
    fn single_frame_is_delivered_in_place() {
        let mut buf = frame(true, Opcode::Text, b"hello");
        let ptr = buf.as_ptr() as usize;
        let mut rx = Receiver::new(Role::Server, Limits::default());
        let step = rx.next(&mut buf).unwrap();
        assert_eq!(step.consumed, 11);
        match step.message {
            Some(Message::Text(s)) => {
                assert_eq!(s, "hello");
                assert_eq!(
                    s.as_ptr() as usize,
                    ptr + 6,
                    "payload must be borrowed in place"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fragments_with_interleaved_ping() {
        let mut input = frame(false, Opcode::Text, "hé".as_bytes());
        input.extend(frame(true, Opcode::Ping, b"p"));
        input.extend(frame(false, Opcode::Continuation, b"ll"));
        input.extend(frame(true, Opcode::Continuation, b"o"));
        let (out, err) = run(&input);
        assert_eq!(err, None);
        assert_eq!(
            out,
            vec!["Ping([112])".to_string(), "Text(\"héllo\")".to_string()]
        );
    }

    #[test]
    fn utf8_split_across_fragments_is_accepted() {
        let bytes = "€".as_bytes(); // 3 bytes
        let mut input = frame(false, Opcode::Text, &bytes[..1]);
        input.extend(frame(false, Opcode::Continuation, &bytes[1..2]));
        input.extend(frame(true, Opcode::Continuation, &bytes[2..]));
        assert_eq!(run(&input), (vec!["Text(\"€\")".to_string()], None));
    }

    #[test]
    fn invalid_utf8_fails_fast_in_first_fragment() {
        let input = frame(false, Opcode::Text, &[b'a', 0xff]);
        assert_eq!(run(&input).1, Some(WsError::InvalidUtf8));
    }

    #[test]
    fn truncated_utf8_at_fin_fails() {
        let mut input = frame(false, Opcode::Text, &[0xe2, 0x82]);
        input.extend(frame(true, Opcode::Continuation, b""));
        assert_eq!(run(&input).1, Some(WsError::InvalidUtf8));
    }

    #[test]
    fn rule_violations_map_to_close_codes() {
        let cases: Vec<(Vec<u8>, WsError, u16)> = vec![
            (
                frame(true, Opcode::Continuation, b"x"),
                WsError::ContinuationWithoutStart,
                1002,
            ),
            (
                [
                    frame(false, Opcode::Text, b"a"),
                    frame(true, Opcode::Binary, b"b"),
                ]
                .concat(),
                WsError::DataInsideFragmented,
                1002,
            ),
            (
                frame(true, Opcode::Text, &[0xc3, 0x28]),
                WsError::InvalidUtf8,
                1007,
            ),
            (
                frame(true, Opcode::Close, &[3]),
                WsError::CloseTooShort,
                1002,
            ),
            (
                frame(true, Opcode::Close, &1005u16.to_be_bytes()),
                WsError::InvalidCloseCode,
                1002,
            ),
            (
                frame(true, Opcode::Close, &[0x03, 0xe8, 0xff]),
                WsError::InvalidUtf8,
                1007,
            ),
            (
                [
                    frame(false, Opcode::Binary, &[0; 900]),
                    frame(false, Opcode::Continuation, &[0; 900]),
                    frame(true, Opcode::Continuation, &[0; 900]),
                ]
                .concat(),
                WsError::MessageTooBig,
                1009,
            ),
            (
                frame(true, Opcode::Binary, &[0; 1001]),
                WsError::Frame(FrameError::FrameTooBig),
                1009,
            ),
        ];
        for (input, want, code) in cases {
            let (_, got) = run(&input);
            assert_eq!(got, Some(want));
            assert_eq!(want.close_code(), code);
        }
    }

    #[test]
    fn nothing_after_close() {
        let mut input = frame(true, Opcode::Close, &[0x03, 0xe8, b'b', b'y', b'e']);
        input.extend(frame(true, Opcode::Text, b"late"));
        let (out, err) = run(&input);
        assert_eq!(err, None);
        assert_eq!(out, vec!["Close(Some((1000, \"bye\")))".to_string()]);
    }

    #[test]
    fn every_prefix_of_a_frame_is_partial() {
        for len in [5usize, 300, 70_000] {
            let payload = vec![b'a'; len];
            let full = frame(true, Opcode::Text, &payload);
            let mut rx = Receiver::new(
                Role::Server,
                Limits {
                    max_frame: 1 << 20,
                    max_message: 1 << 20,
                },
            );
            // A sample of prefixes for the big one, all of them for the small ones.
            let step = if len > 1000 { 997 } else { 1 };
            for cut in (0..full.len()).step_by(step) {
                let mut b = full[..cut].to_vec();
                assert_eq!(rx.next(&mut b).unwrap().consumed, 0, "cut {cut}");
                assert_eq!(b, full[..cut], "a partial frame must not be unmasked");
            }
            let mut b = full.clone();
            assert_eq!(rx.next(&mut b).unwrap().consumed, full.len());
        }
    }
}
