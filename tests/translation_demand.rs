//! Deterministic tests of the translation demand rule through the in-memory world: the box tells
//! each translation publisher which translations its session's apps subscribe to
//! (`publish_demand`, once after the ack, then on every change and only then), `all-to-<tgt>`
//! counting as a demand for `<tgt>` from any source; a venue feed's publisher is told the union
//! over the sessions that follow it, and its one translation reaches every follower's
//! subscribers, each under its own subscription string; no app that does not publish
//! translations ever gets the message. A publisher's `publish_unserved` (the demanded pairs it
//! cannot serve) reaches the subscribers of those pairs as a `TRANSLATION_UNAVAILABLE`
//! `tpa_connection_error`, once per change, and a feed's reaches every follower's; a pair
//! left unserved when the source that served it goes (a publisher's or the feed's connection
//! closes, or the publisher is stopped) is told the same way, with time stepped deadline by
//! deadline through the reconnect grace and restart.

#[path = "support/world.rs"]
mod world;

use augmentos_edge::hub::registry::AppSpec;
use augmentos_edge::net::Peer;
use augmentos_edge::server::ServerConfig;
use augmentos_edge::sim::World;
use serde_json::{json, Value};
use std::time::Duration;
use world::{glasses, hub, key, publish, quiet, streams, subscribe, A, B, FEED, STT};

const USERS: [&str; 2] = ["ada@example.com", "bo@example.com"];
/// A per-session publisher of transcripts only.
const ASR: &str = "system.local.asr";

/// An app; a system one (in-process only) if it publishes anything.
fn spec(package: &str, port: u16, publishes: &[&str]) -> AppSpec {
    world::spec(package, port, !publishes.is_empty(), publishes)
}

/// A box with the per-session publishers, or (`venue`) with a venue feed instead.
fn world(venue: bool) -> World {
    let mut apps = vec![spec(A, 4001, &[]), spec(B, 4002, &[])];
    if venue {
        apps.push(spec(FEED, 4003, &["transcription", "translation"]));
    } else {
        apps.push(spec(STT, 4004, &["transcription", "translation"]));
        apps.push(spec(ASR, 4005, &["transcription"]));
    }
    let feeds: &[(&str, &str)] = if venue { &[("main", FEED)] } else { &[] };
    World::with_hub(quiet(), hub(apps, feeds))
}

fn init(w: &mut World, c: usize, package: &str, session_id: &str) {
    world::init(w, c, package, session_id, &key(package));
}

/// Connect `package` into the session of `user` (started from the glasses unless a system
/// app); returns it and what it got (the ack first).
fn app(w: &mut World, g: usize, user: &str, package: &str) -> (usize, Vec<Value>) {
    world::connect_app(w, g, user, package, !package.starts_with("system."))
}

