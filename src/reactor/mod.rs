//! Shell layer: the mio event loop. Thin by design: it moves bytes between sockets and the
//! sans-IO [`Server`] core, converts the OS clock into core [`Instant`]s, and sleeps until the
//! core's next deadline. No protocol decision is made here.
//!
//! Owns where to listen ([`ListenSpec`], which the config reads) and the opening of listeners
//! ([`bind`]), the `mio::Poll`, the listeners, the streams (a table indexed like the core's
//! slab, each entry remembering the [`ConnId`] it serves), one shared 64 KiB read buffer, a
//! `Waker`, and the TLS client configurations of `https://` targets (by CA file): an outbound
//! connection whose target the core marks TLS is wrapped in the transports' TLS client, and a
//! handshake it refuses is handed to the core as that request's outcome, with its reason.
//!
//! mio discipline (STYLE.md §7): reads and writes drain to `WouldBlock` (reads also stop while
//! the core holds the connection, as its `poll_reading` list says, or after a per-turn budget,
//! and resume next turn); `Interrupted` is
//! retried; `Ok(0)` is the peer's EOF; tokens carry the connection's generation so a stale
//! event for a reused slot is ignored; WRITABLE interest only while output is pending; output is
//! flushed once per turn, after every ready socket was read, so many messages leave in one write.

pub mod signals;
pub mod tts;

use crate::net::{ConnId, Peer, Target, Tls};
use crate::server::Server;
use crate::state::writer::Writer;
use crate::state::{Store, StoreStatus};
use crate::time::{Instant, Now, Wall};
use augmentos_edge_transports::{Listener, Remote, Stream, TlsClientStream};
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// Size of the one read buffer shared by all connections.
const READ_BUF: usize = 64 * 1024;
/// Connections accepted per listener per turn before established ones get their turn (a flood
/// of new connections then costs the others at most this many accepts of latency per turn).
const ACCEPT_BUDGET: usize = 64;
/// Reads per connection per turn before it yields to the others.
const READ_BUDGET: usize = 8;
/// Token index bits reserved for the reactor's own sources (never a connection index).
const SPECIAL: usize = crate::net::MAX_INDEX;
const WAKER: Token = Token(SPECIAL);
/// The signal pipe (above every listener token).
const SIGNALS: Token = Token((0x7ff << 20) | SPECIAL);
/// How long an orderly stop may wait, beyond the close handshake's own deadline.
const STOP_MARGIN: Duration = Duration::from_millis(500);

/// What the shell does on SIGHUP (re-read the config and certificates, hand the core the new
/// registry with `Server::handle_reload`).
pub type OnReload = Box<dyn FnMut(&mut Server, Now) + Send>;

fn listener_token(i: usize) -> Token {
    Token(((i + 1) << 20) | SPECIAL)
}

/// Reads the two OS clocks for the core: the monotonic clock as microseconds since the clock
/// was made (deadlines), and the real-time clock as it is at each reading (timestamps, token
/// expiry), so a wall clock set late by NTP is picked up at once and never moves a deadline.
pub struct Clock {
    origin: std::time::Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            origin: std::time::Instant::now(),
        }
    }
}

impl Clock {
    pub fn now(&self) -> Now {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Now::new(self.mono(), Wall::from_micros(wall))
    }

    fn mono(&self) -> Instant {
        Instant::from_micros(self.origin.elapsed().as_micros() as u64)
    }
}

/// The core's name for where a stream came from.
fn peer_of(remote: Remote) -> Peer {
    match remote {
        Remote::Ip(a) => Peer::Ip(a),
        Remote::Unix => Peer::Unix,
        Remote::InProcess => Peer::InProcess,
    }
}

struct Entry {
    stream: Box<dyn Stream>,
    id: ConnId,
    interest: Interest,
    /// A read stopped for backpressure before the socket said `WouldBlock`: bytes may be
    /// waiting that no new (edge-triggered) readiness will announce.
    read_paused: bool,
    /// The core holds it: not read until `poll_reading` says it may be again.
    held: bool,
}

/// Stops a running reactor from another thread.
#[derive(Clone)]
pub struct StopHandle {
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
}

