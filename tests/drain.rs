//! Caption finals lost in a drain: an app that does not read when the orderly stop begins
//! loses the finals queued for it, and they are counted (`drain_finals_lost_total`).

#[path = "support/world.rs"]
mod world;

use augmentos_edge::net::Peer;
use augmentos_edge::server::ServerConfig;
use augmentos_edge::sim::World;
use serde_json::json;
use std::time::Duration;
use world::{app, glasses, key, publish, publisher, streams, transcript, venue_world, A, FEED};

const USERS: [&str; 3] = ["ada@example.com", "bo@example.com", "cy@example.com"];

fn feed(w: &mut World) -> usize {
    let (c, msgs) = publisher(w, Peer::InProcess, "venue", FEED, &key(FEED));
    assert_eq!(msgs[0]["type"], "tpa_connection_ack", "{msgs:?}");
    assert_eq!(msgs[0]["sessionId"], "venue");
    // Besides the ack, a translation publisher is told what its followers want, nothing else.
    assert!(
        msgs[1..].iter().all(|m| m["type"] == "publish_demand"),
        "{msgs:?}"
    );
    c
}

#[test]
fn finals_queued_for_an_app_that_does_not_read_when_a_drain_begins_are_counted_lost() {
    let mut w = venue_world(ServerConfig {
        ping_interval: None,
        read_pause: 1 << 20,
        max_output: 4 << 20,
        stall_timeout: Duration::from_secs(60),
        ..ServerConfig::default()
    });
    let g1 = glasses(&mut w, USERS[0]);
    let reading = app(&mut w, g1, USERS[0], A, json!(["transcription:en-US"]));
    let g2 = glasses(&mut w, USERS[1]);
    let stalled = app(&mut w, g2, USERS[1], A, json!(["transcription:en-US"]));
    w.set_reading(stalled, false);
    let f = feed(&mut w);
    for i in 0..12 {
        publish(
            &mut w,
            f,
            &transcript(&format!("interim {i}"), "en-US", false),
        );
        if i % 3 == 2 {
            publish(&mut w, f, &transcript(&format!("final {i}"), "en-US", true));
        }
    }
    assert_eq!(streams(&mut w, reading).len(), 16);
    let now = w.clock();
    w.server.handle_shutdown(now);
    w.step();
    assert_eq!(
        w.server.drain_finals_lost(),
        0,
        "nothing lost before the deadline"
    );
    // The stalled app never reads: at the close deadline its connection goes with 4 finals
    // (and its interims) unwritten; the reading app lost nothing.
    w.advance(Duration::from_secs(30));
    assert!(w.clients[stalled].closed);
    assert_eq!(w.server.drain_finals_lost(), 4);
    assert_eq!(w.server.finish_drain(), 4);
    let now = w.clock();
    let metrics = w.server.metrics(now);
    assert!(
        metrics.contains("augmentos_edge_drain_finals_lost_total 4"),
        "{metrics}"
    );
}
