//! Measurement layer: the load generator's driving loop. One thread and one mio `Poll` carry
//! every connection of a run once it is set up, so the generator stays cheap with thousands of
//! sessions (a thread per connection spent more CPU scheduling than the server did routing).
//!
//! Apps are handed in as soon as they are connected (they read from then on, which is how the
//! probe events of the setup are seen); the glasses are handed in when the load starts. Glasses
//! write masked `button_press` frames carrying a sequence number and the send time (µs), many
//! per `write`, flat out or paced; apps read in large chunks, find `"seq":` and `"t":` by byte
//! search, check order per app and record the latency. Invariants: a glasses' `sent` counts only
//! messages fully handed to the kernel; results are published once, when `stop` is seen.
//!
//! Also owns [`Shared`], the run's state that the main thread, the webhook listener, the app
//! connectors and this loop all hold, so the modules above (`report`, `route`, `idle`) import
//! it from here and nothing here imports them.

use crate::stats::{self, Histogram, Sequence};
use crate::tls::rustls::ClientConfig;
use crate::wsc::{self, Ws};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use serde_json::Value;
use std::io::{self, ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// One app connection's result, published when the run stops.
pub struct AppResult {
    pub session: usize,
    pub package: String,
    pub delivered: u64,
    pub seq: Sequence,
    /// Text messages without a `seq` (not load traffic), and their `type`s.
    pub other: u64,
    pub other_types: Vec<String>,
    pub hist: Histogram,
    /// Interim transcripts received (`--transcripts`): their order, and their latency apart
    /// from the finals' (`hist`). Numbers skipped are interims the server dropped for an app
    /// that was behind, which it may.
    pub interims: u64,
    pub interim_seq: Sequence,
    pub interim_hist: Histogram,
    /// Unnumbered transcripts (a real recogniser's, `edge-load venue --transcriber`): each
    /// final's text with when it arrived (µs, [`stats::now_us`]; counted in `delivered` too),
    /// and how many interims came.
    pub captions: Vec<(u64, String)>,
    pub caption_interims: u64,
    /// Why it ended before the run did.
    pub disconnected: Option<String>,
}

/// The displays of a run: sent by apps, and the latency of those the glasses received.
#[derive(Default)]
pub struct Displays {
    pub sent: u64,
    pub latency: Histogram,
}

/// One glasses connection as the main thread sees it.
#[derive(Default)]
pub struct GlassesLive {
    /// Numbered messages sent (with a publisher: final transcripts).
    pub sent: AtomicU64,
    /// Interim transcripts sent by the session's publisher.
    pub interims: AtomicU64,
    pub error: Mutex<Option<String>>,
}

/// How the glasses send.
pub struct Load {
    pub start: Instant,
    pub deadline: Instant,
    /// Messages per second per glasses; flat out when `None`.
    pub rate: Option<f64>,
    pub batch: usize,
    /// Messages a glasses may have in flight (sent, not yet delivered to its apps, on
    /// average); 0 for no limit. Bounds the queueing a flat-out run measures.
    pub window: u64,
    /// `display_event`s per second sent by the first app of each session; none when `None`.
    pub display_rate: Option<f64>,
    /// Send binary audio chunks of this many bytes instead of `button_press` events.
    pub audio: Option<usize>,
    /// Each session's publishing system app sends transcripts (interims, then a final)
    /// instead of the glasses sending events.
    pub transcripts: bool,
    /// With `transcripts` and a rate: each interim and final leaves at its own time, evenly
    /// spaced (as speech comes in), instead of a unit's messages in one write.
    pub spread: bool,
    /// Written to each glasses when the run stops; `None`: shut the socket down.
    pub goodbye: Option<Vec<u8>>,
}

/// The run's state shared by the main thread, the webhook listener, the app connectors and
/// the driver.
pub struct Shared {
    pub secret: String,
    pub users: Vec<String>,
    /// Readers stop at the next read timeout.
    pub stop: AtomicBool,
    pub delivered: AtomicU64,
    pub ready: AtomicUsize,
    /// Apps that received a probe event (setup is complete for them).
    pub warm: AtomicUsize,
    pub disconnected: AtomicUsize,
    /// `session_request`s for users of another run, refused.
    pub ignored: AtomicUsize,
    /// Webhook connections closed before a request was sent, while the server ran and after
    /// this run stopped it (connections it had opened but not yet written to when killed).
    pub empty_webhooks: AtomicUsize,
    pub empty_after_stop: AtomicUsize,
    /// Set just before the server this run started is killed.
    pub server_stopped: AtomicBool,
    /// Webhook connections open at the app server now, and the most at once.
    pub webhooks_open: AtomicUsize,
    pub webhooks_peak: AtomicUsize,
    pub errors: Mutex<Vec<String>>,
    pub results: Mutex<Vec<AppResult>>,
    /// Where connected apps go to be read (set before any app connects).
    pub apps: OnceLock<AppSink>,
    pub display: Mutex<Displays>,
    /// What the apps subscribe to: `button_press` (the probe and the events), `audio_chunk`.
    pub streams: Vec<&'static str>,
    /// The TLS client configuration (`--tls`), trusting the run's certificate.
    pub tls: Option<Arc<ClientConfig>>,
    /// Each session's publishing app, once connected (`--transcripts`).
    pub publishers: Mutex<Vec<Option<Ws>>>,
    pub publishers_ready: AtomicUsize,
}

impl Shared {
    /// A run's shared state before anything happened: its secret, the users of its glasses,
    /// what its apps subscribe to and, for `--tls`, the client configuration.
    pub fn new(
        secret: String,
        users: Vec<String>,
        streams: Vec<&'static str>,
        tls: Option<Arc<ClientConfig>>,
    ) -> Shared {
        let sessions = users.len();
        Shared {
            secret,
            users,
            stop: AtomicBool::new(false),
            delivered: AtomicU64::new(0),
            ready: AtomicUsize::new(0),
            warm: AtomicUsize::new(0),
            disconnected: AtomicUsize::new(0),
            ignored: AtomicUsize::new(0),
            empty_webhooks: AtomicUsize::new(0),
            empty_after_stop: AtomicUsize::new(0),
            server_stopped: AtomicBool::new(false),
            webhooks_open: AtomicUsize::new(0),
            webhooks_peak: AtomicUsize::new(0),
            errors: Mutex::new(Vec::new()),
            results: Mutex::new(Vec::new()),
            apps: OnceLock::new(),
            display: Mutex::default(),
            streams,
            publishers: Mutex::new((0..sessions).map(|_| None).collect()),
            publishers_ready: AtomicUsize::new(0),
            tls,
        }
    }

    pub fn error(&self, e: String) {
        self.errors.lock().unwrap().push(e);
    }
}

enum Cmd {
    App(Ws, usize, String),
    Drive(Vec<Writers>, Box<Load>),
}

/// The handle the setup and the main thread hold.
pub struct Driver {
    tx: mpsc::Sender<Cmd>,
    waker: Arc<Waker>,
    handle: JoinHandle<()>,
    /// Set once every glasses has passed its deadline (or failed).
    pub writers_done: Arc<AtomicBool>,
}

const WAKER: Token = Token(usize::MAX);
/// Tokens at and above this are glasses; below are apps.
const GLASSES: usize = 1 << 40;
/// Tokens at and above this are the sessions' publishing apps.
const PUBLISHERS: usize = 1 << 41;

/// One session's writers: its glasses and, with `--transcripts`, its publishing app.
pub type Writers = (Ws, Option<Ws>, Arc<GlassesLive>);

impl Driver {
    pub fn start(sh: Arc<Shared>) -> io::Result<Driver> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::channel();
        let writers_done = Arc::new(AtomicBool::new(false));
        let done = writers_done.clone();
        let handle = thread::Builder::new()
            .name("driver".into())
            .spawn(move || Loop::new(poll, rx, sh, done).run())?;
        Ok(Driver {
            tx,
            waker,
            handle,
            writers_done,
        })
    }

    /// Where the setup hands the apps it connected.
    pub fn app_sink(&self) -> AppSink {
        AppSink {
            tx: Mutex::new(self.tx.clone()),
            waker: self.waker.clone(),
        }
    }

    /// Start the load on these glasses.
    pub fn drive(&self, glasses: Vec<Writers>, load: Load) {
        let _ = self.tx.send(Cmd::Drive(glasses, Box::new(load)));
        let _ = self.waker.wake();
    }

    /// Wait for the loop to publish its results (after `stop` was set).
    pub fn join(self) {
        let _ = self.waker.wake();
        let _ = self.handle.join();
    }
}

