//! Fuzzes the WebSocket message assembler, `augmentos_edge::ws::Receiver`, the way a connection
//! drives it: bytes arrive in arbitrary chunks, are appended to a read buffer, and `next` is
//! called until it asks for more, with the owner draining `consumed` after every step.
//!
//! Input layout: byte 0's low 3 bits give `n`, the number of chunk-size bytes that follow (each
//! chunk is `1 + byte` long, cycled); the rest is the byte stream. Each stream is run for both
//! roles (`Role::Server`, which requires masked frames, and `Role::Client`, which forbids them),
//! once whole and once in the chunking.
//!
//! Invariants checked:
//! - no panic, and `consumed` never exceeds the buffer it was given;
//! - `consumed == 0` (need more) never comes with a message, and the unread buffer it leaves
//!   is shorter than one maximal frame (header + `max_frame`): a receiver never stalls on bytes
//!   that already hold a complete frame;
//! - delivered sizes respect the limits: data messages <= `max_message`, control payloads
//!   <= 125, close reasons <= 123 with a close code valid on the wire; text is `&str`;
//! - the fragment buffer stays within twice the message limit;
//! - after an `Err` or a `Close`, every later call delivers nothing and consumes nothing;
//! - chunking does not change the outcome: the messages delivered, and the error (if any),
//!   are the same as for the whole stream fed at once.

#![no_main]

use augmentos_edge::ws::frame::is_valid_close_code;
use augmentos_edge::ws::{Limits, Message, Receiver, Role, WsError};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_frame: 4096,
    max_message: 8192,
};

/// Longest frame header: 2 bytes, 8 bytes of extended length, 4 bytes of mask.
const MAX_HEADER: usize = 14;

/// A delivered message, owned, so runs can be compared after the buffer is gone.
#[derive(Debug, PartialEq, Eq)]
enum Owned {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    messages: Vec<Owned>,
    error: Option<WsError>,
}

/// Check one delivered message against the limits and turn it into an owned value.
fn check_message(m: &Message<'_>) -> Owned {
    match *m {
        Message::Text(t) => {
            assert!(t.len() <= LIMITS.max_message, "text of {} bytes", t.len());
            // `t` is a `&str`; re-validate anyway so an unsound `from_utf8_unchecked` in the
            // crate would be caught here.
            assert!(std::str::from_utf8(t.as_bytes()).is_ok());
            Owned::Text(t.to_owned())
        }
        Message::Binary(b) => {
            assert!(b.len() <= LIMITS.max_message, "binary of {} bytes", b.len());
            Owned::Binary(b.to_vec())
        }
        Message::Ping(p) => {
            assert!(p.len() <= 125, "ping of {} bytes", p.len());
            Owned::Ping(p.to_vec())
        }
        Message::Pong(p) => {
            assert!(p.len() <= 125, "pong of {} bytes", p.len());
            Owned::Pong(p.to_vec())
        }
        Message::Close(c) => {
            if let Some((code, reason)) = c {
                assert!(is_valid_close_code(code), "close code {code} delivered");
                assert!(
                    reason.len() <= 123,
                    "close reason of {} bytes",
                    reason.len()
                );
            }
            Owned::Close(c.map(|(code, r)| (code, r.to_owned())))
        }
    }
}

/// Feed `stream` to a fresh receiver in chunks of the given sizes (cycled; empty = all at once).
fn drive(role: Role, stream: &[u8], sizes: &[usize]) -> Outcome {
    let mut rx = Receiver::new(role, LIMITS);
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Outcome {
        messages: Vec::new(),
        error: None,
    };
    let mut finished = false;
    let mut pos = 0;
    let mut turn = 0;
    while pos < stream.len() {
        let size = sizes
            .get(turn % sizes.len().max(1))
            .copied()
            .unwrap_or(stream.len());
        turn += 1;
        let end = (pos + size).min(stream.len());
        buf.extend_from_slice(&stream[pos..end]);
        pos = end;

        loop {
            let len = buf.len();
            match rx.next(&mut buf) {
                Ok(step) if finished => {
                    assert_eq!(step.consumed, 0, "consumed after an error or a close");
                    assert!(
                        step.message.is_none(),
                        "delivered after an error or a close"
                    );
                    break;
                }
                Ok(step) => {
                    assert!(step.consumed <= len, "consumed {} of {len}", step.consumed);
                    if step.consumed == 0 {
                        assert!(step.message.is_none(), "a message with nothing consumed");
                        assert!(
                            len < MAX_HEADER + LIMITS.max_frame,
                            "stalled on {len} bytes, more than one whole frame"
                        );
                        break;
                    }
                    let consumed = step.consumed;
                    if let Some(m) = &step.message {
                        let owned = check_message(m);
                        if matches!(owned, Owned::Close(_)) {
                            finished = true;
                        }
                        out.messages.push(owned);
                    }
                    buf.drain(..consumed);
                }
                Err(e) => {
                    assert!(!finished, "an error after an error or a close");
                    out.error = Some(e);
                    finished = true;
                    break;
                }
            }
            assert!(
                rx.buffered() <= 2 * LIMITS.max_message.max(256),
                "fragment buffer holds {} bytes",
                rx.buffered()
            );
        }
        if finished {
            assert!(rx.is_done());
        }
    }
    // One more call on what is left must not change anything once finished.
    if finished {
        let step = rx
            .next(&mut buf)
            .expect("a finished receiver does not fail again");
        assert_eq!(step.consumed, 0);
        assert!(step.message.is_none());
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let n = (first & 7) as usize;
    let n = n.min(rest.len());
    let sizes: Vec<usize> = rest[..n].iter().map(|&b| 1 + b as usize).collect();
    let stream = &rest[n..];

    for role in [Role::Server, Role::Client] {
        let whole = drive(role, stream, &[]);
        let chunked = drive(role, stream, &sizes);
        assert_eq!(
            whole, chunked,
            "chunking {sizes:?} changed the outcome ({role:?})"
        );
    }
});
