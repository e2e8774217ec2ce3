//! Deterministic tests of the connection core through the in-memory world (`sim::World`):
//! no sockets, a virtual clock. Covers the RFC 6455 violation list (exact close codes), the
//! handshake deadline, the close handshake and its deadline, HTTP refusals, and that a bad
//! connection disturbs no other.

use augmentos_edge::server::ServerConfig;
use augmentos_edge::sim::{Received, World};
use augmentos_edge::ws::frame::{write_header, Opcode};
use std::time::Duration;

fn world() -> World {
    World::new(ServerConfig {
        echo: true,
        ..ServerConfig::default()
    })
}

fn open(w: &mut World) -> usize {
    let c = w.connect();
    assert_eq!(w.upgrade(c, "/echo"), 101);
    c
}

/// An unmasked or otherwise hand-built frame, raw.
fn raw_frame(b0: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    let opcode = Opcode::Text; // placeholder; b0 is written below
    write_header(
        &mut v,
        true,
        opcode,
        payload.len(),
        masked.then_some([0, 0, 0, 0]),
    );
    v[0] = b0;
    v.extend_from_slice(payload);
    v
}

/// Jump to the next deadline that is not only the output-buffer pool's (the pool hands back,
/// `POOL_IDLE` after a write, the buffer it left; those wake-ups fall in between).
fn jump_past_the_pool(w: &mut World) -> bool {
    loop {
        let pool_only = w.server.poll_timeout() == w.server.net.pool_deadline();
        if !w.jump_to_next_deadline() {
            return false;
        }
        if !pool_only {
            return true;
        }
    }
}

fn close_code(w: &mut World, c: usize) -> Option<u16> {
    w.clients[c].messages().into_iter().find_map(|m| match m {
        Received::Close(Some((code, _))) => Some(code),
        _ => None,
    })
}

#[test]
fn echo_text_binary_fragmented_ping() {
    let mut w = world();
    let c = open(&mut w);
    w.send_frame(c, true, Opcode::Text, b"caption one");
    w.send_frame(c, true, Opcode::Binary, &[1, 2, 3]);
    w.send_frame(c, false, Opcode::Text, b"cap");
    w.send_frame(c, true, Opcode::Ping, b"p1");
    w.send_frame(c, true, Opcode::Continuation, b"tion two");
    assert_eq!(
        w.clients[c].messages(),
        vec![
            Received::Text("caption one".into()),
            Received::Binary(vec![1, 2, 3]),
            Received::Pong(b"p1".to_vec()),
            Received::Text("caption two".into()),
        ]
    );
}

/// Something a misbehaving client does to its connection.
type Attack = Box<dyn Fn(&mut World, usize)>;