/// Hands connected apps to the loop, from any thread.
pub struct AppSink {
    tx: Mutex<mpsc::Sender<Cmd>>,
    waker: Arc<Waker>,
}

impl AppSink {
    /// Read and check this connected, subscribed app from now on.
    pub fn add(&self, ws: Ws, session: usize, package: String) {
        let _ = self.tx.lock().unwrap().send(Cmd::App(ws, session, package));
        let _ = self.waker.wake();
    }
}

struct App {
    ws: Ws,
    /// The first app of its session: the one that sends displays.
    shows: bool,
    displays_sent: u64,
    r: AppResult,
    hint_seq: usize,
    hint_iseq: usize,
    hint_t: usize,
    frag: Vec<u8>,
    warm: bool,
    closed: bool,
}

struct Glasses {
    ws: Ws,
    /// The session's publishing app: the writer instead of the glasses when present.
    publisher: Option<Ws>,
    display: Histogram,
    hint_display: usize,
    live: Arc<GlassesLive>,
    out: Vec<u8>,
    at: usize,
    /// Sequence number of the next message to build.
    seq: u64,
    /// `spread`: the messages of unit `seq` already sent (its interims, then its final).
    part: u64,
    pong: Option<Vec<u8>>,
    writable: bool,
    /// Its window is full: it waits for deliveries, not for the socket.
    held: bool,
    done: bool,
}

