//! Deterministic tests of venue feeds through the in-memory world: one publisher, connected
//! once with `sessionId: "venue"`, reaches the subscribers of every session under each app's
//! own subscription string; a latecomer gets the last final line at once; bad publishers are
//! refused with distinct codes and counted; a second publisher replaces the first; a slow app
//! never holds the feed (interims dropped for it, finals queued, the app cut at the stall
//! timeout) while everyone else loses nothing; the glasses' microphone stays off while the
//! feed covers a session's transcripts; with two rooms each session follows the feed the
//! operator chose for its user, and a switch takes effect at once; the choice survives a
//! restart through the store; and glasses left without a source are shown "Captions feed
//! offline" until the feed is back, also when they arrive after it went.

#[path = "support/world.rs"]
mod world;

use augmentos_edge::hub::HubConfig;
use augmentos_edge::net::Peer;
use augmentos_edge::server::ServerConfig;
use augmentos_edge::sim::World;
use augmentos_edge::state::sqlite::{open_configured, SqliteStore};
use augmentos_edge::state::{Persist, Store};
use serde_json::{json, Value};
use std::time::Duration;
use world::{
    app, glasses, key, publish, quiet, spec, streams, subscribe, transcript, venue_hub,
    venue_world as world_with, A, B, FEED, STT,
};

const USERS: [&str; 3] = ["ada@example.com", "bo@example.com", "cy@example.com"];

fn world() -> World {
    world_with(quiet())
}

/// The venue publisher, connected from `peer` as `sessionId` `id`; returns it and its replies.
fn publisher(w: &mut World, peer: Peer, id: &str, package: &str, k: &str) -> (usize, Vec<Value>) {
    let (c, mut msgs) = world::publisher(w, peer, id, package, k);
    // What translations are wanted is told after the ack (tests/translation_demand.rs).
    msgs.retain(|m| m["type"] != "publish_demand");
    (c, msgs)
}

fn feed(w: &mut World) -> usize {
    let (c, msgs) = publisher(w, Peer::InProcess, "venue", FEED, &key(FEED));
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0]["type"], "tpa_connection_ack", "{msgs:?}");
    assert_eq!(msgs[0]["sessionId"], "venue");
    c
}

fn mic(msgs: &[Value]) -> Vec<bool> {
    msgs.iter()
        .filter(|m| m["type"] == "microphone_state_change")
        .map(|m| m["isMicrophoneEnabled"].as_bool().unwrap())
        .collect()
}

