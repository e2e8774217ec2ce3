//! Deterministic tests of the streams of a session through the in-memory world: every glasses
//! event reaches exactly the apps subscribed to it under their own `streamType` (SDK 2.1.29
//! matches handlers by the exact subscription string), audio arrives byte for byte, location and
//! calendar are replayed to a new subscriber, a system app with the right publishes transcripts
//! and translations and nobody else may, and the glasses' microphone follows what the apps need,
//! debounced, in virtual time.

#[path = "support/world.rs"]
mod world;

use augmentos_edge::auth::jwt;
use augmentos_edge::server::ServerConfig;
use augmentos_edge::sim::World;
use augmentos_edge::ws::Opcode;
use serde_json::{json, Value};
use std::time::Duration;
use world::{glasses, hub, quiet, spec_with as spec, subscribe, A, B, SECRET, STT};

const USER: &str = "ada@example.com";
const OTHER: &str = "bo@example.com";

/// Apps: three ordinary ones with every permission, one without any, one publishing system app.
const C: &str = "com.example.c";
const BARE: &str = "com.example.bare";

fn world() -> World {
    world_with(quiet())
}

fn world_with(server: ServerConfig) -> World {
    let apps = vec![
        spec(A, 4001, &["ALL"], false, &[]),
        spec(B, 4002, &["ALL"], false, &[]),
        spec(C, 4003, &["ALL"], false, &[]),
        spec(BARE, 4004, &[], false, &[]),
        spec(
            STT,
            4005,
            &["MICROPHONE"],
            true,
            &["transcription", "translation"],
        ),
    ];
    World::with_hub(server, hub(apps, &[]))
}

fn of_type<'a>(msgs: &'a [Value], ty: &str) -> Vec<&'a Value> {
    msgs.iter().filter(|m| m["type"] == ty).collect()
}

/// Connect `package` for `user` (started from the glasses unless it is a system app), answer
/// its webhook, and subscribe it to `subs`. Returns the app client, inbox drained (and the
/// glasses').
fn app(w: &mut World, g: usize, user: &str, package: &str, subs: Value) -> usize {
    let c = world::app(w, g, user, package, subs);
    w.json_messages(g);
    c
}

/// The `(streamType, data)` of every `data_stream` client `c` received; anything else fails.
fn streams(w: &mut World, c: usize) -> Vec<(String, Value)> {
    w.json_messages(c)
        .into_iter()
        .map(|m| {
            assert_eq!(m["type"], "data_stream", "{m}");
            (
                m["streamType"].as_str().unwrap().to_string(),
                m["data"].clone(),
            )
        })
        .collect()
}

