//! Decode throughput and allocations of our WebSocket `Receiver` against tungstenite's
//! server-side read path, on the same bytes.
//!
//! Why: the receiver is the per-byte hot path of every connection, and it claims to decode in
//! place with no allocation per frame. This measures that claim against the reference
//! implementation rather than in isolation. Input: about 1 MiB of back-to-back masked client
//! frames per size (text frames of 16, 125 and 1024 bytes, binary frames of 64 KiB), each frame
//! with its own mask.
//!
//! Contenders, per size:
//! - `ours` — `Receiver::next` in a loop over the buffer, unmasking in place. The buffer is
//!   re-copied from a pristine masked copy in untimed setup, since decoding destroys it.
//! - `ours+copy` — the same, with that copy timed: it stands for the socket read into our
//!   buffer, so this is the like-for-like figure against tungstenite, whose timed `read()` also
//!   copies every input byte (from its stream into its read buffer).
//! - `tungstenite` — `WebSocket::from_raw_socket(reader, Role::Server, config)` and `read()`
//!   until the input is exhausted: its realistic server path (message assembly, unmasking,
//!   UTF-8 checks). The socket is built in untimed setup. (`FrameSocket` is not an option: it
//!   never unmasks.)
//!
//! Each is reported twice: in frames per second (`frames/*` groups) and bytes per second
//! (`bytes/*` groups). Before the groups run, a counting global allocator prints heap
//! allocations per decoded frame for both, and both decoders are checked to deliver exactly
//! the expected messages.

use std::hint::black_box;
use std::io::{self, Read, Write};
use std::time::Duration;

use augmentos_edge::ws::frame::write_masked_frame;
use augmentos_edge::ws::{Limits, Message, Opcode, Receiver, Role};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tungstenite::protocol::{Role as TRole, WebSocket, WebSocketConfig};
use tungstenite::{Error as TError, Message as TMessage};

#[path = "support/counting.rs"]
mod counting;
use counting::allocs;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

/// Target size of each input buffer.
const INPUT_BYTES: usize = 1 << 20;

/// One input: about 1 MiB of masked frames of one size.
struct Input {
    name: &'static str,
    text: bool,
    payload_len: usize,
    frames: usize,
    /// Total payload bytes (what the decoders deliver).
    payload_bytes: usize,
    /// Masked wire bytes; never decoded in place, only copied from.
    pristine: Vec<u8>,
}

fn build_input(name: &'static str, text: bool, payload_len: usize) -> Input {
    // A JSON-looking ASCII body, as the glasses and apps send; valid UTF-8 at any cut.
    let body: Vec<u8> = br#"{"type":"transcription","sessionId":"a1b2c3","text":"the quick brown fox jumps over the lazy dog","isFinal":false,"ts":1717171717171}"#
        .iter()
        .copied()
        .cycle()
        .take(payload_len)
        .collect();
    let frame_len = payload_len + 2 + 4 + if payload_len > 125 { 8 } else { 0 };
    let frames = (INPUT_BYTES / frame_len).max(1);
    let opcode = if text { Opcode::Text } else { Opcode::Binary };
    let mut pristine = Vec::with_capacity(frames * frame_len);
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..frames {
        // xorshift64: a different mask for every frame.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let m = seed.to_le_bytes();
        write_masked_frame(&mut pristine, true, opcode, &body, [m[0], m[1], m[2], m[3]]);
    }
    Input {
        name,
        text,
        payload_len,
        frames,
        payload_bytes: frames * payload_len,
        pristine,
    }
}

fn inputs() -> Vec<Input> {
    vec![
        build_input("text-16", true, 16),
        build_input("text-125", true, 125),
        build_input("text-1024", true, 1024),
        build_input("binary-64KiB", false, 64 * 1024),
    ]
}

/// What a decoder delivered: message count, payload bytes, and a checksum over payload bytes.
#[derive(Debug, PartialEq, Eq, Default)]
struct Tally {
    messages: usize,
    bytes: usize,
    checksum: u64,
}

/// Decode `buf` in place with our receiver; `check` also sums every payload byte.
fn decode_ours(buf: &mut [u8], text: bool, check: bool) -> Tally {
    let mut rx = Receiver::new(Role::Server, Limits::default());
    let mut tally = Tally::default();
    let mut at = 0;
    while at < buf.len() {
        let step = rx.next(&mut buf[at..]).expect("valid input");
        assert!(step.consumed > 0, "a complete input left a partial frame");
        at += step.consumed;
        let payload = match step.message {
            Some(Message::Text(s)) if text => s.as_bytes(),
            Some(Message::Binary(b)) if !text => b,
            other => panic!("unexpected {other:?}"),
        };
        tally.messages += 1;
        tally.bytes += payload.len();
        if check {
            tally.checksum = checksum(tally.checksum, payload);
        }
        black_box(payload);
    }
    tally
}

