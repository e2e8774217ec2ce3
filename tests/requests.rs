//! Deterministic tests of app requests to the glasses and their replies through the in-memory
//! world: each request reaches the glasses in its 2.1.29 shape; each reply reaches exactly the
//! app that asked (never another app of the session, never another session); a request the
//! glasses cannot serve is answered at once, and one they do not answer is answered at its
//! deadline in virtual time, not before — each in the form the app's SDK understands (photos
//! as a `photo_error` POSTed to the app's `/photo-upload`); pending requests are bounded per
//! session; requests need their permission.
//!
//! The fixture: `com.example.a` and `com.example.b` with every permission, `com.example.bare`
//! with none; two users, each with their own glasses.

#[path = "support/world.rs"]
mod world;

use augmentos_edge::auth;
use augmentos_edge::hub::registry::AppSpec;
use augmentos_edge::hub::HubConfig;
use augmentos_edge::net::Target;
use augmentos_edge::server::ServerConfig;
use augmentos_edge::sim::World;
use serde_json::{json, Value};
use std::time::Duration;
use world::{glasses, key, A, B, SECRET};

const USER: &str = "ada@example.com";
const OTHER: &str = "bo@example.com";
const BARE: &str = "com.example.bare";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn spec(package: &str, port: u16, perms: &[&str]) -> AppSpec {
    AppSpec {
        package_name: package.into(),
        name: package.into(),
        public_url: format!("http://apps.example:{port}/"),
        webhook_target: Target {
            host: "apps.example".into(),
            port,
            tls: None,
        },
        webhook_path: String::new(),
        hashed_api_key: auth::hash_api_key(&key(package)),
        is_system_app: false,
        permissions: perms.iter().map(|s| s.to_string()).collect(),
        allowed_addresses: Vec::new(),
        publishes: Vec::new(),
        settings: Vec::new(),
    }
}

fn world_with(cfg: impl FnOnce(&mut HubConfig)) -> World {
    let mut hub = HubConfig {
        jwt_secret: SECRET.to_vec(),
        apps: vec![
            spec(A, 4001, &["ALL"]),
            spec(B, 4002, &["CAMERA", "LOCATION"]),
            spec(BARE, 4003, &[]),
        ],
        lifecycle_burst: 100,
        ..HubConfig::default()
    };
    cfg(&mut hub);
    World::with_hub(
        ServerConfig {
            ping_interval: None,
            idle_timeout: Duration::from_secs(3600),
            ..ServerConfig::default()
        },
        hub,
    )
}

fn world() -> World {
    world_with(|_| {})
}

/// Start `package` from the glasses, connect it, answer its webhook, subscribe it to `subs`.
fn app(w: &mut World, g: usize, user: &str, package: &str, subs: Value) -> usize {
    let c = world::app(w, g, user, package, subs);
    w.json_messages(g);
    c
}

/// The messages of client `c` other than the session's own chatter to glasses.
fn requests_to(w: &mut World, g: usize) -> Vec<Value> {
    w.json_messages(g)
        .into_iter()
        .filter(|m| {
            !matches!(
                m["type"].as_str(),
                Some("app_state_change" | "microphone_state_change" | "display_event")
            )
        })
        .collect()
}

// What the SDK 2.1.29 modules send (PROTOCOL §5), with the ids given.

fn photo(id: &str) -> String {
    json!({"type": "photo_request", "packageName": "x", "sessionId": "x", "requestId": id,
        "timestamp": "2025-01-01T00:00:00.000Z", "saveToGallery": false, "size": "medium",
        "compress": "none"})
    .to_string()
}

fn audio(id: &str) -> String {
    json!({"type": "audio_play_request", "packageName": "x", "sessionId": "x", "requestId": id,
        "timestamp": "2025-01-01T00:00:00.000Z", "audioUrl": "http://media.example/a.mp3",
        "volume": 1, "stopOtherAudio": true, "trackId": 0})
    .to_string()
}

fn led(id: &str) -> String {
    json!({"type": "rgb_led_control", "packageName": "x", "sessionId": "x", "requestId": id,
        "timestamp": "2025-01-01T00:00:00.000Z", "action": "on", "color": "red",
        "ontime": 1000, "offtime": 0, "count": 1})
    .to_string()
}

