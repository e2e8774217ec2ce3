//! Durable state in a shared PostgreSQL, against a real server on loopback (started by the
//! test, see `support/postgres.rs`): every kind of change (venue feed choices too) reads back
//! exactly as SQLite's store reads it back, a second process on the same database starts
//! from it, an older schema is migrated and a newer one left alone, processes starting at
//! once migrate once, and an outage of the database is ridden out by the writer (held changes, a bound, the
//! catch-up). Skipped, with the reason printed, only when no PostgreSQL is installed.

use augmentos_edge::auth::{self, jwt};
use augmentos_edge::hub::registry::AppSpec;
use augmentos_edge::hub::HubConfig;
use augmentos_edge::net::Target;
use augmentos_edge::server::ServerConfig;
use augmentos_edge::sim::World;
use augmentos_edge::state::postgres::{open_configured, PgStore, PgUrl, SCHEMA_VERSION};
use augmentos_edge::state::sqlite::SqliteStore;
use augmentos_edge::state::writer::Writer;
use augmentos_edge::state::{Device, Persist, Registration, Store, StoreStatus};
use serde_json::json;
use std::time::{Duration, Instant};

#[path = "support/postgres.rs"]
mod pg;
#[path = "support/ports.rs"]
mod ports;

const SECRET: &[u8] = b"state-test-secret-0123";
const USER: &str = "ada@example.com";
const CAPTIONS: &str = "com.example.captions";
const NOTES: &str = "com.example.notes";

macro_rules! pg_or_skip {
    ($name:expr) => {
        match pg::Pg::start($name) {
            Ok(p) => p,
            Err(why) => {
                eprintln!("SKIPPED: {why}");
                return;
            }
        }
    };
}

fn url(pg: &pg::Pg) -> PgUrl {
    PgUrl::parse(&pg.url()).unwrap()
}

/// Every kind of change, with overwrites and deletes among them.
fn changes() -> Vec<Persist> {
    let mut batch = Vec::new();
    for i in 0..50 {
        let user = format!("user{i}@example.com");
        batch.push(Persist::Running {
            user: user.clone(),
            package: CAPTIONS.into(),
            running: true,
        });
        batch.push(Persist::Storage {
            user: user.clone(),
            package: NOTES.into(),
            key: "note".into(),
            value: Some(json!(format!("x'\"\\{i} é")).to_string()),
        });
        batch.push(Persist::Setting {
            user,
            package: CAPTIONS.into(),
            key: "lang".into(),
            value: Some(json!(i).to_string()),
        });
    }
    batch.push(Persist::Running {
        user: "user3@example.com".into(),
        package: CAPTIONS.into(),
        running: false,
    });
    batch.push(Persist::Storage {
        user: "user4@example.com".into(),
        package: NOTES.into(),
        key: "note".into(),
        value: None,
    });
    batch.push(Persist::Setting {
        user: "user5@example.com".into(),
        package: CAPTIONS.into(),
        key: "lang".into(),
        value: Some("\"fr\"".into()),
    });
    for id in ["r1", "r2"] {
        batch.push(Persist::Registration(Registration {
            id: id.into(),
            package: CAPTIONS.into(),
            webhook_url: format!("http://127.0.0.1:9/{id}"),
            registered_at: 1_700_000_000_000_000,
            last_seen: 1_700_000_000_000_001,
        }));
    }
    batch.push(Persist::RegistrationGone("r1".into()));
    let dev = Device {
        name: "desk-1".into(),
        user: "device:desk-1".into(),
        jti: "j1".into(),
        created: 100,
        expires: 1000,
        last_seen: None,
        revoked: None,
    };
    batch.push(Persist::Device(dev.clone()));
    batch.push(Persist::Device(Device {
        last_seen: Some(200),
        revoked: Some(300),
        ..dev
    }));
    for (user, feed) in [
        ("user1@example.com", "main"),
        ("user2@example.com", "track2"),
        ("user1@example.com", "track 3 é"),
    ] {
        batch.push(Persist::Follow {
            user: user.into(),
            feed: feed.into(),
        });
    }
    batch
}