#[test]
fn one_feed_reaches_every_session_under_each_apps_own_subscription() {
    let mut w = world();
    let mut subscribers = Vec::new();
    for user in &USERS[..2] {
        let g = glasses(&mut w, user);
        let a = app(&mut w, g, user, A, json!(["transcription:en-US"]));
        let b = app(
            &mut w,
            g,
            user,
            B,
            json!(["transcription:en-US?hints=fr", "translation:es-ES-to-en-US"]),
        );
        subscribers.push((a, b));
    }
    // The feed is never started per session: no session_request for it.
    let webhooks: Vec<String> = w
        .outbound
        .iter()
        .filter_map(|o| o.json())
        .map(|v| v["sessionId"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(webhooks.iter().any(|p| p.ends_with(STT)), "{webhooks:?}");
    assert!(!webhooks.iter().any(|p| p.ends_with(FEED)), "{webhooks:?}");
    let f = feed(&mut w);
    // A session that starts after the feed went live gets what follows.
    let g3 = glasses(&mut w, USERS[2]);
    let a3 = app(&mut w, g3, USERS[2], A, json!(["transcription:fr-FR"]));
    let hello = transcript("hello", "en-US", true);
    publish(&mut w, f, &hello);
    let hola = json!({"type": "translation", "text": "hello", "originalText": "hola",
                      "isFinal": true, "transcribeLanguage": "es-ES",
                      "translateLanguage": "en-US"});
    publish(&mut w, f, &hola);
    let bonjour = transcript("bonjour", "fr-FR", true);
    publish(&mut w, f, &bonjour);
    for &(a, b) in &subscribers {
        assert_eq!(
            streams(&mut w, a),
            vec![("transcription:en-US".to_string(), hello.clone())]
        );
        assert_eq!(
            streams(&mut w, b),
            vec![
                ("transcription:en-US?hints=fr".to_string(), hello.clone()),
                ("translation:es-ES-to-en-US".to_string(), hola.clone()),
            ]
        );
    }
    assert_eq!(
        streams(&mut w, a3),
        vec![("transcription:fr-FR".to_string(), bonjour)]
    );
    // The publisher hears nothing back.
    assert!(w.json_messages(f).is_empty());
}

#[test]
fn a_new_subscriber_gets_the_last_final_line_at_once() {
    let mut w = world();
    let f = feed(&mut w);
    publish(&mut w, f, &transcript("first", "en-US", true));
    let last = transcript("second line", "en-US", true);
    publish(&mut w, f, &last);
    publish(&mut w, f, &transcript("third, unfinish", "en-US", false));
    let g = glasses(&mut w, USERS[0]);
    // Subscribing is what shows it: once, under the app's own string.
    let a = app(&mut w, g, USERS[0], A, json!([]));
    subscribe(&mut w, a, json!(["transcription:en-US?hints=de"]));
    assert_eq!(
        streams(&mut w, a),
        vec![("transcription:en-US?hints=de".to_string(), last.clone())]
    );
    // Not again for a subscription it already had; not for another language.
    subscribe(
        &mut w,
        a,
        json!(["transcription:en-US?hints=de", "button_press"]),
    );
    let b = app(&mut w, g, USERS[0], B, json!(["transcription:fr-FR"]));
    assert!(streams(&mut w, a).is_empty());
    assert!(streams(&mut w, b).is_empty());
}

#[test]
fn bad_venue_publishers_are_refused_with_distinct_codes_and_counted() {
    let mut w = world();
    let g = glasses(&mut w, USERS[0]);
    let a = app(&mut w, g, USERS[0], A, json!(["transcription:en-US"]));
    let remote: std::net::SocketAddr = "10.1.2.3:5000".parse().unwrap();
    let cases = [
        (
            Peer::InProcess,
            "venue",
            FEED,
            "wrong-key",
            "INVALID_API_KEY",
        ),
        (
            Peer::Ip(remote),
            "venue",
            FEED,
            &*key(FEED),
            "ADDRESS_NOT_ALLOWED",
        ),
        // A per-session app, and a publisher that is not a feed.
        (Peer::InProcess, "venue", A, &*key(A), "NOT_VENUE_FEED"),
        (Peer::InProcess, "venue", STT, &*key(STT), "NOT_VENUE_FEED"),
        // A feed the venue does not have.
        (
            Peer::InProcess,
            "venue:hall-b",
            FEED,
            &*key(FEED),
            "NOT_VENUE_FEED",
        ),
    ]
    .map(|(p, id, pkg, k, code)| (p, id, pkg, k.to_string(), code));
    for (peer, id, pkg, k, code) in cases {
        let (c, msgs) = publisher(&mut w, peer, id, pkg, &k);
        assert_eq!(msgs.len(), 2, "{pkg} {id}: {msgs:?}");
        assert_eq!(msgs[0]["type"], "tpa_connection_error");
        assert_eq!(msgs[0]["code"], code, "{pkg} {id}");
        assert_eq!(msgs[1]["close"], 1008, "{pkg} {id}");
        // Nothing it sends afterwards reaches anyone.
        publish(&mut w, c, &transcript("forged", "en-US", true));
    }
    assert!(streams(&mut w, a).is_empty());
    let refusals = &w.server.hub.counters.refusals;
    assert_eq!(refusals.get("INVALID_API_KEY"), Some(&1));
    assert_eq!(refusals.get("ADDRESS_NOT_ALLOWED"), Some(&1));
    assert_eq!(refusals.get("NOT_VENUE_FEED"), Some(&3));
    // The named form reaches the real feed.
    let (f, msgs) = publisher(&mut w, Peer::InProcess, "venue:main", FEED, &key(FEED));
    assert_eq!(msgs[0]["type"], "tpa_connection_ack", "{msgs:?}");
    publish(&mut w, f, &transcript("real", "en-US", true));
    assert_eq!(streams(&mut w, a).len(), 1);
}

#[test]
fn malformed_transcripts_from_the_feed_are_refused_and_the_feed_stays_up() {
    let mut w = world();
    let g = glasses(&mut w, USERS[0]);
    let a = app(&mut w, g, USERS[0], A, json!(["transcription:en-US"]));
    let f = feed(&mut w);
    for (bad, code) in [
        (r#"{"type":"data_stream","data":3}"#, "MALFORMED_MESSAGE"),
        (
            r#"{"type":"data_stream","data":{"text":"x"}}"#,
            "MALFORMED_MESSAGE",
        ),
        (
            r#"{"type":"data_stream","data":{"type":"button_press"}}"#,
            "PUBLISH_NOT_ALLOWED",
        ),
        (
            r#"{"type":"data_stream","data":{"type":"translation","text":"x"}}"#,
            "MALFORMED_MESSAGE",
        ),
        (
            r#"{"type":"display_event","layout":{}}"#,
            "NOT_ALLOWED_FOR_VENUE_FEED",
        ),
    ] {
        w.send_text(f, bad);
        let msgs = w.json_messages(f);
        assert_eq!(msgs.len(), 1, "{bad}: {msgs:?}");
        assert_eq!(msgs[0]["code"], code, "{bad}");
        assert!(!w.clients[f].closed);
    }
    assert!(streams(&mut w, a).is_empty());
    publish(&mut w, f, &transcript("still here", "en-US", true));
    assert_eq!(streams(&mut w, a).len(), 1);
}

#[test]
fn a_second_publisher_replaces_the_first() {
    let mut w = world();
    let g = glasses(&mut w, USERS[0]);
    let a = app(&mut w, g, USERS[0], A, json!(["transcription:en-US"]));
    w.advance(Duration::from_secs(2));
    assert_eq!(mic(&w.json_messages(g)), vec![true]);
    let first = feed(&mut w);
    let second = feed(&mut w);
    // The first is closed, 1008, and what it still sends reaches nobody.
    let msgs = w.json_messages(first);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0]["close"], 1008);
    publish(&mut w, first, &transcript("stale", "en-US", true));
    w.client_eof(first);
    publish(&mut w, second, &transcript("fresh", "en-US", true));
    let got = streams(&mut w, a);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1["text"], "fresh");
    assert_eq!(
        w.server.hub.counters.refusals.get("VENUE_FEED_REPLACED"),
        Some(&1)
    );
    // The late close of the first did not take the feed down: the microphone stays off.
    w.advance(Duration::from_secs(2));
    assert_eq!(mic(&w.json_messages(g)), vec![false]);
}