impl StopHandle {
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

pub struct Reactor {
    poll: Poll,
    listeners: Vec<Box<dyn Listener>>,
    streams: Vec<Option<Entry>>,
    server: Server,
    clock: Clock,
    scratch: Vec<u8>,
    stop: StopHandle,
    /// Connections with reading left over from the last turn (budget or backpressure ended).
    again: Vec<ConnId>,
    /// Listeners with connections left to accept from the last turn.
    accept_again: Vec<usize>,
    writable: Vec<ConnId>,
    resolver: Option<Resolver>,
    /// TLS client configurations for `https://` targets, by the CA file they trust (`None`:
    /// the system's CAs); made at first use, dropped on SIGHUP so a changed file is read again.
    tls_clients: HashMap<Option<PathBuf>, Arc<augmentos_edge_transports::rustls::ClientConfig>>,
    /// The durable store's writer thread; without one, durable changes are dropped.
    writer: Option<Writer>,
    /// The speech worker's threads, started at the first synthesis.
    speech: Option<tts::Worker>,
    signals: Option<(signals::Signals, OnReload)>,
    /// Set by an orderly stop: listeners closed, WebSockets closing; exit when drained or then.
    stopping_until: Option<Instant>,
}

/// Name lookups for outbound connections happen on one helper thread, so the loop never
/// blocks on DNS; answers come back through a channel and the `Waker`.
struct Resolver {
    ask: mpsc::Sender<(ConnId, Target)>,
    answers: mpsc::Receiver<(ConnId, Target, Option<SocketAddr>)>,
}

impl Resolver {
    fn start(waker: Arc<Waker>) -> io::Result<Resolver> {
        let (ask, questions) = mpsc::channel::<(ConnId, Target)>();
        let (tell, answers) = mpsc::channel();
        std::thread::Builder::new()
            .name("resolver".into())
            .spawn(move || {
                use std::net::ToSocketAddrs;
                for (id, t) in questions {
                    let addrs: Vec<SocketAddr> = (t.host.as_str(), t.port)
                        .to_socket_addrs()
                        .map(Iterator::collect)
                        .unwrap_or_default();
                    // IPv4 first: app servers on a venue LAN are reached over IPv4 more often.
                    let addr = addrs
                        .iter()
                        .find(|a| a.is_ipv4())
                        .or(addrs.first())
                        .copied();
                    if tell.send((id, t, addr)).is_err() {
                        return;
                    }
                    let _ = waker.wake();
                }
            })?;
        Ok(Resolver { ask, answers })
    }
}

impl Reactor {
    pub fn new(
        mut server: Server,
        clock: Clock,
        mut listeners: Vec<Box<dyn Listener>>,
    ) -> io::Result<Reactor> {
        server.handle_listeners(listeners.len());
        let poll = Poll::new()?;
        for (i, l) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(&mut **l, listener_token(i), Interest::READABLE)?;
        }
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Reactor {
            poll,
            listeners,
            streams: Vec::new(),
            server,
            clock,
            scratch: vec![0; READ_BUF],
            stop: StopHandle {
                waker,
                stop: Arc::new(AtomicBool::new(false)),
            },
            again: Vec::new(),
            accept_again: Vec::new(),
            writable: Vec::new(),
            resolver: None,
            tls_clients: HashMap::new(),
            writer: None,
            speech: None,
            signals: None,
            stopping_until: None,
        })
    }

    /// Write durable changes to `store` from a thread of its own, woken through the loop's
    /// `Waker` when a batch is written.
    /// While the store is unreachable, at most `queue_limit` rows' changes are held.
    pub fn with_store(
        mut self,
        store: Box<dyn Store>,
        status: StoreStatus,
        queue_limit: usize,
    ) -> io::Result<Self> {
        let waker = self.stop.waker.clone();
        let notify = Box::new(move || {
            let _ = waker.wake();
        });
        self.writer = Some(Writer::start(store, status, queue_limit, notify)?);
        Ok(self)
    }

    /// Durable writes finish before the loop returns.
    fn finish_writes(&mut self) {
        if let Some(w) = &mut self.writer {
            w.finish();
        }
    }

    /// Hand the turn's durable changes and lease changes to the writer, and its reports to the
    /// core (sessions ended by lease news are flushed in the same turn).
    fn persist(&mut self, now: Now) {
        let Some(w) = &mut self.writer else {
            let _ = self.server.take_persist();
            let _ = self.server.take_leases();
            return;
        };
        let status = w.poll_status();
        let shared = w.take_shared();
        let news = w.take_lease_news();
        if let Some(status) = status {
            self.server.handle_store_status(status);
        }
        if let Some(shared) = shared {
            self.server.handle_shared_state(shared, now);
        }
        if let Some(news) = news {
            self.server.handle_lease_news(news, now);
            while let Some(id) = self.server.poll_dirty() {
                self.flush(id);
            }
        }
        if let Some(w) = &self.writer {
            w.submit(self.server.take_persist());
            w.lease(self.server.take_leases());
        }
    }

    /// Take SIGTERM/SIGINT (an orderly stop: stop accepting, close every WebSocket with 1001,
    /// flush, return once drained or after the close deadline) and SIGHUP (`on_reload`).
    pub fn handle_signals(&mut self, on_reload: OnReload) -> io::Result<()> {
        let mut s = signals::Signals::new()?;
        self.poll
            .registry()
            .register(&mut s, SIGNALS, Interest::READABLE)?;
        self.signals = Some((s, on_reload));
        Ok(())
    }

    /// Stop accepting and close every client connection in order; `run` returns once they are
    /// gone, or at the close deadline (plus a margin) at the latest.
    pub fn begin_stop(&mut self, now: Now) {
        if self.stopping_until.is_some() {
            return;
        }
        for mut l in std::mem::take(&mut self.listeners) {
            let _ = self.poll.registry().deregister(&mut *l);
        }
        self.server.handle_shutdown(now);
        self.stopping_until = Some(now.mono + self.server.config().close_timeout + STOP_MARGIN);
        log::info!(
            "event=stopping connections={}",
            self.server.connection_count()
        );
    }

    fn on_signals(&mut self, now: Now) {
        let Some((s, _)) = &mut self.signals else {
            return;
        };
        for sig in s.pending() {
            match sig {
                signals::Signal::Stop if self.stopping_until.is_some() => {
                    log::warn!("event=stop_now reason=second_signal");
                    self.stop.stop.store(true, Ordering::SeqCst);
                }
                signals::Signal::Stop => self.begin_stop(now),
                signals::Signal::Reload => {
                    self.tls_clients.clear();
                    if let Some((_, on_reload)) = &mut self.signals {
                        on_reload(&mut self.server, now);
                    }
                }
            }
        }
    }

    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Run until stopped through a [`StopHandle`].
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if self.again.is_empty() && self.accept_again.is_empty() {
                let at = match (self.server.poll_timeout(), self.stopping_until) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                at.map(|at| at.saturating_since(self.clock.mono()))
            } else {
                Some(Duration::ZERO)
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = self.clock.now();
            for id in std::mem::take(&mut self.again) {
                self.read(id, now);
            }
            for i in std::mem::take(&mut self.accept_again) {
                self.accept(i, now);
            }
            let answers: Vec<_> = self
                .resolver
                .as_ref()
                .map(|r| r.answers.try_iter().collect())
                .unwrap_or_default();
            for (id, target, addr) in answers {
                self.connect(id, &target, addr, now);
            }
            while let Some(done) = self.speech.as_ref().and_then(tts::Worker::poll_done) {
                self.server.handle_tts_done(done, now);
            }
            for ev in events.iter() {
                let token = ev.token().0;
                if ev.token() == SIGNALS {
                    self.on_signals(now);
                    continue;
                }
                if token & SPECIAL == SPECIAL {
                    if let Some(i) = (token >> 20).checked_sub(1) {
                        self.accept(i, now);
                    }
                    continue;
                }
                let Some(id) = self.server.conn_at_token(token) else {
                    continue;
                };
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    self.read(id, now);
                }
                if ev.is_writable() {
                    self.writable.push(id);
                }
            }
            self.server.handle_timeout(now);
            self.speak(now);
            while let Some((id, target)) = self.server.poll_connect() {
                self.open_outbound(id, target, now);
            }
            while let Some(id) = self.server.poll_dirty() {
                self.flush(id);
            }
            for id in std::mem::take(&mut self.writable) {
                self.flush(id);
            }
            self.take_reading();
            self.persist(now);
            let took = self.clock.mono().saturating_since(now.mono);
            self.server.handle_turn_time(took);
            if self.stop.stop.load(Ordering::SeqCst) {
                self.finish_writes();
                if self.stopping_until.is_some() {
                    let lost = self.server.finish_drain();
                    log::warn!("event=stopped_now drain_finals_lost={lost}");
                }
                return Ok(());
            }
            if let Some(until) = self.stopping_until {
                if self.server.drained() || self.clock.mono() >= until {
                    self.finish_writes();
                    let lost = self.server.finish_drain();
                    log::info!("event=stopped drain_finals_lost={lost}");
                    return Ok(());
                }
            }
        }
    }

    /// Hand the turn's speech jobs to the worker (started on first use with the core's
    /// settings; if its threads cannot start, each job is reported as failed).
    fn speak(&mut self, now: Now) {
        while let Some(job) = self.server.poll_tts_job() {
            if self.speech.is_none() {
                let cfg = self.server.tts.config();
                let waker = self.stop.waker.clone();
                let notify = Arc::new(move || {
                    let _ = waker.wake();
                });
                match tts::Worker::start(
                    cfg.command.clone(),
                    cfg.timeout,
                    cfg.max_concurrent,
                    notify,
                ) {
                    Ok(w) => self.speech = Some(w),
                    Err(e) => {
                        let failure = crate::server::tts::TtsFailure::Failed(format!(
                            "cannot start the speech worker: {e}"
                        ));
                        let done = crate::server::tts::TtsDone {
                            id: job.id,
                            result: Err(failure),
                            took: Duration::ZERO,
                        };
                        self.server.handle_tts_done(done, now);
                        continue;
                    }
                }
            }
            if let Some(w) = &self.speech {
                w.submit(job);
            }
        }
    }

    fn accept(&mut self, i: usize, now: Now) {
        for n in 0.. {
            if n == ACCEPT_BUDGET {
                // More may be waiting (edge-triggered: no new event will say so): next turn.
                if !self.accept_again.contains(&i) {
                    self.accept_again.push(i);
                }
                return;
            }
            let Some(listener) = self.listeners.get(i) else {
                return;
            };
            let (mut stream, peer) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: log and try again next readiness.
                    log::warn!(
                        "event=accept_failed listener={} error={e:?}",
                        listener.describe()
                    );
                    return;
                }
            };
            let Some(id) = self.server.handle_accept(peer_of(peer), now) else {
                continue;
            };
            let token = Token(id.to_token());
            if let Err(e) = self
                .poll
                .registry()
                .register(&mut *stream, token, Interest::READABLE)
            {
                log::warn!("event=register_failed connection={id} error={e:?}");
                self.server.handle_closed(id, now);
                continue;
            }
            let idx = id.index as usize;
            if self.streams.len() <= idx {
                self.streams.resize_with(idx + 1, || None);
            }
            self.streams[idx] = Some(Entry {
                stream,
                id,
                interest: Interest::READABLE,
                read_paused: false,
                held: !self.server.wants_read(id),
            });
            // The peer may have written before we registered; edge-triggered means read now.
            self.read(id, now);
        }
    }

    /// Open the socket for an outbound request of the core (resolving the name off-loop).
    fn open_outbound(&mut self, id: ConnId, target: Target, now: Now) {
        if let Ok(ip) = target.host.parse::<IpAddr>() {
            return self.connect(id, &target, Some(SocketAddr::new(ip, target.port)), now);
        }
        if self.resolver.is_none() {
            match Resolver::start(self.stop.waker.clone()) {
                Ok(r) => self.resolver = Some(r),
                Err(_) => return self.connect(id, &target, None, now),
            }
        }
        if let Some(r) = &self.resolver {
            if let Err(mpsc::SendError((_, target))) = r.ask.send((id, target)) {
                self.connect(id, &target, None, now);
            }
        }
    }

    fn connect(&mut self, id: ConnId, target: &Target, addr: Option<SocketAddr>, now: Now) {
        let tcp = addr.and_then(|a| mio::net::TcpStream::connect(a).ok());
        let Some(tcp) = tcp else {
            return self.server.handle_closed(id, now);
        };
        let _ = tcp.set_nodelay(true);
        let mut stream: Box<dyn Stream> = match &target.tls {
            None => Box::new(tcp),
            Some(tls) => match self.tls_client(tls, tcp, &target.host) {
                Ok(s) => Box::new(s),
                Err(e) => {
                    log::warn!(
                        "event=tls_client_unusable host={:?} error={e:?}",
                        target.host
                    );
                    self.server
                        .handle_tls_failure(id, "TLS: no usable CA certificates", now);
                    return self.server.handle_closed(id, now);
                }
            },
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        if self
            .poll
            .registry()
            .register(&mut *stream, Token(id.to_token()), interest)
            .is_err()
        {
            return self.server.handle_closed(id, now);
        }
        let idx = id.index as usize;
        if self.streams.len() <= idx {
            self.streams.resize_with(idx + 1, || None);
        }
        self.streams[idx] = Some(Entry {
            stream,
            id,
            interest,
            read_paused: false,
            held: !self.server.wants_read(id),
        });
        // The request was queued before the socket existed: flush it this turn.
        self.writable.push(id);
    }

    /// A TLS client over `tcp` for `host`, trusting what `tls` names (its configuration made
    /// once per CA file).
    fn tls_client(
        &mut self,
        tls: &Tls,
        tcp: mio::net::TcpStream,
        host: &str,
    ) -> Result<TlsClientStream, String> {
        let config = match self.tls_clients.get(&tls.ca_file) {
            Some(c) => c.clone(),
            None => {
                let c = augmentos_edge_transports::client_config(tls.ca_file.as_deref())?;
                self.tls_clients.insert(tls.ca_file.clone(), c.clone());
                c
            }
        };
        TlsClientStream::new(tcp, config, host).map_err(|e| e.to_string())
    }

    fn entry(&mut self, id: ConnId) -> Option<&mut Entry> {
        self.streams
            .get_mut(id.index as usize)
            .and_then(Option::as_mut)
            .filter(|e| e.id == id)
    }

    /// The core's changes of which connections may be read: a connection it holds is not
    /// read; one it frees whose read was cut short is read again next turn.
    fn take_reading(&mut self) {
        while let Some((id, may_read)) = self.server.poll_reading() {
            let Reactor { streams, again, .. } = self;
            let Some(e) = streams.get_mut(id.index as usize).and_then(Option::as_mut) else {
                continue;
            };
            if e.id == id {
                e.held = !may_read;
                if may_read && e.read_paused {
                    e.read_paused = false;
                    again.push(id);
                }
            }
        }
    }

    fn read(&mut self, id: ConnId, now: Now) {
        for _ in 0..READ_BUDGET {
            self.take_reading();
            let Reactor {
                streams,
                scratch,
                server,
                ..
            } = self;
            let Some(e) = streams.get_mut(id.index as usize).and_then(Option::as_mut) else {
                return;
            };
            if e.id != id {
                return;
            }
            if e.held {
                // Read again once the core frees it (`take_reading`).
                e.read_paused = true;
                return;
            }
            match e.stream.read(scratch) {
                Ok(0) => {
                    server.handle_eof(id, now);
                    return;
                }
                Ok(n) => server.handle_input(id, &mut scratch[..n], now),
                Err(err) if err.kind() == ErrorKind::WouldBlock => {
                    // A TLS handshake reply the socket did not take: send it when writable.
                    if e.stream.wants_write() {
                        self.writable.push(id);
                    }
                    return;
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => {
                    // A TLS client's handshake refused: the reason is the request's outcome.
                    if let Some(why) = augmentos_edge_transports::failure_reason(&err) {
                        server.handle_tls_failure(id, why, now);
                    }
                    self.close(id);
                    return;
                }
            }
        }
        self.again.push(id);
    }

    fn flush(&mut self, id: ConnId) {
        loop {
            let Reactor {
                streams, server, ..
            } = self;
            let Some(e) = streams.get_mut(id.index as usize).and_then(Option::as_mut) else {
                return;
            };
            if e.id != id {
                return;
            }
            let out = server.output(id);
            if out.is_empty() {
                break;
            }
            match e.stream.write(out) {
                Ok(0) => return self.close(id),
                Ok(n) => server.consume_output(id, n),
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.close(id),
            }
        }
        self.take_reading();
        // Bytes the transport holds (TLS records) follow the core's output out.
        let held = match self
            .entry(id)
            .map(|e| (e.stream.flush(), e.stream.wants_write()))
        {
            Some((Ok(()), held)) => held,
            Some((Err(_), _)) => return self.close(id),
            None => return,
        };
        if self.server.wants_close(id) && !held {
            return self.close(id);
        }
        let wants_read = self.entry(id).is_some_and(|e| !e.held);
        let pending = !self.server.output(id).is_empty() || held;
        let want = match (wants_read, pending) {
            (true, true) => Interest::READABLE | Interest::WRITABLE,
            (false, true) => Interest::WRITABLE,
            _ => Interest::READABLE,
        };
        let Reactor {
            poll,
            streams,
            again,
            ..
        } = self;
        let Some(e) = streams.get_mut(id.index as usize).and_then(Option::as_mut) else {
            return;
        };
        if e.interest != want {
            let had_read = e.interest.is_readable();
            if poll
                .registry()
                .reregister(&mut *e.stream, Token(id.to_token()), want)
                .is_err()
            {
                return self.close(id);
            }
            e.interest = want;
            // Reading was paused by backpressure: bytes may already be waiting (edge-triggered).
            if !had_read && want.is_readable() {
                e.read_paused = false;
                again.push(id);
            }
        }
        // Paused and drained within one turn, with no change of interest to re-arm the edge.
        if e.read_paused && !e.held && want.is_readable() {
            e.read_paused = false;
            again.push(id);
        }
    }

    fn close(&mut self, id: ConnId) {
        if self.entry(id).is_some() {
            if let Some(mut e) = self.streams[id.index as usize].take() {
                let _ = self.poll.registry().deregister(&mut *e.stream);
            }
        }
        let now = self.clock.now();
        self.server.handle_closed(id, now);
    }
}

/// One place to listen: a string (`"IP:port"`, `"unix:/path"`), or an object for TLS,
/// `{"address": "0.0.0.0:8443", "tls": {"certificate": "chain.pem", "key": "key.pem"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenSpec {
    Tcp(SocketAddr),
    Unix(PathBuf),
    Tls(TlsListen),
}

