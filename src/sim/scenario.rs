//! Test layer: random scenarios over the in-memory world, with the product's invariants checked
//! after every step. Shared by the seeded simulation suite (`tests/simulation.rs`, choices from
//! a seed) and the fuzz target (`fuzz/fuzz_targets/scenario.rs`, choices from the fuzz input).
//!
//! Owns a [`World`] with two users, two ordinary apps (`CAPTIONS` may hear the microphone,
//! `NOTES` may not) and a publishing system app (`STT`, started with every session, which may
//! also locate), plus the
//! model of every peer: which client is whose glasses or app, what each app subscribed to and
//! asked, which final transcripts each app must get, and a reference store fed the durable
//! changes. Operations: glasses connect, drop, half-close, re-init; app start and stop; webhooks
//! answered (the app then connects with the right or a wrong key), answered late, refused or
//! failed; app crashes and reconnects; subscriptions; glasses events; transcripts published;
//! display requests; device requests and replies; settings and storage writes; time passing
//! deadline by deadline; transport faults (stalls, held-back sends, short reads and writes);
//! restart from the store.
//!
//! [`Scenario::with_venue`] adds the venue's two named feeds ([`FEEDS`], each published by its
//! own system app in French with its English translation): the feeds' publishers connect
//! (replacing one another), crash, half-close and publish numbered interims and finals of both
//! kinds; apps also subscribe to the feeds' streams (three subscription strings); the operator
//! switches users between feeds (`POST /ui/api/feeds/{feed}/follow`). The venue model knows
//! who follows which feed (everyone the first after a restart: the reference store keeps no
//! follows) and each feed's last finals (sent again on a switch).
//!
//! Invariants checked after every step ([`Scenario::check`]):
//! - no panic; every connection's output within its cap, and the running total of output
//!   (what the total budget is checked against) equal to what the connections hold; the hub's
//!   structural audit
//!   ([`crate::hub::Hub::audit`]: one glasses connection per session, every app of a session's
//!   active set with exactly one live connection or a pending deadline); every venue feed's
//!   translation demand counts equal a recount over the sessions;
//! - an app receives only streams it subscribed to on that connection and is permitted, and
//!   only its own session's (session id, and the user tag every payload carries); the glasses
//!   see only their own user's displays and requests;
//! - a reply reaches only the app that asked, at most once;
//! - every final transcript published while an app was connected, subscribed and reading
//!   reaches it exactly once, in order;
//! - with venue feeds: every final a feed's bound publisher published while an app of a
//!   session following the feed was bound and subscribed (as the hub has it) to its kind
//!   reaches that app, in order, under one of its own subscription strings of that kind (a
//!   replayed last line may come in between); no venue line reaches an app of a session that
//!   did not follow its feed when it was published (or switched to it after); every feed's
//!   translation demand counts equal a recount over the sessions; and (in unoptimised builds)
//!   every delivery list a feed reuses equals a fresh one. The box's own "Captions feed
//!   offline" line is not in the display model, so there only app displays on the main view
//!   are checked against it;
//! - the glasses' screen agrees with the display manager, and the main view shows exactly what
//!   the reference model of the display rules ([`super::display_model`], fed the inputs the
//!   manager is fed) says: boot card, clear, or which app display (priority, lock, throttle,
//!   latest-wins, expiry, restore); besides, an app's display is on screen only while that app
//!   is connected, never past its `durationMs`, and app displays on the main view (unless
//!   forced) are at least the throttle apart;
//! - the durable state equals the reference store; after a restart from the store it is
//!   unchanged, and glasses that come back get exactly the apps that were running.

use super::display_model::{Expected, Model};
use super::faults::Faults;
use super::World;
use crate::auth::{self, jwt};
use crate::hub::registry::{check_subscription, AppSpec, SubCheck};
use crate::hub::venue::FEED_OFFLINE;
use crate::hub::{HubConfig, Timings};
use crate::net::{Peer, Target};
use crate::server::ServerConfig;
use crate::state::{Persist, Snapshot};
use crate::time::Instant;
use crate::ws::frame::Opcode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

/// Where the choices come from: a seeded generator, or fuzz bytes.
pub trait Choices {
    /// A number below `n` (`n > 0`).
    fn pick(&mut self, n: usize) -> usize;
    /// No more choices (fuzz input used up).
    fn exhausted(&self) -> bool {
        false
    }
}

/// Choices from a seed (splitmix64): the same seed replays the same scenario.
pub struct Seeded(Faults);

impl Seeded {
    pub fn new(seed: u64) -> Seeded {
        Seeded(Faults::new(seed, 0))
    }
}

impl Choices for Seeded {
    fn pick(&mut self, n: usize) -> usize {
        self.0.below(n)
    }
}

/// One scenario from fuzz bytes, as the whole-core fuzz target runs it in its scenario mode:
/// byte 0 (bit 6: short reads and writes), then the choices; at most `steps` operations.
pub fn run_bytes(data: &[u8], steps: usize) {
    let Some(&first) = data.first() else { return };
    let faults = if first & 0x40 != 0 {
        u64::from(first) << 32 | data.len() as u64
    } else {
        0
    };
    let mut s = Scenario::new(faults);
    s.run(&mut FromBytes { data, pos: 1 }, steps);
}

/// Choices read from bytes; past the end, zeros.
pub struct FromBytes<'a> {
    pub data: &'a [u8],
    pub pos: usize,
}

impl Choices for FromBytes<'_> {
    fn pick(&mut self, n: usize) -> usize {
        let mut v = 0usize;
        let mut range = 1usize;
        while range < n {
            v = v << 8 | usize::from(self.data.get(self.pos).copied().unwrap_or(0));
            self.pos += 1;
            range <<= 8;
        }
        v % n.max(1)
    }

    fn exhausted(&self) -> bool {
        self.pos >= self.data.len()
    }
}

pub const SECRET: &[u8] = b"simulation-secret-0123";
pub const USERS: [&str; 2] = ["ada@sim.example", "bo@sim.example"];
pub const CAPTIONS: usize = 0;
pub const NOTES: usize = 1;
pub const STT: usize = 2;
pub const PACKAGES: [&str; 3] = ["com.sim.captions", "com.sim.notes", "system.sim.stt"];
/// The package of the box's own displays (boot card, clear).
const SYSTEM: &str = "system.augmentos.dashboard";

/// The main-view throttle of the display rules (the default).
const THROTTLE: Duration = Duration::from_millis(300);

fn key(app: usize) -> String {
    format!("{}-key", PACKAGES[app])
}

fn session_id(user: usize, app: usize) -> String {
    format!("{}-{}", USERS[user], PACKAGES[app])
}

pub fn apps() -> Vec<AppSpec> {
    let spec = |app: usize, perms: &[&str], system: bool| AppSpec {
        package_name: PACKAGES[app].into(),
        name: PACKAGES[app].into(),
        public_url: format!("http://apps.sim:{}", 3000 + app),
        webhook_target: Target {
            host: "apps.sim".into(),
            port: 3000 + app as u16,
            tls: None,
        },
        webhook_path: String::new(),
        hashed_api_key: auth::hash_api_key(&key(app)),
        is_system_app: system,
        permissions: perms.iter().map(|s| s.to_string()).collect(),
        allowed_addresses: if system {
            vec!["in-process".into()]
        } else {
            Vec::new()
        },
        publishes: if system {
            vec!["transcription".into()]
        } else {
            Vec::new()
        },
        settings: Vec::new(),
    };
    vec![
        spec(CAPTIONS, &["MICROPHONE", "LOCATION"], false),
        spec(NOTES, &[], false),
        spec(STT, &["MICROPHONE", "LOCATION"], true),
    ]
}

pub fn server_config() -> ServerConfig {
    ServerConfig {
        ping_interval: None,
        idle_timeout: Duration::from_secs(24 * 3600),
        operator_token: Some(OPERATOR.into()),
        ..ServerConfig::default()
    }
}