#[test]
fn every_glasses_stream_reaches_exactly_its_subscribers_under_their_own_stream_type() {
    let mut w = world();
    let g = glasses(&mut w, USER);
    let subs_a = json!([
        "button_press",
        "head_position",
        "glasses_battery_update",
        "phone_battery_update",
        "glasses_connection_state",
        "location_update",
        "vps_coordinates",
        "VAD",
        "phone_notification",
        "phone_notification_dismissed",
        "calendar_event",
        "open_dashboard",
        "dashboard_state",
        "core_status_update",
        "photo_taken",
        "touch_event",
        "start_app"
    ]);
    let a = app(&mut w, g, USER, A, subs_a.clone());
    let b = app(
        &mut w,
        g,
        USER,
        B,
        json!([
            "touch_event:double_tap",
            "notification_dismissed",
            {"stream": "location_stream", "rate": "high"}
        ]),
    );
    let c = app(
        &mut w,
        g,
        USER,
        C,
        json!(["touch_event", "touch_event:double_tap"]),
    );
    // Another session with the same subscriptions sees nothing of this one.
    let g2 = glasses(&mut w, OTHER);
    let other = app(&mut w, g2, OTHER, A, subs_a);

    let events = [
        json!({"type": "button_press", "buttonId": "select", "pressType": "short"}),
        json!({"type": "head_position", "position": "up"}),
        json!({"type": "glasses_battery_update", "level": 40, "charging": false}),
        json!({"type": "phone_battery_update", "level": 80, "charging": true}),
        json!({"type": "glasses_connection_state", "modelName": "x", "status": "DISCONNECTED"}),
        json!({"type": "location_update", "lat": 51.5, "lng": -0.1}),
        json!({"type": "vps_coordinates", "x": 1}),
        json!({"type": "VAD", "status": true}),
        json!({"type": "phone_notification", "notificationId": "n1", "app": "m", "title": "t", "content": "c", "priority": "high"}),
        json!({"type": "phone_notification_dismissed", "notificationId": "n1"}),
        json!({"type": "notification_dismissed", "notificationId": "n2"}),
        json!({"type": "calendar_event", "eventId": "e1", "title": "talk", "dtStart": "x", "dtEnd": "y", "timezone": "UTC"}),
        json!({"type": "open_dashboard"}),
        json!({"type": "dashboard_state", "isOpen": true}),
        json!({"type": "core_status_update", "status": {"status": {}}}),
        json!({"type": "photo_taken", "photoUrl": "u"}),
        json!({"type": "touch_event", "device_model": "g1", "gesture_name": "double_tap"}),
        json!({"type": "touch_event", "device_model": "g1", "gesture_name": "single_tap"}),
    ];
    for e in &events {
        w.send_text(g, &e.to_string());
    }
    let got_a = streams(&mut w, a);
    let expect_a: Vec<(String, Value)> = events
        .iter()
        .map(|e| {
            let ty = e["type"].as_str().unwrap();
            let st = if ty == "notification_dismissed" {
                "phone_notification_dismissed"
            } else {
                ty
            };
            (st.to_string(), e.clone())
        })
        .collect();
    assert_eq!(got_a, expect_a);
    assert_eq!(
        streams(&mut w, b),
        vec![
            ("location_stream".to_string(), events[5].clone()),
            ("notification_dismissed".to_string(), events[9].clone()),
            ("notification_dismissed".to_string(), events[10].clone()),
            ("touch_event:double_tap".to_string(), events[16].clone()),
        ]
    );
    assert_eq!(
        streams(&mut w, c),
        vec![
            ("touch_event".to_string(), events[16].clone()),
            ("touch_event:double_tap".to_string(), events[16].clone()),
            ("touch_event".to_string(), events[17].clone()),
        ]
    );
    assert!(w.json_messages(other).is_empty());
}

