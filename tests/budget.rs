//! Deterministic tests of memory bounded in total, through the in-memory world with virtual
//! time: when the output waiting in all connections together passes `max_total_output`
//! (though no connection is past its own high-water mark), the feeders are paused and nothing
//! that may not be dropped is lost, lossy streams are dropped, a stalled reader is closed at the
//! stall timeout; and the pool of emptied output buffers is handed back once nobody takes it.

#[path = "support/world.rs"]
mod world;

use augmentos_edge::net::pool::POOL_IDLE;
use augmentos_edge::server::ServerConfig;
use augmentos_edge::sim::World;
use augmentos_edge::ws::Opcode;
use serde_json::{json, Value};
use std::time::Duration;
use world::{glasses, hub, quiet, spec, A, B};

/// No heartbeat (nothing but the traffic under test is written), the default per-connection
/// limits (64 KiB high water, 1 MiB cap), and the given total budget.
fn world(budget: usize) -> World {
    let mut hub = hub(
        vec![spec(A, 4001, false, &[]), spec(B, 4002, false, &[])],
        &[],
    );
    hub.max_sessions = 100;
    World::with_hub(
        ServerConfig {
            max_total_output: budget,
            ..quiet()
        },
        hub,
    )
}

/// `package` started from glasses `g` of `user`, connected, subscribed to `subs`; inbox drained
/// (and the glasses').
fn app(w: &mut World, g: usize, user: &str, package: &str, subs: Value) -> usize {
    let c = world::app(w, g, user, package, subs);
    w.json_messages(g);
    c
}

fn press(i: usize) -> String {
    json!({"type": "button_press", "buttonId": "select", "pressType": "short", "seq": i})
        .to_string()
}

/// The `seq` of every button press client `c` received, in order; counts binary frames apart.
fn presses(w: &mut World, c: usize) -> (Vec<u64>, usize) {
    let mut seqs = Vec::new();
    let mut binary = 0;
    for m in w.json_messages(c) {
        if m.get("binary").is_some() {
            binary += 1;
            continue;
        }
        assert_eq!(m["type"], "data_stream", "{m}");
        assert_eq!(m["streamType"], "button_press", "{m}");
        seqs.push(m["data"]["seq"].as_u64().unwrap());
    }
    (seqs, binary)
}

/// The running total the budget is checked against, and what the connections really hold.
fn totals(w: &World) -> (usize, usize) {
    let net = &w.server.net;
    (
        net.total_output(),
        net.iter().map(|c| c.pending()).sum::<usize>(),
    )
}

fn metrics(w: &mut World) -> String {
    let m = w.connect();
    w.send_raw(m, b"GET /metrics HTTP/1.1\r\n\r\n");
    w.clients[m].take_http_response().unwrap().1
}

#[test]
fn many_backed_up_apps_pause_the_feeders_at_the_total_budget_and_lose_nothing() {
    const SESSIONS: usize = 20;
    const PRESSES: usize = 60;
    let budget = 64 * 1024;
    let mut w = world(budget);
    let mut gs = Vec::new();
    let mut apps = Vec::new();
    for s in 0..SESSIONS {
        let user = format!("user{s}@example.com");
        let g = glasses(&mut w, &user);
        apps.push(app(&mut w, g, &user, A, json!(["button_press"])));
        apps.push(app(&mut w, g, &user, B, json!(["button_press"])));
        gs.push(g);
    }
    // One press, as every app receives it: the largest message of this test.
    w.send_text(gs[0], &press(1_000_000));
    let message = w.clients[apps[0]].inbox.len();
    assert!(message > 100 && message < 512, "{message}");
    w.json_messages(apps[0]);
    w.json_messages(apps[1]);

    // Every app stops reading; every glasses presses flat out.
    for &a in &apps {
        w.set_reading(a, false);
    }
    let high = w.server.config().read_pause;
    let (mut peak, mut peak_one) = (0, 0);
    for i in 0..PRESSES {
        for &g in &gs {
            w.send_text(g, &press(i));
            let (total, held) = totals(&w);
            assert_eq!(total, held, "the running total drifted");
            peak = peak.max(total);
            for &a in &apps {
                peak_one = peak_one.max(w.server.output(w.clients[a].id).len());
            }
        }
    }
    // Past the budget by at most the message that crossed it, once per subscriber.
    assert!(
        peak <= budget + apps.len() * message,
        "{peak} bytes waiting, budget {budget}"
    );
    // No app came near its own high-water mark: it was the total that paused the glasses.
    assert!(peak_one < high / 4, "one app held {peak_one} bytes");
    assert_eq!(w.server.hub.counters.feeder_pauses, 0);
    assert!(w.server.stats().budget_pauses >= SESSIONS as u64);
    assert!(gs.iter().all(|&g| !w.clients[g].unsent.is_empty()));
    // The operator sees it (and `/metrics` is answered while the feeders wait).
    let text = metrics(&mut w);
    assert!(
        text.contains("augmentos_edge_read_pauses_total{reason=\"total_output_budget\"} ")
            && !text
                .contains("augmentos_edge_read_pauses_total{reason=\"total_output_budget\"} 0\n"),
        "{text}"
    );
    assert!(text.contains("augmentos_edge_output_budget_exceeded_total "));
    assert!(text.contains(&format!("augmentos_edge_output_budget_bytes {budget}\n")));
    assert!(
        !text.contains("augmentos_edge_output_buffer_bytes 0\n"),
        "{text}"
    );

    // The apps read again: the glasses resume and every app gets every press once, in order.
    for &a in &apps {
        w.set_reading(a, true);
    }
    assert!(gs.iter().all(|&g| w.clients[g].unsent.is_empty()));
    for &a in &apps {
        assert_eq!(presses(&mut w, a), ((0..PRESSES as u64).collect(), 0));
    }
    let st = w.server.stats();
    assert_eq!((st.stall_closes, st.overflow_drops), (0, 0));
    assert!(w.server.hub.counters.dropped.is_empty());
    assert_eq!(totals(&w), (0, 0));
    assert!(!w.server.net.over_budget());
}