/// The operator's token (the venue's follow switches).
pub const OPERATOR: &str = "simulation-operator-0123";
/// The venue's two named feeds, in config order (the first is the default), and the package
/// of each one's publisher (each publishes transcripts and translations).
pub const FEEDS: [&str; 2] = ["main", "hall"];
pub const FEED_PACKAGES: [&str; 2] = ["system.sim.venue.main", "system.sim.venue.hall"];
/// What apps subscribe to of the venue feeds (the feeds publish French and its English
/// translation; the per-session publisher English), as bits 6.. of a subscription mask.
const VENUE_STREAMS: [&str; 3] = [
    "transcription:fr-FR",
    "translation:fr-FR-to-en-US",
    "transcription:fr-FR?hints=en",
];

/// The hub config with the venue's two feeds: [`hub_config`]'s apps, then the feeds'
/// publishers.
pub fn venue_hub_config() -> HubConfig {
    let mut cfg = hub_config();
    for (i, package) in FEED_PACKAGES.iter().enumerate() {
        let mut spec = apps()[STT].clone();
        spec.package_name = package.to_string();
        spec.name = package.to_string();
        spec.hashed_api_key = auth::hash_api_key(&format!("{package}-key"));
        spec.webhook_target.port = 3100 + i as u16;
        spec.public_url = format!("http://apps.sim:{}", 3100 + i);
        spec.publishes = vec!["transcription".into(), "translation".into()];
        cfg.apps.push(spec);
    }
    cfg.venue_feeds = FEEDS
        .iter()
        .zip(FEED_PACKAGES)
        .map(|(f, p)| (f.to_string(), p.to_string()))
        .collect();
    cfg
}

pub fn hub_config() -> HubConfig {
    HubConfig {
        jwt_secret: SECRET.to_vec(),
        apps: apps(),
        lifecycle_burst: 1000,
        timings: Timings::default(),
        ..HubConfig::default()
    }
}

/// The streams apps subscribe to (some not permitted to `NOTES`).
const STREAMS: [&str; 6] = [
    "transcription:en-US",
    "button_press",
    "head_position",
    "location_update",
    "audio_chunk",
    "VAD",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Glasses(usize),
    App(usize, usize),
    Http,
    /// The publisher of venue feed `f`.
    Feed(usize),
}

/// The model of one client of the world.
#[derive(Debug)]
struct Actor {
    role: Role,
    /// Every subscription this connection asked for (a stream may arrive for any of them:
    /// the client may have been slow to read).
    subscribed: BTreeSet<String>,
    /// The ack arrived (an app) / `connection_ack` arrived (glasses).
    acked: bool,
    /// The last final transcript sequence number received.
    last_final: Option<u64>,
    /// Final transcripts this connection must get, in order.
    owed: Vec<u64>,
    /// Request ids this app asked on this connection.
    asked: BTreeSet<String>,
    /// Glasses: when the last `connection_ack` was sent (what is on screen is sent again then).
    acked_at: Option<Instant>,
    /// Glasses: the main view as last shown (package, text, when, duration, forced).
    main: Option<Shown>,
    /// Glasses: request ids they were sent and have not answered.
    to_answer: Vec<String>,
    /// The server sent its close frame: the connection is on its way out.
    closing: bool,
    /// Venue finals this app must get since the last check: (kind, number), kind `t` for a
    /// transcript, `x` for a translation.
    venue_owed: Vec<(char, u64)>,
    /// Venue finals it got since the last check, in order.
    venue_got: Vec<(char, u64)>,
}

#[derive(Debug, Clone)]
struct Shown {
    package: String,
    text: String,
    at: Instant,
    duration_ms: Option<u64>,
}

impl Actor {
    fn new(role: Role) -> Actor {
        Actor {
            role,
            subscribed: BTreeSet::new(),
            acked: false,
            last_final: None,
            owed: Vec::new(),
            asked: BTreeSet::new(),
            main: None,
            acked_at: None,
            to_answer: Vec::new(),
            closing: false,
            venue_owed: Vec::new(),
            venue_got: Vec::new(),
        }
    }
}

/// What a run did, for the suite's summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub steps: u64,
    pub finals_checked: u64,
    pub restarts: u64,
    pub displays: u64,
    pub replies: u64,
    /// Checks of the glasses' main view against the reference model of the display rules.
    pub screens_modelled: u64,
    /// Venue finals checked to reach their app in order.
    pub venue_finals_checked: u64,
    /// "Captions feed offline" lines the glasses were shown.
    pub offline_lines: u64,
}

pub struct Scenario {
    pub w: World,
    peers: Vec<Actor>,
    /// Per user: the next final transcript's sequence number.
    seq: [u64; 2],
    next_id: u64,
    /// The reference store: every durable change applied in order.
    store: Stored,
    /// Persist events of the current world already applied to `store`.
    applied: usize,
    /// Replies already delivered (a reply reaches one app, once).
    replied: BTreeSet<String>,
    /// Per user: after a restart, the apps the next glasses must get back.
    restored: [Option<BTreeSet<String>>; 2],
    fault_seed: u64,
    /// Per user: every app display text the glasses were shown on the main view, and when the
    /// last new one that was not forced came (the throttle's measure).
    seen: [BTreeSet<String>; 2],
    last_app_main: [Option<Instant>; 2],
    /// Per user: the last app display the glasses were shown on the main view.
    last_app_shown: [Option<Shown>; 2],
    /// Per user: the reference model of the display rules, fed what the manager is fed.
    models: [Model; 2],
    pub tally: Tally,
    /// The last operations, for a failure's report.
    pub log: Vec<String>,
    /// The venue model, when the world has venue feeds.
    venue: Option<VenueModel>,
}

/// What the scenario knows of the venue feeds.
#[derive(Debug, Default)]
struct VenueModel {
    /// Per user: the feed their session follows (the operator's choice; not durable here, as
    /// the reference store keeps no follows, so a restart puts everyone back on the first).
    follow: [usize; 2],
    /// The next venue line's number (all feeds, finals and interims).
    seq: u64,
    /// Per feed: its last final transcript and translation (a new subscriber, or a session
    /// that switches to the feed, is sent them again).
    last: [[Option<u64>; 2]; 2],
    /// Per user: the venue lines that may reach its apps (published by the feed it followed
    /// then, or replayed when it switched).
    allowed: [BTreeSet<u64>; 2],
}

/// The reference store.
#[derive(Debug, Default, Clone)]
struct Stored {
    running: BTreeSet<(String, String)>,
    settings: BTreeMap<(String, String, String), String>,
    storage: BTreeMap<(String, String, String), String>,
}

impl Stored {
    fn apply(&mut self, p: &Persist) {
        match p {
            Persist::Running {
                user,
                package,
                running,
            } => {
                let k = (user.clone(), package.clone());
                if *running {
                    self.running.insert(k);
                } else {
                    self.running.remove(&k);
                }
            }
            Persist::Setting {
                user,
                package,
                key,
                value,
            }
            | Persist::Storage {
                user,
                package,
                key,
                value,
            } => {
                let map = if matches!(p, Persist::Setting { .. }) {
                    &mut self.settings
                } else {
                    &mut self.storage
                };
                let k = (user.clone(), package.clone(), key.clone());
                match value {
                    Some(v) => map.insert(k, v.clone()),
                    None => map.remove(&k),
                };
            }
            Persist::Registration(_)
            | Persist::RegistrationGone(_)
            | Persist::Device(_)
            | Persist::Follow { .. } => {}
        }
    }

    fn snapshot(&self) -> Snapshot {
        let flat = |m: &BTreeMap<(String, String, String), String>| {
            m.iter()
                .map(|((u, p, k), v)| (u.clone(), p.clone(), k.clone(), v.clone()))
                .collect()
        };
        Snapshot {
            running: self.running.iter().cloned().collect(),
            settings: flat(&self.settings),
            storage: flat(&self.storage),
            registrations: Vec::new(),
            devices: Vec::new(),
            follows: Vec::new(),
        }
    }