#[test]
fn the_microphone_is_off_while_the_feed_covers_transcripts_and_on_again_when_it_goes() {
    let mut w = world();
    let g = glasses(&mut w, USERS[0]);
    let _a = app(&mut w, g, USERS[0], A, json!(["transcription:en-US"]));
    // A per-session transcriber listening to audio too.
    let stt = app(&mut w, g, USERS[0], STT, json!(["audio_chunk"]));
    w.advance(Duration::from_secs(2));
    assert_eq!(mic(&w.json_messages(g)).last(), Some(&true));
    let f = feed(&mut w);
    assert_eq!(mic(&w.json_messages(g)), vec![false]);
    // No audio reaches the per-session transcriber while the feed covers its transcripts.
    w.send_frame(g, true, augmentos_edge::ws::Opcode::Binary, &[1, 2, 3, 4]);
    assert!(w.clients[stt].messages().is_empty());
    // A session that starts while the feed is live never turns it on.
    let g2 = glasses(&mut w, USERS[1]);
    let _a2 = app(&mut w, g2, USERS[1], A, json!(["transcription:en-US"]));
    assert_eq!(mic(&w.json_messages(g2)), Vec::<bool>::new());
    // The feed goes: the microphone comes back for the per-session recogniser.
    w.advance(Duration::from_secs(2));
    w.client_eof(f);
    assert_eq!(mic(&w.json_messages(g)), vec![true]);
    assert_eq!(mic(&w.json_messages(g2)), vec![true]);
}