struct Loop {
    poll: Poll,
    rx: mpsc::Receiver<Cmd>,
    sh: Arc<Shared>,
    writers_done: Arc<AtomicBool>,
    apps: Vec<App>,
    glasses: Vec<Glasses>,
    load: Option<Box<Load>>,
    /// Per session: its apps, and the messages they received.
    session_apps: Vec<u64>,
    session_delivered: Vec<u64>,
}

impl Loop {
    fn new(
        poll: Poll,
        rx: mpsc::Receiver<Cmd>,
        sh: Arc<Shared>,
        writers_done: Arc<AtomicBool>,
    ) -> Loop {
        Loop {
            poll,
            rx,
            sh,
            writers_done,
            apps: Vec::new(),
            glasses: Vec::new(),
            load: None,
            session_apps: Vec::new(),
            session_delivered: Vec::new(),
        }
    }

    fn register(&self, ws: &Ws, token: Token, interest: Interest) {
        let _ = ws.sock.set_nonblocking(true);
        let fd = ws.sock.as_raw_fd();
        let _ = self
            .poll
            .registry()
            .register(&mut SourceFd(&fd), token, interest);
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(4096);
        loop {
            while let Ok(cmd) = self.rx.try_recv() {
                self.command(cmd);
            }
            if self.sh.stop.load(Relaxed) {
                break;
            }
            let busy = self.load.is_some()
                && self
                    .glasses
                    .iter()
                    .any(|g| g.writable && !g.done && !g.held);
            let timeout = match (busy, self.load.as_ref().and_then(|l| l.rate)) {
                (true, None) => Duration::ZERO,
                (true, Some(_)) => Duration::from_millis(1),
                (false, _) => Duration::from_millis(20),
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    self.sh.error(format!("driver poll: {e}"));
                    break;
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    Token(t) if t >= PUBLISHERS => {
                        let g = &mut self.glasses[t - PUBLISHERS];
                        if ev.is_writable() {
                            g.writable = true;
                        }
                        if ev.is_readable() || ev.is_read_closed() {
                            publisher_read(g, &self.sh);
                        }
                    }
                    Token(t) if t >= GLASSES => {
                        let g = &mut self.glasses[t - GLASSES];
                        if ev.is_writable() {
                            g.writable = true;
                        }
                        if ev.is_readable() || ev.is_read_closed() {
                            glasses_read(g, &self.sh);
                        }
                    }
                    Token(t) => {
                        if let Some(app) = self.apps.get_mut(t) {
                            self.session_delivered[app.r.session] += app_read(app, &self.sh);
                        }
                    }
                }
            }
            if let Some(load) = self.load.take() {
                let now = Instant::now();
                for (i, g) in self.glasses.iter_mut().enumerate() {
                    if !g.writable || g.done {
                        continue;
                    }
                    let apps = self.session_apps.get(i).copied().unwrap_or(0);
                    let delivered = self.session_delivered.get(i).copied().unwrap_or(0);
                    let room = room(load.window, apps, g.seq, delivered);
                    g.held = room == 0;
                    pump(g, now, &load, room);
                }
                if self.glasses.iter().all(|g| g.done) {
                    self.writers_done.store(true, Relaxed);
                }
                if let Some(rate) = load.display_rate.filter(|_| now < load.deadline) {
                    let due = ((now - load.start).as_secs_f64() * rate) as u64 + 1;
                    for app in self.apps.iter_mut().filter(|a| a.shows && !a.closed) {
                        show(app, due, &self.sh);
                    }
                }
                self.load = Some(load);
            }
        }
        let goodbye = self.load.as_ref().map(|l| l.goodbye.clone());
        for g in &mut self.glasses {
            if let Some(p) = &g.publisher {
                let _ = p.sock.shutdown(std::net::Shutdown::Both);
            }
            let _ = g.ws.sock.set_nonblocking(false);
            let _ = g.ws.sock.set_write_timeout(Some(Duration::from_secs(2)));
            match &goodbye {
                Some(Some(bytes)) => {
                    let _ = g.ws.sock.write_all(bytes);
                }
                _ => {
                    let _ = g.ws.sock.shutdown(std::net::Shutdown::Both);
                }
            }
        }
        let mut display = self.sh.display.lock().unwrap();
        for g in &self.glasses {
            display.latency.merge(&g.display);
        }
        display.sent = self.apps.iter().map(|a| a.displays_sent).sum();
        drop(display);
        let mut results = self.sh.results.lock().unwrap();
        results.extend(self.apps.into_iter().map(|a| a.r));
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::App(ws, session, package) => {
                if self.session_apps.len() <= session {
                    self.session_apps.resize(session + 1, 0);
                    self.session_delivered.resize(session + 1, 0);
                }
                self.session_apps[session] += 1;
                let token = Token(self.apps.len());
                self.register(&ws, token, Interest::READABLE);
                let mut app = App {
                    ws,
                    shows: self.session_apps[session] == 1,
                    displays_sent: 0,
                    r: AppResult {
                        session,
                        package,
                        delivered: 0,
                        seq: Sequence::default(),
                        other: 0,
                        other_types: Vec::new(),
                        hist: Histogram::default(),
                        interims: 0,
                        interim_seq: Sequence::default(),
                        interim_hist: Histogram::default(),
                        captions: Vec::new(),
                        caption_interims: 0,
                        disconnected: None,
                    },
                    hint_seq: 0,
                    hint_iseq: 0,
                    hint_t: 0,
                    frag: Vec::new(),
                    warm: false,
                    closed: false,
                };
                // Bytes may have arrived before it was registered (edge-triggered).
                self.session_delivered[session] += app_read(&mut app, &self.sh);
                self.apps.push(app);
            }
            Cmd::Drive(glasses, load) => {
                for (ws, publisher, live) in glasses {
                    let token = Token(GLASSES + self.glasses.len());
                    let both = Interest::READABLE | Interest::WRITABLE;
                    match &publisher {
                        Some(p) => {
                            self.register(&ws, token, Interest::READABLE);
                            self.register(p, Token(PUBLISHERS + self.glasses.len()), both);
                        }
                        None => self.register(&ws, token, both),
                    }
                    self.glasses.push(Glasses {
                        ws,
                        publisher,
                        display: Histogram::default(),
                        hint_display: 0,
                        live,
                        out: Vec::with_capacity(load.batch * 112 + 64),
                        at: 0,
                        seq: 0,
                        part: 0,
                        pong: None,
                        writable: true,
                        held: false,
                        done: false,
                    });
                }
                self.load = Some(load);
            }
        }
    }
}