#[test]
fn rfc_violations_close_with_the_right_code_and_disturb_no_one() {
    let big = vec![b'x'; 64 * 1024 + 1];
    let cases: Vec<(&str, Attack, u16)> = vec![
        (
            "reserved bits",
            Box::new(|w, c| w.send_raw(c, &raw_frame(0xC1, true, b"a"))),
            1002,
        ),
        (
            "unknown opcode",
            Box::new(|w, c| w.send_raw(c, &raw_frame(0x83, true, b"a"))),
            1002,
        ),
        (
            "unmasked client frame",
            Box::new(|w, c| w.send_raw(c, &raw_frame(0x81, false, b"a"))),
            1002,
        ),
        (
            "fragmented control",
            Box::new(|w, c| w.send_raw(c, &raw_frame(0x09, true, b"a"))),
            1002,
        ),
        (
            "control over 125",
            Box::new(|w, c| w.send_frame(c, true, Opcode::Ping, &[0; 126])),
            1002,
        ),
        (
            "continuation without start",
            Box::new(|w, c| w.send_frame(c, true, Opcode::Continuation, b"a")),
            1002,
        ),
        (
            "data inside fragmented",
            Box::new(|w, c| {
                w.send_frame(c, false, Opcode::Text, b"a");
                w.send_frame(c, true, Opcode::Text, b"b");
            }),
            1002,
        ),
        (
            "invalid utf-8",
            Box::new(|w, c| w.send_frame(c, true, Opcode::Text, &[0xc3, 0x28])),
            1007,
        ),
        (
            "invalid utf-8 across fragments",
            Box::new(|w, c| {
                w.send_frame(c, false, Opcode::Text, &[0xe2, 0x82]);
                w.send_frame(c, true, Opcode::Continuation, &[0x28]);
            }),
            1007,
        ),
        (
            "close code 1005",
            Box::new(|w, c| w.send_frame(c, true, Opcode::Close, &1005u16.to_be_bytes())),
            1002,
        ),
        (
            "close code 999",
            Box::new(|w, c| w.send_frame(c, true, Opcode::Close, &999u16.to_be_bytes())),
            1002,
        ),
        (
            "one-byte close",
            Box::new(|w, c| w.send_frame(c, true, Opcode::Close, &[3])),
            1002,
        ),
        (
            "close reason not utf-8",
            Box::new(|w, c| w.send_frame(c, true, Opcode::Close, &[3, 232, 0xff])),
            1007,
        ),
        (
            "frame over limit",
            Box::new(move |w, c| w.send_frame(c, true, Opcode::Binary, &big)),
            1009,
        ),
    ];
    for (name, attack, want) in cases {
        let mut w = world();
        let healthy = open(&mut w);
        let bad = open(&mut w);
        attack(&mut w, bad);
        assert_eq!(close_code(&mut w, bad), Some(want), "{name}");
        // After a failure the server reads nothing more (RFC 6455 §7.1.7), not even the
        // peer's close, and closes at the peer's EOF (or its close deadline).
        assert!(
            !w.clients[bad].closed,
            "{name}: closed before the close frame was flushed"
        );
        w.send_frame(bad, true, Opcode::Close, &1000u16.to_be_bytes());
        assert!(
            !w.clients[bad].closed,
            "{name}: input was parsed after the failure"
        );
        w.client_eof(bad);
        assert!(
            w.clients[bad].closed,
            "{name}: not closed at the peer's EOF"
        );
        w.send_frame(healthy, true, Opcode::Text, b"still here");
        assert_eq!(
            w.clients[healthy].messages(),
            vec![Received::Text("still here".into())],
            "{name}"
        );
    }
}

#[test]
fn peer_that_never_answers_our_close_is_dropped_at_the_deadline() {
    let mut w = world();
    let c = open(&mut w);
    w.send_raw(c, &raw_frame(0x81, false, b"unmasked"));
    assert_eq!(close_code(&mut w, c), Some(1002));
    assert!(!w.clients[c].closed);
    w.advance(Duration::from_millis(1999));
    assert!(!w.clients[c].closed);
    assert!(w.jump_to_next_deadline());
    assert!(w.clients[c].closed);
    assert_eq!(w.server.connection_count(), 0);
}

#[test]
fn clean_close_is_echoed_and_closes() {
    let mut w = world();
    let c = open(&mut w);
    w.send_frame(c, true, Opcode::Close, &[3, 232, b'b', b'y', b'e']);
    assert_eq!(
        w.clients[c].messages(),
        vec![Received::Close(Some((1000, String::new())))]
    );
    assert!(w.clients[c].closed);
}

#[test]
fn handshake_deadline_answers_408_in_virtual_time() {
    let mut w = world();
    let c = w.connect();
    w.send_raw(c, b"GET /echo HTTP/1.1\r\nHost: x\r\n");
    w.advance(Duration::from_secs(9));
    assert!(!w.clients[c].closed);
    assert!(w.jump_to_next_deadline());
    assert_eq!(
        w.now,
        augmentos_edge::time::Instant::ZERO + Duration::from_secs(10)
    );
    let (status, body) = w.clients[c].take_http_response().expect("a response");
    assert_eq!(status, 408);
    assert!(body.contains("\"code\":\"HANDSHAKE_TIMEOUT\""), "{body}");
    assert!(w.clients[c].closed);
}