/// A reader over the pristine input that swallows writes (there are none to swallow: the input
/// holds no ping or close).
struct SliceStream<'a> {
    data: &'a [u8],
}

impl Read for SliceStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.data.read(buf)
    }
}

impl Write for SliceStream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Tungstenite's defaults: a 128 KiB read buffer (its advice for high read load), a 16 MiB
/// frame limit and a 64 MiB message limit, so the 64 KiB frames fit.
fn tungstenite_socket(data: &[u8]) -> WebSocket<SliceStream<'_>> {
    let config = WebSocketConfig::default()
        .max_frame_size(Some(16 << 20))
        .max_message_size(Some(64 << 20));
    WebSocket::from_raw_socket(SliceStream { data }, TRole::Server, Some(config))
}

fn decode_tungstenite(ws: &mut WebSocket<SliceStream<'_>>, text: bool, check: bool) -> Tally {
    let mut tally = Tally::default();
    loop {
        let msg = match ws.read() {
            Ok(m) => m,
            // End of input without a close: the whole buffer was read.
            Err(TError::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            )) => return tally,
            Err(e) => panic!("tungstenite refused valid input: {e}"),
        };
        let payload: &[u8] = match &msg {
            TMessage::Text(s) if text => s.as_bytes(),
            TMessage::Binary(b) if !text => b,
            other => panic!("unexpected {other:?}"),
        };
        tally.messages += 1;
        tally.bytes += payload.len();
        if check {
            tally.checksum = checksum(tally.checksum, payload);
        }
        black_box(payload);
    }
}

fn checksum(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, &b| {
        h.wrapping_mul(0x100_0000_01b3).wrapping_add(b as u64)
    })
}

/// Both decoders deliver exactly the expected messages, and the same bytes.
fn sanity_check(input: &Input) {
    let mut buf = input.pristine.clone();
    let ours = decode_ours(&mut buf, input.text, true);
    let mut ws = tungstenite_socket(&input.pristine);
    let theirs = decode_tungstenite(&mut ws, input.text, true);
    assert_eq!(
        ours.messages, input.frames,
        "{}: ours message count",
        input.name
    );
    assert_eq!(
        ours.bytes, input.payload_bytes,
        "{}: ours payload bytes",
        input.name
    );
    assert_eq!(
        ours, theirs,
        "{}: ours and tungstenite disagree",
        input.name
    );
}

/// Heap allocations per decoded frame, for one decode of the whole input. Building the decoder
/// (and, for ours, copying the input) happens before counting starts.
fn print_allocations(input: &Input) {
    let mut buf = input.pristine.clone();
    let before = allocs();
    let rx_setup = Receiver::new(Role::Server, Limits::default());
    let ours_setup = allocs() - before;
    drop(rx_setup);
    let before = allocs();
    let ours = decode_ours(&mut buf, input.text, false);
    let ours_allocs = allocs() - before;

    let before = allocs();
    let mut ws = tungstenite_socket(&input.pristine);
    let theirs_setup = allocs() - before;
    let before = allocs();
    let theirs = decode_tungstenite(&mut ws, input.text, false);
    let theirs_allocs = allocs() - before;
    assert_eq!(ours.messages, theirs.messages);

    println!(
        "{:>13}: {} frames of {} B ({} B of input); allocs/frame ours={:.3} tungstenite={:.3} \
         ({} and {} in all; per connection setup: ours={} tungstenite={})",
        input.name,
        input.frames,
        input.payload_len,
        input.pristine.len(),
        ours_allocs as f64 / ours.messages as f64,
        theirs_allocs as f64 / theirs.messages as f64,
        ours_allocs,
        theirs_allocs,
        ours_setup,
        theirs_setup,
    );
}

fn bench(c: &mut Criterion) {
    let inputs = inputs();
    for input in &inputs {
        sanity_check(input);
    }
    for input in &inputs {
        print_allocations(input);
    }

    for input in &inputs {
        for (unit, throughput) in [
            ("frames", Throughput::Elements(input.frames as u64)),
            ("bytes", Throughput::Bytes(input.pristine.len() as u64)),
        ] {
            let mut g = c.benchmark_group(format!("{unit}/{}", input.name));
            g.throughput(throughput);
            let text = input.text;

            g.bench_function("ours", |b| {
                b.iter_batched_ref(
                    || input.pristine.clone(),
                    |buf| decode_ours(buf, text, false),
                    BatchSize::LargeInput,
                )
            });

            let mut work = input.pristine.clone();
            g.bench_function("ours+copy", |b| {
                b.iter(|| {
                    work.copy_from_slice(&input.pristine);
                    decode_ours(&mut work, text, false)
                })
            });

            g.bench_function("tungstenite", |b| {
                b.iter_batched_ref(
                    || tungstenite_socket(&input.pristine),
                    |ws| decode_tungstenite(ws, text, false),
                    BatchSize::LargeInput,
                )
            });
            g.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = bench
}
criterion_main!(benches);