/// The `translations` of every `publish_demand` in `msgs`, in order.
fn demands(msgs: &[Value]) -> Vec<Vec<String>> {
    msgs.iter()
        .filter(|m| m["type"] == "publish_demand")
        .map(|m| {
            m["translations"]
                .as_array()
                .expect("an array")
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

fn got(w: &mut World, c: usize) -> Vec<Vec<String>> {
    let msgs = w.json_messages(c);
    demands(&msgs)
}

fn list(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn translation(from: &str, to: &str, text: &str) -> Value {
    json!({"type": "translation", "text": text, "originalText": "hello", "isFinal": true,
           "startTime": 100, "endTime": 900, "utteranceId": "u-0",
           "transcribeLanguage": from, "translateLanguage": to, "didTranslate": true})
}

#[test]
fn a_translation_publisher_is_told_what_its_session_subscribes_to_on_change_only() {
    let mut w = world(false);
    let g = glasses(&mut w, USERS[0]);
    let (a, _) = app(&mut w, g, USERS[0], A);
    subscribe(&mut w, a, json!(["translation:en-US-to-es-ES"]));
    w.advance(Duration::from_millis(10));
    // Connected after the subscription: told right after its ack, with its own sessionId.
    let (stt, msgs) = app(&mut w, g, USERS[0], STT);
    assert_eq!(demands(&msgs), vec![list(&["en-US-to-es-ES"])], "{msgs:?}");
    let m = msgs.iter().find(|m| m["type"] == "publish_demand").unwrap();
    assert_eq!(m["sessionId"], format!("{}-{STT}", USERS[0]));
    assert!(m["timestamp"].is_string());
    // A publisher of transcripts only is never told.
    let (asr, msgs) = app(&mut w, g, USERS[0], ASR);
    assert_eq!(demands(&msgs), Vec::<Vec<String>>::new());
    // The publisher's own audio subscription changes nothing.
    subscribe(&mut w, stt, json!(["audio_chunk"]));
    assert_eq!(got(&mut w, stt), Vec::<Vec<String>>::new());
    // A second app adds a target from any source and repeats one (query dropped).
    let (b, msgs) = app(&mut w, g, USERS[0], B);
    assert_eq!(demands(&msgs), Vec::<Vec<String>>::new());
    subscribe(
        &mut w,
        b,
        json!([
            "translation:all-to-pt-BR",
            "translation:en-US-to-es-ES?hints=x",
            "all"
        ]),
    );
    assert_eq!(
        got(&mut w, stt),
        vec![list(&["all-to-pt-BR", "en-US-to-es-ES"])]
    );
    // A change that leaves the set as it was says nothing.
    w.advance(Duration::from_secs(1));
    subscribe(
        &mut w,
        a,
        json!(["translation:en-US-to-es-ES", "transcription:en-US"]),
    );
    assert_eq!(got(&mut w, stt), Vec::<Vec<String>>::new());
    // The all-to subscriber gets a translation from the source the publisher has.
    publish(&mut w, stt, &translation("en-US", "pt-BR", "olá"));
    let to_b = streams(&mut w, b);
    assert_eq!(to_b.len(), 1, "{to_b:?}");
    assert_eq!(to_b[0].0, "translation:all-to-pt-BR");
    assert_eq!(to_b[0].1["text"], "olá");
    assert!(streams(&mut w, a).is_empty());
    // Unsubscribing takes the targets away, one change at a time.
    subscribe(&mut w, b, json!(["button_press"]));
    assert_eq!(got(&mut w, stt), vec![list(&["en-US-to-es-ES"])]);
    w.advance(Duration::from_secs(1));
    subscribe(&mut w, a, json!([]));
    assert_eq!(got(&mut w, stt), vec![Vec::<String>::new()]);
    // No app but the translation publisher ever heard of it.
    for c in [a, b, asr] {
        assert_eq!(got(&mut w, c), Vec::<Vec<String>>::new());
    }
}

#[test]
fn a_venue_feed_is_told_the_union_of_its_followers_and_its_translation_reaches_them_all() {
    let mut w = world(true);
    let g0 = glasses(&mut w, USERS[0]);
    let (a0, _) = app(&mut w, g0, USERS[0], A);
    subscribe(&mut w, a0, json!(["translation:en-US-to-es-ES"]));
    let feed = w.connect_from(Peer::InProcess);
    assert_eq!(w.upgrade(feed, "/app-ws"), 101);
    init(&mut w, feed, FEED, "venue:main");
    let msgs = w.json_messages(feed);
    assert_eq!(msgs[0]["type"], "tpa_connection_ack", "{msgs:?}");
    assert_eq!(demands(&msgs), vec![list(&["en-US-to-es-ES"])]);
    let m = msgs.iter().find(|m| m["type"] == "publish_demand").unwrap();
    assert_eq!(m["sessionId"], "venue:main");
    // A second session wanting the same target changes nothing; another target does.
    let g1 = glasses(&mut w, USERS[1]);
    let (a1, _) = app(&mut w, g1, USERS[1], A);
    subscribe(&mut w, a1, json!(["translation:en-US-to-es-ES?x=1"]));
    assert_eq!(got(&mut w, feed), Vec::<Vec<String>>::new());
    let (b1, _) = app(&mut w, g1, USERS[1], B);
    subscribe(&mut w, b1, json!(["translation:all-to-es-ES"]));
    assert_eq!(
        got(&mut w, feed),
        vec![list(&["all-to-es-ES", "en-US-to-es-ES"])]
    );
    // One translation, published once, reaches every follower under its own string.
    publish(&mut w, feed, &translation("en-US", "es-ES", "hola"));
    let to = |w: &mut World, c| -> Vec<String> {
        streams(w, c)
            .into_iter()
            .filter(|(_, d)| d["text"] == "hola")
            .map(|(s, _)| s)
            .collect()
    };
    assert_eq!(to(&mut w, a0), vec!["translation:en-US-to-es-ES"]);
    assert_eq!(to(&mut w, a1), vec!["translation:en-US-to-es-ES?x=1"]);
    assert_eq!(to(&mut w, b1), vec!["translation:all-to-es-ES"]);
    // One follower leaves a target another still wants: nothing; the last one: the change.
    subscribe(&mut w, a0, json!([]));
    assert_eq!(got(&mut w, feed), Vec::<Vec<String>>::new());
    subscribe(&mut w, a1, json!([]));
    assert_eq!(got(&mut w, feed), vec![list(&["all-to-es-ES"])]);
    // The session ends (glasses gone past the grace period): its demand goes with it.
    w.client_eof(g1);
    for _ in 0..40 {
        w.advance(Duration::from_secs(30));
    }
    assert_eq!(got(&mut w, feed), vec![Vec::<String>::new()]);
    // A publisher that reconnects is told again after its ack.
    subscribe(&mut w, a0, json!(["translation:en-US-to-pt-BR"]));
    assert_eq!(got(&mut w, feed), vec![list(&["en-US-to-pt-BR"])]);
    let again = w.connect_from(Peer::InProcess);
    assert_eq!(w.upgrade(again, "/app-ws"), 101);
    init(&mut w, again, FEED, "venue:main");
    let msgs = w.json_messages(again);
    assert_eq!(demands(&msgs), vec![list(&["en-US-to-pt-BR"])]);
}

#[test]
fn a_latecomer_gets_the_feeds_last_final_of_each_kind_it_subscribes_to() {
    let mut w = world(true);
    let feed = w.connect_from(Peer::InProcess);
    assert_eq!(w.upgrade(feed, "/app-ws"), 101);
    init(&mut w, feed, FEED, "venue:main");
    w.json_messages(feed);
    let hello = json!({"type": "transcription", "text": "hello", "isFinal": true,
                       "startTime": 100, "endTime": 900, "utteranceId": "u-0",
                       "transcribeLanguage": "en-US"});
    w.send_text(
        feed,
        &json!({"type": "data_stream", "streamType": "transcription", "data": hello}).to_string(),
    );
    // The transcript's final is followed by its translations.
    publish(&mut w, feed, &translation("en-US", "es-ES", "hola"));
    publish(&mut w, feed, &translation("en-US", "pt-BR", "olá"));
    let g = glasses(&mut w, USERS[0]);
    let (a, _) = app(&mut w, g, USERS[0], A);
    subscribe(&mut w, a, json!(["transcription:en-US"]));
    let (b, _) = app(&mut w, g, USERS[0], B);
    subscribe(
        &mut w,
        b,
        json!(["translation:all-to-es-ES", "transcription:en-US?hints=x"]),
    );
    let texts = |got: Vec<(String, Value)>| -> Vec<(String, String)> {
        got.into_iter()
            .map(|(s, d)| (s, d["text"].as_str().unwrap().to_string()))
            .collect()
    };
    assert_eq!(
        texts(streams(&mut w, a)),
        vec![("transcription:en-US".into(), "hello".into())]
    );
    assert_eq!(
        texts(streams(&mut w, b)),
        vec![
            ("transcription:en-US?hints=x".into(), "hello".into()),
            ("translation:all-to-es-ES".into(), "hola".into()),
        ]
    );
}

fn refusals(w: &World, code: &str) -> u64 {
    w.server
        .hub
        .counters
        .refusals
        .get(code)
        .copied()
        .unwrap_or(0)
}

fn unserved(w: &mut World, c: usize, pairs: Value) {
    w.send_text(
        c,
        &json!({"type": "publish_unserved", "translations": pairs}).to_string(),
    );
}

/// The `tpa_connection_error`s client `c` received, as `(code, message, details)`.
fn errors(w: &mut World, c: usize) -> Vec<(String, String, Value)> {
    w.json_messages(c)
        .into_iter()
        .filter(|m| m["type"] == "tpa_connection_error")
        .map(|m| {
            let text = |k: &str| m[k].as_str().unwrap_or_default().to_string();
            (text("code"), text("message"), m["details"].clone())
        })
        .collect()
}

#[test]
fn a_subscriber_to_a_pair_its_publisher_cannot_serve_is_told_once_per_change() {
    let mut w = world(false);
    let g = glasses(&mut w, USERS[0]);
    let (a, _) = app(&mut w, g, USERS[0], A);
    subscribe(&mut w, a, json!(["translation:en-US-to-xx-XX?x=1"]));
    let (b, _) = app(&mut w, g, USERS[0], B);
    subscribe(&mut w, b, json!(["translation:en-US-to-es-ES"]));
    let (stt, msgs) = app(&mut w, g, USERS[0], STT);
    assert_eq!(
        demands(&msgs),
        vec![list(&["en-US-to-es-ES", "en-US-to-xx-XX"])]
    );
    errors(&mut w, a);
    errors(&mut w, b);
    // The publisher answers with the pair no engine of its covers (and one nobody demands).
    unserved(&mut w, stt, json!(["en-US-to-xx-XX", "en-US-to-de-DE"]));
    let got = errors(&mut w, a);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "TRANSLATION_UNAVAILABLE");
    assert!(got[0].1.contains("en-US-to-xx-XX"), "{}", got[0].1);
    assert_eq!(
        got[0].2,
        json!({"unavailable": ["translation:en-US-to-xx-XX?x=1"]})
    );
    assert!(errors(&mut w, b).is_empty(), "the served pair's subscriber");
    assert_eq!(refusals(&w, "TRANSLATION_UNAVAILABLE"), 1);
    // The same set again is no change: nobody is told twice.
    unserved(&mut w, stt, json!(["en-US-to-xx-XX"]));
    assert!(errors(&mut w, a).is_empty());
    // A later subscriber to the unavailable pair is told at once; to the served one, not.
    subscribe(
        &mut w,
        b,
        json!(["translation:en-US-to-es-ES", "translation:en-US-to-xx-XX"]),
    );
    let got = errors(&mut w, b);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "TRANSLATION_UNAVAILABLE");
    assert_eq!(
        got[0].2,
        json!({"unavailable": ["translation:en-US-to-xx-XX"]})
    );
    assert!(errors(&mut w, a).is_empty());
    // A pair reported while nobody demanded it was not kept: its later subscriber waits for
    // the publisher's answer to the new demand.
    subscribe(&mut w, a, json!(["translation:en-US-to-de-DE"]));
    assert!(errors(&mut w, a).is_empty());
    assert_eq!(
        got_demand_last(&mut w, stt),
        list(&["en-US-to-de-DE", "en-US-to-es-ES", "en-US-to-xx-XX"])
    );
    unserved(&mut w, stt, json!(["en-US-to-de-DE", "en-US-to-xx-XX"]));
    let got = errors(&mut w, a);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].1.contains("en-US-to-de-DE"), "{}", got[0].1);
    assert!(errors(&mut w, b).is_empty(), "b was told of xx already");
    assert_eq!(refusals(&w, "TRANSLATION_UNAVAILABLE"), 3);
    // Bad input: malformed, refused and nothing changed; from an app that does not publish
    // translations, refused.
    unserved(&mut w, stt, json!("en-US-to-xx-XX"));
    assert_eq!(errors(&mut w, stt)[0].0, "MALFORMED_MESSAGE");
    let (asr, _) = app(&mut w, g, USERS[0], ASR);
    unserved(&mut w, asr, json!(["en-US-to-es-ES"]));
    assert_eq!(errors(&mut w, asr)[0].0, "PUBLISH_NOT_ALLOWED");
    unserved(&mut w, b, json!(["en-US-to-es-ES"]));
    assert_eq!(errors(&mut w, b)[0].0, "PUBLISH_NOT_ALLOWED");
    assert!(errors(&mut w, a).is_empty());
    assert_eq!(refusals(&w, "PUBLISH_NOT_ALLOWED"), 2);
    // The publisher serves everything again; then the pair comes back unserved: told again.
    unserved(&mut w, stt, json!([]));
    unserved(&mut w, stt, json!(["en-US-to-de-DE"]));
    assert_eq!(errors(&mut w, a).len(), 1);
}