    fn running(&self, user: &str) -> BTreeSet<String> {
        self.running
            .iter()
            .filter(|(u, _)| u == user)
            .map(|(_, p)| p.clone())
            .collect()
    }
}

/// When the core sent message `m`, from its `timestamp` (the world's wall clock starts at
/// midnight with the monotonic one at zero, and no scenario lasts a day).
fn sent_at(m: &Value) -> Instant {
    let t = m["timestamp"].as_str().unwrap_or("");
    let num = |a: usize, b: usize| t.get(a..b).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let ms = num(11, 13) * 3_600_000 + num(14, 16) * 60_000 + num(17, 19) * 1000 + num(20, 23);
    Instant::from_micros(ms * 1000)
}

/// The kind of venue line a subscription string takes: `t` transcripts, `x` translations.
fn venue_kind(sub: &str) -> Option<char> {
    let base = sub.split('?').next().unwrap_or(sub);
    match base {
        "transcription:fr-FR" => Some('t'),
        "translation:fr-FR-to-en-US" => Some('x'),
        _ => None,
    }
}

/// Wait times the scenario lets pass: inside and across every deadline of the defaults.
const WAITS_MS: [u64; 9] = [1, 50, 300, 1_000, 2_100, 5_000, 6_000, 11_000, 61_000];

impl Scenario {
    /// A fresh world; `fault_seed` non-zero turns on short reads and writes.
    pub fn new(fault_seed: u64) -> Scenario {
        let mut w = World::with_hub(server_config(), hub_config());
        if fault_seed != 0 {
            w.faults = Some(Faults::new(fault_seed, 64));
        }
        Scenario {
            w,
            peers: Vec::new(),
            seq: [0; 2],
            next_id: 0,
            store: Stored::default(),
            applied: 0,
            replied: BTreeSet::new(),
            restored: [None, None],
            fault_seed,
            seen: Default::default(),
            last_app_main: [None; 2],
            last_app_shown: [None, None],
            models: Default::default(),
            tally: Tally::default(),
            log: Vec::new(),
            venue: None,
        }
    }

    /// A fresh world with the venue's two feeds ([`venue_hub_config`]); operations then also
    /// connect, drop and publish on the feeds and switch users between them.
    pub fn with_venue(fault_seed: u64) -> Scenario {
        let mut s = Scenario::new(fault_seed);
        s.w = World::with_hub(server_config(), venue_hub_config());
        if fault_seed != 0 {
            s.w.faults = Some(Faults::new(fault_seed, 64));
        }
        s.venue = Some(VenueModel::default());
        s
    }

    fn hub_config(&self) -> HubConfig {
        if self.venue.is_some() {
            venue_hub_config()
        } else {
            hub_config()
        }
    }

    fn note(&mut self, s: String) {
        if self.log.len() >= 120 {
            self.log.remove(0);
        }
        let t = self.w.now.as_micros() / 1000;
        self.log.push(format!("t={t}ms {s}"));
    }

    /// Fail with the recent history.
    fn fail(&self, what: String) -> ! {
        let mut s = String::new();
        for l in &self.log {
            let _ = writeln!(s, "  {l}");
        }
        panic!("invariant broken: {what}\nlast operations:\n{s}");
    }

    fn add(&mut self, c: usize, role: Role) {
        debug_assert_eq!(c, self.peers.len());
        self.peers.push(Actor::new(role));
    }

    fn live(&self, c: usize) -> bool {
        !self.w.clients[c].closed && !self.peers[c].closing
    }

    /// The newest open client with this role.
    fn newest(&self, role: Role) -> Option<usize> {
        (0..self.peers.len())
            .rev()
            .find(|&c| self.peers[c].role == role && self.live(c))
    }

    /// Run `steps` operations (fewer if the choices run out), checking after each.
    pub fn run(&mut self, ch: &mut impl Choices, steps: usize) {
        for _ in 0..steps {
            if ch.exhausted() {
                break;
            }
            self.op(ch);
            self.tally.steps += 1;
            self.check();
        }
        self.finish();
    }

    fn op(&mut self, ch: &mut impl Choices) {
        let u = ch.pick(2);
        let app = ch.pick(3);
        let ops = if self.venue.is_some() { 33 } else { 25 };
        match ch.pick(ops) {
            25 => match ch.pick(5) {
                0 | 1 => self.feed_connect(ch.pick(2)),
                2 => self.feed_drop(ch.pick(2), ch.pick(2) == 0),
                3 => self.follow(u, ch.pick(2)),
                _ => {
                    // A burst of long lines, so that an app that stopped reading is backed up
                    // (its interims dropped, its finals queued, all of them delivered when it
                    // reads again).
                    let (f, n) = (ch.pick(2), 100 + ch.pick(200));
                    // Not the per-session publisher: a publisher backed up by what it is sent is
                    // not read (backpressure), which the model of its finals does not know.
                    let apps: Vec<usize> = (0..self.peers.len())
                        .filter(|&c| matches!(self.peers[c].role, Role::App(_, a) if a != STT))
                        .filter(|&c| self.live(c))
                        .collect();
                    let stalled = (!apps.is_empty()).then(|| apps[ch.pick(apps.len())]);
                    self.note(format!(
                        "feed {} bursts {n} lines, app {stalled:?} not reading",
                        FEEDS[f]
                    ));
                    if let Some(c) = stalled {
                        self.w.set_reading(c, false);
                    }
                    for _ in 0..n {
                        let kind = ch.pick(4);
                        self.feed_publish_padded(f, kind, 600);
                    }
                    // It reads again at once: a publisher held back by its backlog meanwhile
                    // must not be half-closed with its lines unread (the world would drop
                    // them with the close, where TCP would deliver them first).
                    if let Some(c) = stalled.filter(|&c| self.live(c)) {
                        self.note(format!("client {c} reading: true"));
                        self.w.set_reading(c, true);
                    }
                }
            },
            26..=32 => self.feed_publish(ch.pick(2), ch.pick(4)),
            0..=1 => self.glasses_connect(u),
            2 => self.glasses_drop(u, ch.pick(2) == 0),
            3 => self.glasses_reinit(u),
            4..=5 => self.lifecycle(u, app.min(NOTES), true),
            6 => self.lifecycle(u, app.min(NOTES), false),
            7..=9 => self.webhook(ch),
            10 => self.app_drop(u, app, ch.pick(2) == 0),
            11 => match ch.pick(6) {
                0 => self.app_intrude(u, app),
                1 => self.rest_lifecycle(u, app.min(NOTES), ch.pick(2) == 0),
                k => self.app_reconnect(u, app, k != 2),
            },
            12 => {
                let bits = if self.venue.is_some() { 512 } else { 64 };
                self.subscribe(u, app, ch.pick(bits))
            }
            13 => self.glasses_event(u, ch.pick(5)),
            14..=16 => self.publish(u, ch.pick(3) != 0),
            17 => {
                // A burst, so that throttle, lock and priority meet: apps display in turn,
                // sometimes a little apart.
                self.display(u, app, ch.pick(16));
                for _ in 0..ch.pick(4) {
                    if ch.pick(2) == 0 {
                        let ms = [40, 150, 400][ch.pick(3)];
                        self.note(format!("wait {ms} ms"));
                        self.w.advance(Duration::from_millis(ms));
                    }
                    self.display(u, ch.pick(3), ch.pick(16));
                }
            }
            18 => self.device_request(u, app, ch.pick(2) == 0),
            19 => self.device_reply(u, ch.pick(4)),
            20 => self.write_state(u, app, ch.pick(4)),
            21..=22 => {
                let ms = WAITS_MS[ch.pick(WAITS_MS.len())];
                self.note(format!("wait {ms} ms"));
                self.w.advance(Duration::from_millis(ms));
            }
            23 => self.fault(ch),
            _ => {
                if ch.pick(4) == 0 {
                    self.restart()
                } else {
                    self.w.advance(Duration::from_millis(20));
                }
            }
        }
    }

