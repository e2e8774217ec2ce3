//! Heap allocations and time of the routing hot path: one glasses event relayed to N
//! subscribed apps (DESIGN §3 "Data flow for the hot path", §6 "routing efficiency").
//!
//! Why: the design promises no per-message allocation on the glasses → apps path. This counts
//! what the current core really does, in the deterministic in-memory world (`sim::World`), so
//! the number is exact and the same on every run.
//!
//! Setup, per subscriber count N (1, 4, 16): one session, its glasses connected and initialised;
//! N apps started from the glasses, each webhook answered, each app connected to `/app-ws`,
//! authenticated with `tpa_connection_init` and subscribed to `head_position`. The heartbeat is
//! off (`ping_interval: None`) and the clock never moves, so nothing but the relay is sent.
//!
//! The measured step: the glasses' masked frame (built once, re-copied from a pristine copy into
//! a reused buffer, since decoding unmasks in place) goes to `Server::handle_input`, the output
//! is handed to the clients, and every client inbox is cleared (no decoding). Two ways of handing
//! the output over:
//! - `server` — a lean copy of `World::step` in this file that appends each connection's output
//!   straight to the client's inbox: the harness allocates nothing, so every allocation counted
//!   is the server's;
//! - `world_step` — `World::step` itself, which copies each dirty connection's output into a
//!   fresh `Vec` (`self.server.output(id).to_vec()`): one harness allocation per delivery. The
//!   difference between the two is reported as the harness's share and is not the server's.
//!
//! Instruction counts (repeatable on a busy machine, unlike times): `RELAY_FIXED=EVENTS[,N]`
//! relays a fixed number of events and exits, for
//! `valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*relay_fixed*'`.
//!
//! Before anything is measured, one event is relayed through each path and every app's inbox is
//! decoded: each must hold exactly one `data_stream` of `head_position` carrying the event,
//! the glasses nothing. During the allocation count the delivered bytes are tallied and checked
//! against that first delivery, so the loop cannot silently measure nothing.

use std::time::Duration;

use augmentos_edge::auth::{self, jwt};
use augmentos_edge::hub::registry::AppSpec;
use augmentos_edge::hub::HubConfig;
use augmentos_edge::net::{ConnId, Target};
use augmentos_edge::server::ServerConfig;
use augmentos_edge::sim::World;
use augmentos_edge::ws::frame::write_masked_frame;
use augmentos_edge::ws::Opcode;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::{json, Value};

#[path = "support/counting.rs"]
mod counting;
use counting::allocs;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

const SECRET: &[u8] = b"relay-bench-secret";
const USER: &str = "alice@example.com";
/// The relayed glasses event (79 bytes), as the glasses send it.
const EVENT: &str =
    r#"{"type":"head_position","position":"up","timestamp":"2025-01-01T00:00:00.000Z"}"#;
const STREAM: &str = "head_position";
const SUBSCRIBER_COUNTS: [usize; 3] = [1, 4, 16];
const WARM_UP_EVENTS: u64 = 1_000;
const COUNTED_EVENTS: u64 = 10_000;

fn package(i: usize) -> String {
    format!("com.bench.app{i}")
}

fn key(i: usize) -> String {
    format!("bench-key-{i}")
}

fn spec(i: usize) -> AppSpec {
    let port = 4000 + i as u16;
    AppSpec {
        package_name: package(i),
        name: format!("App {i}"),
        public_url: format!("http://apps.example:{port}"),
        webhook_target: Target {
            host: "apps.example".into(),
            port,
            tls: None,
        },
        webhook_path: String::new(),
        hashed_api_key: auth::hash_api_key(&key(i)),
        is_system_app: false,
        permissions: Vec::new(),
        allowed_addresses: Vec::new(),
        publishes: Vec::new(),
        settings: Vec::new(),
    }
}

/// A world with one session and `n` active apps subscribed to [`STREAM`]; every inbox empty.
struct Relay {
    world: World,
    glasses: usize,
    glasses_id: ConnId,
    apps: Vec<usize>,
    /// The glasses' masked frame carrying [`EVENT`]; never decoded, only copied from.
    pristine: Vec<u8>,
    /// The reused input buffer the frame is copied into (decoding unmasks it in place).
    input: Vec<u8>,
}