/// Write what is pending, then build and write more until the socket is full, the deadline
/// passed, or (paced) nothing more is due. A few batches at most per call, so apps get read;
/// at most `room` new messages.
fn pump(g: &mut Glasses, now: Instant, load: &Load, mut room: u64) {
    for _ in 0..8 {
        let sock = match &mut g.publisher {
            Some(p) => &mut p.sock,
            None => &mut g.ws.sock,
        };
        while g.at < g.out.len() {
            match sock.write(&g.out[g.at..]) {
                Ok(n) => g.at += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    g.writable = false;
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    *g.live.error.lock().unwrap() = Some(format!("write error: {e}"));
                    g.done = true;
                    return;
                }
            }
        }
        // TLS: records still held in the connection go out before more is built.
        match sock.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                g.writable = false;
                return;
            }
            Err(e) => {
                *g.live.error.lock().unwrap() = Some(format!("write error: {e}"));
                g.done = true;
                return;
            }
        }
        g.live.sent.store(g.seq, Relaxed);
        if load.transcripts {
            let interims = g.seq * wsc::INTERIMS_PER_FINAL + g.part.min(wsc::INTERIMS_PER_FINAL);
            g.live.interims.store(interims, Relaxed);
        }
        if now >= load.deadline {
            g.done = true;
            return;
        }
        if let (true, true, Some(r)) = (load.spread, load.transcripts, load.rate) {
            if !spread(g, now, load, r) {
                return;
            }
            continue;
        }
        let n = match load.rate {
            None => load.batch as u64,
            Some(r) => {
                let due = ((now - load.start).as_secs_f64() * r) as u64 + 1;
                due.saturating_sub(g.seq).min(load.batch as u64)
            }
        }
        .min(room);
        if n == 0 {
            return;
        }
        room -= n;
        g.out.clear();
        g.at = 0;
        if let Some(p) = g.pong.take() {
            match g.publisher {
                // The glasses are not the writer: answer on their own socket.
                Some(_) => {
                    let _ = g.ws.send(wsc::PONG, &p);
                }
                None => wsc::push_masked(&mut g.out, wsc::PONG, &p, stats::mask_key()),
            }
        }
        let mask = stats::mask_key();
        let t = stats::now_us();
        for k in 0..n {
            match (load.audio, load.transcripts) {
                (_, true) => wsc::push_transcripts(&mut g.out, g.seq + k, t, mask),
                (Some(size), false) => wsc::push_audio(&mut g.out, g.seq + k, t, size, mask),
                (None, false) => wsc::push_button(&mut g.out, g.seq + k, t, mask),
            }
        }
        g.seq += n;
    }
}

