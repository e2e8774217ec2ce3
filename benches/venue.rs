//! The box's own work per venue-feed delivery, without the kernel: one feed line fanned out to
//! N sessions with one subscribed app each, in the deterministic in-memory world.
//!
//! Why: `edge-load venue` measures a delivery with its `write` (2-7 µs of kernel time on
//! loopback, see README "What the floor is"); this measures only what the core does per
//! delivery — find the targets, build each message into its output, account for it — so
//! changes to the fan-out show up unblurred by the kernel and by other load.
//!
//! Setup, per N (100, 1 000): N glasses sessions, each starting the captions app, which
//! connects, authenticates and subscribes to `transcription:en-US`; then the venue feed's
//! publisher connects once with `sessionId: "venue"`. The heartbeat is off and the clock never
//! moves. The measured step: the publisher's masked `data_stream` frame (re-copied from a
//! pristine copy, since decoding unmasks in place) goes to `Server::handle_input`; every
//! connection's output is then taken (`poll_dirty`, `output`, `consume_output`) and thrown
//! away, as the reactor does after writing it. Criterion reports the time per line; divided by
//! N (the throughput, in elements) it is the time per delivery.
//!
//! Before measuring, one line goes through `World::step` and every app's inbox is decoded: each
//! must hold exactly that line under its own subscription string; during the run the bytes
//! taken are checked to be the same every step, so the loop cannot measure nothing.

use augmentos_edge::auth::{self, jwt};
use augmentos_edge::hub::registry::AppSpec;
use augmentos_edge::hub::HubConfig;
use augmentos_edge::net::{ConnId, Target};
use augmentos_edge::server::ServerConfig;
use augmentos_edge::sim::World;
use augmentos_edge::ws::frame::write_masked_frame;
use augmentos_edge::ws::Opcode;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::json;

const SECRET: &[u8] = b"venue-bench-secret-0123";
const APP: &str = "com.bench.captions";
const FEED: &str = "system.bench.venue";
const SUB: &str = "transcription:en-US";

fn spec(package: &str, port: u16, system: bool) -> AppSpec {
    AppSpec {
        package_name: package.into(),
        name: package.into(),
        public_url: format!("http://apps.example:{port}"),
        webhook_target: Target {
            host: "apps.example".into(),
            port,
            tls: None,
        },
        webhook_path: String::new(),
        hashed_api_key: auth::hash_api_key(&format!("{package}-key")),
        is_system_app: system,
        permissions: vec!["ALL".into()],
        allowed_addresses: if system {
            vec!["in-process".into()]
        } else {
            Vec::new()
        },
        publishes: if system {
            vec!["transcription".into(), "translation".into()]
        } else {
            Vec::new()
        },
        settings: Vec::new(),
    }
}

fn send_init(w: &mut World, c: usize, package: &str, session_id: &str) {
    let init = json!({"type": "tpa_connection_init", "packageName": package,
                      "sessionId": session_id, "apiKey": format!("{package}-key")});
    w.send_text(c, &init.to_string());
    let msgs = w.json_messages(c);
    assert_eq!(msgs[0]["type"], "tpa_connection_ack", "{msgs:?}");
}

/// A world with `n` sessions each with the captions app subscribed to [`SUB`], and the feed
/// connected; its publisher's connection and client index.
fn setup(n: usize) -> (World, ConnId, Vec<usize>) {
    setup_with(n, &[SUB])
}

/// As [`setup`], the apps subscribed to `subs` (none: they join later).
fn setup_with(n: usize, subs: &[&str]) -> (World, ConnId, Vec<usize>) {
    let mut w = World::with_hub(
        ServerConfig {
            ping_interval: None,
            ..ServerConfig::default()
        },
        HubConfig {
            jwt_secret: SECRET.to_vec(),
            apps: vec![spec(APP, 4001, false), spec(FEED, 4002, true)],
            lifecycle_burst: 100,
            venue_feeds: vec![("main".into(), FEED.into())],
            max_sessions: n + 10,
            ..HubConfig::default()
        },
    );
    let mut apps = Vec::new();
    for i in 0..n {
        let user = format!("user{i}@example.com");
        let g = w.connect();
        let bearer = format!(
            "Authorization: Bearer {}",
            jwt::glasses_token(&user, SECRET)
        );
        assert_eq!(w.upgrade_with(g, "/glasses-ws", &[&bearer]).0, 101);
        w.send_text(g, r#"{"type":"connection_init"}"#);
        w.send_text(
            g,
            &json!({"type": "start_app", "packageName": APP}).to_string(),
        );
        let c = w.connect();
        assert_eq!(w.upgrade(c, "/app-ws"), 101);
        send_init(&mut w, c, APP, &format!("{user}-{APP}"));
        for o in w.open_outbound() {
            w.respond_http(o, 200);
        }
        if !subs.is_empty() {
            let subs = json!({"type": "subscription_update", "subscriptions": subs});
            w.send_text(c, &subs.to_string());
        }
        apps.push(c);
    }
    let f = w.connect_from(augmentos_edge::net::Peer::InProcess);
    assert_eq!(w.upgrade(f, "/app-ws"), 101);
    send_init(&mut w, f, FEED, "venue");
    for c in &mut w.clients {
        c.inbox.clear();
    }
    let id = w.clients[f].id;
    (w, id, apps)
}

/// The publisher's masked frame of one final line.
fn line_frame() -> Vec<u8> {
    let data = json!({"type": "transcription", "text": "Welcome to the main hall",
                      "isFinal": true, "transcribeLanguage": "en-US", "startTime": 0,
                      "endTime": 900});
    let msg = json!({"type": "data_stream", "streamType": "transcription", "data": data});
    let mut out = Vec::new();
    write_masked_frame(
        &mut out,
        true,
        Opcode::Text,
        msg.to_string().as_bytes(),
        [0x37, 0xfa, 0x21, 0x3d],
    );
    out
}

/// One line in, every output taken and thrown away; the bytes taken.
fn publish(w: &mut World, feed: ConnId, pristine: &[u8], input: &mut Vec<u8>) -> usize {
    input.clear();
    input.extend_from_slice(pristine);
    let now = w.clock();
    w.server.handle_input(feed, input, now);
    let mut bytes = 0;
    while let Some(id) = w.server.poll_dirty() {
        let n = w.server.output(id).len();
        bytes += n;
        w.server.consume_output(id, n);
    }
    bytes
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("venue_fan_out");
    for n in [100, 1000] {
        let (mut w, feed, apps) = setup(n);
        let pristine = line_frame();
        let mut input = pristine.clone();
        // Checked once, decoded: every app got the line under its own string.
        let f = w.clients.iter().position(|c| c.id == feed).unwrap();
        w.send_raw(f, &pristine);
        for &a in &apps {
            let msgs = w.json_messages(a);
            assert_eq!(msgs.len(), 1, "{msgs:?}");
            assert_eq!(msgs[0]["streamType"], SUB);
            assert_eq!(msgs[0]["data"]["text"], "Welcome to the main hall");
        }
        let bytes = publish(&mut w, feed, &pristine, &mut input);
        assert!(bytes > 0);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| assert_eq!(publish(&mut w, feed, &pristine, &mut input), bytes))
        });
    }
    group.finish();
}