/// The last `publish_demand` client `c` received since it was last read.
fn got_demand_last(w: &mut World, c: usize) -> Vec<String> {
    got(w, c).pop().expect("a publish_demand")
}

#[test]
fn a_feeds_unserved_pairs_reach_the_subscribers_of_every_follower() {
    let mut w = world(true);
    let g0 = glasses(&mut w, USERS[0]);
    let (a0, _) = app(&mut w, g0, USERS[0], A);
    subscribe(&mut w, a0, json!(["translation:en-US-to-xx-XX"]));
    let g1 = glasses(&mut w, USERS[1]);
    let (a1, _) = app(&mut w, g1, USERS[1], A);
    subscribe(&mut w, a1, json!(["translation:all-to-es-ES"]));
    let (b1, _) = app(&mut w, g1, USERS[1], B);
    let feed = w.connect_from(Peer::InProcess);
    assert_eq!(w.upgrade(feed, "/app-ws"), 101);
    init(&mut w, feed, FEED, "venue:main");
    assert_eq!(
        got(&mut w, feed),
        vec![list(&["all-to-es-ES", "en-US-to-xx-XX"])]
    );
    unserved(&mut w, feed, json!(["en-US-to-xx-XX"]));
    let got0 = errors(&mut w, a0);
    assert_eq!(got0.len(), 1, "{got0:?}");
    assert_eq!(got0[0].0, "TRANSLATION_UNAVAILABLE");
    assert!(got0[0].1.contains("en-US-to-xx-XX"));
    assert!(
        errors(&mut w, a1).is_empty(),
        "the served pair's subscriber"
    );
    // Another follower's app subscribing to the feed's unserved pair is told at once.
    subscribe(&mut w, b1, json!(["translation:en-US-to-xx-XX"]));
    let got1 = errors(&mut w, b1);
    assert_eq!(got1.len(), 1, "{got1:?}");
    assert_eq!(got1[0].0, "TRANSLATION_UNAVAILABLE");
    assert!(errors(&mut w, a0).is_empty());
    // Malformed from the feed: refused, the feed stays up, nobody told anything.
    unserved(&mut w, feed, json!([1, 2]));
    assert_eq!(errors(&mut w, feed)[0].0, "MALFORMED_MESSAGE");
    assert!(errors(&mut w, a0).is_empty() && errors(&mut w, b1).is_empty());
    // A reconnected feed starts from serving everything: its report tells them again.
    let again = w.connect_from(Peer::InProcess);
    assert_eq!(w.upgrade(again, "/app-ws"), 101);
    init(&mut w, again, FEED, "venue:main");
    w.json_messages(again);
    unserved(&mut w, again, json!(["en-US-to-xx-XX"]));
    assert_eq!(errors(&mut w, a0).len(), 1);
    assert_eq!(errors(&mut w, b1).len(), 1);
    assert!(errors(&mut w, a1).is_empty());
}

