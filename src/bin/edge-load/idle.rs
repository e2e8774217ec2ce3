//! `edge-load idle --sessions --apps M`: the memory of idle sessions that each started apps,
//! reached the way a venue reaches it.
//!
//! Setup as in [`crate::route`]: N glasses sessions connect (bearer token, `connection_init`,
//! `connection_ack`) and each starts M apps with `start_app`; the server POSTs a
//! `session_request` to the webhook listener inside this process, which connects the app,
//! sends `tpa_connection_init`, subscribes it to `button_press` and only then answers 200 (as
//! SDK 2.1.29 does). One probe event per session is then sent until every app has received
//! one, so every subscription is known to be in place. Then nothing more is sent.
//!
//! The server's RSS is read before the first connection, once setup is done, and after an idle
//! settle; each is reported per session and per connection (glasses and apps). Nothing is
//! asserted: it reports.

use crate::driver::{Driver, Shared};
use crate::route::{self, Target};
use crate::stats;
use crate::wsc;
use serde_json::json;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

pub struct Opts {
    pub sessions: usize,
    pub apps: usize,
    pub port: Option<u16>,
    /// How long everything stays idle before the last reading.
    pub settle: Duration,
}

pub fn run(o: &Opts) {
    if let Err(e) = idle_apps(o) {
        eprintln!("edge-load idle: {e}");
        std::process::exit(1);
    }
}

fn idle_apps(o: &Opts) -> Result<(), String> {
    let t = Target {
        port: match o.port {
            Some(p) => p,
            None => route::free_port()?,
        },
        webhook_port: route::free_port()?,
        secret: stats::random_hex(24),
        packages: (0..o.apps).map(route::package).collect(),
        tls: None,
        publisher: false,
    };
    let base = std::env::temp_dir().join(format!("edge-load-idle-{}", std::process::id()));
    let (cfg, log) = (base.with_extension("json"), base.with_extension("log"));
    std::fs::write(&cfg, route::scratch_config(&t, o.sessions, None, false))
        .map_err(|e| format!("cannot write {}: {e}", cfg.display()))?;
    let server = crate::start_box(&cfg, &log)?;
    let pid = server.0.id().to_string();
    let listener = TcpListener::bind(("127.0.0.1", t.webhook_port))
        .map_err(|e| format!("webhook listener on 127.0.0.1:{}: {e}", t.webhook_port))?;
    crate::wait_for_port(t.port);
    thread::sleep(Duration::from_millis(300));
    let rss = |what: &str| stats::status_kib(&pid, what);
    let base_rss = rss("VmRSS");

    let users = (0..o.sessions)
        .map(|i| format!("idle{i}.{}@edgeload.test", std::process::id()))
        .collect();
    let sh = Arc::new(Shared::new(
        t.secret.clone(),
        users,
        vec!["button_press"],
        None,
    ));
    let driver = Driver::start(sh.clone()).map_err(|e| format!("driver: {e}"))?;
    let _ = sh.apps.set(driver.app_sink());
    {
        let sh = sh.clone();
        thread::spawn(move || route::webhook_listener(listener, sh));
    }

    let started = Instant::now();
    let want = o.sessions * o.apps;
    let deadline = started + Duration::from_secs(60 + want as u64 / 50);
    let failed = |sh: &Shared| sh.errors.lock().unwrap().first().cloned();
    let mut glasses = Vec::with_capacity(o.sessions);
    for (n, user) in sh.users.iter().enumerate() {
        let mut g = route::open_glasses(t.port, None, None, user, &t.secret)?;
        // At most a few hundred starts waiting at once (each holds a webhook connection).
        while n * o.apps > sh.ready.load(Relaxed) + 256 {
            if let Some(e) = failed(&sh) {
                return Err(format!("setup failed: {e}"));
            }
            if Instant::now() > deadline {
                return Err("setup timed out".into());
            }
            thread::sleep(Duration::from_millis(1));
        }
        for p in &t.packages {
            let msg = json!({"type": "start_app", "packageName": p}).to_string();
            g.send(wsc::TEXT, msg.as_bytes())
                .map_err(|e| format!("start_app {p}: {e}"))?;
        }
        glasses.push(g);
        if n % 1000 == 999 {
            eprint!(
                "\rsessions {:>6}/{}  apps ready {:>6}  server RSS {:>7} KiB",
                n + 1,
                o.sessions,
                sh.ready.load(Relaxed),
                rss("VmRSS")
            );
        }
    }
    while sh.ready.load(Relaxed) < want {
        if let Some(e) = failed(&sh) {
            return Err(format!("setup failed: {e}"));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "setup timed out: {} of {want} apps connected",
                sh.ready.load(Relaxed)
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
    // One probe per session until every app has had one: every subscription is in place.
    while sh.warm.load(Relaxed) < want {
        if Instant::now() > deadline {
            return Err(format!(
                "setup timed out: {} of {want} apps received a probe",
                sh.warm.load(Relaxed)
            ));
        }
        for g in &mut glasses {
            g.send(wsc::TEXT, route::PROBE)
                .map_err(|e| format!("probe: {e}"))?;
        }
        thread::sleep(Duration::from_millis(200));
    }
    let setup_secs = started.elapsed().as_secs_f64();
    eprintln!();
    let setup_rss = rss("VmRSS");
    thread::sleep(o.settle);
    let settled_rss = rss("VmRSS");
    let (hwm, anon) = (rss("VmHWM"), rss("RssAnon"));
    let gauges = metrics(t.port);

    let per = |kib: u64, n: usize| kib.saturating_sub(base_rss) as f64 * 1024.0 / n.max(1) as f64;
    let conns = o.sessions * (1 + o.apps);
    println!(
        "idle sessions with apps: {} sessions × {} apps started through the webhook and subscribed, set up in {setup_secs:.1} s",
        o.sessions, o.apps
    );
    println!(
        "server RSS: base {base_rss} KiB; after setup {setup_rss} KiB ({:.0} B per session); after {} s idle {settled_rss} KiB ({:.0} B per session, {:.0} B per connection); peak {hwm} KiB; anonymous {anon} KiB",
        per(setup_rss, o.sessions),
        o.settle.as_secs(),
        per(settled_rss, o.sessions),
        per(settled_rss, conns),
    );
    println!(
        "server connections: {}",
        if gauges.is_empty() {
            "(no /metrics)".to_string()
        } else {
            gauges.join(" ")
        }
    );
    if sh.empty_webhooks.load(Relaxed) > 0 {
        println!(
            "webhook connections closed by the server before a request: {}",
            sh.empty_webhooks.load(Relaxed)
        );
    }
    sh.stop.store(true, Relaxed);
    drop(glasses);
    driver.join();
    drop(server);
    let _ = std::fs::remove_file(&cfg);
    let _ = std::fs::remove_file(&log);
    Ok(())
}

/// The server's open connections by kind, from `/metrics`.
fn metrics(port: u16) -> Vec<String> {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return Vec::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(2))).ok();
    let req =
        format!("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return Vec::new();
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .filter(|l| l.starts_with("augmentos_edge_connections{") && !l.ends_with(" 0"))
        .map(|l| l.trim_start_matches("augmentos_edge_").to_string())
        .collect()
}