#[test]
fn the_session_id_is_the_apps_own_and_a_wildcard_gets_each_event_once() {
    let mut w = world();
    let g = glasses(&mut w, USER);
    let a = app(&mut w, g, USER, A, json!(["all", "button_press"]));
    w.send_text(g, r#"{"type":"button_press","buttonId":"x"}"#);
    w.send_text(g, r#"{"type":"head_position","position":"down"}"#);
    let msgs = w.json_messages(a);
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(msgs.iter().all(|m| m["sessionId"] == format!("{USER}-{A}")));
    assert_eq!(msgs[0]["streamType"], "button_press");
    assert_eq!(msgs[1]["streamType"], "head_position");
}

#[test]
fn unsubscribing_stops_delivery() {
    let mut w = world();
    let g = glasses(&mut w, USER);
    let a = app(&mut w, g, USER, A, json!(["button_press"]));
    w.send_text(g, r#"{"type":"button_press"}"#);
    assert_eq!(streams(&mut w, a).len(), 1);
    subscribe(&mut w, a, json!([]));
    w.json_messages(a);
    w.send_text(g, r#"{"type":"button_press"}"#);
    assert!(w.json_messages(a).is_empty());
}

#[test]
fn audio_reaches_its_subscribers_byte_for_byte_and_nobody_else() {
    let mut w = world();
    let g = glasses(&mut w, USER);
    let a = app(&mut w, g, USER, A, json!(["audio_chunk"]));
    let b = app(&mut w, g, USER, B, json!(["button_press"]));
    let pcm: Vec<u8> = (0..3200u32).map(|i| (i * 7 % 251) as u8).collect();
    w.send_frame(g, true, Opcode::Binary, &pcm);
    let got = w.clients[a].messages();
    assert_eq!(
        got,
        vec![augmentos_edge::sim::Received::Binary(pcm.clone())]
    );
    assert!(w.json_messages(b).is_empty());
}

#[test]
fn a_new_subscriber_gets_the_last_location_and_the_calendar() {
    let mut w = world();
    let g = glasses(&mut w, USER);
    let loc = json!({"type": "location_update", "lat": 1.5, "lng": 2.5});
    let cal = json!({"type": "calendar_event", "eventId": "e1", "title": "keynote"});
    w.send_text(
        g,
        &json!({"type": "location_update", "lat": 0, "lng": 0}).to_string(),
    );
    w.send_text(g, &loc.to_string());
    w.send_text(g, &cal.to_string());
    let a = app(&mut w, g, USER, A, json!([]));
    subscribe(&mut w, a, json!(["location_update", "calendar_event"]));
    let mut got = streams(&mut w, a);
    got.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        got,
        vec![
            ("calendar_event".to_string(), cal),
            ("location_update".to_string(), loc),
        ]
    );
    // Re-sending the same subscriptions replays nothing again.
    subscribe(&mut w, a, json!(["location_update", "calendar_event"]));
    assert!(w.json_messages(a).is_empty());
}

fn transcript(text: &str, lang: &str, is_final: bool) -> Value {
    json!({"type": "transcription", "text": text, "isFinal": is_final, "startTime": 100,
           "endTime": 900, "transcribeLanguage": lang, "utteranceId": "u1"})
}

#[test]
fn a_publishing_system_app_feeds_transcripts_to_exact_subscribers() {
    let mut w = world();
    let g = glasses(&mut w, USER);
    let stt = app(&mut w, g, USER, STT, json!(["audio_chunk"]));
    let a = app(&mut w, g, USER, A, json!(["transcription:en-US"]));
    let b = app(
        &mut w,
        g,
        USER,
        B,
        json!([
            "transcription:en-US?hints=ja%2Cfr",
            "translation:es-ES-to-en-US"
        ]),
    );
    let c = app(
        &mut w,
        g,
        USER,
        C,
        json!(["transcription:fr-FR", "translation:all-to-en-US"]),
    );
    let hello = transcript("hello", "en-US", true);
    w.send_text(
        stt,
        &json!({"type": "data_stream", "streamType": "transcription", "data": hello}).to_string(),
    );
    assert_eq!(
        streams(&mut w, a),
        vec![("transcription:en-US".to_string(), hello.clone())]
    );
    assert_eq!(
        streams(&mut w, b),
        vec![("transcription:en-US?hints=ja%2Cfr".to_string(), hello)]
    );
    assert!(w.json_messages(c).is_empty());
    let hola = json!({"type": "translation", "text": "hello", "originalText": "hola",
                      "isFinal": true, "startTime": 0, "endTime": 5,
                      "transcribeLanguage": "es-ES", "translateLanguage": "en-US"});
    w.send_text(
        stt,
        &json!({"type": "data_stream", "streamType": "translation", "data": hola}).to_string(),
    );
    assert_eq!(
        streams(&mut w, b),
        vec![("translation:es-ES-to-en-US".to_string(), hola.clone())]
    );
    assert_eq!(
        streams(&mut w, c),
        vec![("translation:all-to-en-US".to_string(), hola)]
    );
    assert!(w.json_messages(a).is_empty());
    // The publisher hears nothing back but what translations are wanted (tests/translation_demand.rs).
    let back = w.json_messages(stt);
    assert!(
        back.iter().all(|m| m["type"] == "publish_demand"),
        "{back:?}"
    );
}

#[test]
fn publishing_without_the_right_is_refused_and_the_app_stays() {
    let mut w = world();
    let g = glasses(&mut w, USER);
    let a = app(&mut w, g, USER, A, json!(["transcription:en-US"]));
    let b = app(&mut w, g, USER, B, json!(["transcription:en-US"]));
    w.send_text(
        a,
        &json!({"type": "data_stream", "data": transcript("forged", "en-US", true)}).to_string(),
    );
    let msgs = w.json_messages(a);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0]["type"], "tpa_connection_error");
    assert_eq!(msgs[0]["code"], "PUBLISH_NOT_ALLOWED");
    assert!(!w.clients[a].closed);
    assert!(w.json_messages(b).is_empty());
    assert_eq!(
        w.server.hub.counters.refusals.get("PUBLISH_NOT_ALLOWED"),
        Some(&1)
    );
}

/// `inner` nested in `levels` objects (`{"a":…}`), as text.
fn nest(levels: usize, inner: &str) -> String {
    format!("{}{inner}{}", r#"{"a":"#.repeat(levels), "}".repeat(levels))
}

/// Messages of type `ty` serde_json will not read into a tree: 10 000 nested objects, 128
/// levels in all (the first refused), unpaired surrogate escapes.
fn unreadable(ty: &str) -> Vec<String> {
    let mut out = Vec::new();
    for v in [
        nest(10_000, "1"),
        nest(127, "1"),
        r#""\ud800""#.to_string(),
        r#"{"text":"a\udc00"}"#.to_string(),
        r#"["\ud800\u0041"]"#.to_string(),
    ] {
        out.push(format!(r#"{{"type":"{ty}","x":{v}}}"#));
    }
    out
}

/// The one reply `c` got, a refusal of kind `error` with `code`.
fn refused(w: &mut World, c: usize, error: &str, code: &str, what: &str) {
    let msgs = w.json_messages(c);
    assert_eq!(msgs.len(), 1, "{what}: {msgs:?}");
    assert_eq!(msgs[0]["type"], error, "{what}: {msgs:?}");
    assert_eq!(msgs[0]["code"], code, "{what}: {msgs:?}");
    assert!(!w.clients[c].closed, "{what}");
}

#[test]
fn a_glasses_event_serde_json_would_not_read_is_refused_and_never_relayed() {
    let mut w = world();
    let g = glasses(&mut w, USER);
    let a = app(&mut w, g, USER, A, json!(["button_press"]));
    for bad in unreadable("button_press") {
        let what = &bad[..bad.len().min(60)];
        assert!(
            bad.len() < 64 * 1024,
            "{what}: within the message size limit"
        );
        w.send_text(g, &bad);
        refused(&mut w, g, "connection_error", "MALFORMED_MESSAGE", what);
        assert!(w.json_messages(a).is_empty(), "{what}");
    }
    // The same event within the limits is relayed: 126 levels (the app's own envelope makes
    // them 127 as delivered, which serde_json reads).
    let ok = format!(
        r#"{{"type":"button_press","x":{}}}"#,
        nest(125, r#""\ud83d\ude00""#)
    );
    w.send_text(g, &ok);
    let got = streams(&mut w, a);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1, serde_json::from_str::<Value>(&ok).unwrap());
    assert!(w.json_messages(g).is_empty());
}

#[test]
fn published_data_serde_json_would_not_read_is_refused_and_never_relayed() {
    let mut w = world();
    let g = glasses(&mut w, USER);
    let stt = app(&mut w, g, USER, STT, json!(["audio_chunk"]));
    let a = app(&mut w, g, USER, A, json!(["transcription:en-US"]));
    let head = r#"{"type":"transcription","transcribeLanguage":"en-US","isFinal":true"#;
    for v in [
        nest(10_000, "1"),
        nest(126, "1"),
        r#""\ud800""#.to_string(),
        r#"["\udc00\ud800"]"#.to_string(),
    ] {
        let bad = format!(r#"{{"type":"data_stream","data":{head},"text":{v}}}}}"#);
        let what = &bad[..bad.len().min(120)];
        w.send_text(stt, &bad);
        refused(
            &mut w,
            stt,
            "tpa_connection_error",
            "MALFORMED_MESSAGE",
            what,
        );
        assert!(w.json_messages(a).is_empty(), "{what}");
    }
    let ok = format!(r#"{{"type":"data_stream","data":{head},"text":"\ud83d\ude00"}}}}"#);
    w.send_text(stt, &ok);
    let got = streams(&mut w, a);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1["text"], "\u{1f600}");
    assert!(w.json_messages(stt).is_empty());
}

#[test]
fn an_app_message_serde_json_would_not_read_is_refused_and_never_reaches_the_glasses() {
    let mut w = world();
    let g = glasses(&mut w, USER);
    let a = app(&mut w, g, USER, A, json!([]));
    w.advance(Duration::from_millis(1500)); // the boot screen holds displays until then
    w.json_messages(g);
    let display = |layout: &str| {
        format!(
            r#"{{"type":"display_event","packageName":"{A}","view":"main","layout":{{"layoutType":"text_wall","text":"hi","x":{layout}}}}}"#
        )
    };
    for v in [nest(10_000, "1"), nest(126, "1"), r#""\ud800""#.to_string()] {
        let bad = display(&v);
        let what = &bad[..bad.len().min(120)];
        w.send_text(a, &bad);
        refused(&mut w, a, "tpa_connection_error", "MALFORMED_MESSAGE", what);
        assert!(w.json_messages(g).is_empty(), "{what}");
    }
    w.send_text(a, &display("1"));
    let shown = w.json_messages(g);
    assert!(
        shown.iter().any(|m| m["type"] == "display_event"),
        "{shown:?}"
    );
}

fn mic(msgs: &[Value]) -> Vec<(bool, Value)> {
    of_type(msgs, "microphone_state_change")
        .iter()
        .map(|m| {
            (
                m["isMicrophoneEnabled"].as_bool().unwrap(),
                m["requiredData"].clone(),
            )
        })
        .collect()
}

#[test]
fn the_microphone_follows_what_apps_need_debounced() {
    let mut w = world();
    let g = w.connect();
    let bearer = format!("Authorization: Bearer {}", jwt::glasses_token(USER, SECRET));
    assert_eq!(w.upgrade_with(g, "/glasses-ws", &[&bearer]).0, 101);
    w.send_text(g, r#"{"type":"connection_init"}"#);
    // On init: off, nothing needed.
    assert_eq!(mic(&w.json_messages(g)), vec![(false, json!([]))]);
    // The first change is sent at once.
    let a = app(&mut w, g, USER, A, json!([]));
    subscribe(&mut w, a, json!(["transcription:en-US"]));
    assert_eq!(
        mic(&w.json_messages(g)),
        vec![(true, json!(["transcription"]))]
    );
    // Changes within the next second wait for it, and only the last one is sent.
    w.advance(Duration::from_millis(300));
    subscribe(&mut w, a, json!(["audio_chunk", "transcription:en-US"]));
    w.advance(Duration::from_millis(300));
    subscribe(&mut w, a, json!([]));
    assert!(mic(&w.json_messages(g)).is_empty());
    w.advance(Duration::from_millis(399));
    assert!(mic(&w.json_messages(g)).is_empty());
    w.advance(Duration::from_millis(1));
    assert_eq!(mic(&w.json_messages(g)), vec![(false, json!([]))]);
    // A need that comes and goes within the window sends nothing at all.
    w.advance(Duration::from_millis(200));
    subscribe(&mut w, a, json!(["audio_chunk"]));
    subscribe(&mut w, a, json!([]));
    w.advance(Duration::from_secs(2));
    assert!(mic(&w.json_messages(g)).is_empty());
    // Glasses reporting a (re)connection are told again, at once.
    subscribe(&mut w, a, json!(["audio_chunk"]));
    assert_eq!(mic(&w.json_messages(g)), vec![(true, json!(["pcm"]))]);
    w.send_text(
        g,
        r#"{"type":"glasses_connection_state","modelName":"g1","status":"CONNECTED"}"#,
    );
    assert_eq!(mic(&w.json_messages(g)), vec![(true, json!(["pcm"]))]);
    // An app that drops takes its need with it.
    w.advance(Duration::from_secs(2));
    w.client_eof(a);
    assert_eq!(mic(&w.json_messages(g)), vec![(false, json!([]))]);
}

#[test]
fn a_resumed_session_tells_the_glasses_the_microphone_state() {
    let mut w = world();
    let g = glasses(&mut w, USER);
    let _a = app(&mut w, g, USER, A, json!(["audio_chunk"]));
    w.client_eof(g);
    let again = w.connect();
    let bearer = format!("Authorization: Bearer {}", jwt::glasses_token(USER, SECRET));
    assert_eq!(w.upgrade_with(again, "/glasses-ws", &[&bearer]).0, 101);
    w.send_text(again, r#"{"type":"connection_init"}"#);
    let msgs = w.json_messages(again);
    assert_eq!(msgs[0]["type"], "connection_ack");
    assert_eq!(mic(&msgs), vec![(true, json!(["pcm"]))]);
}

// ---- flow control ---------------------------------------------------------------------------

/// A small high-water mark (8 KiB) so a few hundred events back a subscriber up.
fn flow_world() -> World {
    world_with(ServerConfig {
        ping_interval: None,
        read_pause: 8 * 1024,
        max_output: 256 * 1024,
        stall_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    })
}

fn press(i: usize) -> String {
    json!({"type": "button_press", "buttonId": "select", "pressType": "short", "seq": i})
        .to_string()
}

#[test]
fn a_stalled_app_holds_its_session_back_until_the_stall_timeout_and_a_fast_one_loses_nothing() {
    let mut w = flow_world();
    let g = glasses(&mut w, USER);
    let stt = app(&mut w, g, USER, STT, json!([]));
    let fast = app(
        &mut w,
        g,
        USER,
        A,
        json!(["button_press", "transcription:en-US"]),
    );
    let stalled = app(
        &mut w,
        g,
        USER,
        B,
        json!(["button_press", "transcription:en-US"]),
    );
    w.set_reading(stalled, false);
    let stalled_id = w.clients[stalled].id;
    let high = w.server.config().read_pause;
    let mut peak = 0;
    for i in 0..2_000 {
        w.send_text(g, &press(i));
        if i % 100 == 0 {
            // Transcripts from the publisher, interim then final, in the same flood.
            w.send_text(
                stt,
                &json!({"type": "data_stream", "data": transcript(&format!("t{i}"), "en-US", false)})
                    .to_string(),
            );
            w.send_text(
                stt,
                &json!({"type": "data_stream", "data": transcript(&format!("t{i}"), "en-US", true)})
                    .to_string(),
            );
        }
        peak = peak.max(w.server.output(stalled_id).len());
    }
    // The stalled app's backlog stays near the high-water mark: the glasses (and the
    // publisher) were paused, their bytes held by "TCP".
    assert!(peak <= high + 1024, "backlog peaked at {peak} bytes");
    assert!(
        !w.clients[g].unsent.is_empty(),
        "the glasses were never paused"
    );
    assert!(w.server.hub.counters.feeder_pauses >= 1);
    // Not closed before the stall timeout...
    w.advance(Duration::from_millis(1_999));
    assert!(!w.clients[stalled].closed);
    assert!(w
        .server
        .net
        .get(stalled_id)
        .is_some_and(|c| c.is_websocket()));
    // ... closed at it, with 1008 naming the stall; the session then runs on.
    w.advance(Duration::from_millis(1));
    assert_eq!(w.server.stats().stall_closes, 1);
    // Its backlog is dropped for a close frame, 1008 with a reason naming the stall.
    let out = w.server.output(stalled_id).to_vec();
    assert_eq!(&out[..1], &[0x88]);
    assert_eq!(u16::from_be_bytes([out[2], out[3]]), 1008);
    assert!(String::from_utf8_lossy(&out[4..]).contains("stalled"));
    assert!(
        w.clients[g].unsent.is_empty(),
        "the glasses were not resumed"
    );
    w.advance(Duration::from_secs(3));
    // The fast app got every press once, in order, and every final; interims only where it
    // was not backed up (it never was).
    let got = streams(&mut w, fast);
    let seqs: Vec<u64> = got
        .iter()
        .filter(|(st, _)| st == "button_press")
        .map(|(_, d)| d["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (0..2_000).collect::<Vec<u64>>());
    let finals = got
        .iter()
        .filter(|(st, d)| st == "transcription:en-US" && d["isFinal"] == true)
        .count();
    assert_eq!(finals, 20);
    // The stalled app goes through the drop path like any app that went away.
    assert!(matches!(
        w.server.hub.app_state(USER, B),
        Some("reconnecting" | "restarting")
    ));
}

#[test]
fn a_subscriber_backed_up_by_one_feeder_holds_every_feeder_of_its_session_until_it_drains() {
    let mut w = flow_world();
    let g = glasses(&mut w, USER);
    let stt = app(&mut w, g, USER, STT, json!([]));
    let slow = app(&mut w, g, USER, B, json!(["transcription:en-US"]));
    w.set_reading(slow, false);
    let (g_id, stt_id, slow_id) = (w.clients[g].id, w.clients[stt].id, w.clients[slow].id);
    let high = w.server.config().read_pause;
    // Only the publisher sends: finals, until the subscriber is past its high-water mark.
    let mut i = 0;
    while w.server.output(slow_id).len() <= high {
        let data = transcript(&format!("t{i}"), "en-US", true);
        w.send_text(
            stt,
            &json!({"type": "data_stream", "data": data}).to_string(),
        );
        i += 1;
        assert!(i < 1_000, "the subscriber never backed up");
    }
    // The glasses sent nothing, yet they feed the same session: held with the publisher.
    assert!(!w.server.wants_read(stt_id), "the publisher was not held");
    assert!(
        !w.server.wants_read(g_id),
        "the silent glasses were not held"
    );
    assert_eq!(w.server.hub.counters.feeder_pauses, 2);
    // Drained: both are free again, and said so once each.
    w.set_reading(slow, true);
    assert!(w.server.wants_read(stt_id) && w.server.wants_read(g_id));
    assert!(w.server.wants_read(slow_id));
}

#[test]
fn lossy_streams_to_a_backed_up_app_are_dropped_without_pausing_anyone() {
    let mut w = flow_world();
    let g = glasses(&mut w, USER);
    let fast = app(&mut w, g, USER, A, json!(["button_press"]));
    let listener = app(&mut w, g, USER, B, json!(["audio_chunk", "head_position"]));
    w.set_reading(listener, false);
    let chunk = vec![7u8; 1600];
    for i in 0..200 {
        w.send_frame(g, true, Opcode::Binary, &chunk);
        w.send_text(g, r#"{"type":"head_position","position":"up"}"#);
        w.send_text(g, &press(i));
    }
    // Nobody waited for the audio listener: the glasses were never paused.
    assert_eq!(w.server.hub.counters.feeder_pauses, 0);
    assert!(w.clients[g].unsent.is_empty());
    let presses = streams(&mut w, fast).len();
    assert_eq!(presses, 200);
    let dropped = &w.server.hub.counters.dropped;
    assert!(
        dropped.get("audio_chunk").copied().unwrap_or(0) > 150,
        "{dropped:?}"
    );
    assert!(
        dropped.get("head_position").copied().unwrap_or(0) > 150,
        "{dropped:?}"
    );
    // The drops are in /metrics, by stream.
    let m = w.connect();
    w.send_raw(m, b"GET /metrics HTTP/1.1\r\n\r\n");
    let (_, body) = w.clients[m].take_http_response().unwrap();
    assert!(
        body.contains(
            "augmentos_edge_dropped_messages_total{stream=\"audio_chunk\",reason=\"subscriber_backlog\"}"
        ),
        "{body}"
    );
}

#[test]
fn an_app_that_is_behind_but_keeps_reading_is_never_cut() {
    let mut w = flow_world();
    let g = glasses(&mut w, USER);
    let slow = app(&mut w, g, USER, A, json!(["button_press"]));
    let mut received = 0;
    for round in 0..20 {
        w.set_reading(slow, false);
        for i in 0..300 {
            w.send_text(g, &press(round * 300 + i));
        }
        // It reads everything once every 1.5 s: behind, but never stalled for 2 s.
        w.advance(Duration::from_millis(1_500));
        w.set_reading(slow, true);
        received += streams(&mut w, slow).len();
    }
    assert!(!w.clients[slow].closed);
    assert_eq!(w.server.stats().stall_closes, 0);
    assert_eq!(received, 6_000);
}

#[test]
fn a_transcriber_listening_to_audio_turns_the_microphone_on_only_while_captions_are_wanted() {
    let mut w = world();
    let g = glasses(&mut w, USER);
    // The on-box transcriber (a publisher) listens to audio from the start...
    let _stt = app(&mut w, g, USER, STT, json!(["audio_chunk"]));
    let mut seen = mic(&w.json_messages(g));
    seen.retain(|(on, _)| *on);
    assert!(
        seen.is_empty(),
        "the microphone went on for nobody: {seen:?}"
    );
    // ... but the microphone goes on only once an app wants transcripts,
    let a = app(&mut w, g, USER, A, json!([]));
    w.json_messages(g);
    subscribe(&mut w, a, json!(["transcription:en-US"]));
    assert_eq!(
        mic(&w.json_messages(g)),
        vec![(true, json!(["pcm", "transcription"]))]
    );
    // and off again when none does.
    w.advance(Duration::from_secs(2));
    subscribe(&mut w, a, json!([]));
    assert_eq!(mic(&w.json_messages(g)), vec![(false, json!([]))]);
}

/// The audio frames client `c` received (anything else it got is dropped).
fn audio(w: &mut World, c: usize) -> Vec<Vec<u8>> {
    w.clients[c]
        .messages()
        .into_iter()
        .filter_map(|m| match m {
            augmentos_edge::sim::Received::Binary(b) => Some(b),
            _ => None,
        })
        .collect()
}

#[test]
fn no_audio_reaches_a_transcriber_once_nobody_wants_its_transcripts() {
    let mut w = world();
    let g = glasses(&mut w, USER);
    let stt = app(&mut w, g, USER, STT, json!(["audio_chunk"]));
    let captions = app(&mut w, g, USER, A, json!(["transcription:en-US"]));
    // A recorder keeps the microphone on throughout: audio keeps coming from the glasses.
    let recorder = app(&mut w, g, USER, B, json!(["audio_chunk"]));
    let chunk = |i: u8| vec![i; 320];
    w.send_frame(g, true, Opcode::Binary, &chunk(1));
    assert_eq!(
        audio(&mut w, stt),
        [chunk(1)],
        "captions wanted: transcribe"
    );
    assert_eq!(audio(&mut w, recorder), [chunk(1)]);
    // The captions app stops: the transcriber would listen for nobody.
    w.send_text(
        g,
        &json!({"type": "stop_app", "packageName": A}).to_string(),
    );
    assert_eq!(w.server.hub.app_state(USER, A), None);
    w.json_messages(captions);
    w.send_frame(g, true, Opcode::Binary, &chunk(2));
    assert_eq!(
        audio(&mut w, stt),
        Vec::<Vec<u8>>::new(),
        "audio for nobody"
    );
    assert_eq!(audio(&mut w, recorder), [chunk(2)]);
    // Captions wanted again (another app): the transcriber hears the audio again.
    let c = app(&mut w, g, USER, C, json!(["transcription:en-US"]));
    w.send_frame(g, true, Opcode::Binary, &chunk(3));
    assert_eq!(audio(&mut w, stt), [chunk(3)]);
    // An unsubscription is the same as a stop; and with nobody else listening, audio the
    // glasses still send (the microphone's off is debounced) reaches nobody at all.
    subscribe(&mut w, c, json!([]));
    w.client_eof(recorder);
    w.send_frame(g, true, Opcode::Binary, &chunk(4));
    assert_eq!(audio(&mut w, stt), Vec::<Vec<u8>>::new());
}