/// `spread`: build the transcript messages due by `now` at `r` units a second, each unit's
/// interims and final evenly spaced; false when none is due.
fn spread(g: &mut Glasses, now: Instant, load: &Load, r: f64) -> bool {
    let per = wsc::INTERIMS_PER_FINAL + 1;
    let due = ((now - load.start).as_secs_f64() * r * per as f64) as u64 + 1;
    let n = due.saturating_sub(g.seq * per + g.part);
    if n == 0 {
        return false;
    }
    g.out.clear();
    g.at = 0;
    let mask = stats::mask_key();
    if let Some(p) = g.pong.take() {
        match g.publisher {
            // The glasses are not the writer: answer on their own socket.
            Some(_) => {
                let _ = g.ws.send(wsc::PONG, &p);
            }
            None => wsc::push_masked(&mut g.out, wsc::PONG, &p, mask),
        }
    }
    let t = stats::now_us();
    for _ in 0..n.min(load.batch as u64 * per) {
        wsc::push_transcript(&mut g.out, g.seq, g.part, t, mask);
        g.part += 1;
        if g.part == per {
            g.part = 0;
            g.seq += 1;
        }
    }
    true
}

/// Drain what the server sends a session's publishing app (it subscribes to nothing).
fn publisher_read(g: &mut Glasses, sh: &Shared) {
    let Some(p) = g.publisher.as_mut() else {
        return;
    };
    let mut why = None;
    loop {
        match p.fill() {
            Ok(0) => why = Some("publisher closed without a close frame".to_string()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => why = Some(format!("publisher read error: {e}")),
        }
        while let Some(f) = p.next_frame() {
            match f.opcode {
                wsc::PING => {
                    let ping = p.payload(f.payload).to_vec();
                    let _ = p.send(wsc::PONG, &ping);
                }
                wsc::CLOSE => {
                    let close = wsc::describe_close(p.payload(f.payload));
                    why = Some(format!("publisher closed by the server: {close}"));
                }
                _ => {}
            }
        }
        if why.is_some() {
            break;
        }
    }
    if let Some(why) = why.filter(|_| !sh.stop.load(Relaxed)) {
        *g.live.error.lock().unwrap() = Some(why);
        g.done = true;
    }
}

/// Drain what the server sends the glasses; keep a ping's payload to answer.
fn glasses_read(g: &mut Glasses, sh: &Shared) {
    loop {
        match g.ws.fill() {
            Ok(0) => {
                if !sh.stop.load(Relaxed) {
                    *g.live.error.lock().unwrap() = Some("closed without a close frame".into());
                }
                g.done = true;
                return;
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                *g.live.error.lock().unwrap() = Some(format!("read error: {e}"));
                g.done = true;
                return;
            }
        }
        let now = stats::now_us();
        while let Some(f) = g.ws.next_frame() {
            match f.opcode {
                wsc::TEXT => {
                    let text = g.ws.payload(f.payload);
                    if let Some(t) = wsc::field(text, DISPLAY_MARK, &mut g.hint_display) {
                        g.display.record(now.saturating_sub(t));
                    }
                }
                wsc::PING => g.pong = Some(g.ws.payload(f.payload).to_vec()),
                wsc::CLOSE if !sh.stop.load(Relaxed) => {
                    *g.live.error.lock().unwrap() = Some(format!(
                        "closed by the server: {}",
                        wsc::describe_close(g.ws.payload(f.payload))
                    ));
                    g.done = true;
                }
                _ => {}
            }
        }
    }
}

/// What a load display's text starts with, followed by its send time (µs).
const DISPLAY_MARK: &[u8] = b"edge-load display t=";

/// Send the `display_event`s due from an app (`due` in all so far).
fn show(app: &mut App, due: u64, sh: &Shared) {
    while app.displays_sent < due {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(DISPLAY_MARK),
            stats::now_us()
        );
        let ev = serde_json::json!({
            "type": "display_event",
            "packageName": app.r.package,
            "sessionId": "",
            "view": "main",
            "layout": {"layoutType": "text_wall", "text": text},
            "durationMs": 10_000,
        });
        // Tiny frames to a socket that carries nothing else: a short write is not expected;
        // if one happens the app is counted as failed rather than its stream corrupted.
        if let Err(e) = app.ws.send(wsc::TEXT, ev.to_string().as_bytes()) {
            sh.error(format!("{}: display_event not sent: {e}", app.r.package));
            app.closed = true;
            return;
        }
        app.displays_sent += 1;
    }
}

