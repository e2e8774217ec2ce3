//! Cost of the display path (DESIGN §6 "app display_request → glasses display_event when not
//! throttled"; issue 9's benchmarks).
//!
//! Two measurements:
//! - `display/manager/*` — the display manager alone (`hub::display::DisplayManager`): one
//!   request from the foreground app and the drain of what it emits. `shown`: the clock moves
//!   past the throttle interval before each request, so every request is sent; `coalesced`: the
//!   clock stands still, so every request after the first replaces the pending one. The request
//!   is a clone of a prebuilt `Display` (its layout box is one allocation of the count);
//! - `display/world/unthrottled` — an app's `display_event` frame through the whole core in the
//!   deterministic world (`sim::World`): frame decode, message decode, layout check, manager,
//!   `display_event` encode into the glasses' output buffer, and the world's hand-over of that
//!   output; the clock moves 301 ms before each so nothing is throttled. The time per iteration
//!   is the core's share of the latency from the app's message to the glasses' message.
//!
//! Heap allocations per request are counted with the shared counting allocator and printed
//! before the timings; each path is first checked to do what it claims (a shown request reaches
//! the glasses as a `display_event` with the layout intact).

use std::sync::Arc;
use std::time::Duration;

use augmentos_edge::auth::{self, jwt};
use augmentos_edge::hub::display::{Display, DisplayManager, DisplayTimings, Layout, Owner, View};
use augmentos_edge::hub::registry::AppSpec;
use augmentos_edge::hub::HubConfig;
use augmentos_edge::net::Target;
use augmentos_edge::server::ServerConfig;
use augmentos_edge::sim::World;
use augmentos_edge::time::Instant;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::value::RawValue;
use serde_json::{json, Value};

#[path = "support/counting.rs"]
mod counting;
use counting::allocs;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

const SECRET: &[u8] = b"display-bench-secret";
const USER: &str = "alice@example.com";
const PACKAGE: &str = "com.bench.captions";
const KEY: &str = "bench-key";
const LAYOUT: &str =
    r#"{"layoutType":"text_wall","text":"The quick brown fox jumps over the lazy dog"}"#;
const COUNTED: u64 = 10_000;

fn display() -> Display {
    Display {
        owner: Owner::App(0),
        view: View::Main,
        layout: Layout::Raw {
            json: RawValue::from_string(LAYOUT.to_string()).unwrap(),
            kind: "text_wall",
        },
        duration_ms: None,
        force: false,
    }
}

/// A manager whose foreground app 0 has booted and connected.
fn manager() -> (DisplayManager, Instant) {
    let mut m = DisplayManager::new(DisplayTimings::default());
    m.app_starting(Instant::ZERO, 0, "Captions", true);
    m.app_connected(Instant::ZERO, 0);
    let now = Instant::from_micros(2_000_000);
    m.handle_timeout(now);
    while m.poll_display().is_some() {}
    (m, now)
}

/// One request and the drain of its output; returns how many displays came out.
fn request(m: &mut DisplayManager, now: Instant, d: &Display) -> usize {
    let _ = m.request(now, d.clone());
    m.handle_timeout(now);
    let mut n = 0;
    while let Some(out) = m.poll_display() {
        std::hint::black_box(Arc::as_ptr(&out));
        n += 1;
    }
    n
}

const STEP: Duration = Duration::from_millis(301);

fn count_manager(shown: bool) -> f64 {
    let (mut m, mut now) = manager();
    let d = display();
    let mut out = 0;
    let before = allocs();
    for _ in 0..COUNTED {
        if shown {
            now = now + STEP;
        }
        out += request(&mut m, now, &d);
    }
    let n = allocs() - before;
    let want = if shown { COUNTED as usize } else { 1 };
    assert_eq!(out, want, "shown={shown}: displays out");
    n as f64 / COUNTED as f64
}

// ---- the whole core --------------------------------------------------------------------------

