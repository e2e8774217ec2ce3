//! Integration tests over real sockets: the whole server (core + mio reactor + transports) on a
//! background thread, driven by blocking clients over TCP, a Unix socket and the in-process
//! transport.
//!
//! Clients are `tungstenite` (an independent implementation) where well-formed traffic is
//! enough, and raw sockets with hand-built frames where a test needs malformed or fragmented
//! bytes. What each test pins: echo of every message shape up to the 64 KiB limit and the 1009
//! just past it, ping/pong, the clean close, slow and stalled handshakes, the RFC 6455 violation
//! list (exact close code, then the connection closed, with a healthy neighbour unaffected), and
//! the HTTP endpoints and error responses (JSON with a `code`, then the connection closed).
//!
//! No test asserts elapsed time; deadlines are short config values and client reads have long
//! timeouts (see `support`).

mod support;

use augmentos_edge::server::ServerConfig;
use augmentos_edge::ws::Opcode;
use std::io::Write;
use std::time::Duration;
use support::{
    echo_config, expect_closed, http_exchange, upgrade_request, RawWs, Sock, TestServer, Transport,
};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

/// The server's default frame and message limit.
const LIMIT: usize = 64 * 1024;

// ---- helpers --------------------------------------------------------------------------------

fn next(ws: &mut WebSocket<Sock>) -> Message {
    ws.read()
        .unwrap_or_else(|e| panic!("reading a message failed: {e}"))
}

fn echo_text(ws: &mut WebSocket<Sock>, text: &str) {
    ws.send(Message::text(text)).expect("send text");
    match next(ws) {
        Message::Text(t) => assert!(
            t.as_str() == text,
            "text echo differs (sent {} bytes, got {})",
            text.len(),
            t.len()
        ),
        other => panic!("expected a text echo, got {other:?}"),
    }
}

fn echo_binary(ws: &mut WebSocket<Sock>, data: &[u8]) {
    ws.send(Message::binary(data.to_vec()))
        .expect("send binary");
    expect_binary(ws, data);
}

fn expect_binary(ws: &mut WebSocket<Sock>, data: &[u8]) {
    match next(ws) {
        Message::Binary(b) => assert!(
            b[..] == data[..],
            "binary echo differs (sent {} bytes, got {})",
            data.len(),
            b.len()
        ),
        other => panic!("expected a binary echo, got {other:?}"),
    }
}