fn poll(id: &str) -> String {
    json!({"type": "location_poll_request", "correlationId": id, "packageName": "x",
        "sessionId": "x", "accuracy": "high"})
    .to_string()
}

fn rtmp() -> String {
    json!({"type": "rtmp_stream_request", "packageName": "x", "sessionId": "x",
        "rtmpUrl": "rtmp://media.example/live/k", "video": {"width": 1280, "height": 720},
        "timestamp": "2025-01-01T00:00:00.000Z"})
    .to_string()
}

/// The `photo_error` bodies POSTed to `/photo-upload` since the last call (the app server
/// answers each with 200).
fn photo_errors(w: &mut World) -> Vec<(u16, Value)> {
    let mut out = Vec::new();
    for i in w.open_outbound() {
        let o = &w.outbound[i];
        assert_eq!(o.request_line(), "POST /photo-upload HTTP/1.1");
        out.push((o.target.port, o.json().expect("a JSON body")));
        w.respond_http(i, 200);
    }
    out
}

#[test]
fn each_request_reaches_the_glasses_in_its_2_1_29_shape() {
    let mut w = world();
    let g = glasses(&mut w, USER);
    let a = app(&mut w, g, USER, A, json!([]));

    w.send_text(a, &photo("photo_req_1_abc"));
    let with_hook = json!({"type": "photo_request", "requestId": "photo_req_2",
        "customWebhookUrl": "http://elsewhere.example/up", "authToken": "tok",
        "saveToGallery": true, "size": "large", "compress": "heavy"});
    w.send_text(a, &with_hook.to_string());
    w.send_text(a, &audio("audio_req_1"));
    w.send_text(
        a,
        r#"{"type":"audio_stop_request","packageName":"x","sessionId":"x","trackId":2}"#,
    );
    w.send_text(a, &led("led_req_1"));
    w.send_text(a, &poll("poll_1"));
    w.send_text(a, &rtmp());
    let got = requests_to(&mut w, g);
    assert_eq!(got.len(), 7, "{got:#?}");
    let ts = got[0]["timestamp"].clone();
    assert!(ts.is_string());
    assert_eq!(
        got[0],
        json!({"type": "photo_request", "requestId": "photo_req_1_abc", "appId": A,
            "webhookUrl": "http://apps.example:4001/photo-upload", "saveToGallery": false,
            "size": "medium", "compress": "none", "timestamp": ts})
    );
    assert_eq!(
        got[1],
        json!({"type": "photo_request", "requestId": "photo_req_2", "appId": A,
            "webhookUrl": "http://elsewhere.example/up", "authToken": "tok",
            "saveToGallery": true, "size": "large", "compress": "heavy", "timestamp": ts})
    );
    assert_eq!(
        got[2],
        json!({"type": "audio_play_request", "requestId": "audio_req_1", "appId": A,
            "audioUrl": "http://media.example/a.mp3", "volume": 1, "stopOtherAudio": true,
            "trackId": 0, "timestamp": ts})
    );
    assert_eq!(
        got[3],
        json!({"type": "audio_stop_request", "appId": A, "trackId": 2, "timestamp": ts})
    );
    assert_eq!(
        got[4],
        json!({"type": "rgb_led_control", "requestId": "led_req_1", "appId": A,
            "action": "on", "color": "red", "ontime": 1000, "offtime": 0, "count": 1,
            "timestamp": ts})
    );
    assert_eq!(
        got[5],
        json!({"type": "request_single_location", "accuracy": "high",
            "correlationId": "poll_1", "timestamp": ts})
    );
    let stream_id = got[6]["streamId"]
        .as_str()
        .expect("the box names the stream");
    assert_eq!(
        got[6],
        json!({"type": "start_rtmp_stream", "rtmpUrl": "rtmp://media.example/live/k",
            "appId": A, "streamId": stream_id, "video": {"width": 1280, "height": 720},
            "timestamp": ts})
    );
    // The SDK stops its stream with the id it learnt from a status.
    w.send_text(
        a,
        &json!({"type": "rtmp_stream_stop", "streamId": stream_id}).to_string(),
    );
    assert_eq!(
        requests_to(&mut w, g),
        [
            json!({"type": "stop_rtmp_stream", "appId": A, "streamId": stream_id,
            "timestamp": ts})
        ]
    );
    assert!(w.json_messages(a).is_empty(), "nothing refused");
}