struct Core {
    w: World,
    glasses: usize,
    app: usize,
    frame: String,
}

fn core() -> Core {
    let mut w = World::with_hub(
        ServerConfig {
            ping_interval: None,
            ..ServerConfig::default()
        },
        HubConfig {
            jwt_secret: SECRET.to_vec(),
            apps: vec![AppSpec {
                package_name: PACKAGE.into(),
                name: "Captions".into(),
                public_url: "http://apps.example:4000".into(),
                webhook_target: Target {
                    host: "apps.example".into(),
                    port: 4000,
                    tls: None,
                },
                webhook_path: String::new(),
                hashed_api_key: auth::hash_api_key(KEY),
                is_system_app: false,
                permissions: Vec::new(),
                allowed_addresses: Vec::new(),
                publishes: Vec::new(),
                settings: Vec::new(),
            }],
            ..HubConfig::default()
        },
    );
    let g = w.connect();
    let bearer = format!("Authorization: Bearer {}", jwt::glasses_token(USER, SECRET));
    assert_eq!(w.upgrade_with(g, "/glasses-ws", &[&bearer]).0, 101);
    w.send_text(g, r#"{"type":"connection_init"}"#);
    w.send_text(
        g,
        &json!({"type": "start_app", "packageName": PACKAGE}).to_string(),
    );
    let app = w.connect();
    assert_eq!(w.upgrade(app, "/app-ws"), 101);
    let sid = format!("{USER}-{PACKAGE}");
    w.send_text(
        app,
        &json!({"type": "tpa_connection_init", "packageName": PACKAGE, "sessionId": sid,
                "apiKey": KEY})
        .to_string(),
    );
    w.respond_http(0, 200);
    w.advance(Duration::from_secs(2));
    w.json_messages(g);
    w.json_messages(app);
    let frame = json!({"type": "display_event", "packageName": PACKAGE, "view": "main",
                       "layout": serde_json::from_str::<Value>(LAYOUT).unwrap(),
                       "sessionId": "", "timestamp": "2025-01-01T00:00:00.000Z"})
    .to_string();
    Core {
        w,
        glasses: g,
        app,
        frame,
    }
}

impl Core {
    fn once(&mut self) {
        self.w.now = self.w.now + STEP;
        self.w.send_text(self.app, &self.frame);
        self.w.clients[self.glasses].inbox.clear();
    }

    fn check(&mut self) {
        self.w.now = self.w.now + STEP;
        self.w.send_text(self.app, &self.frame);
        let got = self.w.json_messages(self.glasses);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["type"], "display_event");
        assert_eq!(
            got[0]["layout"],
            serde_json::from_str::<Value>(LAYOUT).unwrap()
        );
    }
}

fn count_core() -> f64 {
    let mut c = core();
    c.check();
    let before = allocs();
    for _ in 0..COUNTED {
        c.once();
    }
    (allocs() - before) as f64 / COUNTED as f64
}

fn bench(c: &mut Criterion) {
    println!(
        "display allocations per request: manager shown {:.2}, manager coalesced {:.2} \
         (each includes the request's own layout clone), whole core unthrottled {:.2} \
         (includes the world's output copy and the app frame's masking buffer); {COUNTED} \
         requests of a {} B layout",
        count_manager(true),
        count_manager(false),
        count_core(),
        LAYOUT.len(),
    );

    let mut g = c.benchmark_group("display");
    g.throughput(Throughput::Elements(1));
    let d = display();
    for (name, shown) in [("manager/shown", true), ("manager/coalesced", false)] {
        let (mut m, mut now) = manager();
        g.bench_function(name, |b| {
            b.iter(|| {
                if shown {
                    now = now + STEP;
                }
                request(&mut m, now, &d)
            })
        });
    }
    let mut core = core();
    core.check();
    g.bench_function("world/unthrottled", |b| b.iter(|| core.once()));
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