#[test]
fn every_kind_of_change_reads_back_as_sqlite_reads_it_and_a_second_process_starts_from_it() {
    let pg = pg_or_skip!("roundtrip");
    let mut store = PgStore::open(&url(&pg)).unwrap();
    let (first, rest) = changes().split_at(40).clone_tuple();
    store.apply(&first).unwrap();
    store.apply(&rest).unwrap();
    let got = store.load().unwrap();
    // The same changes through SQLite: the two stores agree on every row.
    let dir = std::env::temp_dir().join(format!(
        "augmentos-edge-pg-vs-sqlite-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let mut lite = SqliteStore::open_dir(&dir, 0).unwrap().store;
    lite.apply(&changes()).unwrap();
    let want = lite.load().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(got, want);
    assert_eq!(got.running.len(), 49);
    assert_eq!(got.registrations.len(), 1);
    assert_eq!(got.devices[0].revoked, Some(300));
    assert_eq!(
        got.follows,
        vec![
            ("user1@example.com".to_string(), "track 3 é".to_string()),
            ("user2@example.com".to_string(), "track2".to_string())
        ]
    );
    // Another process on the same database (this one still connected) loads the same state.
    let loaded = open_configured(&url(&pg), 10);
    assert_eq!(loaded.status.kind, "postgres");
    assert_eq!(loaded.status.error, None);
    assert_eq!(loaded.snapshot, want);
    drop(store);
    // And the core started from it starts the user's running app when the glasses come.
    let mut w = World::with_state(server_cfg(), hub(), loaded.snapshot);
    glasses(&mut w, "user7@example.com");
    assert_eq!(started(&w), vec![CAPTIONS.to_string()]);
}

trait CloneTuple {
    fn clone_tuple(self) -> (Vec<Persist>, Vec<Persist>);
}
impl CloneTuple for (&[Persist], &[Persist]) {
    fn clone_tuple(self) -> (Vec<Persist>, Vec<Persist>) {
        (self.0.to_vec(), self.1.to_vec())
    }
}

#[test]
fn the_changes_of_a_session_survive_a_restart_of_the_core_on_the_same_database() {
    let pg = pg_or_skip!("restart");
    let mut w = World::with_hub(server_cfg(), hub());
    let g = glasses(&mut w, USER);
    lifecycle(&mut w, g, "start_app", CAPTIONS);
    lifecycle(&mut w, g, "start_app", NOTES);
    lifecycle(&mut w, g, "stop_app", NOTES);
    let mut store = PgStore::open(&url(&pg)).unwrap();
    store.apply(&w.persisted).unwrap();
    drop(store);
    let loaded = open_configured(&url(&pg), 10);
    assert!(loaded.store.is_some());
    assert_eq!(
        loaded.snapshot.running,
        vec![(USER.to_string(), CAPTIONS.to_string())]
    );
    let mut w = World::with_state(server_cfg(), hub(), loaded.snapshot);
    assert!(started(&w).is_empty());
    glasses(&mut w, USER);
    assert_eq!(started(&w), vec![CAPTIONS.to_string()]);
}

#[test]
fn an_older_schema_is_migrated_a_newer_one_left_alone_and_concurrent_starts_migrate_once() {
    let pg = pg_or_skip!("schema");
    let u = url(&pg);
    // Version 1, as the first release would have left it.
    let mut raw = PgStore::open(&u).unwrap();
    raw.query_text(
        "DROP TABLE venue_follows, devices, registrations, simple_storage, app_settings,
             running_apps;
         CREATE TABLE running_apps (user_id text NOT NULL, package text NOT NULL,
             PRIMARY KEY (user_id, package));
         INSERT INTO running_apps VALUES ('a', 'p1'), ('b', 'p2'), ('c', 'p3');
         UPDATE edge_schema SET version = 1;",
    )
    .unwrap();
    drop(raw);
    // Four processes start at once: each migrates or finds it migrated; none fails.
    let opened: Vec<_> = (0..4)
        .map(|_| {
            let u = u.clone();
            std::thread::spawn(move || PgStore::open(&u).map(|mut s| s.load()))
        })
        .collect();
    for t in opened {
        let snap = t.join().unwrap().unwrap().unwrap();
        assert_eq!(snap.running.len(), 3);
    }
    let mut s = PgStore::open(&u).unwrap();
    let version = s.query_text("SELECT version FROM edge_schema").unwrap();
    assert_eq!(version, vec![vec![Some(SCHEMA_VERSION.to_string())]]);
    s.apply(&changes()).unwrap();
    // A newer binary's database: refused, kept in memory, the database untouched.
    s.query_text("UPDATE edge_schema SET version = 99").unwrap();
    let loaded = open_configured(&u, 10);
    assert_eq!(loaded.status.kind, "memory");
    assert!(loaded.store.is_none());
    assert!(
        loaded
            .status
            .error
            .as_deref()
            .is_some_and(|e| e.contains("newer")),
        "{:?}",
        loaded.status.error
    );
    let version = s.query_text("SELECT version FROM edge_schema").unwrap();
    assert_eq!(version, vec![vec![Some("99".to_string())]]);
    assert_eq!(
        s.query_text("SELECT count(*) FROM running_apps").unwrap(),
        vec![vec![Some("52".to_string())]]
    );
}

#[test]
fn a_wrong_password_is_refused_with_the_servers_reason() {
    let pg = pg_or_skip!("auth");
    let mut u = url(&pg);
    u.password = Some("wrong".into());
    let e = PgStore::open(&u).err().unwrap();
    assert!(e.contains("password authentication failed"), "{e}");
    u.password = None;
    let e = PgStore::open(&u).err().unwrap();
    assert!(e.contains("password"), "{e}");
}

fn running(user: &str) -> Persist {
    Persist::Running {
        user: user.into(),
        package: CAPTIONS.into(),
        running: true,
    }
}

fn wait_for(w: &mut Writer, what: &str, done: impl Fn(&StoreStatus) -> bool) -> StoreStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        w.poll_status();
        let st = w.status().clone();
        if done(&st) {
            return st;
        }
        assert!(Instant::now() < deadline, "{what}: {st:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_outage_holds_changes_to_the_bound_reports_them_and_catches_up() {
    let pg = pg_or_skip!("outage");
    let u = url(&pg);
    let loaded = open_configured(&u, 30);
    let mut w = Writer::start(
        loaded.store.unwrap(),
        loaded.status,
        loaded.queue_limit,
        Box::new(|| {}),
    )
    .unwrap();
    w.submit(vec![running("before")]);
    wait_for(&mut w, "the first write", |s| s.changes == 1);
    pg.down();
    // 40 rows' changes while the database is down (one row flipped twice): 30 held, 10 lost.
    for i in 0..40 {
        w.submit(vec![running(&format!("during{i}"))]);
    }
    w.submit(vec![Persist::Running {
        user: "during0".into(),
        package: CAPTIONS.into(),
        running: false,
    }]);
    let st = wait_for(&mut w, "the outage seen", |s| {
        s.error.is_some() && s.lost == 10
    });
    assert_eq!(st.queued, 30);
    pg.up();
    let st = wait_for(&mut w, "the catch-up", |s| {
        s.error.is_none() && s.queued == 0
    });
    assert_eq!(st.lost, 10);
    w.submit(vec![running("after")]);
    wait_for(&mut w, "a write after", |s| s.changes == 1 + 30 + 1);
    drop(w);
    let snap = PgStore::open(&u).unwrap().load().unwrap();
    let users: Vec<&str> = snap.running.iter().map(|(u, _)| u.as_str()).collect();
    let mut want = vec!["after", "before"];
    let held: Vec<String> = (1..30).map(|i| format!("during{i}")).collect();
    want.extend(held.iter().map(|s| s.as_str()));
    want.sort();
    assert_eq!(users, want);
}

// ---- the core in the deterministic world ------------------------------------------------------

fn spec(package: &str, port: u16) -> AppSpec {
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
        hashed_api_key: auth::hash_api_key("k"),
        is_system_app: false,
        permissions: Vec::new(),
        allowed_addresses: Vec::new(),
        publishes: Vec::new(),
        settings: Vec::new(),
    }
}

fn hub() -> HubConfig {
    HubConfig {
        jwt_secret: SECRET.to_vec(),
        apps: vec![spec(CAPTIONS, 5001), spec(NOTES, 5002)],
        ..HubConfig::default()
    }
}

fn server_cfg() -> ServerConfig {
    ServerConfig {
        ping_interval: None,
        ..ServerConfig::default()
    }
}

fn glasses(w: &mut World, user: &str) -> usize {
    let g = w.connect();
    let bearer = format!("Authorization: Bearer {}", jwt::glasses_token(user, SECRET));
    assert_eq!(w.upgrade_with(g, "/glasses-ws", &[&bearer]).0, 101);
    w.send_text(g, r#"{"type":"connection_init"}"#);
    g
}

fn lifecycle(w: &mut World, g: usize, ty: &str, package: &str) {
    w.send_text(g, &json!({"type": ty, "packageName": package}).to_string());
}

fn started(w: &World) -> Vec<String> {
    w.outbound
        .iter()
        .filter_map(|o| o.json())
        .filter(|b| b["type"] == "session_request")
        .map(|b| {
            let sid = b["sessionId"].as_str().unwrap();
            sid.rsplit_once("-com.")
                .map(|(_, p)| format!("com.{p}"))
                .unwrap()
        })
        .collect()
}

// ---- the real binary ------------------------------------------------------------------------

fn get_health(port: u16) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap()).unwrap()
}