#[test]
fn replies_reach_only_the_app_that_asked() {
    let mut w = world();
    let g = glasses(&mut w, USER);
    let a = app(&mut w, g, USER, A, json!(["location_update"]));
    let b = app(&mut w, g, USER, B, json!(["location_update"]));
    let g2 = glasses(&mut w, OTHER);
    let a2 = app(&mut w, g2, OTHER, A, json!(["location_update"]));

    // Colliding-looking ids: the same id in another session is its own request; in the same
    // session it is refused (a reply could not tell the two apart).
    w.send_text(a, &audio("req-1"));
    w.send_text(b, &audio("req-2"));
    w.send_text(a2, &audio("req-1"));
    w.send_text(a2, &audio("req-2"));
    w.send_text(b, &audio("req-1"));
    let refused = w.json_messages(b);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["type"], "audio_play_response");
    assert_eq!(refused[0]["requestId"], "req-1");
    assert_eq!(refused[0]["success"], false);
    assert!(refused[0]["error"]
        .as_str()
        .unwrap()
        .starts_with("DUPLICATE_REQUEST_ID"));
    assert_eq!(requests_to(&mut w, g).len(), 2);
    assert_eq!(requests_to(&mut w, g2).len(), 2);

    let reply = |id: &str| json!({"type": "audio_play_response", "requestId": id, "success": true, "duration": 1.5});
    w.send_text(g, &reply("req-2").to_string());
    assert!(w.json_messages(a).is_empty());
    assert!(w.json_messages(a2).is_empty());
    assert_eq!(w.json_messages(b), [reply("req-2")]);
    w.send_text(g, &reply("req-1").to_string());
    assert_eq!(w.json_messages(a), [reply("req-1")]);
    assert!(w.json_messages(b).is_empty());
    assert!(w.json_messages(a2).is_empty());
    // Replies of this session's ids from the other glasses reach only their own session's
    // app; a reply again (already answered) reaches nobody.
    w.send_text(g2, &reply("req-2").to_string());
    w.send_text(g, &reply("req-1").to_string());
    assert_eq!(w.json_messages(a2), [reply("req-2")]);
    assert!(w.json_messages(a).is_empty());
    assert!(w.json_messages(b).is_empty());

    // A location fix with a correlationId goes to the poller only, as its data_stream; a fix
    // without one goes to every subscriber.
    w.send_text(a, &poll("poll_1"));
    w.send_text(a2, &poll("poll_1"));
    requests_to(&mut w, g);
    let fix = json!({"type": "location_update", "lat": 1.5, "lng": 2.5, "correlationId": "poll_1"});
    w.send_text(g, &fix.to_string());
    let got = w.json_messages(a);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["type"], "data_stream");
    assert_eq!(got[0]["streamType"], "location_update");
    assert_eq!(got[0]["sessionId"], format!("{USER}-{A}"));
    assert_eq!(got[0]["data"], fix);
    assert!(w.json_messages(b).is_empty());
    assert!(w.json_messages(a2).is_empty());
    let plain = json!({"type": "location_update", "lat": 3, "lng": 4});
    w.send_text(g, &plain.to_string());
    for c in [a, b] {
        let got = w.json_messages(c);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["data"], plain);
    }
    assert!(w.json_messages(a2).is_empty());

    // LED replies and stream statuses by their ids, likewise.
    w.send_text(b, &led("led-1"));
    w.send_text(a, &rtmp());
    let sent = requests_to(&mut w, g);
    let stream_id = sent[1]["streamId"].as_str().unwrap().to_string();
    let led_reply =
        json!({"type": "rgb_led_control_response", "requestId": "led-1", "success": true});
    w.send_text(g, &led_reply.to_string());
    assert_eq!(w.json_messages(b), [led_reply]);
    let status =
        json!({"type": "rtmp_stream_status", "streamId": stream_id, "status": "streaming"});
    w.send_text(g, &status.to_string());
    assert_eq!(w.json_messages(a), std::slice::from_ref(&status));
    assert!(w.json_messages(b).is_empty());
    // The other glasses naming this stream reach nobody.
    w.send_text(g2, &status.to_string());
    assert!(w.json_messages(a2).is_empty());
    // A running stream has no deadline while the glasses answer its keep-alives; it ends with
    // its status.
    for _ in 0..8 {
        w.advance(Duration::from_secs(15));
        for m in w.json_messages(g) {
            if m["type"] == "keep_rtmp_stream_alive" {
                let ack = json!({"type": "keep_alive_ack", "streamId": m["streamId"],
                    "ackId": m["ackId"]});
                w.send_text(g, &ack.to_string());
            }
        }
    }
    assert!(w.json_messages(a).is_empty());
    let stopped = json!({"type": "rtmp_stream_status", "streamId": stream_id, "status": "stopped"});
    w.send_text(g, &stopped.to_string());
    assert_eq!(w.json_messages(a), [stopped]);
    assert_eq!(w.server.hub.pending_requests(USER), 0);
}