/// A payload where every position matters (a shifted or dropped byte shows).
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Encode client frames with a raw client's masking, for writing under a tungstenite client.
fn frames(parts: &[(bool, Opcode, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (fin, op, payload)) in parts.iter().enumerate() {
        let mask = [0x9e, 0x21, i as u8, 0x5c];
        augmentos_edge::ws::frame::write_masked_frame(&mut out, *fin, *op, payload, mask);
    }
    out
}

fn write_raw(ws: &mut WebSocket<Sock>, bytes: &[u8]) {
    ws.get_mut().write_all(bytes).expect("write raw frames");
}

// ---- WebSocket behaviour, per transport ------------------------------------------------------

fn echo_text_and_binary(t: Transport) {
    let server = TestServer::start(echo_config());
    let mut ws = server.ws(t);
    echo_text(&mut ws, "hello");
    echo_text(&mut ws, "");
    echo_text(&mut ws, "héllo wörld € 𝄞");
    echo_binary(&mut ws, &(0..=255).collect::<Vec<u8>>());
    echo_binary(&mut ws, &[]);
    // Each length form: 7-bit, 16-bit, and the 64-bit form at exactly the limit.
    for len in [125, 126, 65_535, LIMIT] {
        echo_binary(&mut ws, &pattern(len));
    }
    // Multi-byte text as close to the limit as whole characters allow.
    let mut text = String::new();
    for c in "añb€c𝄞".chars().cycle() {
        if text.len() + c.len_utf8() > LIMIT {
            break;
        }
        text.push(c);
    }
    echo_text(&mut ws, &text);
    let ascii: String = (0..LIMIT)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    echo_text(&mut ws, &ascii);
    // Pipelined: many messages out before any is read come back whole and in order.
    for i in 0..50 {
        ws.write(Message::text(format!("message {i}")))
            .expect("queue");
    }
    ws.flush().expect("flush");
    for i in 0..50 {
        match next(&mut ws) {
            Message::Text(t) => assert_eq!(t.as_str(), format!("message {i}")),
            other => panic!("expected message {i}, got {other:?}"),
        }
    }
}

fn echo_fragmented(t: Transport) {
    let server = TestServer::start(echo_config());
    let mut ws = server.ws(t);

    // Text split inside a two-byte and inside a three-byte character.
    let text = "héllo, wörld €uro";
    let b = text.as_bytes();
    let euro = text.find('€').expect("has €");
    write_raw(
        &mut ws,
        &frames(&[
            (false, Opcode::Text, &b[..2]),
            (false, Opcode::Continuation, &b[2..euro + 1]),
            (false, Opcode::Continuation, &b[euro + 1..euro + 2]),
            (true, Opcode::Continuation, &b[euro + 2..]),
        ]),
    );
    match next(&mut ws) {
        Message::Text(got) => assert_eq!(got.as_str(), text),
        other => panic!("expected the assembled text, got {other:?}"),
    }

    // Binary in four fragments adding up to exactly the message limit.
    let data = pattern(LIMIT);
    let q = LIMIT / 4;
    write_raw(
        &mut ws,
        &frames(&[
            (false, Opcode::Binary, &data[..q]),
            (false, Opcode::Continuation, &data[q..2 * q]),
            (false, Opcode::Continuation, &data[2 * q..3 * q]),
            (true, Opcode::Continuation, &data[3 * q..]),
        ]),
    );
    expect_binary(&mut ws, &data);

    // A ping between fragments is answered at once; the message follows, whole.
    write_raw(
        &mut ws,
        &frames(&[
            (false, Opcode::Text, b"inter"),
            (true, Opcode::Ping, b"mid-message"),
            (true, Opcode::Continuation, b"leaved"),
        ]),
    );
    match next(&mut ws) {
        Message::Pong(p) => assert_eq!(&p[..], b"mid-message"),
        other => panic!("expected the pong first, got {other:?}"),
    }
    match next(&mut ws) {
        Message::Text(got) => assert_eq!(got.as_str(), "interleaved"),
        other => panic!("expected the assembled text, got {other:?}"),
    }

    // Empty fragments, and a message in many one-byte fragments.
    write_raw(
        &mut ws,
        &frames(&[
            (false, Opcode::Text, b""),
            (false, Opcode::Continuation, b"abc"),
            (true, Opcode::Continuation, b""),
        ]),
    );
    match next(&mut ws) {
        Message::Text(got) => assert_eq!(got.as_str(), "abc"),
        other => panic!("expected \"abc\", got {other:?}"),
    }
    let data = pattern(300);
    let mut parts = vec![(false, Opcode::Binary, &data[..1])];
    for i in 1..data.len() {
        parts.push((i + 1 == data.len(), Opcode::Continuation, &data[i..i + 1]));
    }
    write_raw(&mut ws, &frames(&parts));
    expect_binary(&mut ws, &data);

    // The connection still works for ordinary messages.
    echo_text(&mut ws, "after fragments");
}

fn over_the_limit_closes_with_1009(t: Transport) {
    let server = TestServer::start(echo_config());

    // One frame a byte over the limit (sent whole, as a real client would).
    let mut raw = server.raw_ws(t);
    let frame = raw.encode(true, Opcode::Binary, &pattern(LIMIT + 1));
    raw.sock.write_tolerant(&frame);
    raw.expect_close(1009, "frame over the limit");
    raw.expect_closed("frame over the limit");

    // A fragmented message whose fragments each fit but whose total is a byte over.
    let mut raw = server.raw_ws(t);
    let half = pattern(LIMIT / 2);
    let mut bytes = raw.encode(false, Opcode::Binary, &half);
    bytes.extend(raw.encode(false, Opcode::Continuation, &half));
    bytes.extend(raw.encode(true, Opcode::Continuation, b"!"));
    raw.sock.write_tolerant(&bytes);
    raw.expect_close(1009, "message over the limit");
    raw.expect_closed("message over the limit");

    // The server is still serving.
    echo_text(&mut server.ws(t), "still here");
}

fn ping_gets_pong_with_the_same_payload(t: Transport) {
    let server = TestServer::start(echo_config());
    let mut ws = server.ws(t);
    for payload in [b"edge-ping".to_vec(), Vec::new(), pattern(125)] {
        ws.send(Message::Ping(payload.clone().into()))
            .expect("send ping");
        match next(&mut ws) {
            Message::Pong(p) => assert_eq!(p[..], payload[..]),
            other => panic!("expected a pong, got {other:?}"),
        }
    }
    // Pongs keep their place among data messages.
    ws.write(Message::text("one")).expect("queue");
    ws.write(Message::Ping(b"between".to_vec().into()))
        .expect("queue");
    ws.write(Message::text("two")).expect("queue");
    ws.flush().expect("flush");
    let got: Vec<Message> = (0..3).map(|_| next(&mut ws)).collect();
    assert_eq!(
        got,
        vec![
            Message::text("one"),
            Message::Pong(b"between".to_vec().into()),
            Message::text("two"),
        ]
    );
    // An unsolicited pong is ignored, not echoed.
    ws.send(Message::Pong(b"unsolicited".to_vec().into()))
        .expect("send pong");
    echo_text(&mut ws, "after the pong");
}

fn clean_close(t: Transport) {
    let server = TestServer::start(echo_config());

    let mut ws = server.ws(t);
    echo_text(&mut ws, "before closing");
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .expect("send close");
    match next(&mut ws) {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1000),
        other => panic!("expected the close reply, got {other:?}"),
    }
    expect_closed(ws.get_mut(), "after the close handshake");

    // With the raw client: a close with no payload is answered by one with no payload.
    let mut raw = server.raw_ws(t);
    raw.send(true, Opcode::Close, b"");
    let f = raw.read_frame();
    assert_eq!((f.opcode, f.payload.len()), (0x8, 0), "{f:?}");
    raw.expect_closed("after an empty close");

    // And a close with a code gets that code back.
    let mut raw = server.raw_ws(t);
    raw.send(true, Opcode::Close, &[0x03, 0xe8, b'o', b'k']);
    raw.expect_close(1000, "raw close 1000");
    raw.expect_closed("after a raw close");
}