/// An app's masked `subscription_update` frame.
fn subs_frame(subs: &[&str], mask: u32) -> Vec<u8> {
    let msg = json!({"type": "subscription_update", "subscriptions": subs});
    let mut out = Vec::new();
    write_masked_frame(
        &mut out,
        true,
        Opcode::Text,
        msg.to_string().as_bytes(),
        mask.to_le_bytes(),
    );
    out
}

/// Every app sends `frame` in turn (a join rush), every output taken and thrown away; the
/// bytes taken.
fn rush(w: &mut World, apps: &[ConnId], frame: &[u8], input: &mut Vec<u8>) -> usize {
    let mut bytes = 0;
    for &app in apps {
        input.clear();
        input.extend_from_slice(frame);
        let now = w.clock();
        w.server.handle_input(app, input, now);
        while let Some(id) = w.server.poll_dirty() {
            let n = w.server.output(id).len();
            bytes += n;
            w.server.consume_output(id, n);
        }
    }
    bytes
}

/// A venue-wide join rush, as the translation demand sees it: the venue feed (which publishes
/// translations) is live, and each of N followers' apps subscribes in turn to its captions and
/// a translation, then (to come back to the start, so every iteration does the same work)
/// each in turn drops the translation. Each subscription changes its session's set of wanted
/// translations, so each is one recomputation of the feed's demand; criterion reports the
/// time for the 2N changes (the throughput, in elements, is 2N). `pinned/N`: the same with
/// every user pointed at the feed by the operator (a venue with named rooms), so that who
/// follows which feed is looked up per user rather than known to be the default.
fn join_rush(c: &mut Criterion) {
    const PAIR: &str = "translation:en-US-to-es-ES";
    let mut group = c.benchmark_group("venue_join_rush");
    group.sample_size(10);
    for (pinned, n) in [(false, 1000), (false, 5000), (true, 1000), (true, 5000)] {
        let (mut w, feed, app_clients) = setup_with(n, &[]);
        if pinned {
            let op = w.connect();
            let id = w.clients[op].id;
            for i in 0..n {
                let now = w.clock();
                let user = format!("user{i}@example.com");
                w.server
                    .hub
                    .venue_follow(&mut w.server.net, id, &user, "main", now);
                let out = w.server.output(id).len();
                assert!(out > 0, "the follow was not answered");
                w.server.consume_output(id, out);
            }
        }
        let apps: Vec<ConnId> = app_clients.iter().map(|&a| w.clients[a].id).collect();
        let join = subs_frame(&[SUB, PAIR], 0x5a5a_1234);
        let leave = subs_frame(&[SUB], 0x1234_5a5a);
        let mut input = Vec::new();
        // Checked once, through the world: the feed is told the pair when the first follower
        // wants it, and the empty set when the last stops wanting it, nothing else.
        let f = w.clients.iter().position(|c| c.id == feed).unwrap();
        for (i, subs) in [vec![SUB, PAIR], vec![SUB]].into_iter().enumerate() {
            let msg = json!({"type": "subscription_update", "subscriptions": subs});
            for &a in &app_clients {
                w.send_text(a, &msg.to_string());
            }
            let told = w.json_messages(f);
            let want = if i == 0 {
                json!([&PAIR[12..]])
            } else {
                json!([])
            };
            assert!(
                told.len() == 1 && told[0]["translations"] == want,
                "{told:?}"
            );
        }
        group.throughput(Throughput::Elements(2 * n as u64));
        let id = if pinned {
            BenchmarkId::new("pinned", n)
        } else {
            BenchmarkId::from_parameter(n)
        };
        group.bench_function(id, |b| {
            b.iter(|| {
                let bytes = rush(&mut w, &apps, &join, &mut input);
                rush(&mut w, &apps, &leave, &mut input) + bytes
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = fan_out, join_rush
}
criterion_main!(benches);