#[test]
fn without_glasses_each_request_is_answered_at_once() {
    let mut w = world();
    let g = glasses(&mut w, USER);
    let a = app(&mut w, g, USER, A, json!([]));
    w.client_eof(g); // the session lives on for its grace period; the app stays
    assert!(photo_errors(&mut w).is_empty());

    w.send_text(a, &audio("audio_1"));
    w.send_text(a, &led("led_1"));
    w.send_text(a, &poll("poll_1"));
    w.send_text(a, &rtmp());
    w.send_text(a, &photo("photo_1"));
    let got = w.json_messages(a);
    assert_eq!(got.len(), 4, "{got:#?}");
    assert_eq!(got[0]["type"], "audio_play_response");
    assert_eq!(got[0]["requestId"], "audio_1");
    assert_eq!(got[0]["success"], false);
    assert!(got[0]["error"]
        .as_str()
        .unwrap()
        .starts_with("GLASSES_NOT_CONNECTED"));
    assert_eq!(got[1]["type"], "tpa_connection_error");
    assert_eq!(got[1]["code"], "GLASSES_NOT_CONNECTED");
    assert_eq!(got[1]["details"], json!({"requestId": "led_1"}));
    assert_eq!(got[2]["type"], "tpa_connection_error");
    assert_eq!(got[2]["details"], json!({"correlationId": "poll_1"}));
    assert_eq!(got[3]["type"], "rtmp_stream_status");
    assert_eq!(got[3]["status"], "error");
    assert_eq!(got[3]["appId"], A);
    // The photo: SDK 2.1.29 reads photo outcomes only from its /photo-upload.
    assert_eq!(
        photo_errors(&mut w),
        [(
            4001,
            json!({"requestId": "photo_1", "type": "photo_error", "success": false,
                "errorCode": "GLASSES_NOT_CONNECTED",
                "errorMessage": "no glasses are connected to this session"})
        )]
    );
    assert_eq!(w.server.hub.pending_requests(USER), 0);
    assert_eq!(
        w.server.hub.counters.refusals.get("GLASSES_NOT_CONNECTED"),
        Some(&5)
    );
}