#[test]
fn a_backed_up_app_never_holds_the_feed_and_everyone_else_loses_nothing() {
    let mut w = world_with(ServerConfig {
        ping_interval: None,
        read_pause: 8 * 1024,
        max_output: 1024 * 1024,
        stall_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    });
    let g1 = glasses(&mut w, USERS[0]);
    let fast = app(&mut w, g1, USERS[0], A, json!(["transcription:en-US"]));
    let g2 = glasses(&mut w, USERS[1]);
    let stalled = app(&mut w, g2, USERS[1], A, json!(["transcription:en-US"]));
    w.set_reading(stalled, false);
    let f = feed(&mut w);
    for i in 0..400 {
        publish(
            &mut w,
            f,
            &transcript(&format!("interim {i}"), "en-US", false),
        );
        if i % 4 == 3 {
            publish(&mut w, f, &transcript(&format!("final {i}"), "en-US", true));
        }
        // The publisher is never paused: everything it sent was read.
        assert!(w.clients[f].unsent.is_empty(), "feed held at {i}");
    }
    let got = streams(&mut w, fast);
    assert_eq!(got.len(), 500, "the fast app lost something");
    let finals: Vec<_> = got
        .iter()
        .filter(|(_, d)| d["isFinal"] == true)
        .map(|(_, d)| d["text"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = (0..100).map(|i| format!("final {}", i * 4 + 3)).collect();
    assert_eq!(finals, want);
    // The stalled app's interims were dropped, counted; it is cut at the stall timeout.
    assert!(w
        .server
        .hub
        .counters
        .dropped
        .get("transcription")
        .is_some_and(|&n| n > 0));
    w.advance(Duration::from_secs(3));
    assert_eq!(w.server.stats().stall_closes, 1);
    assert!(!w.clients[f].closed);
}

#[test]
fn the_operator_feed_shows_each_venue_feed() {
    let mut w = world();
    let feeds = |w: &World| w.server.ui_state(w.clock())["feeds"].clone();
    let before = feeds(&w);
    assert_eq!(before[0]["name"], "main");
    assert_eq!(before[0]["packageName"], FEED);
    assert_eq!(before[0]["connected"], false);
    assert_eq!(before[0]["followers"], 0);
    let g = glasses(&mut w, USERS[0]);
    let _a = app(&mut w, g, USERS[0], A, json!(["transcription:de-DE"]));
    let g2 = glasses(&mut w, USERS[1]);
    let _b = app(&mut w, g2, USERS[1], A, json!(["button_press"]));
    let f = feed(&mut w);
    for i in 0..7 {
        publish(&mut w, f, &transcript(&format!("Zeile {i}"), "de-DE", true));
    }
    publish(&mut w, f, &transcript("unfertig", "de-DE", false));
    let st = feeds(&w);
    assert_eq!(st[0]["connected"], true);
    assert_eq!(st[0]["language"], "de-DE");
    assert_eq!(
        st[0]["lastLines"],
        json!(["Zeile 2", "Zeile 3", "Zeile 4", "Zeile 5", "Zeile 6"])
    );
    assert_eq!(st[0]["followers"], 2);
    assert_eq!(st[0]["published"], 8);
    // One subscriber: seven finals and the interim reached it.
    assert_eq!(st[0]["delivered"], 8);
    assert_eq!(st[0]["dropped"], 0);
    w.client_eof(f);
    assert_eq!(feeds(&w)[0]["connected"], false);
}

#[test]
fn the_feed_is_held_only_while_the_total_output_is_over_its_budget() {
    let budget = 64 * 1024;
    let mut w = world_with(ServerConfig {
        ping_interval: None,
        max_total_output: budget,
        ..ServerConfig::default()
    });
    let mut apps = Vec::new();
    for user in USERS {
        let g = glasses(&mut w, user);
        apps.push(app(&mut w, g, user, A, json!(["transcription:en-US"])));
    }
    let f = feed(&mut w);
    // Every app stops reading; the feed publishes finals until it is held.
    for &a in &apps {
        w.set_reading(a, false);
    }
    let mut i = 0;
    while w.clients[f].unsent.is_empty() {
        publish(
            &mut w,
            f,
            &transcript(&format!("line {i} {}", "x".repeat(200)), "en-US", true),
        );
        i += 1;
        assert!(i < 1_000, "the feed was never held");
    }
    assert!(w.server.stats().budget_pauses >= 1);
    assert_eq!(w.server.hub.counters.feeder_pauses, 0);
    // The apps read again: the feed is released and every final arrives, in order.
    for &a in &apps {
        w.set_reading(a, true);
    }
    w.advance(Duration::from_millis(10));
    assert!(w.clients[f].unsent.is_empty(), "the feed was not released");
    for &a in &apps {
        let texts: Vec<String> = streams(&mut w, a)
            .iter()
            .map(|(_, d)| d["text"].as_str().unwrap().to_string())
            .collect();
        let want: Vec<String> = (0..i)
            .map(|k| format!("line {k} {}", "x".repeat(200)))
            .collect();
        assert_eq!(texts, want);
    }
}

/// What glasses left without a caption source are shown.
const FEED_OFFLINE: &str = "Captions feed offline";

/// The second room's feed publisher.
const FEED2: &str = "system.venue.track2";
const OPERATOR: &str = "operator-token-0123456789";

/// A venue with two rooms: feed `main` (published by FEED) and `track2` (by FEED2).
fn two_feeds() -> World {
    let (server, hub) = two_feeds_config();
    World::with_hub(server, hub)
}

/// The configs of [`two_feeds`].
fn two_feeds_config() -> (ServerConfig, HubConfig) {
    let mut hub = venue_hub();
    hub.apps.push(spec(FEED2, 4005, true, &["transcription"]));
    hub.venue_feeds.push(("track2".into(), FEED2.into()));
    (
        ServerConfig {
            operator_token: Some(OPERATOR.into()),
            ..quiet()
        },
        hub,
    )
}

/// `POST /ui/api/feeds/{feed}/follow` with `body` and `token`: (status, JSON body).
fn follow(w: &mut World, feed: &str, body: &str, token: &str) -> (u16, Value) {
    let c = w.connect();
    let req = format!(
        "POST /ui/api/feeds/{feed}/follow HTTP/1.1\r\nHost: sim\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    w.send_raw(c, req.as_bytes());
    let (status, body) = w.clients[c].take_http_response().expect("a response");
    (status, serde_json::from_str(&body).expect("JSON"))
}

fn texts(got: &[(String, Value)]) -> Vec<&str> {
    got.iter()
        .map(|(_, d)| d["text"].as_str().unwrap())
        .collect()
}

#[test]
fn each_session_follows_the_feed_the_operator_chose_and_a_switch_takes_effect_at_once() {
    let mut w = two_feeds();
    let user = json!({"user": USERS[1]}).to_string();
    // Bad calls: no token, an unknown feed, no user.
    assert_eq!(follow(&mut w, "track2", &user, "wrong").0, 401);
    let (status, v) = follow(&mut w, "nope", &user, OPERATOR);
    assert_eq!((status, v["code"].as_str()), (404, Some("NO_SUCH_FEED")));
    let (status, v) = follow(&mut w, "track2", "{}", OPERATOR);
    assert_eq!((status, v["code"].as_str()), (400, Some("BAD_REQUEST")));
    // The second user follows track2 (chosen before the session starts).
    let (status, v) = follow(&mut w, "track2", &user, OPERATOR);
    assert_eq!((status, &v["feed"]), (200, &json!("track2")), "{v}");

    let g0 = glasses(&mut w, USERS[0]);
    let a0 = app(&mut w, g0, USERS[0], A, json!(["transcription:en-US"]));
    let g1 = glasses(&mut w, USERS[1]);
    let a1 = app(&mut w, g1, USERS[1], A, json!(["transcription:en-US"]));
    let (f1, _) = publisher(&mut w, Peer::InProcess, "venue:main", FEED, &key(FEED));
    let (f2, msgs) = publisher(&mut w, Peer::InProcess, "venue:track2", FEED2, &key(FEED2));
    assert_eq!(msgs[0]["type"], "tpa_connection_ack", "{msgs:?}");
    publish(&mut w, f1, &transcript("main one", "en-US", true));
    publish(&mut w, f2, &transcript("track one", "en-US", true));
    publish(&mut w, f2, &transcript("track two", "en-US", true));
    assert_eq!(texts(&streams(&mut w, a0)), vec!["main one"]);
    assert_eq!(texts(&streams(&mut w, a1)), vec!["track one", "track two"]);
    let feeds = w.server.ui_state(w.clock())["feeds"].clone();
    assert_eq!(
        (&feeds[0]["followers"], &feeds[1]["followers"]),
        (&json!(1), &json!(1))
    );
    // Both feeds cover transcripts: both microphones off (once the debounce has passed).
    w.advance(Duration::from_secs(2));
    assert_eq!(mic(&w.json_messages(g0)).last(), Some(&false));
    assert_eq!(mic(&w.json_messages(g1)).last(), Some(&false));

    // The second room's feed goes: only its follower's microphone comes back on.
    w.advance(Duration::from_secs(2));
    w.client_eof(f2);
    assert_eq!(mic(&w.json_messages(g0)), Vec::<bool>::new());
    let m1 = w.json_messages(g1);
    assert_eq!(mic(&m1), vec![true]);
    assert_eq!(main_lines(&m1), vec!["Captions feed offline"]);
    // The operator moves the second user to main: main's last line at once, microphone off,
    // and from now on main's finals.
    w.advance(Duration::from_secs(2));
    let (status, _) = follow(&mut w, "main", &user, OPERATOR);
    assert_eq!(status, 200);
    assert_eq!(texts(&streams(&mut w, a1)), vec!["main one"]);
    let m1 = w.json_messages(g1);
    assert_eq!(mic(&m1), vec![false]);
    // The live feed's follower is no longer told its feed is offline.
    assert_eq!(main_lines(&m1), vec![""]);
    // Back to the offline room: told again.
    w.advance(Duration::from_secs(2));
    assert_eq!(follow(&mut w, "track2", &user, OPERATOR).0, 200);
    let m1 = w.json_messages(g1);
    assert_eq!(mic(&m1), vec![true]);
    assert_eq!(main_lines(&m1), vec!["Captions feed offline"]);
    assert_eq!(texts(&streams(&mut w, a1)), vec!["track two"]);
    w.advance(Duration::from_secs(2));
    assert_eq!(follow(&mut w, "main", &user, OPERATOR).0, 200);
    assert_eq!(texts(&streams(&mut w, a1)), vec!["main one"]);
    assert_eq!(main_lines(&w.json_messages(g1)), vec![""]);
    publish(&mut w, f1, &transcript("main two", "en-US", true));
    assert_eq!(texts(&streams(&mut w, a0)), vec!["main two"]);
    assert_eq!(texts(&streams(&mut w, a1)), vec!["main two"]);
}

/// The texts of the main-view `display_event`s in `msgs`.
fn main_lines(msgs: &[Value]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m["type"] == "display_event" && m["view"] == "main")
        .map(|m| m["layout"]["text"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn glasses_left_without_captions_are_told_when_the_feed_goes_and_cleared_when_it_returns() {
    let mut w = world();
    // ada has only the captions app: when the feed goes she has no source.
    let g0 = glasses(&mut w, USERS[0]);
    let _a0 = app(&mut w, g0, USERS[0], A, json!(["transcription:en-US"]));
    // bo also runs a per-session transcriber, which takes over.
    let g1 = glasses(&mut w, USERS[1]);
    let _a1 = app(&mut w, g1, USERS[1], A, json!(["transcription:en-US"]));
    let _stt = app(&mut w, g1, USERS[1], STT, json!(["audio_chunk"]));
    // cy wants no transcripts.
    let g2 = glasses(&mut w, USERS[2]);
    let _b2 = app(&mut w, g2, USERS[2], B, json!(["button_press"]));
    let f = feed(&mut w);
    publish(&mut w, f, &transcript("Good evening", "en-US", true));
    w.advance(Duration::from_secs(5));
    for g in [g0, g1, g2] {
        w.json_messages(g);
    }
    w.client_eof(f);
    assert_eq!(
        main_lines(&w.json_messages(g0)),
        vec!["Captions feed offline"]
    );
    assert_eq!(main_lines(&w.json_messages(g1)), Vec::<String>::new());
    assert_eq!(main_lines(&w.json_messages(g2)), Vec::<String>::new());
    // It stays up (no duration) until the feed is back, which clears it.
    w.advance(Duration::from_secs(60));
    assert_eq!(main_lines(&w.json_messages(g0)), Vec::<String>::new());
    let _f = feed(&mut w);
    assert_eq!(main_lines(&w.json_messages(g0)), vec![""]);
    assert_eq!(main_lines(&w.json_messages(g1)), Vec::<String>::new());
}

#[test]
fn the_follow_choice_survives_a_restart_through_the_store_and_a_stale_one_falls_back() {
    let mut w = two_feeds();
    let user = json!({"user": USERS[1]}).to_string();
    assert_eq!(follow(&mut w, "track2", &user, OPERATOR).0, 200);
    // Chosen again: nothing new to write.
    assert_eq!(follow(&mut w, "track2", &user, OPERATOR).0, 200);
    let written: Vec<&Persist> = w
        .persisted
        .iter()
        .filter(|p| matches!(p, Persist::Follow { .. }))
        .collect();
    assert_eq!(
        written,
        vec![&Persist::Follow {
            user: USERS[1].into(),
            feed: "track2".into()
        }]
    );
    // The box restarts from its store.
    let dir = std::env::temp_dir().join(format!(
        "augmentos-edge-venue-follow-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let mut store = SqliteStore::open_dir(&dir, 0).unwrap().store;
    store.apply(&w.persisted).unwrap();
    drop(store);
    drop(w);
    let snapshot = open_configured(Some(&dir), 0).snapshot;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        snapshot.follows,
        vec![(USERS[1].to_string(), "track2".to_string())]
    );
    let (server, hub) = two_feeds_config();
    let mut w = World::with_state(server, hub, snapshot.clone());
    let g0 = glasses(&mut w, USERS[0]);
    let a0 = app(&mut w, g0, USERS[0], A, json!(["transcription:en-US"]));
    let g1 = glasses(&mut w, USERS[1]);
    let a1 = app(&mut w, g1, USERS[1], A, json!(["transcription:en-US"]));
    let (f1, _) = publisher(&mut w, Peer::InProcess, "venue:main", FEED, &key(FEED));
    let (f2, _) = publisher(&mut w, Peer::InProcess, "venue:track2", FEED2, &key(FEED2));
    publish(&mut w, f1, &transcript("main one", "en-US", true));
    publish(&mut w, f2, &transcript("track one", "en-US", true));
    assert_eq!(texts(&streams(&mut w, a0)), vec!["main one"]);
    assert_eq!(texts(&streams(&mut w, a1)), vec!["track one"]);
    let feeds = w.server.ui_state(w.clock())["feeds"].clone();
    assert_eq!(
        (&feeds[0]["followers"], &feeds[1]["followers"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(
        w.server
            .hub
            .counters
            .refusals
            .get("VENUE_FOLLOW_UNKNOWN_FEED"),
        None
    );

    // Restarted with a config whose only feed is `main`: the stale choice falls back to the
    // first feed, counted, and is kept for when the config names the feed again.
    let (server, mut hub) = two_feeds_config();
    hub.venue_feeds.truncate(1);
    let mut w = World::with_state(server, hub, snapshot);
    let g1 = glasses(&mut w, USERS[1]);
    let a1 = app(&mut w, g1, USERS[1], A, json!(["transcription:en-US"]));
    let f1 = feed(&mut w);
    publish(&mut w, f1, &transcript("main again", "en-US", true));
    assert_eq!(texts(&streams(&mut w, a1)), vec!["main again"]);
    assert_eq!(
        w.server
            .hub
            .counters
            .refusals
            .get("VENUE_FOLLOW_UNKNOWN_FEED"),
        Some(&1)
    );
    assert_eq!(w.server.hub.durable().follow(USERS[1]), Some("track2"));
    assert!(!w
        .persisted
        .iter()
        .any(|p| matches!(p, Persist::Follow { .. })));
}

#[test]
fn a_latecomer_on_an_offline_feed_is_told_at_once_and_cleared_when_it_comes_up() {
    let mut w = world();
    let f = feed(&mut w);
    publish(&mut w, f, &transcript("Good evening", "en-US", true));
    w.client_eof(f);
    // ada arrives after the feed went: told as soon as her captions app subscribes.
    let g0 = glasses(&mut w, USERS[0]);
    let _a0 = app(&mut w, g0, USERS[0], A, json!(["transcription:en-US"]));
    // (The app's start screen, then the line.)
    assert_eq!(main_lines(&w.json_messages(g0)), vec![A, FEED_OFFLINE]);
    // bo runs a per-session transcriber, which covers him: not told.
    let g1 = glasses(&mut w, USERS[1]);
    let _stt = app(&mut w, g1, USERS[1], STT, json!(["audio_chunk"]));
    let _a1 = app(&mut w, g1, USERS[1], A, json!(["transcription:en-US"]));
    // cy wants no transcripts: not told.
    let g2 = glasses(&mut w, USERS[2]);
    let _b2 = app(&mut w, g2, USERS[2], B, json!(["button_press"]));
    assert_eq!(main_lines(&w.json_messages(g1)), vec![A]);
    assert_eq!(main_lines(&w.json_messages(g2)), vec![B]);
    // A minute, deadline by deadline as the reactor wakes: ada's line is on screen after
    // every wake (the end of her app's start screen shows it again); bo and cy see their apps'
    // start screens go, never the line.
    let until = w.now + Duration::from_secs(60);
    let mut wakeups = 0;
    while w.server.poll_timeout().is_some_and(|at| at <= until) {
        assert!(w.jump_to_next_deadline());
        wakeups += 1;
        let at = w.now;
        let lines = main_lines(&w.json_messages(g0));
        assert!(
            lines.last().is_none_or(|l| l == FEED_OFFLINE),
            "{at:?}: {lines:?}"
        );
        for g in [g1, g2] {
            let lines = main_lines(&w.json_messages(g));
            assert!(
                !lines.iter().any(|l| l == FEED_OFFLINE),
                "{at:?}: {lines:?}"
            );
        }
        assert!(wakeups < 10_000, "livelock");
    }
    w.advance(until.saturating_since(w.now));
    // The feed comes up: ada's line is cleared; the others had none to clear.
    let _f = feed(&mut w);
    assert_eq!(main_lines(&w.json_messages(g0)), vec![""]);
    assert_eq!(main_lines(&w.json_messages(g1)), Vec::<String>::new());
    assert_eq!(main_lines(&w.json_messages(g2)), Vec::<String>::new());
}

/// The texts of the `data_stream`s client `c` received, with their `streamType`.
fn got(w: &mut World, c: usize) -> Vec<(String, String)> {
    streams(w, c)
        .into_iter()
        .map(|(s, d)| (s, d["text"].as_str().unwrap_or("").to_string()))
        .collect()
}

fn line(stream: &str, text: &str) -> (String, String) {
    (stream.to_string(), text.to_string())
}

#[test]
fn every_change_to_the_sessions_reaches_the_next_publication_of_the_feed() {
    let mut w = world();
    let g0 = glasses(&mut w, USERS[0]);
    let a0 = app(&mut w, g0, USERS[0], A, json!(["transcription:en-US"]));
    let g1 = glasses(&mut w, USERS[1]);
    let a1 = app(&mut w, g1, USERS[1], A, json!(["transcription:en-US"]));
    let f = feed(&mut w);
    publish(&mut w, f, &transcript("one", "en-US", true));
    for c in [a0, a1] {
        assert_eq!(got(&mut w, c), vec![line("transcription:en-US", "one")]);
    }
    // One app moves to another language: the next line in English reaches only the other.
    subscribe(&mut w, a0, json!(["transcription:fr-FR"]));
    w.json_messages(a0);
    publish(&mut w, f, &transcript("two", "en-US", false));
    publish(&mut w, f, &transcript("two", "en-US", true));
    publish(&mut w, f, &transcript("deux", "fr-FR", true));
    assert_eq!(got(&mut w, a0), vec![line("transcription:fr-FR", "deux")]);
    assert_eq!(
        got(&mut w, a1),
        vec![
            line("transcription:en-US", "two"),
            line("transcription:en-US", "two")
        ]
    );
    // A session that starts now is reached (after the last line, at once), under its own string.
    let g2 = glasses(&mut w, USERS[2]);
    let a2 = app(
        &mut w,
        g2,
        USERS[2],
        B,
        json!(["transcription:en-US?hints=x"]),
    );
    publish(&mut w, f, &transcript("three", "en-US", true));
    assert_eq!(
        got(&mut w, a2),
        vec![line("transcription:en-US?hints=x", "three")]
    );
    // An app that unsubscribes gets nothing more; the others lose nothing.
    subscribe(&mut w, a1, json!([]));
    w.json_messages(a1);
    publish(&mut w, f, &transcript("four", "en-US", true));
    assert_eq!(got(&mut w, a1), vec![]);
    assert_eq!(
        got(&mut w, a2),
        vec![line("transcription:en-US?hints=x", "four")]
    );
    // A session that ends is not written to; a wildcard subscriber gets the base stream.
    w.client_eof(g2);
    w.client_eof(a2);
    subscribe(&mut w, a0, json!(["*"]));
    w.json_messages(a0);
    publish(&mut w, f, &transcript("five", "en-US", true));
    assert_eq!(got(&mut w, a0), vec![line("transcription", "five")]);
    assert!(w.json_messages(a2).is_empty());
}

#[test]
fn captions_shown_and_glasses_events_between_lines_do_not_rebuild_the_delivery_list() {
    let mut w = world();
    let feeds = |w: &World| w.server.ui_state(w.clock())["feeds"].clone();
    let g = glasses(&mut w, USERS[0]);
    let a = app(
        &mut w,
        g,
        USERS[0],
        A,
        json!(["transcription:en-US", "head_position"]),
    );
    let g1 = glasses(&mut w, USERS[1]);
    let a1 = app(&mut w, g1, USERS[1], A, json!(["transcription:en-US"]));
    let f = feed(&mut w);
    for i in 0..3 {
        publish(&mut w, f, &transcript(&format!("line {i}"), "en-US", true));
        // What a captions app does with each line, and what glasses send on their own.
        let show = json!({"type": "display_event", "packageName": A, "view": "main",
                          "layout": {"layoutType": "text_wall", "text": format!("line {i}")},
                          "sessionId": format!("{}-{A}", USERS[0]),
                          "timestamp": "2025-01-01T00:00:00.000Z"});
        w.send_text(a, &show.to_string());
        w.send_text(g, r#"{"type":"head_position","position":"up"}"#);
        w.advance(Duration::from_millis(300));
    }
    assert_eq!(got(&mut w, a1).len(), 3);
    assert_eq!(feeds(&w)[0]["listsBuilt"], 1, "{}", feeds(&w));
    // A change to the routing is followed by the next line.
    subscribe(&mut w, a1, json!(["transcription:en-US?x=1"]));
    w.json_messages(a1);
    publish(&mut w, f, &transcript("line 3", "en-US", true));
    assert_eq!(
        got(&mut w, a1),
        vec![line("transcription:en-US?x=1", "line 3")]
    );
    assert_eq!(feeds(&w)[0]["listsBuilt"], 2);
}

#[test]
fn after_a_switch_of_feed_the_next_lines_of_both_feeds_go_where_the_choice_says() {
    let mut w = two_feeds();
    let g0 = glasses(&mut w, USERS[0]);
    let a0 = app(&mut w, g0, USERS[0], A, json!(["transcription:en-US"]));
    let g1 = glasses(&mut w, USERS[1]);
    let a1 = app(&mut w, g1, USERS[1], A, json!(["transcription:en-US"]));
    let (f1, _) = publisher(&mut w, Peer::InProcess, "venue:main", FEED, &key(FEED));
    let (f2, _) = publisher(&mut w, Peer::InProcess, "venue:track2", FEED2, &key(FEED2));
    // Both feeds' lines go out once, so both keep their delivery lists.
    publish(&mut w, f1, &transcript("main one", "en-US", true));
    publish(&mut w, f2, &transcript("track one", "en-US", true));
    assert_eq!(texts(&streams(&mut w, a0)), vec!["main one"]);
    assert_eq!(texts(&streams(&mut w, a1)), vec!["main one"]);
    // The second user moves to track2 (its last line at once), and nothing else changes.
    let user = json!({"user": USERS[1]}).to_string();
    assert_eq!(follow(&mut w, "track2", &user, OPERATOR).0, 200);
    assert_eq!(texts(&streams(&mut w, a1)), vec!["track one"]);
    publish(&mut w, f1, &transcript("main two", "en-US", true));
    publish(&mut w, f2, &transcript("track two", "en-US", true));
    assert_eq!(texts(&streams(&mut w, a0)), vec!["main two"]);
    assert_eq!(texts(&streams(&mut w, a1)), vec!["track two"]);
}