#[test]
fn a_session_moved_to_a_feed_that_cannot_serve_its_pair_is_told() {
    const OPERATOR: &str = "operator-token-0123456789";
    const FEED2: &str = "system.venue.stt2";
    let mut w = World::with_hub(
        ServerConfig {
            operator_token: Some(OPERATOR.into()),
            ..quiet()
        },
        hub(
            vec![
                spec(A, 4001, &[]),
                spec(FEED, 4003, &["transcription", "translation"]),
                spec(FEED2, 4006, &["transcription", "translation"]),
            ],
            &[("main", FEED), ("track2", FEED2)],
        ),
    );
    let g = glasses(&mut w, USERS[0]);
    let (a, _) = app(&mut w, g, USERS[0], A);
    subscribe(&mut w, a, json!(["translation:en-US-to-pt-BR"]));
    let mut feeds = Vec::new();
    for (package, id) in [(FEED, "venue:main"), (FEED2, "venue:track2")] {
        let c = w.connect_from(Peer::InProcess);
        assert_eq!(w.upgrade(c, "/app-ws"), 101);
        init(&mut w, c, package, id);
        w.json_messages(c);
        feeds.push(c);
    }
    // The second room's feed has no Portuguese; the first one's has.
    subscribe(
        &mut w,
        a,
        json!(["translation:en-US-to-pt-BR", "button_press"]),
    );
    assert!(errors(&mut w, a).is_empty());
    let c = w.connect();
    let body = format!(r#"{{"user":"{}"}}"#, USERS[0]);
    let req = format!(
        "POST /ui/api/feeds/track2/follow HTTP/1.1\r\nHost: sim\r\nAuthorization: Bearer {OPERATOR}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // Told its demand, the second feed answers that it cannot serve it.
    w.send_raw(c, req.as_bytes());
    assert_eq!(
        w.clients[c].take_http_response().expect("a response").0,
        200
    );
    assert_eq!(got(&mut w, feeds[1]), vec![list(&["en-US-to-pt-BR"])]);
    unserved(&mut w, feeds[1], json!(["en-US-to-pt-BR"]));
    assert_eq!(errors(&mut w, a).len(), 1);
    // Back to the first room, then again to the second, whose answer stands: told on the move.
    for (feed, told) in [("main", 0), ("track2", 1)] {
        let c = w.connect();
        let req = req.replace("track2", feed);
        w.send_raw(c, req.as_bytes());
        assert_eq!(
            w.clients[c].take_http_response().expect("a response").0,
            200
        );
        let got = errors(&mut w, a);
        assert_eq!(got.len(), told, "{feed}: {got:?}");
    }
}

/// A second per-session translator.
const STT2: &str = "system.local.stt2";

/// A box with two per-session translators and a venue feed (followed once it connects).
fn world_two_sources() -> World {
    // The publishers first: a session's apps are kept in this order.
    let apps = vec![
        spec(STT, 4004, &["transcription", "translation"]),
        spec(STT2, 4007, &["transcription", "translation"]),
        spec(FEED, 4003, &["transcription", "translation"]),
        spec(A, 4001, &[]),
        spec(B, 4002, &[]),
    ];
    World::with_hub(quiet(), hub(apps, &[("main", FEED)]))
}

/// Let `d` pass, the clock stepped deadline by deadline as the reactor wakes, every webhook
/// sent on the way answered 200 at once.
fn pass(w: &mut World, d: Duration) {
    let end = w.clock().mono + d;
    while w.server.poll_timeout().is_some_and(|at| at <= end) {
        w.jump_to_next_deadline();
        for i in w.open_outbound() {
            w.respond_http(i, 200);
        }
    }
    let rest = end.saturating_since(w.clock().mono);
    w.advance(rest);
}

#[test]
fn a_pair_left_without_a_server_when_its_publisher_goes_is_told_once_per_change() {
    let mut w = world_two_sources();
    let g = glasses(&mut w, USERS[0]);
    let (a, _) = app(&mut w, g, USERS[0], A);
    subscribe(&mut w, a, json!(["translation:en-US-to-xx-XX"]));
    let (b, _) = app(&mut w, g, USERS[0], B);
    subscribe(&mut w, b, json!(["translation:en-US-to-es-ES"]));
    let (stt, _) = app(&mut w, g, USERS[0], STT);
    let (stt2, _) = app(&mut w, g, USERS[0], STT2);
    // One translator cannot serve xx; the other can: nobody is told.
    unserved(&mut w, stt, json!(["en-US-to-xx-XX"]));
    assert!(errors(&mut w, a).is_empty());
    // The one that served it drops: xx is unavailable now, and its subscriber is told, once.
    w.reset(stt2);
    let got = errors(&mut w, a);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "TRANSLATION_UNAVAILABLE");
    assert!(got[0].1.contains("en-US-to-xx-XX"), "{}", got[0].1);
    assert_eq!(
        got[0].2,
        json!({"unavailable": ["translation:en-US-to-xx-XX"]})
    );
    assert!(errors(&mut w, b).is_empty(), "es is still served");
    assert_eq!(refusals(&w, "TRANSLATION_UNAVAILABLE"), 1);
    // Its reconnect grace runs out and it is started again: nothing new to tell.
    pass(&mut w, Duration::from_secs(8));
    assert!(errors(&mut w, a).is_empty() && errors(&mut w, b).is_empty());
    // It comes back serving everything (nothing told), then says it cannot serve xx: told.
    let (stt2, _) = app(&mut w, g, USERS[0], STT2);
    assert!(errors(&mut w, a).is_empty());
    unserved(&mut w, stt2, json!(["en-US-to-xx-XX"]));
    assert_eq!(errors(&mut w, a).len(), 1);
    assert_eq!(refusals(&w, "TRANSLATION_UNAVAILABLE"), 2);
    // It drops while xx is already unavailable: no change, nobody told.
    w.reset(stt2);
    pass(&mut w, Duration::from_secs(8));
    assert!(errors(&mut w, a).is_empty() && errors(&mut w, b).is_empty());
    // Back serving everything, then stopped by the wearer: xx is unavailable again, told.
    let (_stt2, _) = app(&mut w, g, USERS[0], STT2);
    w.send_text(
        g,
        &json!({"type": "stop_app", "packageName": STT2}).to_string(),
    );
    pass(&mut w, Duration::from_secs(1));
    assert_eq!(errors(&mut w, a).len(), 1);
    assert!(errors(&mut w, b).is_empty());
    assert_eq!(refusals(&w, "TRANSLATION_UNAVAILABLE"), 3);
    // The last source goes: no source, no "unavailable" (and no one told).
    w.reset(stt);
    pass(&mut w, Duration::from_secs(1));
    assert!(errors(&mut w, a).is_empty() && errors(&mut w, b).is_empty());
    assert_eq!(refusals(&w, "TRANSLATION_UNAVAILABLE"), 3);
}

#[test]
fn a_pair_only_the_venue_feed_served_is_told_when_the_feed_goes() {
    let mut w = world_two_sources();
    let g = glasses(&mut w, USERS[0]);
    let (a, _) = app(&mut w, g, USERS[0], A);
    subscribe(&mut w, a, json!(["translation:en-US-to-xx-XX"]));
    let (stt, _) = app(&mut w, g, USERS[0], STT);
    let feed = w.connect_from(Peer::InProcess);
    assert_eq!(w.upgrade(feed, "/app-ws"), 101);
    init(&mut w, feed, FEED, "venue:main");
    w.json_messages(feed);
    // The session's own translator cannot serve xx; the feed can: nobody is told.
    unserved(&mut w, stt, json!(["en-US-to-xx-XX"]));
    assert!(errors(&mut w, a).is_empty());
    // The feed goes: told once; time passes, nothing more.
    w.reset(feed);
    let got = errors(&mut w, a);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "TRANSLATION_UNAVAILABLE");
    assert_eq!(refusals(&w, "TRANSLATION_UNAVAILABLE"), 1);
    pass(&mut w, Duration::from_secs(8));
    assert!(errors(&mut w, a).is_empty());
    // The feed comes back serving everything: nothing told.
    let again = w.connect_from(Peer::InProcess);
    assert_eq!(w.upgrade(again, "/app-ws"), 101);
    init(&mut w, again, FEED, "venue:main");
    w.json_messages(again);
    assert!(errors(&mut w, a).is_empty());
    assert_eq!(refusals(&w, "TRANSLATION_UNAVAILABLE"), 1);
}

#[test]
fn apps_stopped_with_their_session_are_not_told_of_the_pairs_its_end_leaves_unserved() {
    let mut w = world_two_sources();
    let g = glasses(&mut w, USERS[0]);
    let (_stt, _) = app(&mut w, g, USERS[0], STT);
    let (stt2, _) = app(&mut w, g, USERS[0], STT2);
    let (a, _) = app(&mut w, g, USERS[0], A);
    subscribe(&mut w, a, json!(["translation:en-US-to-xx-XX"]));
    // Stopped in the order the box keeps them, the first translator (which serves xx) would
    // go before the second (which cannot).
    unserved(&mut w, stt2, json!(["en-US-to-xx-XX"]));
    assert!(errors(&mut w, a).is_empty());
    // The glasses go for good: every app is stopped, the subscriber before the publishers.
    w.reset(g);
    pass(&mut w, Duration::from_secs(61));
    let msgs = w.json_messages(a);
    assert!(msgs.iter().any(|m| m["type"] == "app_stopped"), "{msgs:?}");
    assert!(
        !msgs.iter().any(|m| m["type"] == "tpa_connection_error"),
        "{msgs:?}"
    );
    assert_eq!(refusals(&w, "TRANSLATION_UNAVAILABLE"), 0);
}