#[test]
fn unanswered_requests_are_answered_at_their_deadline_not_before() {
    let mut w = world();
    let g = glasses(&mut w, USER);
    let a = app(&mut w, g, USER, A, json!([]));
    // Deadlines (defaults): LED 10 s, location 12 s, photo 25 s, audio 55 s; an answered
    // request sets off nothing. Audio is sent at 0, the rest at 1 ms.
    w.send_text(a, &audio("audio_1"));
    w.advance(ms(1));
    w.send_text(a, &photo("photo_1"));
    w.send_text(a, &poll("poll_1"));
    w.send_text(a, &led("led_1"));
    w.send_text(a, &led("led_2"));
    assert_eq!(requests_to(&mut w, g).len(), 5);
    w.send_text(
        g,
        r#"{"type":"rgb_led_control_response","requestId":"led_2","success":true}"#,
    );
    assert_eq!(w.json_messages(a).len(), 1);

    w.advance(ms(9_999));
    assert!(w.json_messages(a).is_empty(), "not before the deadline");
    w.advance(ms(1));
    let got = w.json_messages(a);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["code"], "REQUEST_TIMEOUT");
    assert_eq!(got[0]["details"], json!({"requestId": "led_1"}));

    w.advance(ms(1_999));
    assert!(w.json_messages(a).is_empty());
    w.advance(ms(1));
    let got = w.json_messages(a);
    assert_eq!(got[0]["code"], "REQUEST_TIMEOUT");
    assert_eq!(got[0]["details"], json!({"correlationId": "poll_1"}));

    w.advance(ms(12_999));
    assert!(photo_errors(&mut w).is_empty());
    w.advance(ms(1));
    let posted = photo_errors(&mut w);
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].1["requestId"], "photo_1");
    assert_eq!(posted[0].1["errorCode"], "REQUEST_TIMEOUT");

    // audio_1 was sent at 0 and is due at 55 s.
    w.advance(ms(55_000 - 25_002));
    assert!(w.json_messages(a).is_empty());
    w.advance(ms(1));
    let got = w.json_messages(a);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["type"], "audio_play_response");
    assert_eq!(got[0]["success"], false);
    assert!(got[0]["error"]
        .as_str()
        .unwrap()
        .starts_with("REQUEST_TIMEOUT"));
    assert_eq!(w.server.hub.pending_requests(USER), 0);
    assert_eq!(w.server.hub.poll_timeout(), None, "no deadline left armed");

    // A reply after the deadline reaches nobody.
    w.send_text(
        g,
        r#"{"type":"audio_play_response","requestId":"audio_1","success":true}"#,
    );
    assert!(w.json_messages(a).is_empty());
}

#[test]
fn the_timeouts_come_from_the_config() {
    let mut w = world_with(|h| h.timings.requests.audio = ms(700));
    let g = glasses(&mut w, USER);
    let a = app(&mut w, g, USER, A, json!([]));
    w.send_text(a, &audio("audio_1"));
    w.advance(ms(699));
    assert!(w.json_messages(a).is_empty());
    w.advance(ms(1));
    assert_eq!(w.json_messages(a)[0]["type"], "audio_play_response");
}

#[test]
fn pending_requests_are_bounded_per_session() {
    let mut w = world_with(|h| h.max_pending_requests = 3);
    let g = glasses(&mut w, USER);
    let a = app(&mut w, g, USER, A, json!([]));
    let b = app(&mut w, g, USER, B, json!([]));
    let g2 = glasses(&mut w, OTHER);
    let a2 = app(&mut w, g2, OTHER, A, json!([]));
    w.send_text(a, &led("1"));
    w.send_text(b, &led("2"));
    w.send_text(a, &audio("3"));
    w.send_text(b, &audio("4"));
    let got = w.json_messages(b);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["requestId"], "4");
    assert!(got[0]["error"]
        .as_str()
        .unwrap()
        .starts_with("TOO_MANY_REQUESTS"));
    w.send_text(a, &photo("5"));
    assert_eq!(photo_errors(&mut w)[0].1["errorCode"], "TOO_MANY_REQUESTS");
    assert_eq!(
        requests_to(&mut w, g).len(),
        3,
        "refused ones never reach the glasses"
    );
    // Another session has its own bound.
    w.send_text(a2, &led("1"));
    assert_eq!(requests_to(&mut w, g2).len(), 1);
    assert!(w.json_messages(a2).is_empty());
    // An answer makes room.
    w.send_text(
        g,
        r#"{"type":"rgb_led_control_response","requestId":"2","success":true}"#,
    );
    w.json_messages(b);
    w.send_text(b, &audio("4"));
    assert!(w.json_messages(b).is_empty());
    assert_eq!(requests_to(&mut w, g).len(), 1);
    assert_eq!(
        w.server.hub.counters.refusals.get("TOO_MANY_REQUESTS"),
        Some(&2)
    );
}

#[test]
fn requests_need_their_permission() {
    let mut w = world();
    let g = glasses(&mut w, USER);
    let bare = app(&mut w, g, USER, BARE, json!([]));
    w.send_text(bare, &photo("p1"));
    w.send_text(bare, &poll("l1"));
    w.send_text(bare, &rtmp());
    let got = w.json_messages(bare);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0]["type"], "tpa_connection_error");
    assert_eq!(got[0]["code"], "PERMISSION_DENIED");
    assert_eq!(got[0]["details"], json!({"correlationId": "l1"}));
    assert_eq!(got[1]["type"], "rtmp_stream_status");
    assert_eq!(got[1]["status"], "error");
    assert!(got[1]["errorDetails"].as_str().unwrap().contains("CAMERA"));
    let posted = photo_errors(&mut w);
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].0, 4003);
    assert_eq!(posted[0].1["errorCode"], "PERMISSION_DENIED");
    assert!(
        requests_to(&mut w, g).is_empty(),
        "nothing reached the glasses"
    );
    // Audio and the LED need no permission.
    w.send_text(bare, &audio("a1"));
    w.send_text(bare, &led("d1"));
    assert_eq!(requests_to(&mut w, g).len(), 2);
    assert!(w.json_messages(bare).is_empty());
}