/// A TCP address served over TLS, with the PEM files of its certificate chain and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListen {
    pub address: SocketAddr,
    pub certificate: PathBuf,
    pub key: PathBuf,
}

impl ListenSpec {
    /// `"127.0.0.1:8002"`, `"[::1]:8002"`, `"unix:/run/edge.sock"` or an absolute path.
    pub fn parse(s: &str) -> Result<ListenSpec, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            return Ok(ListenSpec::Unix(PathBuf::from(p)));
        }
        if s.starts_with('/') {
            return Ok(ListenSpec::Unix(PathBuf::from(s)));
        }
        s.parse::<SocketAddr>()
            .map(ListenSpec::Tcp)
            .map_err(|_| format!("'{s}' is neither an IP:port address nor a unix: path"))
    }
}

impl TryFrom<String> for ListenSpec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        ListenSpec::parse(&s)
    }
}

/// Open every configured listener; errors name the address.
pub fn bind_all(specs: &[ListenSpec]) -> Result<Vec<Box<dyn Listener>>, String> {
    bind(specs).map(|b| b.listeners)
}

/// Listeners, and the certificate stores of the TLS ones (re-read on reload).
pub struct Bound {
    pub listeners: Vec<Box<dyn Listener>>,
    pub certs: Vec<Arc<augmentos_edge_transports::TlsCerts>>,
}