#[test]
fn upgraded_connection_trades_the_handshake_deadline_for_the_heartbeat() {
    let mut w = world();
    let _c = open(&mut w);
    let start = w.now;
    // The 101's buffer waits in the pool until `POOL_IDLE`; then the heartbeat is all.
    w.advance(augmentos_edge::net::pool::POOL_IDLE);
    assert_eq!(
        w.server.poll_timeout(),
        Some(start + Duration::from_secs(15))
    );
}

#[test]
fn slow_drip_handshake_completes() {
    let mut w = world();
    let c = w.connect();
    let req = b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    for b in req.iter() {
        w.send_raw(c, &[*b]);
        w.advance(Duration::from_millis(10));
    }
    assert_eq!(w.clients[c].take_http_response().map(|r| r.0), Some(101));
    w.send_frame(c, true, Opcode::Text, b"ok");
    assert_eq!(w.clients[c].messages(), vec![Received::Text("ok".into())]);
}

#[test]
fn http_refusals_are_json_with_a_code() {
    let cases: [(&[u8], u16, &str); 7] = [
        (b"GET /nope HTTP/1.1\r\n\r\n", 404, "NOT_FOUND"),
        (b"POST /health HTTP/1.1\r\n\r\n", 405, "METHOD_NOT_ALLOWED"),
        (b"POST /echo HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405, "METHOD_NOT_ALLOWED"),
        (b"GET /echo HTTP/1.1\r\n\r\n", 426, "UPGRADE_REQUIRED"),
        (b"GET /echo HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 8\r\n\r\n", 426, "UNSUPPORTED_WEBSOCKET_VERSION"),
        (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411, "LENGTH_REQUIRED"),
        (b"\x00\x01\x02 garbage\r\n\r\n", 400, "MALFORMED_REQUEST"),
    ];
    for (req, status, code) in cases {
        let mut w = world();
        let c = w.connect();
        w.send_raw(c, req);
        let (got, body) = w.clients[c].take_http_response().expect("a response");
        assert_eq!(got, status, "{}", String::from_utf8_lossy(req));
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
        assert_eq!(v["code"], code);
        assert!(w.clients[c].closed);
    }
}

#[test]
fn echo_route_is_off_by_default() {
    let mut w = World::new(ServerConfig::default());
    let c = w.connect();
    assert_eq!(w.upgrade(c, "/echo"), 404);
}

#[test]
fn health_reports_connections() {
    let mut w = world();
    let _a = open(&mut w);
    let c = w.connect();
    w.send_raw(c, b"GET /health HTTP/1.1\r\n\r\n");
    let (status, body) = w.clients[c].take_http_response().unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["connections"]["websocket"], 1);
    assert_eq!(v["connections"]["total"], 2);
}

#[test]
fn heartbeat_pings_measures_rtt_and_closes_silent_connections() {
    let mut w = world();
    let live = open(&mut w);
    let dead = open(&mut w);
    for i in 1..=3 {
        // Wake at the heartbeat deadline itself, as the reactor does.
        assert!(jump_past_the_pool(&mut w));
        assert_eq!(w.now.as_micros(), i * 15_000_000);
        assert!(w.clients[live]
            .messages()
            .contains(&Received::Ping(b"edge".to_vec())));
        w.advance(Duration::from_millis(3));
        w.send_frame(live, true, Opcode::Pong, b"edge");
    }
    // Three round trips of 3 ms each, in the RTT histogram.
    let rtt = &w.server.stats().rtt;
    assert_eq!(rtt.count(), 3);
    assert!((rtt.sum_seconds() - 0.009).abs() < 1e-9);
    // The silent one is closed with 4000 once 45 s passed without a byte from it.
    let codes: Vec<_> = w.clients[dead]
        .messages()
        .into_iter()
        .filter_map(|m| match m {
            Received::Close(Some((code, _))) => Some(code),
            _ => None,
        })
        .collect();
    assert_eq!(codes, vec![4000]);
    assert!(!w.clients[live].closed);
    w.send_frame(live, true, Opcode::Text, b"alive");
    assert!(w.clients[live]
        .messages()
        .contains(&Received::Text("alive".into())));
}