/// Read everything an app has been sent, count, check and time it; the load messages read.
fn app_read(app: &mut App, sh: &Shared) -> u64 {
    if app.closed {
        return 0;
    }
    let before = app.r.delivered;
    loop {
        match app.ws.fill() {
            Ok(0) => {
                app.r.disconnected = Some("connection closed without a close frame".into());
                app.closed = true;
                break;
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                app.r.disconnected = Some(format!("read error: {e}"));
                app.closed = true;
                break;
            }
        }
        let now = stats::now_us();
        if !app_frames(app, now, sh) {
            app.closed = true;
            break;
        }
    }
    if app.closed && app.r.disconnected.is_some() && !sh.stop.load(Relaxed) {
        sh.disconnected.fetch_add(1, Relaxed);
    }
    sh.delivered.fetch_add(app.r.delivered - before, Relaxed);
    app.r.delivered - before
}

/// New messages a glasses with `apps` apps may send, having sent `sent` of which its apps
/// received `delivered` deliveries in all, so that on average at most `window` are in flight.
pub fn room(window: u64, apps: u64, sent: u64, delivered: u64) -> u64 {
    if window == 0 || apps == 0 {
        return u64::MAX;
    }
    let in_flight = (sent * apps).saturating_sub(delivered).div_ceil(apps);
    window.saturating_sub(in_flight)
}

/// Where an interim transcript carries its number.
const ISEQ: &[u8] = br#""iseq":"#;

