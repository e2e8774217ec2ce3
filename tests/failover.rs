//! Failover behind HAProxy, with the real binary, the shipped `contrib/haproxy/haproxy.cfg`
//! and a real PostgreSQL on loopback: three processes share the database; users (300 by
//! default, `FAILOVER_USERS` to change) connect their glasses through HAProxy and each starts
//! an app, whose server (this test) connects the app WebSocket to the URL of the process that
//! asked, as the SDK does. One process is killed with SIGKILL: every one of its users'
//! glasses reconnect through HAProxy, land on another process, which starts their app again
//! from the shared store, and the app gets a new session there. Checked: every affected user
//! gets that, no other user moves (affinity), no user is held by two processes (the live
//! processes' sessions add up to the users), nothing in the store is lost. Printed: the time
//! from the kill to each app's new session (p50/p99/max) — measured, not asserted.
//! The same with SIGTERM (a drain: out of rotation, then every WebSocket closed with 1001).
//! Skipped, with the reason printed, only when PostgreSQL or HAProxy is not installed.

use augmentos_edge::auth::{self, jwt};
use augmentos_edge::state::postgres::{PgStore, PgUrl};
use augmentos_edge::state::Store;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tungstenite::Message;

#[path = "support/postgres.rs"]
mod pg;
#[path = "support/ports.rs"]
mod ports;

const SECRET: &str = "failover-test-secret-0123456789";
const APP: &str = "com.example.captions";
const KEY: &str = "captions-key";

/// Each app session: (user, the port of the process it is on, when its ack came).
type Sessions = Arc<Mutex<Vec<(String, u16, Instant)>>>;

/// The app server: answers each `session_request` and connects the app to the process that
/// sent it, recording the session when the process acknowledges it.
fn app_server(sessions: Sessions) -> u16 {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let sessions = sessions.clone();
            std::thread::spawn(move || {
                let Some(body) = read_request(&mut s) else {
                    return;
                };
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
                drop(s);
                let Ok(v) = serde_json::from_slice::<Value>(&body) else {
                    return;
                };
                if v["type"] != "session_request" {
                    return;
                }
                let url = v["augmentOSWebsocketUrl"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let user = v["userId"].as_str().unwrap_or("").to_string();
                let sid = v["sessionId"].as_str().unwrap_or("").to_string();
                let port: u16 = url
                    .trim_start_matches("ws://127.0.0.1:")
                    .split('/')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                let Ok((mut ws, _)) = tungstenite::connect(url.as_str()) else {
                    return;
                };
                let init = json!({"type": "tpa_connection_init", "sessionId": sid,
                    "packageName": APP, "apiKey": KEY});
                if ws.send(Message::text(init.to_string())).is_err() {
                    return;
                }
                while let Ok(m) = ws.read() {
                    if let Message::Text(t) = m {
                        if t.contains("tpa_connection_ack") {
                            sessions
                                .lock()
                                .unwrap()
                                .push((user.clone(), port, Instant::now()));
                        }
                    }
                }
            });
        }
    });
    port
}

fn read_request(s: &mut TcpStream) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if buf.len() >= end + 4 + len {
            return Some(buf[end + 4..end + 4 + len].to_vec());
        }
    }
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn edge(port: u16, pg_url: &str, app_port: u16, dir: &std::path::Path) -> Proc {
    let config = json!({
        "listen": [format!("127.0.0.1:{port}")],
        "publicWsUrl": format!("ws://127.0.0.1:{port}"),
        "jwtSecret": SECRET,
        "postgres": {"url": pg_url},
        "limits": {"maxConnectionsPerAddress": 10000},
        "apps": [{"packageName": APP, "name": "Captions",
            "publicUrl": format!("http://127.0.0.1:{app_port}"),
            "hashedApiKey": auth::hash_api_key(KEY)}],
    });
    let file = dir.join(format!("edge{port}.json"));
    std::fs::write(&file, config.to_string()).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_augmentos-edge"))
        .args(["serve", "--config"])
        .arg(&file)
        .env_remove("AUGMENTOS_AUTH_JWT_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "process on {port} did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Proc(child)
}

fn health(port: u16) -> Option<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out);
    serde_json::from_str(text.split("\r\n\r\n").nth(1)?).ok()
}