#[test]
fn over_the_budget_a_stalled_app_under_its_own_mark_is_closed_at_the_stall_timeout() {
    let budget = 16 * 1024;
    let mut w = world(budget);
    let user = "ada@example.com";
    let g = glasses(&mut w, user);
    let fast = app(&mut w, g, user, A, json!(["button_press"]));
    let stalled = app(&mut w, g, user, B, json!(["button_press"]));
    w.set_reading(stalled, false);
    let stalled_id = w.clients[stalled].id;
    for i in 0..400 {
        w.send_text(g, &press(i));
    }
    // It holds the budget's worth, far under its own high-water mark: the glasses wait.
    let held = w.server.output(stalled_id).len();
    assert!(
        held > budget - 512 && held < w.server.config().read_pause,
        "{held}"
    );
    assert!(
        !w.clients[g].unsent.is_empty(),
        "the glasses were never paused"
    );
    // Not closed before the stall timeout; closed at it, with 1008.
    w.advance(Duration::from_millis(1_999));
    assert_eq!(w.server.stats().stall_closes, 0);
    w.advance(Duration::from_millis(1));
    assert_eq!(w.server.stats().stall_closes, 1);
    let out = w.server.output(stalled_id).to_vec();
    assert_eq!((out[0], u16::from_be_bytes([out[2], out[3]])), (0x88, 1008));
    // The glasses resumed; the reading app got everything.
    w.advance(Duration::from_secs(3));
    assert!(w.clients[g].unsent.is_empty());
    assert_eq!(presses(&mut w, fast), ((0..400).collect(), 0));
}

#[test]
fn over_the_budget_lossy_streams_are_dropped_and_the_rest_is_kept() {
    let budget = 16 * 1024;
    let mut w = world(budget);
    let user = "ada@example.com";
    let g = glasses(&mut w, user);
    let listener = app(&mut w, g, user, A, json!(["audio_chunk", "button_press"]));
    w.set_reading(listener, false);
    // Audio and presses interleaved, in one read (48 KiB: under the 64 KiB high-water mark).
    let chunk = vec![7u8; 1600];
    let mut burst = Vec::new();
    for i in 0..30 {
        let mut frame = Vec::new();
        augmentos_edge::ws::frame::write_masked_frame(
            &mut frame,
            true,
            Opcode::Binary,
            &chunk,
            [0x12, 0x34, 0x56, 0x78],
        );
        burst.extend_from_slice(&frame);
        frame.clear();
        augmentos_edge::ws::frame::write_masked_frame(
            &mut frame,
            true,
            Opcode::Text,
            press(i).as_bytes(),
            [0x12, 0x34, 0x56, 0x78],
        );
        burst.extend_from_slice(&frame);
    }
    assert!(burst.len() < 64 * 1024);
    w.send_raw(g, &burst);
    let held = w.server.output(w.clients[listener].id).len();
    assert!(held <= budget + 30 * 512 + 1700, "{held}");
    let dropped = w.server.hub.counters.dropped.get("audio_chunk").copied();
    assert!(dropped.is_some_and(|n| n >= 15), "{dropped:?}");
    w.set_reading(listener, true);
    let (seqs, audio) = presses(&mut w, listener);
    assert_eq!(seqs, (0..30).collect::<Vec<u64>>(), "every press, in order");
    assert_eq!(audio as u64 + dropped.unwrap(), 30);
}

#[test]
fn the_buffer_pool_is_handed_back_once_nobody_takes_it() {
    let mut w = world(32 << 20);
    let user = "ada@example.com";
    let g = glasses(&mut w, user);
    let a = app(&mut w, g, user, A, json!(["button_press"]));
    // The session settles (its start-up displays come and go), and the pool with it.
    w.advance(Duration::from_secs(60));
    assert_eq!(w.server.net.pooled(), (0, 0));
    // A burst: the app falls behind by tens of KiB, then reads it all.
    w.set_reading(a, false);
    for i in 0..200 {
        w.send_text(g, &press(i));
    }
    w.set_reading(a, true);
    assert_eq!(presses(&mut w, a).0.len(), 200);
    let given_back = w.clock().mono;
    let (bufs, bytes) = w.server.net.pooled();
    assert!(
        bufs >= 1 && bytes >= 32 * 1024,
        "{bufs} buffers, {bytes} bytes"
    );
    // Time passes deadline by deadline: the pool is kept until its idle time is up...
    w.advance(POOL_IDLE - Duration::from_millis(1));
    assert_eq!(w.server.net.pooled().0, bufs);
    // ... and freed at it.
    w.advance(Duration::from_millis(1));
    assert_eq!(w.server.net.pooled(), (0, 0));
    assert_eq!(w.clock().mono, given_back + POOL_IDLE);
    // Nothing is left to wake up for.
    assert_eq!(w.server.poll_timeout(), None);
    // Traffic afterwards works as before (buffers come from the allocator again).
    w.send_text(g, &press(200));
    assert_eq!(presses(&mut w, a).0, vec![200]);
}
