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
        "DROP TABLE user_changes, user_leases, venue_follows, devices, registrations, simple_storage,
             app_settings, running_apps;
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

// ---- leases: no user on two processes at once -------------------------------------------------

fn users(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn held(a: &augmentos_edge::state::LeaseAnswer) -> Vec<String> {
    let mut v = a.held.clone();
    v.sort();
    v.dedup();
    v
}

#[test]
fn two_processes_claiming_one_user_one_keeps_it_the_other_is_told_and_a_dead_holder_frees_it() {
    let pg = pg_or_skip!("lease");
    let mut a = PgStore::open(&url(&pg)).unwrap();
    let mut b = PgStore::open(&url(&pg)).unwrap();
    assert_ne!(a.owner(), b.owner());
    let none: Vec<String> = Vec::new();
    // Both claim ada at once (from two threads): exactly one gets her.
    let (ra, rb) = std::thread::scope(|s| {
        let ta = s.spawn(|| a.lease(&users(&[USER, "x"]), &none, &none).unwrap());
        let tb = s.spawn(|| b.lease(&users(&[USER, "y"]), &none, &none).unwrap());
        (ta.join().unwrap(), tb.join().unwrap())
    });
    let a_has = held(&ra).contains(&USER.to_string());
    let b_has = held(&rb).contains(&USER.to_string());
    assert!(a_has != b_has, "exactly one holds ada: a {ra:?}, b {rb:?}");
    let (mut holder, mut other, other_own) = if a_has { (a, b, "y") } else { (b, a, "x") };
    // The other one's claim again: still refused, and marks ada wanted; the holder's renewal
    // keeps her and says so.
    let r = other
        .lease(&users(&[USER]), &users(&[other_own]), &none)
        .unwrap();
    assert_eq!(held(&r), users(&[other_own]));
    let r = holder.lease(&none, &users(&[USER]), &none).unwrap();
    assert!(held(&r).contains(&USER.to_string()));
    assert_eq!(r.wanted, users(&[USER]));
    // The row says who: one owner.
    let rows = holder
        .query_text(&format!(
            "SELECT owner FROM user_leases WHERE user_id = '{USER}'"
        ))
        .unwrap();
    assert_eq!(rows, vec![vec![Some(holder.owner().to_string())]]);
    // The holder dies (its connection closes, its lease has not expired): the claim succeeds
    // at once.
    let holder_owner = holder.owner().to_string();
    drop(holder);
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        let r = other.lease(&users(&[USER]), &none, &none).unwrap();
        if held(&r).contains(&USER.to_string()) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(got, "the dead holder's lease was not freed");
    // A process that comes back (a new connection under the dead one's name is not possible:
    // a restart is a new owner) cannot take her back while the survivor lives.
    let mut back = PgStore::open(&url(&pg)).unwrap();
    assert_ne!(back.owner(), holder_owner);
    let r = back.lease(&users(&[USER]), &none, &none).unwrap();
    assert!(held(&r).is_empty(), "{r:?}");
    // The survivor lets her go: the claim succeeds.
    other.lease(&none, &none, &users(&[USER])).unwrap();
    let r = back.lease(&users(&[USER]), &none, &none).unwrap();
    assert_eq!(held(&r), users(&[USER]));
    // And the old holder's renewal now finds her gone.
    let r = other.lease(&none, &users(&[USER]), &none).unwrap();
    assert!(!held(&r).contains(&USER.to_string()), "{r:?}");
}

/// Lease news from a writer, waited for.
fn lease_news(w: &mut Writer, what: &str) -> augmentos_edge::state::LeaseNews {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        w.poll_status();
        if let Some(n) = w.take_lease_news() {
            return n;
        }
        assert!(Instant::now() < deadline, "{what}: no lease news");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_writers_renew_their_leases_tell_the_holder_it_is_wanted_and_the_loser_that_it_lost() {
    use augmentos_edge::state::Lease;
    let pg = pg_or_skip!("lease-writers");
    let start = |u: &PgUrl| {
        let loaded = open_configured(u, 100);
        Writer::start(
            loaded.store.unwrap(),
            loaded.status,
            loaded.queue_limit,
            Box::new(|| {}),
        )
        .unwrap()
    };
    let mut a = start(&url(&pg));
    let mut b = start(&url(&pg));
    let mut check = PgStore::open(&url(&pg)).unwrap();
    let owner_of = |c: &mut PgStore| {
        c.query_text(&format!(
            "SELECT owner, expires > now() FROM user_leases WHERE user_id = '{USER}'"
        ))
        .unwrap()
    };
    let claim = |claim: u32| Lease::Claim {
        user: USER.into(),
        claim,
    };
    a.lease(vec![claim(1)]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while owner_of(&mut check).is_empty() {
        assert!(Instant::now() < deadline, "a's claim never written");
        std::thread::sleep(Duration::from_millis(20));
    }
    let a_owner = owner_of(&mut check)[0][0].clone();
    // b claims her too: a is told she is wanted, b gets nothing yet.
    b.lease(vec![claim(7)]);
    let news = lease_news(&mut a, "a told of b's claim");
    assert_eq!((news.lost, news.wanted), (vec![], vec![(USER.into(), 1)]));
    // Renewed past the lease's time to live: a still holds her, its row not expired.
    std::thread::sleep(Duration::from_secs(
        augmentos_edge::state::postgres::LEASE_TTL_SECS as u64 + 1,
    ));
    let row = owner_of(&mut check);
    assert_eq!(row[0][0], a_owner);
    assert_eq!(
        row[0][1].as_deref(),
        Some("t"),
        "a's lease expired: {row:?}"
    );
    // b's claim runs out of patience: b is told it lost her.
    let news = lease_news(&mut b, "b's claim given up");
    assert_eq!(news.lost, vec![(USER.to_string(), 7)]);
    let row = owner_of(&mut check);
    assert_eq!(row[0][0], a_owner);
    // a lets her go (its session ended): b claims again and gets her.
    a.lease(vec![Lease::Release(USER.into())]);
    b.lease(vec![claim(8)]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while owner_of(&mut check).first().is_none_or(|r| r[0] == a_owner) {
        assert!(Instant::now() < deadline, "b never got her");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(a);
    drop(b);
}

/// A box on `pg`, killed when dropped; returns its port.
struct Edge(std::process::Child, u16);
impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn edge(pg: &pg::Pg, name: &str) -> Edge {
    let port = ports::free_port().unwrap();
    let config = json!({
        "listen": [format!("127.0.0.1:{port}")],
        "jwtSecret": std::str::from_utf8(SECRET).unwrap(),
        "postgres": {"url": pg.url(), "queueLimit": 1000},
        "apps": [{"packageName": CAPTIONS, "name": "Captions", "publicUrl": "http://127.0.0.1:9",
            "hashedApiKey": auth::hash_api_key("k")}],
    });
    let file = pg.dir.join(format!("edge-{name}.json"));
    std::fs::write(&file, config.to_string()).unwrap();
    let e = Edge(
        std::process::Command::new(env!("CARGO_BIN_EXE_augmentos-edge"))
            .args(["serve", "--config"])
            .arg(&file)
            .env_remove("AUGMENTOS_AUTH_JWT_SECRET")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
        port,
    );
    let until = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        || get_health(port)["ready"] != true
    {
        assert!(Instant::now() < until, "box {name} not up");
        std::thread::sleep(Duration::from_millis(50));
    }
    e
}

fn lease_owner(pg: &pg::Pg, user: &str) -> Option<String> {
    let rows = PgStore::open(&url(pg))
        .unwrap()
        .query_text(&format!(
            "SELECT owner FROM user_leases WHERE user_id = '{user}'"
        ))
        .unwrap();
    rows.first().and_then(|r| r[0].clone())
}

fn metric(port: u16, name: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines().find_map(|l| {
        l.strip_prefix(&format!("augmentos_edge_{name} "))?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn the_real_boxes_fence_a_user_a_second_copy_ends_and_a_session_in_grace_is_given_up() {
    let pg = pg_or_skip!("lease-boxes");
    let a = edge(&pg, "a");
    let b = edge(&pg, "b");
    // Ada's glasses on A: A holds her.
    let mut on_a = live_glasses(a.1, USER, CAPTIONS);
    let until = Instant::now() + Duration::from_secs(10);
    while lease_owner(&pg, USER).is_none() {
        assert!(Instant::now() < until, "A never claimed ada");
        std::thread::sleep(Duration::from_millis(50));
    }
    let a_owner = lease_owner(&pg, USER).unwrap();
    // A second pair of her glasses on B while A's are connected: B serves at once, its claim
    // is refused, and once its patience is out B ends its copy (SESSION_ELSEWHERE, 1013).
    let mut on_b = live_glasses(b.1, USER, CAPTIONS);
    on_b.get_ref()
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut told = false;
    let until = Instant::now() + Duration::from_secs(20);
    let close = loop {
        assert!(Instant::now() < until, "B's copy of ada was never ended");
        match on_b.read() {
            Ok(tungstenite::Message::Text(t)) if t.contains("SESSION_ELSEWHERE") => told = true,
            Ok(tungstenite::Message::Close(c)) => break c,
            Ok(_) => {}
            Err(e) => panic!("B's glasses: {e}"),
        }
    };
    assert!(told);
    assert_eq!(close.map(|c| u16::from(c.code)), Some(1013));
    assert_eq!(metric(b.1, "sessions"), Some(0.0));
    assert_eq!(metric(b.1, "sessions_fenced_total"), Some(1.0));
    // A kept her all along.
    assert_eq!(lease_owner(&pg, USER), Some(a_owner.clone()));
    assert_eq!(metric(a.1, "sessions"), Some(1.0));
    // Her glasses leave A (A keeps the session in its grace period) and come to B: A gives
    // her up at its next renewal, and B's claim takes her.
    on_a.close(None).unwrap();
    let _ = on_a.read();
    let _on_b = live_glasses(b.1, USER, CAPTIONS);
    let until = Instant::now() + Duration::from_secs(15);
    while metric(a.1, "sessions") != Some(0.0)
        || lease_owner(&pg, USER).is_none_or(|o| o == a_owner)
    {
        assert!(
            Instant::now() < until,
            "A still holds ada: sessions {:?}, owner {:?}",
            metric(a.1, "sessions"),
            lease_owner(&pg, USER)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(metric(a.1, "sessions_fenced_total"), Some(1.0));
    assert_eq!(metric(b.1, "sessions"), Some(1.0));
}

fn post(port: u16, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let body = body.to_string();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let json = serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap_or_default();
    (status, json)
}

#[test]
fn a_tpa_server_registered_on_one_box_is_known_to_the_other_after_the_read_back() {
    let pg = pg_or_skip!("registrations");
    let a = edge(&pg, "a");
    let b = edge(&pg, "b");
    let (status, got) = post(
        a.1,
        "/api/tpa-server/register",
        &json!({"packageName": CAPTIONS, "apiKey": "k", "webhookUrl": "http://127.0.0.1:9/hook"}),
    );
    assert_eq!(status, 201, "{got}");
    let rid = got["registrationId"].as_str().unwrap().to_string();
    // B hears of it within a read-back or two (a heartbeat there finds it).
    let until = Instant::now() + Duration::from_secs(10);
    let took = Instant::now();
    loop {
        let (status, got) = post(
            b.1,
            "/api/tpa-server/heartbeat",
            &json!({"registrationId": rid}),
        );
        if status == 200 {
            break;
        }
        assert_eq!(status, 404, "{got}");
        assert!(Instant::now() < until, "B never learned of {rid}");
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "registration known to the other box after {:?}",
        took.elapsed()
    );
    // A heartbeat on B is written, and A keeps knowing it.
    let (status, _) = post(
        a.1,
        "/api/tpa-server/heartbeat",
        &json!({"registrationId": rid}),
    );
    assert_eq!(status, 200);
    assert_eq!(
        post(
            b.1,
            "/api/tpa-server/heartbeat",
            &json!({"registrationId": "nope"})
        )
        .0,
        404
    );
}

// ---- the read-back takes only what changed ------------------------------------------------

#[test]
fn the_read_back_takes_the_users_changed_since_the_last_one_stopped_apps_included() {
    use augmentos_edge::state::Durable;
    let pg = pg_or_skip!("changed");
    let mut a = PgStore::open(&url(&pg)).unwrap();
    let mut b = PgStore::open(&url(&pg)).unwrap();
    let n = 10_000;
    let mut batch = Vec::new();
    for i in 0..n {
        let user = format!("user{i}@example.com");
        batch.push(running(&user));
        batch.push(Persist::Setting {
            user,
            package: CAPTIONS.into(),
            key: "lang".into(),
            value: Some("\"en\"".into()),
        });
    }
    a.apply(&batch).unwrap();
    // The first read takes everything.
    let t = Instant::now();
    let first = b.load_changed(None).unwrap();
    let full_read = t.elapsed();
    assert_eq!(first.users, None);
    assert_eq!(first.snapshot.running.len(), n);
    let mut d = Durable::default();
    let t = Instant::now();
    d.merge_shared_users(first.snapshot.clone(), None, |_| false);
    let full_merge = t.elapsed();
    // Past the overlap, nothing changed: nothing taken.
    std::thread::sleep(Duration::from_secs(
        augmentos_edge::state::postgres::CHANGES_OVERLAP_SECS as u64 + 1,
    ));
    let quiet = b.load_changed(Some(&first.read_at)).unwrap();
    let quiet = b.load_changed(Some(&quiet.read_at)).unwrap();
    assert_eq!(quiet.users, Some(vec![]));
    assert!(quiet.snapshot.running.is_empty());
    // One user stops their app (no row left for them), another changes a setting.
    a.apply(&[
        Persist::Running {
            user: "user1@example.com".into(),
            package: CAPTIONS.into(),
            running: false,
        },
        Persist::Setting {
            user: "user2@example.com".into(),
            package: CAPTIONS.into(),
            key: "lang".into(),
            value: Some("\"fr\"".into()),
        },
        Persist::Follow {
            user: "user3@example.com".into(),
            feed: "track2".into(),
        },
    ])
    .unwrap();
    let t = Instant::now();
    let next = b.load_changed(Some(&quiet.read_at)).unwrap();
    let small_read = t.elapsed();
    let mut users = next.users.clone().unwrap();
    users.sort();
    assert_eq!(
        users,
        vec![
            "user1@example.com",
            "user2@example.com",
            "user3@example.com"
        ]
    );
    let mut running = next.snapshot.running.clone();
    running.sort();
    assert_eq!(
        running,
        vec![
            ("user2@example.com".to_string(), CAPTIONS.to_string()),
            ("user3@example.com".to_string(), CAPTIONS.to_string())
        ]
    );
    assert_eq!(
        next.snapshot.follows,
        vec![("user3@example.com".to_string(), "track2".to_string())]
    );
    let t = Instant::now();
    d.merge_shared_users(next.snapshot, next.users.as_deref(), |_| false);
    let small_merge = t.elapsed();
    assert_eq!(d.running("user1@example.com"), Vec::<String>::new());
    assert_eq!(d.running("user3@example.com"), vec![CAPTIONS.to_string()]);
    assert_eq!(d.follow("user3@example.com"), Some("track2"));
    assert_eq!(d.follow("user4@example.com"), None);
    assert_eq!(
        d.settings("user2@example.com", CAPTIONS).unwrap()["lang"],
        "\"fr\""
    );
    assert_eq!(
        d.settings("user3@example.com", CAPTIONS).unwrap()["lang"],
        "\"en\""
    );
    println!(
        "read-back of {n} users (1 app, 1 setting each): whole store {full_read:?} + merge {full_merge:?}; 2 users changed {small_read:?} + merge {small_merge:?}"
    );
}