    // ---- glasses ---------------------------------------------------------------------------

    fn glasses_connect(&mut self, u: usize) {
        self.note(format!("glasses of {u} connect"));
        let c = self.w.connect();
        self.add(c, Role::Glasses(u));
        let bearer = format!(
            "Authorization: Bearer {}",
            jwt::glasses_token(USERS[u], SECRET)
        );
        let (status, body) = self.w.upgrade_with(c, "/glasses-ws", &[&bearer]);
        if status != 101 {
            self.fail(format!("glasses upgrade refused: {status} {body}"));
        }
        self.w.send_text(c, r#"{"type":"connection_init"}"#);
    }

    fn glasses_drop(&mut self, u: usize, reset: bool) {
        let Some(g) = self.newest(Role::Glasses(u)) else {
            return;
        };
        self.note(format!(
            "glasses {g} of {u} {}",
            if reset { "reset" } else { "half-close" }
        ));
        if reset {
            self.w.reset(g);
        } else {
            self.half_close(g);
        }
    }

    fn glasses_reinit(&mut self, u: usize) {
        if let Some(g) = self.newest(Role::Glasses(u)) {
            self.note(format!("glasses {g} of {u} re-init"));
            self.w.send_text(g, r#"{"type":"connection_init"}"#);
        }
    }

    fn lifecycle(&mut self, u: usize, app: usize, start: bool) {
        let Some(g) = self.newest(Role::Glasses(u)) else {
            return;
        };
        let ty = if start { "start_app" } else { "stop_app" };
        self.note(format!("glasses {g} of {u}: {ty} {}", PACKAGES[app]));
        self.w.send_text(
            g,
            &json!({"type": ty, "packageName": PACKAGES[app]}).to_string(),
        );
    }

    fn glasses_event(&mut self, u: usize, which: usize) {
        let Some(g) = self.newest(Role::Glasses(u)) else {
            return;
        };
        self.note(format!("glasses {g} of {u}: event {which}"));
        let ev = match which {
            0 => json!({"type": "button_press", "buttonId": "select", "pressType": "short"}),
            1 => json!({"type": "head_position", "position": "up"}),
            2 => json!({"type": "location_update", "lat": u, "lng": 1.5}),
            3 => json!({"type": "VAD", "status": true}),
            _ => {
                self.w.send_frame(g, true, Opcode::Binary, &[u as u8; 64]);
                return;
            }
        };
        self.w.send_text(g, &ev.to_string());
    }

    // ---- apps ------------------------------------------------------------------------------

    /// Answer one open outbound request the way its app server would.
    fn webhook(&mut self, ch: &mut impl Choices) {
        let open = self.w.open_outbound();
        if open.is_empty() {
            return;
        }
        let i = open[ch.pick(open.len())];
        let body = self.w.outbound[i].json();
        let kind = body
            .as_ref()
            .and_then(|b| b["type"].as_str().map(String::from));
        if kind.as_deref() != Some("session_request") {
            if body.is_some() {
                self.note(format!("outbound {i} ({kind:?}) answered 200"));
                self.w.respond_http(i, 200);
            }
            return;
        }
        let sid = body
            .as_ref()
            .map_or("", |b| b["sessionId"].as_str().unwrap_or(""));
        let Some((u, app)) = (0..2)
            .flat_map(|u| (0..3).map(move |a| (u, a)))
            .find(|&(u, a)| session_id(u, a) == sid)
        else {
            self.fail(format!("a session_request for an unknown session {sid:?}"));
        };
        match ch.pick(8) {
            0..=3 => {
                self.note(format!("webhook {i} for {u}/{app}: 200, app connects"));
                self.w.respond_http(i, 200);
                self.app_connect(u, app, true);
                // As the SDK does right after the ack: its subscriptions, mostly transcripts.
                let bits = if self.venue.is_some() { 512 } else { 64 };
                let mask = ch.pick(bits) | usize::from(ch.pick(4) != 0);
                self.subscribe(u, app, mask);
            }
            4 => {
                self.note(format!("webhook {i} for {u}/{app}: app connects, then 200"));
                self.app_connect(u, app, true);
                if !self.w.outbound[i].closed {
                    self.w.respond_http(i, 200);
                }
            }
            5 => {
                self.note(format!("webhook {i} for {u}/{app}: 200, wrong key"));
                self.w.respond_http(i, 200);
                self.app_connect(u, app, false);
            }
            6 => {
                self.note(format!("webhook {i} for {u}/{app}: 500"));
                self.w.respond_http(i, 500);
            }
            _ => {
                self.note(format!("webhook {i} for {u}/{app}: connect fails"));
                self.w.fail_http(i);
            }
        }
    }

    fn app_connect(&mut self, u: usize, app: usize, right_key: bool) {
        let peer = if app == STT {
            Peer::InProcess
        } else {
            Peer::Ip(([10, 0, 0, 2 + app as u8], 40000).into())
        };
        let c = self.w.connect_from(peer);
        self.add(c, Role::App(u, app));
        let status = self.w.upgrade(c, "/app-ws");
        if status != 101 {
            self.fail(format!("app upgrade refused: {status}"));
        }
        let k = if right_key {
            key(app)
        } else {
            "wrong".to_string()
        };
        let init = json!({"type": "tpa_connection_init", "packageName": PACKAGES[app],
            "sessionId": session_id(u, app), "apiKey": k});
        self.w.send_text(c, &init.to_string());
    }

    fn app_drop(&mut self, u: usize, app: usize, reset: bool) {
        let Some(c) = self.newest(Role::App(u, app)) else {
            return;
        };
        self.note(format!(
            "app {c} ({u}/{app}) {}",
            if reset { "crashes" } else { "half-closes" }
        ));
        if reset {
            self.w.reset(c);
        } else {
            self.half_close(c);
        }
    }

    /// The app reconnects on its own, as the SDK does after a drop.
    fn app_reconnect(&mut self, u: usize, app: usize, right_key: bool) {
        self.note(format!("app {u}/{app} reconnects (key ok: {right_key})"));
        self.app_connect(u, app, right_key);
    }

    /// An app with its own right key asks to join another user's session: it must not be
    /// bound there (the checker would see an ack for the wrong session).
    fn app_intrude(&mut self, u: usize, app: usize) {
        self.note(format!(
            "app {u}/{app} tries to join as {}",
            PACKAGES[(app + 1) % 3]
        ));
        let c = self.w.connect_from(Peer::Ip(([10, 0, 0, 7], 40000).into()));
        self.add(c, Role::App(u, app));
        if self.w.upgrade(c, "/app-ws") != 101 {
            self.fail("app upgrade refused".into());
        }
        let init = json!({"type": "tpa_connection_init", "packageName": PACKAGES[app],
            "sessionId": format!("{}-{}", USERS[u], PACKAGES[(app + 1) % 3]), "apiKey": key(app)});
        self.w.send_text(c, &init.to_string());
    }

    /// Start or stop through the REST endpoint, with the glasses' token.
    fn rest_lifecycle(&mut self, u: usize, app: usize, start: bool) {
        let verb = if start { "start" } else { "stop" };
        self.note(format!("REST {verb} {} for {u}", PACKAGES[app]));
        let c = self.w.connect();
        self.add(c, Role::Http);
        let req = format!(
            "POST /apps/{}/{verb} HTTP/1.1\r\nHost: sim\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\n\r\n",
            PACKAGES[app],
            jwt::glasses_token(USERS[u], SECRET)
        );
        self.w.send_raw(c, req.as_bytes());
    }

    fn subscribe(&mut self, u: usize, app: usize, mask: usize) {
        let Some(c) = self.newest(Role::App(u, app)) else {
            return;
        };
        let subs: Vec<&str> = STREAMS
            .iter()
            .chain(&VENUE_STREAMS)
            .enumerate()
            .filter(|(i, _)| mask >> i & 1 == 1)
            .map(|(_, s)| *s)
            .collect();
        self.note(format!("app {c} ({u}/{app}) subscribes {subs:?}"));
        self.peers[c]
            .subscribed
            .extend(subs.iter().map(|s| s.to_string()));
        self.w.send_text(
            c,
            &json!({"type": "subscription_update", "packageName": PACKAGES[app],
                "sessionId": session_id(u, app), "subscriptions": subs})
            .to_string(),
        );
    }

    /// The publishing system app of `u`'s session sends a transcript (final: numbered).
    fn publish(&mut self, u: usize, is_final: bool) {
        let Some(p) = self.newest(Role::App(u, STT)) else {
            return;
        };
        let text = if is_final {
            format!("u{u}#{}", self.seq[u])
        } else {
            format!("u{u}~")
        };
        // Who must get it: apps of this session connected on this very client, acked, reading,
        // and subscribed to English transcripts as the hub has it.
        let publisher_ok = self.bound_here(u, STT, p) && !self.w.clients[p].held;
        if is_final {
            if publisher_ok {
                for c in 0..self.peers.len() {
                    let Role::App(cu, ca) = self.peers[c].role else {
                        continue;
                    };
                    let subscribed = self
                        .w
                        .server
                        .hub
                        .subscriptions(USERS[cu], PACKAGES[ca])
                        .iter()
                        .any(|s| s == "transcription:en-US");
                    if cu == u && subscribed && self.bound_here(cu, ca, c) {
                        self.peers[c].owed.push(self.seq[u]);
                    }
                }
            }
            self.seq[u] += 1;
        }
        self.note(format!(
            "stt {p} of {u} publishes {text:?} (bound: {publisher_ok})"
        ));
        let data = json!({"type": "transcription", "text": text, "isFinal": is_final,
            "startTime": 0, "endTime": 1, "transcribeLanguage": "en-US"});
        self.w.send_text(
            p,
            &json!({"type": "data_stream", "streamType": "transcription", "data": data})
                .to_string(),
        );
    }

    // ---- venue feeds -----------------------------------------------------------------------

    /// Feed `f`'s publisher connects (replacing any other) with `sessionId: "venue:<f>"`.
    fn feed_connect(&mut self, f: usize) {
        self.note(format!("feed {} publisher connects", FEEDS[f]));
        let c = self.w.connect_from(Peer::InProcess);
        self.add(c, Role::Feed(f));
        if self.w.upgrade(c, "/app-ws") != 101 {
            self.fail("feed upgrade refused".into());
        }
        let init = json!({"type": "tpa_connection_init", "packageName": FEED_PACKAGES[f],
            "sessionId": format!("venue:{}", FEEDS[f]),
            "apiKey": format!("{}-key", FEED_PACKAGES[f])});
        self.w.send_text(c, &init.to_string());
    }

    fn feed_drop(&mut self, f: usize, reset: bool) {
        let Some(c) = self.newest(Role::Feed(f)) else {
            return;
        };
        self.note(format!(
            "feed {} publisher {c} {}",
            FEEDS[f],
            if reset { "crashes" } else { "half-closes" }
        ));
        if reset {
            self.w.reset(c);
        } else {
            self.half_close(c);
        }
    }

    /// The operator points user `u` at feed `f` (`POST /ui/api/feeds/{feed}/follow`).
    fn follow(&mut self, u: usize, f: usize) {
        self.note(format!("operator: {u} follows {}", FEEDS[f]));
        let c = self.w.connect();
        self.add(c, Role::Http);
        let body = json!({"user": USERS[u]}).to_string();
        let req = format!(
            "POST /ui/api/feeds/{}/follow HTTP/1.1\r\nHost: sim\r\nAuthorization: Bearer {OPERATOR}\r\nContent-Length: {}\r\n\r\n{body}",
            FEEDS[f],
            body.len()
        );
        self.w.send_raw(c, req.as_bytes());
        let status = self.w.clients[c].take_http_response().map(|r| r.0);
        if status != Some(200) {
            self.fail(format!("the follow switch answered {status:?}"));
        }
        let v = self.venue.as_mut().expect("a venue");
        v.follow[u] = f;
        // The session, if any, is sent the feed's last lines at once.
        let last = v.last[f];
        v.allowed[u].extend(last.iter().flatten());
    }

    /// Feed `f`'s publisher sends a numbered line: `kind` 0 an interim transcript, 1 a final
    /// one, 2 a final translation, 3 an interim one.
    fn feed_publish(&mut self, f: usize, kind: usize) {
        self.feed_publish_padded(f, kind, 0);
    }

    /// [`Self::feed_publish`], the line's data padded with `pad` bytes (and noted only when
    /// not padded: a burst is noted once).
    fn feed_publish_padded(&mut self, f: usize, kind: usize, pad: usize) {
        let Some(p) = self.newest(Role::Feed(f)) else {
            // A venue's recogniser is mostly up: it comes back on its own.
            return self.feed_connect(f);
        };
        let v = self.venue.as_mut().expect("a venue");
        let n = v.seq;
        v.seq += 1;
        let (translation, is_final) = (kind >= 2, kind == 1 || kind == 2);
        // Who may get it: every session following the feed now. Who must: every app of such
        // a session bound on its newest connection and subscribed (as the hub has it) to
        // the kind — if the hub has this very client as the feed's publisher.
        for u in 0..USERS.len() {
            if v.follow[u] == f {
                v.allowed[u].insert(n);
            }
        }
        let follow = v.follow;
        let connected = self.w.server.hub.operator_feeds()[f]["connected"] == true;
        // The hub binds a publisher at its init (its ack may not have been read yet), and a
        // newer one replaces it: the newest open one is the hub's, if it has one.
        let bound = connected && self.newest(Role::Feed(f)) == Some(p);
        let k = if translation { 'x' } else { 't' };
        if is_final && bound {
            self.venue.as_mut().expect("a venue").last[f][usize::from(translation)] = Some(n);
            for c in 0..self.peers.len() {
                let Role::App(cu, ca) = self.peers[c].role else {
                    continue;
                };
                let subscribed = self
                    .w
                    .server
                    .hub
                    .subscriptions(USERS[cu], PACKAGES[ca])
                    .iter()
                    .any(|s| venue_kind(s) == Some(k));
                if follow[cu] == f && subscribed && self.bound_here(cu, ca, c) {
                    self.peers[c].venue_owed.push((k, n));
                }
            }
        }
        let text = format!("v{f}#{n}");
        if pad == 0 {
            self.note(format!(
                "feed {} publisher {p} publishes {k}{} {text:?} (bound: {bound})",
                FEEDS[f],
                if is_final { " final" } else { "" }
            ));
        }
        let original = "x".repeat(pad.max(1));
        let data = if translation {
            json!({"type": "translation", "text": text, "originalText": original,
                "isFinal": is_final, "transcribeLanguage": "fr-FR", "translateLanguage": "en-US",
                "startTime": 0, "endTime": 1})
        } else {
            json!({"type": "transcription", "text": text, "isFinal": is_final,
                "startTime": 0, "endTime": 1, "transcribeLanguage": "fr-FR",
                "speakerId": original})
        };
        let stream = if translation {
            "translation"
        } else {
            "transcription"
        };
        self.w.send_text(
            p,
            &json!({"type": "data_stream", "streamType": stream, "data": data}).to_string(),
        );
    }

    /// App `c` of `u` got a venue line under its subscription string `stream`: one its
    /// session's feed published (or replayed) and of the kind the string names.
    fn app_got_venue(&mut self, c: usize, u: usize, app: usize, stream: &str, m: &Value) {
        let data = &m["data"];
        let n: Option<u64> = data["text"]
            .as_str()
            .and_then(|t| t.split_once('#'))
            .and_then(|(_, n)| n.parse().ok());
        let Some(n) = n else {
            self.fail(format!(
                "app {c} ({u}/{app}) got a venue line without a number: {m}"
            ));
        };
        let v = self.venue.as_ref().expect("a venue");
        if !v.allowed[u].contains(&n) {
            self.fail(format!(
                "app {c} ({u}/{app}) got venue line #{n} of a feed its session did not follow: {m}"
            ));
        }
        let k = if data["type"] == "translation" {
            'x'
        } else {
            't'
        };
        if venue_kind(stream) != Some(k) {
            self.fail(format!(
                "app {c} ({u}/{app}) got a {k} line under {stream}: {m}"
            ));
        }
        if data["isFinal"] == true {
            self.peers[c].venue_got.push((k, n));
        }
    }

    /// Every venue final owed to live, reading client `c` since the last check came, in
    /// order (lines replayed to it besides may come in between).
    fn check_venue_finals(&mut self, c: usize) {
        let p = &self.peers[c];
        let mut got = p.venue_got.iter().peekable();
        for &owed in &p.venue_owed {
            while got.next_if(|&&g| g != owed).is_some() {}
            if got.next().is_none() {
                let Role::App(u, app) = p.role else { return };
                self.fail(format!(
                    "app {c} ({u}/{app}) never got venue final {owed:?} in order (got {:?}, owed {:?})",
                    p.venue_got, p.venue_owed
                ));
            }
        }
        self.tally.venue_finals_checked += p.venue_owed.len() as u64;
        self.peers[c].venue_owed.clear();
        self.peers[c].venue_got.clear();
    }

    /// Client `c` is the newest acked connection of app `app` of user `u`, open, and the hub
    /// has that app active.
    fn bound_here(&self, u: usize, app: usize, c: usize) -> bool {
        let newest_acked = (0..self.peers.len()).rev().find(|&k| {
            self.peers[k].role == Role::App(u, app) && self.peers[k].acked && self.live(k)
        });
        newest_acked == Some(c)
            && self.w.server.hub.app_state(USERS[u], PACKAGES[app]) == Some("active")
    }

    fn display(&mut self, u: usize, app: usize, how: usize) {
        let Some(c) = self.newest(Role::App(u, app)) else {
            return;
        };
        self.next_id += 1;
        let force = how & 1 == 1;
        let view = if how & 2 == 2 { "dashboard" } else { "main" };
        let duration = [None, Some(0), Some(500), Some(4000)][how >> 2 & 3];
        let text = format!("u{u}|{}|{}", PACKAGES[app], self.next_id);
        self.note(format!(
            "app {c} ({u}/{app}) displays {text} on {view} force={force} duration={duration:?}"
        ));
        let mut m = json!({"type": "display_event", "packageName": PACKAGES[app],
            "sessionId": session_id(u, app), "view": view,
            "layout": {"layoutType": "text_wall", "text": text}});
        if force {
            m["forceDisplay"] = json!(true);
        }
        if let Some(d) = duration {
            m["durationMs"] = json!(d);
        }
        self.tally.displays += 1;
        self.w.send_text(c, &m.to_string());
    }

    /// An audio play request (replied by `requestId`), or a location poll (replied by
    /// `correlationId` as a `location_update` to the poller alone).
    fn device_request(&mut self, u: usize, app: usize, poll: bool) {
        let Some(c) = self.newest(Role::App(u, app)) else {
            return;
        };
        self.next_id += 1;
        let id = format!("r{}-u{u}-a{app}", self.next_id);
        self.note(format!("app {c} ({u}/{app}) asks {id} (poll: {poll})"));
        self.peers[c].asked.insert(id.clone());
        let m = if poll {
            json!({"type": "location_poll_request", "packageName": PACKAGES[app],
                "sessionId": session_id(u, app), "correlationId": id, "accuracy": "high"})
        } else {
            json!({"type": "audio_play_request", "packageName": PACKAGES[app],
                "sessionId": session_id(u, app), "requestId": id,
                "audioUrl": "http://media.sim/a.mp3", "volume": 1, "stopOtherAudio": false})
        };
        self.w.send_text(c, &m.to_string());
    }

    fn device_reply(&mut self, u: usize, which: usize) {
        let Some(g) = self.newest(Role::Glasses(u)) else {
            return;
        };
        if self.peers[g].to_answer.is_empty() {
            return;
        }
        let i = which % self.peers[g].to_answer.len();
        let id = self.peers[g].to_answer.remove(i);
        self.note(format!("glasses {g} of {u} answer {id}"));
        let reply = if let Some(poll) = id.strip_prefix('p') {
            json!({"type": "location_update", "lat": u, "lng": 2.5, "correlationId": poll})
        } else {
            json!({"type": "audio_play_response", "requestId": id, "success": true})
        };
        self.w.send_text(g, &reply.to_string());
    }

    fn write_state(&mut self, u: usize, app: usize, which: usize) {
        self.next_id += 1;
        let n = self.next_id;
        let user = USERS[u].replace('@', "%40");
        let (method, path, auth, body) = match which {
            0 => (
                "PUT",
                format!("/api/sdk/simple-storage/{user}"),
                format!("{}:{}", PACKAGES[app], key(app)),
                json!({"data": {format!("k{}", n % 3): format!("v{n}")}}).to_string(),
            ),
            1 => (
                "DELETE",
                format!("/api/sdk/simple-storage/{user}/k{}", n % 3),
                format!("{}:{}", PACKAGES[app], key(app)),
                String::new(),
            ),
            2 => (
                "PUT",
                format!("/api/sdk/simple-storage/{user}"),
                format!("{}:wrong", PACKAGES[app]),
                json!({"data": {"k0": "forged"}}).to_string(),
            ),
            _ => (
                "POST",
                format!("/api/settings/{}", PACKAGES[app]),
                jwt::glasses_token(USERS[u], SECRET),
                json!({"settings": {"fontSize": n % 40}}).to_string(),
            ),
        };
        self.note(format!("{method} {path} ({which})"));
        let c = self.w.connect();
        self.add(c, Role::Http);
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: sim\r\nAuthorization: Bearer {auth}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.w.send_raw(c, req.as_bytes());
    }

    // ---- faults and restarts ---------------------------------------------------------------

    fn fault(&mut self, ch: &mut impl Choices) {
        let n = self.w.clients.len();
        if n == 0 {
            return;
        }
        let c = ch.pick(n);
        if self.w.clients[c].closed {
            return;
        }
        match ch.pick(4) {
            0 => {
                let reading = !self.w.clients[c].reading;
                self.note(format!("client {c} reading: {reading}"));
                self.w.set_reading(c, reading);
            }
            // A feed's publisher holds nothing back: what it publishes must reach the hub
            // when the model decides who follows the feed.
            1 if matches!(self.peers[c].role, Role::Feed(_)) => {}
            1 => {
                let held = !self.w.clients[c].held;
                self.note(format!("client {c} holds its sends: {held}"));
                self.w.hold(c, held);
            }
            2 => {
                self.note(format!("client {c} reset"));
                self.w.reset(c);
            }
            _ => {
                self.note(format!("client {c} half-closes"));
                self.half_close(c);
            }
        }
    }

    /// Client `c` closes its sending side: it sends nothing more, and what it is still sent
    /// it may or may not read.
    fn half_close(&mut self, c: usize) {
        self.peers[c].closing = true;
        self.w.client_eof(c);
    }

    /// The box restarts: a new core from what the store holds; every connection is gone.
    fn restart(&mut self) {
        self.sync_store();
        self.note("restart from the store".into());
        let mut before = [BTreeSet::new(), BTreeSet::new()];
        for (u, b) in before.iter_mut().enumerate() {
            *b = self.store.running(USERS[u]);
        }
        let mut w = World::with_state(server_config(), self.hub_config(), self.store.snapshot());
        if self.fault_seed != 0 {
            w.faults = Some(Faults::new(self.fault_seed ^ self.tally.steps, 64));
        }
        self.w = w;
        self.peers.clear();
        self.applied = 0;
        self.last_app_main = [None; 2];
        self.last_app_shown = [None, None];
        self.models = Default::default();
        self.tally.restarts += 1;
        if let Some(v) = self.venue.as_mut() {
            v.follow = [0; 2];
            v.last = Default::default();
        }
        for (u, b) in before.into_iter().enumerate() {
            let now: BTreeSet<String> = self
                .w
                .server
                .hub
                .durable()
                .running(USERS[u])
                .into_iter()
                .collect();
            if now != b {
                self.fail(format!(
                    "after a restart {} runs {now:?}, before {b:?}",
                    USERS[u]
                ));
            }
            let mut want = b;
            want.insert(PACKAGES[STT].to_string());
            self.restored[u] = Some(want);
        }
    }

    fn sync_store(&mut self) {
        for p in &self.w.persisted[self.applied..] {
            self.store.apply(p);
        }
        self.applied = self.w.persisted.len();
    }

    // ---- invariants ------------------------------------------------------------------------

    /// Every invariant of the module comment, on everything that happened since the last check.
    pub fn check(&mut self) {
        let audit = {
            let net = &self.w.server.net;
            self.w.server.hub.audit(|id| net.get(id).is_some())
        };
        if let Err(e) = audit {
            self.fail(format!("hub audit: {e}"));
        }
        if let Err(e) = self.w.server.hub.venue_demand_audit() {
            self.fail(e);
        }
        let net = &self.w.server.net;
        let waiting: usize = net.iter().map(|c| c.pending()).sum();
        if net.total_output() != waiting {
            self.fail(format!(
                "the running total of output says {} bytes, the connections hold {waiting}",
                net.total_output()
            ));
        }
        let cap = server_config().max_output + 2 * 65536 + 64;
        for c in &self.w.clients {
            let out = self.w.server.output(c.id).len();
            if out > cap {
                self.fail(format!("{out} bytes of output held for {:?}", c.id));
            }
        }
        for c in 0..self.w.clients.len() {
            if !self.w.clients[c].reading {
                continue;
            }
            let msgs = self.w.json_messages(c);
            for m in msgs {
                if m.get("close").is_some() {
                    self.peers[c].closing = true;
                }
                match self.peers[c].role {
                    Role::App(u, app) => self.app_got(c, u, app, &m),
                    Role::Glasses(u) => self.glasses_got(c, u, &m),
                    Role::Feed(_) => {
                        if m["type"] == "tpa_connection_ack" {
                            self.peers[c].acked = true;
                        }
                    }
                    Role::Http => {}
                }
            }
        }
        for c in 0..self.peers.len() {
            let p = &self.peers[c];
            if !self.live(c) || !self.w.clients[c].reading {
                continue;
            }
            if let Some(&missing) = p.owed.iter().find(|&&s| p.last_final < Some(s)) {
                let Role::App(u, app) = p.role else { continue };
                self.fail(format!(
                    "app {c} ({u}/{app}) never got final transcript #{missing} (last {:?})",
                    p.last_final
                ));
            }
            self.tally.finals_checked += p.owed.len() as u64;
            self.peers[c].owed.clear();
            self.check_venue_finals(c);
        }
        self.check_screens();
        self.check_store();
    }

    fn app_got(&mut self, c: usize, u: usize, app: usize, m: &Value) {
        let ty = m["type"].as_str().unwrap_or("");
        match ty {
            "tpa_connection_ack" => {
                if m["sessionId"] != session_id(u, app).as_str() {
                    self.fail(format!("app {c} ({u}/{app}) acked for {}", m["sessionId"]));
                }
                self.peers[c].acked = true;
                // Subscriptions belong to the app in the session: a connection that replaces
                // a live one takes over its set until it sends its own.
                let inherited: Vec<String> = (0..self.peers.len())
                    .filter(|&k| {
                        k != c
                            && self.peers[k].role == Role::App(u, app)
                            && self.peers[k].acked
                            && !self.w.clients[k].closed
                    })
                    .flat_map(|k| self.peers[k].subscribed.iter().cloned().collect::<Vec<_>>())
                    .collect();
                self.peers[c].subscribed.extend(inherited);
            }
            "data_stream" => {
                let stream = m["streamType"].as_str().unwrap_or("").to_string();
                if m["sessionId"] != session_id(u, app).as_str() {
                    self.fail(format!("app {c} ({u}/{app}) got another session's {m}"));
                }
                let correlated = m["data"]["correlationId"].as_str();
                if let Some(id) = correlated {
                    // A poll's answer: to the app that polled, once.
                    let asked = self.peers.iter().any(|p| p.asked.contains(id));
                    if !id.ends_with(&format!("-u{u}-a{app}")) || !asked {
                        self.fail(format!(
                            "app {c} ({u}/{app}) got a poll answer it did not ask: {m}"
                        ));
                    }
                    if !self.replied.insert(id.to_string()) {
                        self.fail(format!("poll answer {id} delivered twice"));
                    }
                    self.tally.replies += 1;
                }
                let correlated = correlated.is_some();
                if !self.peers[c].subscribed.contains(&stream) && !correlated {
                    self.fail(format!(
                        "app {c} ({u}/{app}) got unsubscribed {stream}: {m}"
                    ));
                }
                if check_subscription(&apps()[app], &stream) != SubCheck::Ok {
                    self.fail(format!("app {c} ({u}/{app}) got unpermitted {stream}"));
                }
                if VENUE_STREAMS.contains(&stream.as_str()) {
                    return self.app_got_venue(c, u, app, &stream, m);
                }
                let data = &m["data"];
                let tag = match stream.as_str() {
                    "location_update" => data["lat"].as_u64().map(|x| x as usize),
                    "transcription:en-US" => data["text"]
                        .as_str()
                        .and_then(|t| t.strip_prefix('u'))
                        .and_then(|t| t.get(..1))
                        .and_then(|t| t.parse().ok()),
                    _ => Some(u),
                };
                if tag != Some(u) {
                    self.fail(format!("app {c} ({u}/{app}) got another user's {m}"));
                }
                if data["isFinal"] == true {
                    let seq: Option<u64> = data["text"]
                        .as_str()
                        .and_then(|t| t.split_once('#'))
                        .and_then(|(_, n)| n.parse().ok());
                    let Some(seq) = seq else {
                        self.fail(format!("a final without a number: {m}"));
                    };
                    if self.peers[c].last_final >= Some(seq) {
                        self.fail(format!(
                            "app {c} ({u}/{app}) got final #{seq} after #{:?} (duplicate or out of order)",
                            self.peers[c].last_final
                        ));
                    }
                    self.peers[c].last_final = Some(seq);
                }
            }
            "audio_play_response" => {
                let id = m["requestId"].as_str().unwrap_or("").to_string();
                let asked_here = self.peers.iter().any(|p| p.asked.contains(&id));
                let ours = id.ends_with(&format!("-u{u}-a{app}"));
                if !ours || (m["success"] == true && !asked_here) {
                    self.fail(format!(
                        "app {c} ({u}/{app}) got a reply it did not ask: {m}"
                    ));
                }
                if m["success"] == true && !self.replied.insert(id.clone()) {
                    self.fail(format!("reply {id} delivered twice"));
                }
                self.tally.replies += 1;
            }
            _ => {}
        }
    }

    fn glasses_got(&mut self, c: usize, u: usize, m: &Value) {
        match m["type"].as_str().unwrap_or("") {
            "connection_ack" => {
                self.peers[c].acked = true;
                self.peers[c].acked_at = Some(sent_at(m));
                if let Some(want) = self.restored[u].take() {
                    let mut have = BTreeSet::new();
                    for p in PACKAGES {
                        let st = self.w.server.hub.app_state(USERS[u], p);
                        if st.is_some_and(|s| s != "failed") {
                            have.insert(p.to_string());
                        }
                    }
                    if have != want {
                        self.fail(format!(
                            "after a restart {}'s glasses got {have:?}, ran {want:?}",
                            USERS[u]
                        ));
                    }
                }
            }
            ty @ ("audio_play_request" | "request_single_location") => {
                let poll = ty == "request_single_location";
                let key = if poll { "correlationId" } else { "requestId" };
                let id = m[key].as_str().unwrap_or("").to_string();
                if !id.contains(&format!("-u{u}-")) {
                    self.fail(format!("glasses of {u} got another user's request {m}"));
                }
                // A poll's answer is marked to tell it from an audio reply.
                let id = if poll { format!("p{id}") } else { id };
                self.peers[c].to_answer.push(id);
            }
            "display_event" if m["view"] == "main" => {
                let package = m["packageName"].as_str().unwrap_or("").to_string();
                let text = m["layout"]["text"].as_str().unwrap_or("").to_string();
                if self.venue.is_some() && package == SYSTEM && text == FEED_OFFLINE {
                    self.tally.offline_lines += 1;
                }
                if PACKAGES.contains(&package.as_str()) {
                    let want = format!("u{u}|{package}|");
                    if !text.starts_with(&want) {
                        self.fail(format!("glasses of {u} shown {text:?} as {package}'s"));
                    }
                    let forced = self.forced_text(&text);
                    let now = sent_at(m);
                    // A display shown before and now restored is not a new one.
                    let again = !self.seen[u].insert(text.clone());
                    let resent = self.peers[c].acked_at == Some(now);
                    // A restore (the display before it stopped, dropped or expired) is shown
                    // at once by the rules; only a display that follows one still standing is
                    // held to the throttle.
                    let standing = self.last_app_shown[u].as_ref().is_some_and(|p| {
                        let app = PACKAGES.iter().position(|x| *x == p.package);
                        let alive = app.is_some_and(|a| {
                            self.w.server.hub.app_state(USERS[u], PACKAGES[a]) == Some("active")
                        });
                        let unexpired = p
                            .duration_ms
                            .is_none_or(|d| d > 0 && now < p.at + Duration::from_millis(d));
                        alive && unexpired
                    });
                    let this = Shown {
                        package: package.clone(),
                        text: text.clone(),
                        at: now,
                        duration_ms: m["durationMs"].as_u64(),
                    };
                    self.last_app_shown[u] = Some(this);
                    if !forced && !again && !resent {
                        if let Some(last) = self.last_app_main[u].filter(|_| standing) {
                            if now.saturating_since(last) < THROTTLE {
                                self.fail(format!(
                                    "glasses of {u}: app displays {:?} apart, throttle {THROTTLE:?}",
                                    now.saturating_since(last)
                                ));
                            }
                        }
                        self.last_app_main[u] = Some(now);
                    }
                }
                self.peers[c].main = Some(Shown {
                    package,
                    text,
                    at: sent_at(m),
                    duration_ms: m["durationMs"].as_u64(),
                });
            }
            _ => {}
        }
    }

    /// Whether the display whose text is `text` was sent with `forceDisplay` (from the log).
    fn forced_text(&self, text: &str) -> bool {
        self.log
            .iter()
            .any(|l| l.contains(&format!("displays {text} ")) && l.contains("force=true"))
    }

    fn check_screens(&mut self) {
        for (u, &user) in USERS.iter().enumerate() {
            match self.w.server.hub.take_display_trace(user) {
                None => self.models[u] = Model::default(),
                Some(trace) => {
                    for (at, input) in trace {
                        self.models[u].feed(at, input.into());
                    }
                }
            }
        }
        for (u, &user) in USERS.iter().enumerate() {
            let Some(g) = self.newest(Role::Glasses(u)) else {
                continue;
            };
            let p = &self.peers[g];
            if !p.acked || !self.w.clients[g].reading || self.w.clients[g].held {
                continue;
            }
            let hub = &self.w.server.hub;
            // Only the session's current glasses follow the screen.
            if hub.app_state(user, PACKAGES[STT]).is_none() {
                continue;
            }
            let Some(shown) = p.main.clone() else {
                continue;
            };
            // The box's own lines (boot card, clear) are the model's only while the box shows
            // no line of its own besides: with venue feeds it shows "Captions feed offline"
            // (and clears it), which the model does not know, so there only app displays are
            // checked against it.
            if shown.package == SYSTEM && self.venue.is_some() {
                continue;
            }
            let want = self.models[u].expected(self.w.now);
            let agrees = match &want {
                Expected::Nothing => true,
                Expected::Boot => shown.package == SYSTEM && !shown.text.is_empty(),
                Expected::Clear => shown.package == SYSTEM && shown.text.is_empty(),
                Expected::App { app, text } => {
                    shown.package == PACKAGES[*app] && shown.text == *text
                }
            };
            if want != Expected::Nothing {
                self.tally.screens_modelled += 1;
            }
            if !agrees {
                self.fail(format!(
                    "glasses of {u} show {}'s {:?}, the display rules say {want:?}",
                    shown.package, shown.text
                ));
            }
            let hub = &self.w.server.hub;
            let screens = hub.screens(user, self.w.now);
            let manager = screens.iter().find(|s| s.view == "main");
            let app_shown = PACKAGES.contains(&shown.package.as_str());
            if manager.is_none() && app_shown {
                self.fail(format!(
                    "glasses of {u} show {}'s {:?}, the manager shows nothing",
                    shown.package, shown.text
                ));
            }
            if let Some(m) = manager {
                if m.package_name != shown.package {
                    self.fail(format!(
                        "glasses of {u} show {}'s {:?}, the manager says {}'s",
                        shown.package, shown.text, m.package_name
                    ));
                }
            }
            if let Some(app) = PACKAGES.iter().position(|p| *p == shown.package) {
                let state = hub.app_state(user, PACKAGES[app]);
                if state != Some("active") {
                    self.fail(format!(
                        "glasses of {u} show {:?} of {} which is {state:?}",
                        shown.text, shown.package
                    ));
                }
                if let Some(d) = shown.duration_ms.filter(|&d| d > 0) {
                    if self.w.now > shown.at + Duration::from_millis(d) {
                        self.fail(format!(
                            "glasses of {u} still show {:?} {d} ms after it was shown",
                            shown.text
                        ));
                    }
                }
            }
        }
    }

    fn check_store(&mut self) {
        self.sync_store();
        let d = self.w.server.hub.durable();
        for user in USERS {
            let running: BTreeSet<String> = d.running(user).into_iter().collect();
            if running != self.store.running(user) {
                self.fail(format!("durable running of {user} differs from the store"));
            }
            for p in PACKAGES {
                let held = d.storage(user, p).cloned().unwrap_or_default();
                let stored: BTreeMap<String, String> = self
                    .store
                    .storage
                    .iter()
                    .filter(|((u, pk, _), _)| u == user && pk == p)
                    .map(|((_, _, k), v)| (k.clone(), v.clone()))
                    .collect();
                if held != stored {
                    self.fail(format!("storage of {user}/{p} differs from the store"));
                }
            }
        }
    }

    /// At the end: everything closes; time alone winds the sessions down without a panic.
    fn finish(&mut self) {
        for c in 0..self.w.clients.len() {
            if self.live(c) {
                self.w.set_reading(c, true);
                self.w.hold(c, false);
            }
        }
        self.check();
        for c in 0..self.w.clients.len() {
            if self.live(c) {
                self.w.reset(c);
            }
        }
        for _ in 0..8 {
            while let Some(&i) = self.w.open_outbound().first() {
                self.w.fail_http(i);
            }
            self.w.advance(Duration::from_secs(61));
            self.check();
        }
        if self.w.server.hub.session_count() != 0 {
            self.fail("sessions outlived every grace period".into());
        }
    }
}
