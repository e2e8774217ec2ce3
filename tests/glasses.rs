//! Deterministic tests of the glasses side of a session through the in-memory world: the token
//! carried in `connection_init` (for clients that cannot set headers), the init deadline,
//! a second glasses connection taking the session over, and what `/metrics` shows of sessions,
//! refusals and per-connection round trips.

/// The reference Prometheus parser (shared with the real-socket tests).
#[path = "support/prom.rs"]
mod prom;

use augmentos_edge::auth::jwt;
use augmentos_edge::hub::HubConfig;
use augmentos_edge::server::ServerConfig;
use augmentos_edge::sim::{Received, World};
use augmentos_edge::ws::Opcode;
use serde_json::{json, Value};
use std::time::Duration;

const SECRET: &[u8] = b"glasses-test-secret";

fn world() -> World {
    World::with_hub(
        ServerConfig::default(),
        HubConfig {
            jwt_secret: SECRET.to_vec(),
            ..HubConfig::default()
        },
    )
}

/// A glasses connection upgraded without a token header.
fn bare_glasses(w: &mut World) -> usize {
    let c = w.connect();
    assert_eq!(w.upgrade(c, "/glasses-ws"), 101);
    c
}

fn of_type<'a>(msgs: &'a [Value], ty: &str) -> Vec<&'a Value> {
    msgs.iter().filter(|m| m["type"] == ty).collect()
}

#[test]
fn token_in_connection_init_opens_the_session() {
    let mut w = world();
    let c = bare_glasses(&mut w);
    let token = jwt::glasses_token("carol@example.com", SECRET);
    w.send_text(
        c,
        &json!({"type": "connection_init", "coreToken": token}).to_string(),
    );
    let msgs = w.json_messages(c);
    let ack = of_type(&msgs, "connection_ack");
    assert_eq!(ack.len(), 1, "{msgs:?}");
    assert_eq!(ack[0]["sessionId"], "carol@example.com");
    assert_eq!(ack[0]["userSession"]["userId"], "carol@example.com");
    assert_eq!(w.server.hub.session_count(), 1);
}

#[test]
fn bad_or_missing_token_in_connection_init_is_refused_and_closed() {
    let forged = jwt::glasses_token("carol@example.com", b"some-other-secret");
    let cases = [
        (
            json!({"type": "connection_init", "coreToken": forged}),
            "INVALID_SIGNATURE",
        ),
        (json!({"type": "connection_init"}), "MISSING_TOKEN"),
        (
            json!({"type": "connection_init", "coreToken": "not.a.jwt"}),
            "MALFORMED_TOKEN",
        ),
    ];
    for (init, code) in cases {
        let mut w = world();
        let c = bare_glasses(&mut w);
        w.send_text(c, &init.to_string());
        let msgs = w.json_messages(c);
        let err = of_type(&msgs, "connection_error");
        assert_eq!(err.len(), 1, "{code}: {msgs:?}");
        assert_eq!(err[0]["code"], code);
        assert!(msgs.iter().any(|m| m["close"] == 1008), "{code}: {msgs:?}");
        assert_eq!(w.server.hub.session_count(), 0);
    }
}