/// Glasses of `user` on the box at `port`: upgraded, acknowledged, `package` started.
fn live_glasses(
    port: u16,
    user: &str,
    package: &str,
) -> tungstenite::WebSocket<std::net::TcpStream> {
    use tungstenite::client::IntoClientRequest;
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("ws://127.0.0.1:{port}/glasses-ws")
        .into_client_request()
        .unwrap();
    let token = jwt::glasses_token(user, SECRET);
    req.headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tungstenite::client(req, tcp).unwrap();
    ws.send(tungstenite::Message::text(r#"{"type":"connection_init"}"#))
        .unwrap();
    loop {
        if let tungstenite::Message::Text(t) = ws.read().unwrap() {
            if t.contains("connection_ack") {
                break;
            }
        }
    }
    let start = json!({"type": "start_app", "packageName": package});
    ws.send(tungstenite::Message::text(start.to_string()))
        .unwrap();
    ws
}

#[test]
fn the_box_serves_through_an_outage_says_degraded_and_writes_when_the_database_is_back() {
    let pg = pg_or_skip!("box-outage");
    let port = ports::free_port().unwrap();
    let config = json!({
        "listen": [format!("127.0.0.1:{port}")],
        "jwtSecret": std::str::from_utf8(SECRET).unwrap(),
        "postgres": {"url": pg.url(), "queueLimit": 1000},
        "apps": [{"packageName": CAPTIONS, "name": "Captions", "publicUrl": "http://127.0.0.1:9",
            "hashedApiKey": auth::hash_api_key("k")}],
    });
    let file = pg.dir.join("edge.json");
    std::fs::write(&file, config.to_string()).unwrap();
    /// Killed when dropped, also when the test fails.
    struct Edge(std::process::Child);
    impl Drop for Edge {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Edge(
        std::process::Command::new(env!("CARGO_BIN_EXE_augmentos-edge"))
            .args(["serve", "--config"])
            .arg(&file)
            .env_remove("AUGMENTOS_AUTH_JWT_SECRET")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let wait = |what: &str, ok: &dyn Fn(&serde_json::Value) -> bool| {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                let h = get_health(port);
                if ok(&h) {
                    return h;
                }
                assert!(Instant::now() < until, "{what}: {h}");
            }
            assert!(Instant::now() < until, "{what}: not listening");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let h = wait("up", &|h| h["ready"] == true);
    assert_eq!(h["store"]["kind"], "postgres");
    assert_eq!(h["status"], "ok");
    let _before = live_glasses(port, "before@example.com", CAPTIONS);
    wait("written", &|h| h["store"]["changesWritten"] == 1);
    pg.down();
    // Noticed without a write (the box reads the shared state back every second).
    let h = wait("degraded", &|h| h["status"] == "degraded");
    assert_eq!(h["ready"], true);
    assert_eq!(h["store"]["state"], "failing");
    // Still serving: a new session starts, its change is held.
    let _during = live_glasses(port, "during@example.com", CAPTIONS);
    wait("held", &|h| h["store"]["changesQueued"] == 1);
    pg.up();
    let h = wait("caught up", &|h| {
        h["status"] == "ok" && h["store"]["changesQueued"] == 0 && h["store"]["changesWritten"] == 2
    });
    assert_eq!(h["store"]["changesLost"], 0);
    drop(child);
    let snap = PgStore::open(&url(&pg)).unwrap().load().unwrap();
    assert_eq!(
        snap.running,
        vec![
            ("before@example.com".to_string(), CAPTIONS.to_string()),
            ("during@example.com".to_string(), CAPTIONS.to_string())
        ]
    );
}