/// One user's glasses: connect through HAProxy, start the app once, and reconnect whenever
/// the connection drops or `again` changes, until `stop`.
fn glasses(user: String, front: u16, stop: Arc<AtomicBool>, again: Arc<AtomicUsize>) {
    use tungstenite::client::IntoClientRequest;
    let mut first = true;
    while !stop.load(Ordering::Relaxed) {
        let epoch = again.load(Ordering::Relaxed);
        let Ok(tcp) = TcpStream::connect(("127.0.0.1", front)) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        tcp.set_read_timeout(Some(Duration::from_millis(500))).ok();
        let mut req = format!("ws://127.0.0.1:{front}/glasses-ws")
            .into_client_request()
            .unwrap();
        let token = jwt::glasses_token(&user, SECRET.as_bytes());
        req.headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().unwrap());
        let Ok((mut ws, _)) = tungstenite::client(req, tcp) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if ws
            .send(Message::text(r#"{"type":"connection_init"}"#))
            .is_err()
        {
            continue;
        }
        loop {
            match ws.read() {
                Ok(Message::Text(t)) if first && t.contains("connection_ack") => {
                    first = false;
                    let start = json!({"type": "start_app", "packageName": APP});
                    if ws.send(Message::text(start.to_string())).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    if again.load(Ordering::Relaxed) != epoch {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[test]
fn a_killed_process_users_get_their_apps_again_on_another_process() {
    failover("KILL");
}

/// The same with SIGTERM: the process leaves rotation and closes its WebSockets with 1001.
#[test]
fn a_drained_process_users_get_their_apps_again_on_another_process() {
    failover("TERM");
}

fn failover(signal: &str) {
    let pg = match pg::Pg::start(&format!("failover-{signal}")) {
        Ok(p) => p,
        Err(why) => return eprintln!("SKIPPED: {why}"),
    };
    if Command::new("haproxy").arg("-v").output().is_err() {
        return eprintln!("SKIPPED: no haproxy on PATH; install the haproxy package");
    }
    let users: usize = std::env::var("FAILOVER_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let dir = pg.dir.clone();
    let sessions: Sessions = Arc::default();
    let app_port = app_server(sessions.clone());
    let ports: Vec<u16> = (0..3).map(|_| ports::free_port().unwrap()).collect();
    let mut procs: Vec<Option<Proc>> = ports
        .iter()
        .map(|&p| Some(edge(p, &pg.url(), app_port, &dir)))
        .collect();
    // The shipped HAProxy configuration, with this test's ports.
    let front = ports::free_port().unwrap();
    let shipped = include_str!("../contrib/haproxy/haproxy.cfg");
    let mut cfg: String = shipped
        .lines()
        .filter(|l| !l.trim_start().starts_with("server edge"))
        .map(|l| l.replace("bind 127.0.0.1:8100", &format!("bind 127.0.0.1:{front}")) + "\n")
        .collect();
    for (i, p) in ports.iter().enumerate() {
        cfg.push_str(&format!("    server edge{i} 127.0.0.1:{p}\n"));
    }
    std::fs::write(dir.join("haproxy.cfg"), cfg).unwrap();
    let _haproxy = Proc(
        Command::new("haproxy")
            .arg("-f")
            .arg(dir.join("haproxy.cfg"))
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let until = Instant::now() + Duration::from_secs(30);
    while !ports
        .iter()
        .all(|&p| health(p).is_some_and(|h| h["ready"] == true))
        || TcpStream::connect(("127.0.0.1", front)).is_err()
    {
        assert!(
            Instant::now() < until,
            "the processes or HAProxy did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1200)); // HAProxy's checks see them up

    let stop = Arc::new(AtomicBool::new(false));
    let again = Arc::new(AtomicUsize::new(0));
    let names: Vec<String> = (0..users).map(|i| format!("user{i}@example.com")).collect();
    let threads: Vec<_> = names
        .iter()
        .map(|u| {
            let (u, stop, again) = (u.clone(), stop.clone(), again.clone());
            std::thread::spawn(move || glasses(u, front, stop, again))
        })
        .collect();
    // Every user's app has its session; where each user is.
    let until = Instant::now() + Duration::from_secs(120);
    let home: HashMap<String, u16> = loop {
        let s = sessions.lock().unwrap().clone();
        let home: HashMap<String, u16> = s.iter().map(|(u, p, _)| (u.clone(), *p)).collect();
        if home.len() == users {
            assert_eq!(s.len(), users, "an app started twice before the kill");
            break home;
        }
        assert!(
            Instant::now() < until,
            "only {} of {users} apps started",
            home.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let per: Vec<usize> = ports
        .iter()
        .map(|p| home.values().filter(|h| *h == p).count())
        .collect();
    println!("users per process before the kill: {per:?}");
    assert!(per.iter().all(|&n| n > 0), "users not spread: {per:?}");
    // Let every process read back the others' writes (once a second).
    std::thread::sleep(Duration::from_millis(2500));

    let victim = 0;
    let before = sessions.lock().unwrap().len();
    let mut p = procs[victim].take().unwrap();
    let killed = Instant::now();
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &p.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal}");
    let _ = p.0.wait();
    let affected: Vec<&String> = home
        .iter()
        .filter(|(_, p)| **p == ports[victim])
        .map(|(u, _)| u)
        .collect();
    let until = Instant::now() + Duration::from_secs(120);
    let moved: HashMap<String, (u16, Instant)> = loop {
        let s = sessions.lock().unwrap();
        let moved: HashMap<String, (u16, Instant)> = s[before..]
            .iter()
            .map(|(u, p, t)| (u.clone(), (*p, *t)))
            .collect();
        if affected.iter().all(|u| moved.contains_key(*u)) {
            break moved;
        }
        drop(s);
        assert!(
            Instant::now() < until,
            "{} of {} affected users have their app again",
            affected.iter().filter(|u| moved.contains_key(**u)).count(),
            affected.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut times: Vec<Duration> = affected
        .iter()
        .map(|u| moved[*u].1.saturating_duration_since(killed))
        .collect();
    times.sort();
    println!(
        "SIG{signal} of a process with {} users (of {users}): signal -> the app's new session p50 {:?} p99 {:?} max {:?}",
        affected.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().unwrap()
    );
    for u in &affected {
        assert_ne!(
            moved[*u].0, ports[victim],
            "{u} came back on the dead process"
        );
    }
    // Affinity: nobody else moved.
    let others: Vec<&String> = moved.keys().filter(|u| !affected.contains(u)).collect();
    assert!(
        others.is_empty(),
        "users not on the killed process moved: {others:?}"
    );
    // No user on two processes: the live processes hold each user once.
    std::thread::sleep(Duration::from_millis(500));
    let held: usize = ports
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, &p)| health(p).unwrap()["sessions"].as_u64().unwrap() as usize)
        .sum();
    assert_eq!(held, users, "sessions held by the live processes");
    // Nothing lost in the store.
    let mut store = PgStore::open(&PgUrl::parse(&pg.url()).unwrap()).unwrap();
    assert_eq!(store.load().unwrap().running.len(), users);
    if signal == "KILL" {
        // The killed process comes back and every pair of glasses reconnects: the affected
        // users land on it again (affinity) while the processes they moved to still hold
        // their sessions in the grace period. Those give them up (the store's lease: the
        // restarted process asked for them): each user is held once.
        procs[victim] = Some(edge(ports[victim], &pg.url(), app_port, &dir));
        let until = Instant::now() + Duration::from_secs(30);
        while !health(ports[victim]).is_some_and(|h| h["ready"] == true) {
            assert!(Instant::now() < until, "the restarted process is not ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(1200)); // HAProxy's checks see it up
        let back = Instant::now();
        again.fetch_add(1, Ordering::Relaxed);
        let until = Instant::now() + Duration::from_secs(30);
        let per = loop {
            let per: Vec<usize> = ports
                .iter()
                .map(|&p| health(p).map_or(0, |h| h["sessions"].as_u64().unwrap_or(0) as usize))
                .collect();
            if per.iter().sum::<usize>() == users && per[victim] == affected.len() {
                break per;
            }
            assert!(
                Instant::now() < until,
                "after the restart, sessions per process {per:?} for {users} users ({} back on the restarted one)",
                affected.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        println!(
            "after the restart and a reconnect of every pair of glasses: sessions per process {per:?}, each user held once {:?} after the reconnect",
            back.elapsed()
        );
    }
    stop.store(true, Ordering::Relaxed);
    drop(procs);
    for t in threads {
        let _ = t.join();
    }
}
