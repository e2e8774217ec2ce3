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
//! A venue feed (this test) publishes 20 caption finals a second to every process and each
//! app subscribes: printed, for the moved users, the finals published while they reconnected
//! and any other lost, and the drained process's `drain_finals_lost` from its exit log.
//! After the SIGKILL the process is started again and every pair of glasses reconnects: the
//! moved users land on it again, and the processes they had moved to give them up (the lease
//! in the store): checked, each user held once.
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
/// The venue feed's publisher (this test), connected to every process.
const FEED: &str = "system.venue.stt";
const FEED_KEY: &str = "venue-key";
/// Caption finals the feed publishes per second.
const FINALS_PER_S: u64 = 20;

/// Each app session: (user, the port of the process it is on, when its ack came).
type Sessions = Arc<Mutex<Vec<(String, u16, Instant)>>>;
/// Every caption final an app received: (user, the final's number).
type Finals = Arc<Mutex<Vec<(String, u64)>>>;

/// The venue feed: connects to every process as `sessionId` `"venue"` (reconnecting when one
/// goes) and publishes final number `n` at `start + n / FINALS_PER_S`, until `stop`.
fn venue_feed(ports: Vec<u16>, stop: Arc<AtomicBool>) -> Instant {
    let start = Instant::now();
    std::thread::spawn(move || {
        type Ws = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;
        let mut conns: Vec<Option<Ws>> = ports.iter().map(|_| None).collect();
        let mut n: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            for (i, &port) in ports.iter().enumerate() {
                if conns[i].is_some() {
                    continue;
                }
                let Ok((mut ws, _)) = tungstenite::connect(format!("ws://127.0.0.1:{port}/app-ws"))
                else {
                    continue;
                };
                let init = json!({"type": "tpa_connection_init", "sessionId": "venue",
                    "packageName": FEED, "apiKey": FEED_KEY});
                if ws.send(Message::text(init.to_string())).is_ok()
                    && ws
                        .read()
                        .is_ok_and(|m| m.to_string().contains("tpa_connection_ack"))
                {
                    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
                        s.set_nonblocking(true).ok();
                    }
                    conns[i] = Some(ws);
                }
            }
            let due = start + Duration::from_millis(n * 1000 / FINALS_PER_S);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let data = json!({"type": "transcription", "text": format!("final {n}"),
                "isFinal": true, "startTime": 0, "endTime": 1, "transcribeLanguage": "en-US"});
            let msg = json!({"type": "data_stream", "streamType": "transcription", "data": data});
            for c in conns.iter_mut() {
                let blocked = |e: &tungstenite::Error| matches!(e, tungstenite::Error::Io(e) if e.kind() == std::io::ErrorKind::WouldBlock);
                let gone = c.as_mut().is_some_and(|ws| {
                    let read = loop {
                        match ws.read() {
                            Ok(_) => {}
                            Err(e) => break e,
                        }
                    };
                    !blocked(&read)
                        || ws
                            .send(Message::text(msg.to_string()))
                            .is_err_and(|e| !blocked(&e))
                });
                if gone {
                    *c = None;
                }
            }
            n += 1;
        }
    });
    start
}

/// The final the feed published at `t`.
fn final_at(start: Instant, t: Instant) -> u64 {
    (t.saturating_duration_since(start).as_millis() as u64) * FINALS_PER_S / 1000
}

/// The app server: answers each `session_request` and connects the app to the process that
/// sent it, recording the session when the process acknowledges it.
fn app_server(sessions: Sessions, finals: Finals) -> u16 {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let sessions = sessions.clone();
            let finals = finals.clone();
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
                            let sub = json!({"type": "subscription_update",
                                "subscriptions": ["transcription:en-US"]});
                            if ws.send(Message::text(sub.to_string())).is_err() {
                                break;
                            }
                            sessions
                                .lock()
                                .unwrap()
                                .push((user.clone(), port, Instant::now()));
                        } else if let Some(n) = t
                            .split("\"final ")
                            .nth(1)
                            .and_then(|r| r.split('"').next())
                            .and_then(|n| n.parse::<u64>().ok())
                        {
                            finals.lock().unwrap().push((user.clone(), n));
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
    edge_logged(port, pg_url, app_port, dir, Stdio::null())
}