/// A client that drips its upgrade request one byte at a time still gets through.
fn slow_client_completes_the_handshake(t: Transport) {
    let server = TestServer::start(echo_config());
    let mut sock = server.connect(t);
    for b in upgrade_request().bytes() {
        sock.write_all(&[b]).expect("drip the request");
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut raw = RawWs::after_request(sock);
    // The first frame dripped too.
    let frame = raw.encode(true, Opcode::Text, b"slow and steady");
    for b in frame {
        raw.sock.write_all(&[b]).expect("drip the frame");
        std::thread::sleep(Duration::from_millis(1));
    }
    let f = raw.read_frame();
    assert_eq!((f.fin, f.opcode), (true, 0x1));
    assert_eq!(f.payload, b"slow and steady");
    raw.send(true, Opcode::Binary, b"then fast");
    let f = raw.read_frame();
    assert_eq!((f.opcode, &f.payload[..]), (0x2, &b"then fast"[..]));
}

/// Clients that stall before their request is complete get a 408 and are disconnected.
fn stalled_handshake_times_out(t: Transport) {
    let server = TestServer::start(ServerConfig {
        handshake_timeout: Duration::from_millis(300),
        ..echo_config()
    });
    let partial = upgrade_request();
    let stalls: [&[u8]; 3] = [
        b"",
        b"GET /ec",
        &partial.as_bytes()[..partial.len() - 2], // all but the final CRLF
    ];
    for sent in stalls {
        let mut sock = server.connect(t);
        sock.write_all(sent).expect("send the partial request");
        let resp = parse_until_closed(&mut sock);
        assert_eq!(resp.status, 408, "after {sent:?}");
        assert_json_error(&resp, "HANDSHAKE_TIMEOUT");
    }

    // The deadline belongs to the handshake only: an upgraded connection outlives it.
    let mut ws = server.ws(t);
    std::thread::sleep(Duration::from_millis(900));
    echo_text(&mut ws, "past the handshake deadline");
}

fn parse_until_closed(sock: &mut Sock) -> support::HttpResponse {
    support::parse_response(&support::read_until_closed(sock))
}

macro_rules! per_transport {
    ($($module:ident => $transport:expr;)*) => {$(
        mod $module {
            use super::*;
            const T: Transport = $transport;
            #[test]
            fn echo_text_and_binary() {
                super::echo_text_and_binary(T)
            }
            #[test]
            fn echo_fragmented() {
                super::echo_fragmented(T)
            }
            #[test]
            fn over_the_limit_closes_with_1009() {
                super::over_the_limit_closes_with_1009(T)
            }
            #[test]
            fn ping_gets_pong_with_the_same_payload() {
                super::ping_gets_pong_with_the_same_payload(T)
            }
            #[test]
            fn clean_close() {
                super::clean_close(T)
            }
            #[test]
            fn slow_client_completes_the_handshake() {
                super::slow_client_completes_the_handshake(T)
            }
            #[test]
            fn stalled_handshake_times_out() {
                super::stalled_handshake_times_out(T)
            }
            #[test]
            fn health_is_json_ok() {
                super::health_is_json_ok(T)
            }
            #[test]
            fn http_errors_are_json_and_close() {
                super::http_errors_are_json_and_close(T)
            }
        }
    )*};
}

per_transport! {
    tcp => Transport::Tcp;
    unix => Transport::Unix;
    in_process => Transport::InProcess;
}

// ---- RFC 6455 violations, over TCP ----------------------------------------------------------

/// Masked frame bytes with an arbitrary first byte (to set reserved bits or bad opcodes).
fn with_first_byte(raw: &mut RawWs, b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = raw.encode(true, Opcode::Text, payload);
    bytes[0] = b0;
    bytes
}

#[test]
fn protocol_violations_close_with_the_right_code_and_disturb_nothing_else() {
    type Build = fn(&mut RawWs) -> Vec<u8>;
    let cases: &[(&str, u16, Build)] = &[
        ("RSV1 set", 1002, |r| with_first_byte(r, 0xC1, b"x")),
        ("RSV2 set", 1002, |r| with_first_byte(r, 0xA1, b"x")),
        ("RSV3 set", 1002, |r| with_first_byte(r, 0x91, b"x")),
        ("data opcode 0x3", 1002, |r| with_first_byte(r, 0x83, b"x")),
        ("control opcode 0xB", 1002, |r| {
            with_first_byte(r, 0x8B, b"")
        }),
        ("unmasked client frame", 1002, |_| {
            vec![0x81, 0x05, b'h', b'e', b'l', b'l', b'o']
        }),
        ("fragmented ping", 1002, |r| {
            r.encode(false, Opcode::Ping, b"x")
        }),
        ("fragmented close", 1002, |r| {
            r.encode(false, Opcode::Close, &[0x03, 0xe8])
        }),
        ("ping over 125 bytes", 1002, |r| {
            r.encode(true, Opcode::Ping, &[b'p'; 126])
        }),
        ("close over 125 bytes", 1002, |r| {
            let mut p = vec![0x03, 0xe8];
            p.extend([b'r'; 124]);
            r.encode(true, Opcode::Close, &p)
        }),
        ("continuation without start", 1002, |r| {
            r.encode(true, Opcode::Continuation, b"orphan")
        }),
        ("text inside a fragmented message", 1002, |r| {
            let mut b = r.encode(false, Opcode::Text, b"first");
            b.extend(r.encode(true, Opcode::Text, b"second"));
            b
        }),
        ("binary inside a fragmented message", 1002, |r| {
            let mut b = r.encode(false, Opcode::Binary, b"first");
            b.extend(r.encode(false, Opcode::Binary, b"second"));
            b
        }),
        ("invalid UTF-8 text", 1007, |r| {
            r.encode(true, Opcode::Text, &[b'o', b'k', 0xc3, 0x28])
        }),
        ("UTF-16 surrogate in text", 1007, |r| {
            r.encode(true, Opcode::Text, &[0xed, 0xa0, 0x80])
        }),
        ("invalid UTF-8 split across fragments", 1007, |r| {
            // "a" then the first two bytes of '€' (fine so far), then a byte that cannot
            // continue it.
            let mut b = r.encode(false, Opcode::Text, &[b'a', 0xe2, 0x82]);
            b.extend(r.encode(true, Opcode::Continuation, &[0x28, b'z']));
            b
        }),
        ("truncated UTF-8 at the final fragment", 1007, |r| {
            let mut b = r.encode(false, Opcode::Text, b"ok");
            b.extend(r.encode(true, Opcode::Continuation, &[0xe2, 0x82]));
            b
        }),
        ("close code 1005", 1002, |r| {
            r.encode(true, Opcode::Close, &1005u16.to_be_bytes())
        }),
        ("close code 1006", 1002, |r| {
            r.encode(true, Opcode::Close, &1006u16.to_be_bytes())
        }),
        ("close code 999", 1002, |r| {
            r.encode(true, Opcode::Close, &999u16.to_be_bytes())
        }),
        ("close code 5000", 1002, |r| {
            r.encode(true, Opcode::Close, &5000u16.to_be_bytes())
        }),
        ("1-byte close payload", 1002, |r| {
            r.encode(true, Opcode::Close, &[0x03])
        }),
        ("close reason not UTF-8", 1007, |r| {
            r.encode(true, Opcode::Close, &[0x03, 0xe8, 0xff, 0xfe])
        }),
        ("frame over the limit", 1009, |r| {
            r.encode(true, Opcode::Text, &vec![b'a'; LIMIT + 1])
        }),
        ("fragmented message over the limit", 1009, |r| {
            let mut b = r.encode(false, Opcode::Text, &vec![b'a'; LIMIT]);
            b.extend(r.encode(true, Opcode::Continuation, b"a"));
            b
        }),
    ];

    let server = TestServer::start(echo_config());
    let mut healthy = server.ws(Transport::Tcp);
    echo_text(&mut healthy, "before any violation");
    for (name, code, build) in cases {
        let mut bad = server.raw_ws(Transport::Tcp);
        // A good message first: the violation, not the connection, is what is refused.
        bad.send(true, Opcode::Text, b"warm-up");
        let f = bad.read_frame();
        assert_eq!(f.payload, b"warm-up", "{name}: warm-up echo");
        let bytes = build(&mut bad);
        bad.sock.write_tolerant(&bytes);
        bad.expect_close(*code, name);
        // Answer the close as a real client would; the server may already have hung up.
        let reply = bad.encode(true, Opcode::Close, &code.to_be_bytes());
        bad.sock.write_tolerant(&reply);
        bad.expect_closed(name);
        echo_text(&mut healthy, &format!("healthy after: {name}"));
    }
    echo_binary(&mut healthy, &pattern(LIMIT));
}

/// A rejected client that never answers the server's close frame is disconnected anyway (by
/// the close deadline, 300 ms in `echo_config`).
#[test]
fn rejected_client_that_never_answers_the_close_is_disconnected() {
    let server = TestServer::start(echo_config());
    let mut healthy = server.ws(Transport::Tcp);
    let mut bad = server.raw_ws(Transport::Tcp);
    let bytes = with_first_byte(&mut bad, 0x83, b"x");
    bad.sock.write_tolerant(&bytes);
    bad.expect_close(1002, "unknown opcode");
    bad.expect_closed("silent client after the server's close");
    echo_text(&mut healthy, "unaffected");
}

// ---- HTTP ------------------------------------------------------------------------------------

fn assert_json_error(resp: &support::HttpResponse, code: &str) {
    assert_eq!(
        resp.header("content-type"),
        Some("application/json"),
        "{resp:?}"
    );
    let body = resp.json();
    assert_eq!(body["code"].as_str(), Some(code), "body: {body}");
    assert!(body["message"].is_string(), "body: {body}");
}

fn health_is_json_ok(t: Transport) {
    let server = TestServer::start(echo_config());
    let resp = http_exchange(
        server.connect(t),
        b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let body = resp.json();
    assert_eq!(body["status"].as_str(), Some("ok"), "body: {body}");
    // A query string does not change the route.
    let resp = http_exchange(
        server.connect(t),
        b"GET /health?verbose=1 HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["status"].as_str(), Some("ok"));
}

/// What is sent, the request, the status and error code expected, and a header that status
/// requires (`Allow`, `Upgrade`, `Sec-WebSocket-Version`).
type HttpCase = (
    &'static str,
    Vec<u8>,
    u16,
    &'static str,
    Option<(&'static str, &'static str)>,
);

fn http_errors_are_json_and_close(t: Transport) {
    let upgrade = upgrade_request();
    let mut flood = String::from("GET /health HTTP/1.1\r\nHost: localhost\r\n");
    for i in 0..40 {
        flood.push_str(&format!("X-Flood-{i}: {i}\r\n"));
    }
    flood.push_str("\r\n");
    let big_head = format!(
        "GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "b".repeat(9 * 1024)
    );
    let cases: Vec<HttpCase> = vec![
        (
            "unknown path",
            b"GET /nope HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            404,
            "NOT_FOUND",
            None,
        ),
        (
            "POST to the WebSocket route",
            b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n".to_vec(),
            405,
            "METHOD_NOT_ALLOWED",
            Some(("allow", "GET")),
        ),
        (
            "GET /echo without upgrade headers",
            b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            426,
            "UPGRADE_REQUIRED",
            Some(("upgrade", "websocket")),
        ),
        (
            "WebSocket version 8",
            upgrade
                .replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8")
                .into_bytes(),
            426,
            "UNSUPPORTED_WEBSOCKET_VERSION",
            Some(("sec-websocket-version", "13")),
        ),
        (
            "40 headers",
            flood.into_bytes(),
            431,
            "TOO_MANY_HEADERS",
            None,
        ),
        (
            "request head over 8 KiB",
            big_head.into_bytes(),
            431,
            "HEADERS_TOO_LARGE",
            None,
        ),
    ];
    let server = TestServer::start(echo_config());
    for (name, request, status, code, header) in cases {
        // `http_exchange` returns only once the server has closed the connection.
        let resp = http_exchange(server.connect(t), &request);
        assert_eq!(resp.status, status, "{name}: {resp:?}");
        assert_json_error(&resp, code);
        if let Some((h, v)) = header {
            assert_eq!(resp.header(h), Some(v), "{name}: header {h}");
        }
    }
    // Errors are per connection: the server still upgrades and echoes.
    echo_text(&mut server.ws(t), "after the errors");
}