fn setup(n: usize) -> Relay {
    let mut w = World::with_hub(
        ServerConfig {
            ping_interval: None,
            ..ServerConfig::default()
        },
        HubConfig {
            public_ws_url: "ws://edge.example:8002".into(),
            internal_ws_url: "ws://edge.example:8002".into(),
            jwt_secret: SECRET.to_vec(),
            apps: (0..n).map(spec).collect(),
            lifecycle_burst: 64,
            ..HubConfig::default()
        },
    );

    // Glasses: upgrade with a bearer token, then connection_init.
    let g = w.connect();
    let bearer = format!("Authorization: Bearer {}", jwt::glasses_token(USER, SECRET));
    let (status, body) = w.upgrade_with(g, "/glasses-ws", &[&bearer]);
    assert_eq!(status, 101, "glasses upgrade refused: {body}");
    w.send_text(g, r#"{"type":"connection_init"}"#);
    let msgs = w.json_messages(g);
    assert_eq!(msgs[0]["type"], "connection_ack", "{msgs:?}");

    let mut apps = Vec::new();
    for i in 0..n {
        let pkg = package(i);
        let session = format!("{USER}-{pkg}");
        w.send_text(
            g,
            &json!({"type": "start_app", "packageName": pkg}).to_string(),
        );
        let hook = (0..w.outbound.len())
            .rev()
            .find(|&o| {
                w.outbound[o]
                    .json()
                    .is_some_and(|v| v["type"] == "session_request" && v["sessionId"] == session)
            })
            .expect("a session_request webhook");
        let c = w.connect();
        assert_eq!(w.upgrade(c, "/app-ws"), 101);
        w.send_text(
            c,
            &json!({
                "type": "tpa_connection_init",
                "packageName": pkg,
                "sessionId": session,
                "apiKey": key(i),
                "timestamp": "2025-01-01T00:00:00.000Z",
            })
            .to_string(),
        );
        let msgs = w.json_messages(c);
        assert_eq!(msgs[0]["type"], "tpa_connection_ack", "{msgs:?}");
        w.respond_http(hook, 200);
        assert_eq!(w.server.hub.app_state(USER, &pkg), Some("active"));
        w.send_text(
            c,
            &json!({
                "type": "subscription_update",
                "packageName": pkg,
                "subscriptions": [STREAM],
                "sessionId": session,
            })
            .to_string(),
        );
        w.json_messages(c);
        apps.push(c);
    }
    w.json_messages(g);
    for c in &mut w.clients {
        c.inbox.clear();
    }

    let mut pristine = Vec::new();
    write_masked_frame(
        &mut pristine,
        true,
        Opcode::Text,
        EVENT.as_bytes(),
        [0x37, 0xfa, 0x21, 0x3d],
    );
    let input = pristine.clone();
    let glasses_id = w.clients[g].id;
    Relay {
        world: w,
        glasses: g,
        glasses_id,
        apps,
        pristine,
        input,
    }
}

/// `World::step` without its per-output copy: hand every pending output to its client's inbox
/// straight from the server's buffer. Nothing here allocates once the inboxes have capacity.
fn lean_step(w: &mut World) {
    loop {
        let now = w.clock();
        w.server.handle_timeout(now);
        assert!(
            w.server.poll_connect().is_none(),
            "the relay opened a connection"
        );
        let mut any = false;
        while let Some(id) = w.server.poll_dirty() {
            any = true;
            let out = w.server.output(id);
            let n = out.len();
            let client = w
                .clients
                .iter_mut()
                .find(|c| c.id == id)
                .expect("output for a client");
            client.inbox.extend_from_slice(out);
            w.server.consume_output(id, n);
            assert!(!w.server.wants_close(id), "the relay closed a connection");
        }
        if !any {
            return;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    /// [`lean_step`]: no harness allocation.
    Server,
    /// `World::step`: one harness allocation per dirty connection.
    WorldStep,
}

impl Relay {
    /// The glasses send [`EVENT`] and the world steps; inboxes are left for the caller.
    fn send(&mut self, path: Path) {
        self.input.copy_from_slice(&self.pristine);
        let now = self.world.clock();
        self.world
            .server
            .handle_input(self.glasses_id, &mut self.input, now);
        match path {
            Path::Server => lean_step(&mut self.world),
            Path::WorldStep => self.world.step(),
        }
    }

    /// Bytes waiting in every inbox; then empty them all (no decoding, no allocation).
    fn clear(&mut self) -> usize {
        let mut bytes = 0;
        for c in &mut self.world.clients {
            bytes += c.inbox.len();
            c.inbox.clear();
        }
        bytes
    }

    /// One measured step: relay one event, then clear the inboxes.
    fn relay_once(&mut self, path: Path) -> usize {
        self.send(path);
        self.clear()
    }

    /// Relay one event and decode every inbox: each app holds exactly one `data_stream` of
    /// [`STREAM`] with the event as `data`, the glasses nothing. Returns the bytes delivered.
    fn check(&mut self, path: Path) -> usize {
        self.send(path);
        let bytes: usize = self.world.clients.iter().map(|c| c.inbox.len()).sum();
        assert!(
            self.world.clients[self.glasses].inbox.is_empty(),
            "{path:?}: the glasses got output"
        );
        let event: Value = serde_json::from_str(EVENT).unwrap();
        for i in 0..self.apps.len() {
            let c = self.apps[i];
            let msgs = self.world.json_messages(c);
            assert_eq!(msgs.len(), 1, "{path:?}: app {i} got {msgs:?}");
            let m = &msgs[0];
            assert_eq!(m["type"], "data_stream", "{path:?}: app {i} got {m}");
            assert_eq!(m["streamType"], STREAM, "{path:?}: app {i} got {m}");
            assert_eq!(m["sessionId"], format!("{USER}-{}", package(i)));
            assert_eq!(m["data"], event, "{path:?}: app {i} got {m}");
        }
        self.clear();
        bytes
    }
}

/// Heap allocations over [`COUNTED_EVENTS`] relayed events, after a warm-up; also checks every
/// event delivered `bytes_per_event` bytes.
fn count(r: &mut Relay, path: Path, bytes_per_event: usize) -> u64 {
    for _ in 0..WARM_UP_EVENTS {
        r.relay_once(path);
    }
    let mut delivered = 0;
    let before = allocs();
    for _ in 0..COUNTED_EVENTS {
        delivered += r.relay_once(path);
    }
    let n = allocs() - before;
    assert_eq!(
        delivered as u64,
        bytes_per_event as u64 * COUNTED_EVENTS,
        "{path:?}: not every event was delivered"
    );
    n
}

/// Allocations of `World::step` with nothing pending, over [`COUNTED_EVENTS`] steps.
fn count_idle_steps(r: &mut Relay) -> u64 {
    let before = allocs();
    for _ in 0..COUNTED_EVENTS {
        r.world.step();
    }
    allocs() - before
}

fn print_allocations(n: usize) {
    let mut r = setup(n);
    let bytes = r.check(Path::Server);
    assert_eq!(r.check(Path::WorldStep), bytes);

    let server = count(&mut r, Path::Server, bytes);
    let world = count(&mut r, Path::WorldStep, bytes);
    let idle = count_idle_steps(&mut r);
    let harness = world.saturating_sub(server);
    let events = COUNTED_EVENTS as f64;
    let per_event = server as f64 / events;
    println!(
        "relay allocations: {:.2} per event ({:.2} per delivery), {n} subscriber{}",
        per_event,
        per_event / n as f64,
        if n == 1 { "" } else { "s" },
    );
    println!(
        "    through World::step: {:.2} per event; harness share {:.2} per event ({:.2} per \
         delivery: its output copy), subtracted; World::step with nothing pending: {:.2}; \
         {} events of {} B in, {} B out each",
        world as f64 / events,
        harness as f64 / events,
        harness as f64 / events / n as f64,
        idle as f64 / events,
        COUNTED_EVENTS,
        EVENT.len(),
        bytes,
    );
}

/// A fixed amount of work for instruction counters (`RELAY_FIXED=EVENTS[,SUBSCRIBERS]`):
/// relay EVENTS events to SUBSCRIBERS apps (default 4) through [`relay_fixed`] and exit, no
/// criterion. Under `valgrind --tool=callgrind --toggle-collect='*relay_fixed*'` the count is
/// the relay alone, the same on every run whatever else the machine is doing.
fn fixed_work(spec: &str) {
    let mut parts = spec.split(',');
    let events: u64 = parts
        .next()
        .and_then(|e| e.parse().ok())
        .expect("RELAY_FIXED=EVENTS[,N]");
    let n: usize = parts
        .next()
        .map_or(4, |n| n.parse().expect("RELAY_FIXED=EVENTS[,N]"));
    let mut r = setup(n);
    let bytes = r.check(Path::Server);
    let delivered = relay_fixed(&mut r, events);
    assert_eq!(
        delivered as u64,
        bytes as u64 * events,
        "not every event was delivered"
    );
    println!("relayed {events} events to {n} subscribers, {delivered} B out");
}

/// The measured work of [`fixed_work`]; kept out of line so a profiler can select it by name.
#[inline(never)]
fn relay_fixed(r: &mut Relay, events: u64) -> usize {
    (0..events).map(|_| r.relay_once(Path::Server)).sum()
}

fn bench(c: &mut Criterion) {
    if let Ok(spec) = std::env::var("RELAY_FIXED") {
        fixed_work(&spec);
        std::process::exit(0);
    }
    for n in SUBSCRIBER_COUNTS {
        print_allocations(n);
    }

    let mut g = c.benchmark_group("relay");
    for n in SUBSCRIBER_COUNTS {
        g.throughput(Throughput::Elements(n as u64));
        for (name, path) in [("server", Path::Server), ("world_step", Path::WorldStep)] {
            let mut r = setup(n);
            r.check(path);
            g.bench_with_input(BenchmarkId::new(name, n), &path, |b, &path| {
                b.iter(|| r.relay_once(path))
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = bench
}
criterion_main!(benches);