fn edge_logged(
    port: u16,
    pg_url: &str,
    app_port: u16,
    dir: &std::path::Path,
    stderr: Stdio,
) -> Proc {
    let config = json!({
        "listen": [format!("127.0.0.1:{port}")],
        "publicWsUrl": format!("ws://127.0.0.1:{port}"),
        "jwtSecret": SECRET,
        "postgres": {"url": pg_url},
        "limits": {"maxConnectionsPerAddress": 10000},
        "apps": [{"packageName": APP, "name": "Captions",
            "publicUrl": format!("http://127.0.0.1:{app_port}"),
            "hashedApiKey": auth::hash_api_key(KEY), "permissions": ["MICROPHONE"]},
            {"packageName": FEED, "name": "Venue", "publicUrl": "http://127.0.0.1:9",
            "hashedApiKey": auth::hash_api_key(FEED_KEY), "isSystemApp": true,
            "allowedAddresses": ["127.0.0.1"], "publishes": ["transcription"],
            "venueFeed": "main"}],
    });
    let file = dir.join(format!("edge{port}.json"));
    std::fs::write(&file, config.to_string()).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_augmentos-edge"))
        .args(["serve", "--config"])
        .arg(&file)
        .env_remove("AUGMENTOS_AUTH_JWT_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .env("RUST_LOG", "info")
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
    let finals: Finals = Arc::default();
    let app_port = app_server(sessions.clone(), finals.clone());
    let ports: Vec<u16> = (0..3).map(|_| ports::free_port().unwrap()).collect();
    let victim = 0;
    let victim_log = dir.join("victim.log");
    let mut procs: Vec<Option<Proc>> = ports
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let err = if i == victim {
                Stdio::from(std::fs::File::create(&victim_log).unwrap())
            } else {
                Stdio::null()
            };
            Some(edge_logged(p, &pg.url(), app_port, &dir, err))
        })
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
    let feed_start = venue_feed(ports.clone(), stop.clone());
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
    let final_at_signal = final_at(feed_start, killed);
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
    // Caption finals of the moved users, from 1 s before the signal to 1 s after their new
    // session: the ones published while they were reconnecting (from the signal to their new
    // session) are gone by design; any other missing one was lost in the drain or the kill.
    std::thread::sleep(Duration::from_millis(1500));
    let got = finals.lock().unwrap().clone();
    let (mut reconnecting, mut other_lost) = (Vec::new(), 0u64);
    for u in &affected {
        let from = final_at_signal.saturating_sub(FINALS_PER_S);
        let back = final_at(feed_start, moved[*u].1);
        let to = back + FINALS_PER_S;
        let have: std::collections::HashSet<u64> = got
            .iter()
            .filter(|(who, n)| who == *u && (from..to).contains(n))
            .map(|(_, n)| *n)
            .collect();
        let missing: Vec<u64> = (from..to).filter(|n| !have.contains(n)).collect();
        let during = missing
            .iter()
            .filter(|&&n| n >= final_at_signal && n <= back)
            .count() as u64;
        reconnecting.push(during);
        other_lost += missing.len() as u64 - during;
    }
    reconnecting.sort();
    let log = std::fs::read_to_string(&victim_log).unwrap_or_default();
    let counted = log
        .lines()
        .find_map(|l| l.split("drain_finals_lost=").nth(1))
        .map(|n| n.trim().to_string())
        .unwrap_or_else(|| "none (the process was killed)".into());
    println!(
        "SIG{signal}: caption finals ({FINALS_PER_S}/s) of the {} moved users: published while they reconnected p50 {} max {} (total {}); lost otherwise {other_lost}; the stopped process's drain_finals_lost: {counted}",
        affected.len(),
        reconnecting[reconnecting.len() / 2],
        reconnecting.last().unwrap(),
        reconnecting.iter().sum::<u64>()
    );
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