#[test]
fn a_photo_failure_from_the_glasses_reaches_the_app_server_and_a_success_ends_the_wait() {
    let mut w = world();
    let g = glasses(&mut w, USER);
    let a = app(&mut w, g, USER, A, json!([]));
    w.send_text(a, &photo("p1"));
    w.send_text(a, &photo("p2"));
    requests_to(&mut w, g);
    w.send_text(
        g,
        r#"{"type":"photo_response","requestId":"p1","success":false,"error":{"code":"CAMERA_BUSY","message":"camera in use"}}"#,
    );
    w.send_text(
        g,
        r#"{"type":"photo_response","requestId":"p2","success":true,"photoUrl":"http://x/p.jpg"}"#,
    );
    assert_eq!(
        photo_errors(&mut w),
        [(
            4001,
            json!({"requestId": "p1", "type": "photo_error", "success": false,
                "errorCode": "CAMERA_BUSY", "errorMessage": "camera in use"})
        )]
    );
    assert!(
        w.json_messages(a).is_empty(),
        "the SDK ignores WS photo replies"
    );
    assert_eq!(w.server.hub.pending_requests(USER), 0);
    w.advance(Duration::from_secs(60));
    assert!(
        photo_errors(&mut w).is_empty(),
        "no timeout after an answer"
    );
}

#[test]
fn a_stopped_app_loses_its_requests_and_its_stream() {
    let mut w = world();
    let g = glasses(&mut w, USER);
    let a = app(&mut w, g, USER, A, json!([]));
    let b = app(&mut w, g, USER, B, json!([]));
    w.send_text(a, &rtmp());
    w.send_text(a, &audio("x1"));
    let stream_id = requests_to(&mut w, g)[0]["streamId"]
        .as_str()
        .unwrap()
        .to_string();
    // One camera: a second stream in the session is refused while the first runs.
    w.send_text(b, &rtmp());
    let got = w.json_messages(b);
    assert_eq!(got[0]["status"], "error");
    assert!(got[0]["errorDetails"]
        .as_str()
        .unwrap()
        .starts_with("STREAM_BUSY"));
    w.send_text(
        g,
        &json!({"type": "stop_app", "packageName": A}).to_string(),
    );
    let sent = requests_to(&mut w, g);
    let stops: Vec<_> = sent
        .iter()
        .filter(|m| m["type"] == "stop_rtmp_stream")
        .collect();
    assert_eq!(stops.len(), 1, "{sent:?}");
    assert_eq!(stops[0]["streamId"], stream_id.as_str());
    assert_eq!(w.server.hub.pending_requests(USER), 0);
    // Its late replies reach nobody, and the camera is free for another app.
    w.send_text(
        g,
        r#"{"type":"audio_play_response","requestId":"x1","success":true}"#,
    );
    assert!(w.json_messages(b).is_empty());
    w.send_text(b, &rtmp());
    assert!(w.json_messages(b).is_empty());
    assert_eq!(requests_to(&mut w, g)[0]["type"], "start_rtmp_stream");
}

#[test]
fn a_stream_that_never_starts_is_reported_as_an_error_to_its_app() {
    let mut w = world();
    let g = glasses(&mut w, USER);
    let a = app(&mut w, g, USER, A, json!([]));
    w.send_text(a, &rtmp());
    let stream_id = requests_to(&mut w, g)[0]["streamId"].clone();
    w.advance(ms(14_999));
    assert!(w.json_messages(a).is_empty());
    w.advance(ms(1));
    let got = w.json_messages(a);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["type"], "rtmp_stream_status");
    assert_eq!(got[0]["streamId"], stream_id);
    assert_eq!(got[0]["status"], "error");
}