/// Open every configured listener, reading TLS certificates; errors name the address or file.
pub fn bind(specs: &[ListenSpec]) -> Result<Bound, String> {
    use augmentos_edge_transports::{TcpListener, TlsCerts, TlsListener, UnixListener};
    let mut certs = Vec::new();
    let listeners = specs
        .iter()
        .map(|s| -> Result<Box<dyn Listener>, String> {
            match s {
                ListenSpec::Tls(t) => {
                    let c = TlsCerts::load(&t.certificate, &t.key)?;
                    certs.push(c.clone());
                    TlsListener::bind(t.address, c)
                        .map(|l| Box::new(l) as Box<dyn Listener>)
                        .map_err(|e| format!("cannot listen on {} (TLS): {e}", t.address))
                }
                ListenSpec::Tcp(a) => TcpListener::bind(*a)
                    .map(|l| Box::new(l) as Box<dyn Listener>)
                    .map_err(|e| format!("cannot listen on {a}: {e}")),
                ListenSpec::Unix(p) => UnixListener::bind(p)
                    .map(|l| Box::new(l) as Box<dyn Listener>)
                    .map_err(|e| format!("cannot listen on unix:{}: {e}", p.display())),
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(Bound { listeners, certs })
}

impl Reactor {
    /// Where each listener listens, for logs and tests.
    pub fn describe_listeners(&self) -> Vec<String> {
        self.listeners.iter().map(|l| l.describe()).collect()
    }
}