#[test]
fn messages_before_init_are_refused_without_closing() {
    let mut w = world();
    let c = bare_glasses(&mut w);
    w.send_text(c, r#"{"type":"start_app","packageName":"x"}"#);
    w.send_text(c, "not json");
    let msgs = w.json_messages(c);
    let codes: Vec<_> = of_type(&msgs, "connection_error")
        .iter()
        .map(|m| m["code"].clone())
        .collect();
    assert_eq!(
        codes,
        vec![json!("NOT_INITIALIZED"), json!("MALFORMED_MESSAGE")]
    );
    assert!(!w.clients[c].closed);
    // Still usable: a proper init is accepted afterwards.
    let token = jwt::glasses_token("dan@example.com", SECRET);
    w.send_text(
        c,
        &json!({"type": "connection_init", "coreToken": token}).to_string(),
    );
    assert_eq!(of_type(&w.json_messages(c), "connection_ack").len(), 1);
}

#[test]
fn glasses_that_never_init_are_closed_at_the_init_deadline() {
    let mut w = world();
    let c = bare_glasses(&mut w);
    w.advance(Duration::from_millis(9_999));
    assert!(w
        .json_messages(c)
        .iter()
        .all(|m| m["type"] != "connection_error"));
    w.advance(Duration::from_millis(1));
    let msgs = w.json_messages(c);
    assert_eq!(
        of_type(&msgs, "connection_error")[0]["code"],
        "INIT_TIMEOUT"
    );
    assert!(msgs.iter().any(|m| m["close"] == 1008), "{msgs:?}");
}

#[test]
fn a_second_glasses_connection_takes_the_session_over() {
    let mut w = world();
    let token = jwt::glasses_token("erin@example.com", SECRET);
    let auth = format!("Authorization: Bearer {token}");
    let first = w.connect();
    assert_eq!(w.upgrade_with(first, "/glasses-ws", &[&auth]).0, 101);
    w.send_text(first, r#"{"type":"connection_init"}"#);
    let second = w.connect();
    assert_eq!(w.upgrade_with(second, "/glasses-ws", &[&auth]).0, 101);
    w.send_text(second, r#"{"type":"connection_init"}"#);
    let old = w.json_messages(first);
    assert!(old.iter().any(|m| m["close"] == 1000), "{old:?}");
    assert_eq!(of_type(&w.json_messages(second), "connection_ack").len(), 1);
    // The old connection's close does not start the grace period of the live session. The
    // live connection answers the heartbeat as a client library does; time passes deadline by
    // deadline, past the grace period the old close would have started.
    w.send_frame(first, true, Opcode::Close, &1000u16.to_be_bytes());
    for _ in 0..12 {
        w.advance(Duration::from_secs(10));
        w.send_frame(second, true, Opcode::Pong, b"edge");
    }
    assert!(!w.clients[second].closed);
    assert_eq!(w.server.hub.session_count(), 1);
    assert_eq!(w.server.hub.counters.sessions_ended, 0);
}

#[test]
fn a_bearer_connection_initialised_again_is_acknowledged_again_without_a_token() {
    // Once bound, the connection keeps no copy of its token's user (the session has it): a
    // second `connection_init` still needs no token and lands in the same session.
    let mut w = world();
    let token = jwt::glasses_token("gail@example.com", SECRET);
    let c = w.connect();
    let auth = format!("Authorization: Bearer {token}");
    assert_eq!(w.upgrade_with(c, "/glasses-ws", &[&auth]).0, 101);
    for _ in 0..2 {
        w.send_text(c, r#"{"type":"connection_init"}"#);
        let msgs = w.json_messages(c);
        let acks = of_type(&msgs, "connection_ack");
        assert_eq!(acks.len(), 1, "{msgs:?}");
        assert_eq!(acks[0]["sessionId"], "gail@example.com");
    }
    assert!(!w.clients[c].closed);
    assert_eq!(w.server.hub.session_count(), 1);
}

#[test]
fn metrics_show_sessions_refusals_and_round_trips() {
    let mut w = world();
    let token = jwt::glasses_token("fay@example.com", SECRET);
    let g = w.connect();
    assert_eq!(
        w.upgrade_with(
            g,
            "/glasses-ws",
            &[&format!("Authorization: Bearer {token}")]
        )
        .0,
        101
    );
    w.send_text(g, r#"{"type":"connection_init"}"#);
    let bad = w.connect();
    assert_eq!(
        w.upgrade_with(
            bad,
            "/glasses-ws",
            &["Authorization: Bearer forged.token.here"]
        )
        .0,
        401
    );
    // One heartbeat: ping out, pong back 7 ms later.
    w.advance(Duration::from_secs(15));
    assert!(w.clients[g]
        .messages()
        .contains(&Received::Ping(b"edge".to_vec())));
    w.advance(Duration::from_millis(7));
    w.send_frame(g, true, Opcode::Pong, b"edge");
    let m = w.connect();
    w.send_raw(m, b"GET /metrics HTTP/1.1\r\n\r\n");
    let (status, body) = w.clients[m].take_http_response().expect("a response");
    assert_eq!(status, 200);
    // Round trips and silences are aggregates: a histogram and a maximum, never a series per
    // connection or user.
    assert!(!body.contains("fay@example.com"), "{body}");
    for line in [
        "augmentos_edge_sessions 1",
        "augmentos_edge_refusals_total{code=\"MALFORMED_TOKEN\"} 1",
        "augmentos_edge_heartbeat_rtt_seconds_bucket{le=\"0.005\"} 0",
        "augmentos_edge_heartbeat_rtt_seconds_bucket{le=\"0.01\"} 1",
        "augmentos_edge_heartbeat_rtt_seconds_count 1",
        "augmentos_edge_heartbeat_rtt_seconds_sum 0.007",
        "augmentos_edge_websocket_idle_max_seconds{kind=\"glasses\"} 0",
        "augmentos_edge_connections{kind=\"glasses\",transport=\"in_process\"} 1",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in:\n{body}"
        );
    }
}

#[test]
fn a_glasses_socket_belongs_to_one_session_for_its_whole_life() {
    let mut w = world();
    let c = bare_glasses(&mut w);
    let init = |user: &str| {
        json!({"type": "connection_init", "coreToken": jwt::glasses_token(user, SECRET)})
            .to_string()
    };
    w.send_text(c, &init("ann@example.com"));
    assert_eq!(of_type(&w.json_messages(c), "connection_ack").len(), 1);
    // The same socket now claims to be another user: refused and closed.
    w.send_text(c, &init("ben@example.com"));
    let msgs = w.json_messages(c);
    assert_eq!(
        of_type(&msgs, "connection_error")[0]["code"],
        "ALREADY_INITIALIZED",
        "{msgs:?}"
    );
    assert!(of_type(&msgs, "connection_ack").is_empty(), "{msgs:?}");
    assert!(msgs.iter().any(|m| m["close"] == 1008), "{msgs:?}");
    // Only the first user's session exists, and the socket's close starts its grace period.
    assert_eq!(w.server.hub.session_count(), 1);
    w.send_frame(c, true, Opcode::Close, &1000u16.to_be_bytes());
    assert!(w.clients[c].closed);
    w.advance(Duration::from_secs(59));
    assert_eq!(w.server.hub.session_count(), 1);
    w.advance(Duration::from_secs(1));
    assert_eq!(w.server.hub.session_count(), 0);
    assert_eq!(w.server.hub.counters.sessions_ended, 1);
    // The same user again on the same socket is only acknowledged again.
    let d = bare_glasses(&mut w);
    w.send_text(d, &init("cy@example.com"));
    w.send_text(d, &init("cy@example.com"));
    let msgs = w.json_messages(d);
    assert_eq!(of_type(&msgs, "connection_ack").len(), 2, "{msgs:?}");
    assert!(!w.clients[d].closed);
}

#[test]
fn a_hostile_user_id_cannot_forge_or_break_metrics() {
    let mut w = world();
    let evil = "eve\"} 1\naugmentos_forged_total{x=\"y\"} 7\n\\";
    let g = w.connect();
    let bearer = format!("Authorization: Bearer {}", jwt::glasses_token(evil, SECRET));
    assert_eq!(w.upgrade_with(g, "/glasses-ws", &[&bearer]).0, 101);
    w.send_text(g, r#"{"type":"connection_init"}"#);
    assert_eq!(of_type(&w.json_messages(g), "connection_ack").len(), 1);
    let m = w.connect();
    w.send_raw(m, b"GET /metrics HTTP/1.1\r\n\r\n");
    let (status, body) = w.clients[m].take_http_response().expect("a response");
    assert_eq!(status, 200);
    assert!(
        !body.lines().any(|l| l.starts_with("augmentos_forged")),
        "{body}"
    );
    // No user id reaches the exposition at all (aggregates only).
    assert!(
        !body.contains("eve\"") && !body.contains("eve\\\""),
        "{body}"
    );
    let Some(samples) = prom::parse(&body) else {
        return;
    };
    let samples = samples.as_array().expect("a list of samples");
    assert!(samples.iter().all(|s| s[0] != "augmentos_forged_total"));
    let sessions: Vec<&Value> = samples
        .iter()
        .filter(|s| s[0] == "augmentos_edge_sessions")
        .collect();
    assert_eq!(sessions.len(), 1, "{samples:?}");
    assert_eq!(sessions[0][2], 1.0);
}

#[test]
fn a_box_that_learns_the_date_late_checks_tokens_and_stamps_messages_by_the_new_date() {
    use augmentos_edge::time::Wall;
    let mut w = world();
    // The box booted without a real-time clock: it believes it is 1970.
    w.set_wall(Wall::from_micros(0));
    let nbf_2025 = 1_735_689_600u64;
    let token = jwt::sign(
        &json!({"sub": "kim@example.com", "email": "kim@example.com", "nbf": nbf_2025}),
        SECRET,
    );
    let bearer = format!("Authorization: Bearer {token}");
    let c = w.connect();
    let (status, body) = w.upgrade_with(c, "/glasses-ws", &[&bearer]);
    assert_eq!(status, 401);
    assert!(body.contains("TOKEN_NOT_YET_VALID"), "{body}");
    // NTP sets the clock: the same token is good now, and messages carry the new date.
    w.set_wall(Wall::from_micros((nbf_2025 + 60) * 1_000_000));
    let g = w.connect();
    assert_eq!(w.upgrade_with(g, "/glasses-ws", &[&bearer]).0, 101);
    w.send_text(g, r#"{"type":"connection_init"}"#);
    let ack = w.json_messages(g);
    assert_eq!(ack[0]["type"], "connection_ack");
    assert_eq!(ack[0]["timestamp"], "2025-01-01T00:01:00.000Z");
    // Deadlines run on the monotonic clock: a wall clock jumping a year ahead ends no grace
    // period early.
    w.send_frame(g, true, Opcode::Close, &1000u16.to_be_bytes());
    w.set_wall(Wall::from_micros((nbf_2025 + 366 * 86_400) * 1_000_000));
    w.advance(Duration::from_secs(59));
    assert_eq!(w.server.hub.session_count(), 1);
    w.advance(Duration::from_secs(1));
    assert_eq!(w.server.hub.session_count(), 0);
}