#[test]
fn metrics_are_prometheus_text() {
    let mut w = world();
    let bad = open(&mut w);
    w.send_text(bad, "\u{0}");
    w.send_raw(bad, &raw_frame(0x81, false, b"unmasked"));
    let c = w.connect();
    w.send_raw(c, b"GET /metrics HTTP/1.1\r\n\r\n");
    let (status, body) = w.clients[c].take_http_response().unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("# TYPE augmentos_edge_connections gauge"),
        "{body}"
    );
    assert!(
        body.contains("augmentos_edge_connections_closed_total{reason=\"protocol_error\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("augmentos_edge_websocket_upgrades_total 1"),
        "{body}"
    );
}

#[test]
fn over_capacity_is_answered_503() {
    let mut w = World::new(ServerConfig {
        max_connections: 1,
        ..ServerConfig::default()
    });
    let _a = w.connect();
    // Past the cap, a request is answered 503 at once (only /health and /metrics are served)...
    let b = w.connect();
    w.send_raw(b, b"GET /echo HTTP/1.1\r\n\r\n");
    assert_eq!(w.clients[b].take_http_response().map(|r| r.0), Some(503));
    assert!(w.clients[b].closed);
    // ... and a connection that sends nothing is answered 503 at the reserve's deadline.
    let c = w.connect();
    assert_eq!(w.clients[c].take_http_response(), None);
    let start = w.now;
    assert!(w.jump_to_next_deadline());
    assert_eq!(w.now, start + augmentos_edge::server::OVER_CAP_DEADLINE);
    assert_eq!(w.clients[c].take_http_response().map(|r| r.0), Some(503));
    assert!(w.clients[c].closed);
}

#[test]
fn a_reader_that_does_not_drain_is_paused_then_dropped_at_the_cap() {
    let mut w = World::new(ServerConfig {
        echo: true,
        read_pause: 1024,
        max_output: 16 * 1024,
        ..ServerConfig::default()
    });
    let c = open(&mut w);
    let id = w.clients[c].id;
    // Fill the output without handing it over (no step): input is paused past read_pause.
    let mut frame = Vec::new();
    augmentos_edge::ws::frame::write_masked_frame(
        &mut frame,
        true,
        Opcode::Binary,
        &[7; 2000],
        [1, 2, 3, 4],
    );
    w.server.handle_input(id, &mut frame.clone(), w.clock());
    assert!(!w.server.wants_read(id));
    // A shell that kept pushing anyway hits the hard cap and the connection is dropped.
    for _ in 0..10 {
        w.server.handle_input(id, &mut frame.clone(), w.clock());
    }
    assert!(w.server.output(id).is_empty());
    assert!(w.server.wants_close(id));
    assert_eq!(w.server.stats().overflow_drops, 1);
}

#[test]
fn a_frame_completed_across_reads_leaves_no_input_buffer_behind() {
    let mut w = world();
    let c = open(&mut w);
    let id = w.clients[c].id;
    let mut frame = Vec::new();
    augmentos_edge::ws::frame::write_masked_frame(
        &mut frame,
        true,
        Opcode::Text,
        b"split across two reads",
        [1, 2, 3, 4],
    );
    w.send_raw(c, &frame[..5]);
    assert_eq!(w.server.pending_input(id).0, 5);
    w.send_raw(c, &frame[5..]);
    assert_eq!(
        w.clients[c].messages(),
        vec![Received::Text("split across two reads".into())]
    );
    assert_eq!(w.server.pending_input(id), (0, 0));
}