/// Count and time interim transcript `n`.
fn interim(r: &mut AppResult, n: u64, text: &[u8], now: u64, hint_t: &mut usize) {
    r.interims += 1;
    r.interim_seq.see(n);
    if let Some(t) = wsc::field(text, br#""t":"#, hint_t) {
        r.interim_hist.record(now.saturating_sub(t));
    }
}

/// The complete frames in an app's buffer; false once it was closed.
fn app_frames(app: &mut App, now: u64, sh: &Shared) -> bool {
    let r = &mut app.r;
    while let Some(f) = app.ws.next_frame() {
        let text: &[u8] = match f.opcode {
            wsc::TEXT if f.fin => app.ws.payload(f.payload),
            wsc::TEXT | wsc::CONTINUATION => {
                app.frag.extend_from_slice(app.ws.payload(f.payload));
                if !f.fin {
                    continue;
                }
                &app.frag
            }
            wsc::PING => {
                let p = app.ws.payload(f.payload).to_vec();
                let _ = app.ws.send(wsc::PONG, &p);
                continue;
            }
            wsc::BINARY => {
                if let Some((seq, t)) = wsc::audio_fields(app.ws.payload(f.payload)) {
                    r.delivered += 1;
                    r.hist.record(now.saturating_sub(t));
                    r.seq.see(seq);
                }
                continue;
            }
            wsc::CLOSE => {
                r.disconnected = Some(format!(
                    "closed by the server: {}",
                    wsc::describe_close(app.ws.payload(f.payload))
                ));
                return false;
            }
            _ => continue,
        };
        // An interim transcript where the last one had its number: no search for "seq".
        if let Some(n) = wsc::field_at(text, ISEQ, app.hint_iseq) {
            interim(r, n, text, now, &mut app.hint_t);
            app.frag.clear();
            continue;
        }
        match wsc::field(text, br#""seq":"#, &mut app.hint_seq) {
            Some(seq) => {
                r.delivered += 1;
                if let Some(t) = wsc::field(text, br#""t":"#, &mut app.hint_t) {
                    r.hist.record(now.saturating_sub(t));
                }
                r.seq.see(seq);
            }
            // What the teardown brings (app_stopped) is not news.
            None if sh.stop.load(Relaxed) => {}
            // An interim transcript (numbered apart from the finals), the first of this app or
            // one whose number moved.
            None if wsc::find(text, ISEQ) => {
                if let Some(n) = wsc::field(text, ISEQ, &mut app.hint_iseq) {
                    interim(r, n, text, now, &mut app.hint_t);
                }
            }
            None if wsc::find(text, br#""buttonId":"probe""#) => {
                if !app.warm {
                    app.warm = true;
                    sh.warm.fetch_add(1, Relaxed);
                }
            }
            None => {
                let v = serde_json::from_slice::<Value>(text).unwrap_or(Value::Null);
                // A real recogniser's transcript: no numbers, so its text and time are kept.
                let stream = v["streamType"].as_str().unwrap_or("");
                if v["type"] == "data_stream" && stream.starts_with("transcription") {
                    match (&v["data"]["isFinal"], v["data"]["text"].as_str()) {
                        (Value::Bool(true), Some(t)) => {
                            r.captions.push((now, t.to_string()));
                            r.delivered += 1;
                        }
                        _ => r.caption_interims += 1,
                    }
                    app.frag.clear();
                    continue;
                }
                r.other += 1;
                let ty = v["type"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| "(not JSON)".into());
                if !r.other_types.contains(&ty) {
                    r.other_types.push(ty);
                }
            }
        }
        app.frag.clear();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::room;

    #[test]
    fn the_window_counts_messages_not_yet_delivered_to_every_app() {
        assert_eq!(room(0, 4, 1_000_000, 0), u64::MAX);
        assert_eq!(room(100, 4, 0, 0), 100);
        // 50 sent to 4 apps, 120 of 200 deliveries made: 20 in flight on average.
        assert_eq!(room(100, 4, 50, 120), 80);
        // One delivery short of everything counts as one in flight.
        assert_eq!(room(100, 4, 50, 199), 99);
        assert_eq!(room(100, 4, 150, 0), 0);
        assert_eq!(room(100, 4, 100, 0), 0);
        // An app not yet known sends nothing it cannot count.
        assert_eq!(room(100, 0, 10, 0), u64::MAX);
    }
}
