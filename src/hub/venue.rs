//! Core layer (sans-IO), part of the hub: venue feeds — one recogniser for the whole room. A
//! publishing system app configured as a feed (`venueFeed` in its config entry) connects once,
//! with `tpa_connection_init` `sessionId: "venue"` (the venue's only feed) or `"venue:<feed>"`,
//! and its transcripts and translations reach the subscribers of every session that follows
//! the feed, each under its own subscription string, as a per-session publisher's do.
//!
//! Owns [`Venue`]: the configured feeds, each feed's publisher connection, its last final line
//! (replayed at once to a new subscriber) and its counters.
//!
//! Decisions:
//! - a session follows the feed its user was given by the operator
//!   (`POST /ui/api/feeds/{feed}/follow` `{"user": …}`), else the venue's first configured feed
//!   (the only one, in a one-room venue). The choice is durable (kept by name in the store, so
//!   it survives a restart and is shared through a shared store); a new session takes it if
//!   the config still has a feed of that name, else follows the first feed, and the stale
//!   choice is logged and counted (`VENUE_FOLLOW_UNKNOWN_FEED`) but kept (the feed may come
//!   back with the config). A switch takes effect at once (the new feed's finals, its last
//!   line sent to the session's subscribers, the microphone recomputed);
//! - a second publisher for a feed *replaces* the first (the key was checked, so it is the
//!   operator's own recogniser reconnecting, perhaps over a half-open connection the box has
//!   not noticed yet); the first is closed with 1008 "Replaced by a newer connection" and the
//!   replacement counted (`VENUE_FEED_REPLACED`);
//! - a feed is never held by one backed-up app ([`Hub::feeder_blocked`] is false for it), so
//!   one slow app cannot pause the one recogniser of thousands of wearers. Interims to a
//!   backed-up app are dropped (counted); finals are queued in its output, bounded by
//!   `max_output`, and an app that stops draining is cut by the stall timeout (or at
//!   `max_output`) and goes through the restart path like any other. Only while the output of
//!   all connections together is over its budget is the feed held, with every other feeder
//!   ([`Hub::is_feeder`]), so memory stays bounded in total;
//! - while a live feed publishes `transcription`, no session that follows it needs the glasses'
//!   microphone for transcripts; when the feed goes away the microphone need is recomputed for
//!   every follower (on again if an app still wants transcripts, so a per-session transcriber
//!   takes over where one is configured). A follower left without any source (an app wants
//!   what the feed published, no connected app of the session publishes it) is shown
//!   [`FEED_OFFLINE`] on the main view as a display of the box — when the feed goes, or when
//!   a session comes to want captions (a latecomer's app subscribes) while its feed is
//!   already offline — cleared when the feed comes back (if still on screen) or when the
//!   session no longer lacks a source: no message SDK 2.1.29 surfaces to an app says "no source", and
//!   a deaf visitor must see that the captions stopped, not a frozen line.
//!
//! Invariants: a feed has at most one publisher; a publisher's link is `Link::Venue` for its
//! feed and nothing else; the kept last line is bounded (one message of at most the frame
//! size).

use super::fanout::FanOut;
use super::routes::{Event, Routes};
use super::{AppState, Hub, JoinError, Link, SessKey};
use crate::net::{ConnId, Outbox, Peer};
use crate::protocol::message::AppMsg;
use crate::protocol::outbound::data_stream_parts;
use crate::time::Now;
use crate::ws::frame::Opcode;

/// A configured feed and what it holds now.
#[derive(Debug, Default)]
pub struct Feed {
    /// Its name (`"venue:<name>"`).
    pub name: String,
    /// The app that publishes it.
    pub app: usize,
    /// Its publisher's connection, while one is connected.
    pub conn: Option<ConnId>,
    /// The last final line published of each kind (its stream, `transcription`/`translation`,
    /// source and target languages), with its `data` as it came; oldest first, at most
    /// [`LAST_LINES`] kinds. One per kind: with translation on, a transcript's final is followed
    /// by its translations, and a latecomer must get the line of the kind it subscribes to.
    last_finals: Vec<LastLine>,
    /// The texts of the last few final lines, newest last, for the operator.
    recent: std::collections::VecDeque<Box<str>>,
    /// Messages published.
    pub published: u64,
    /// Deliveries made (one message to one app).
    pub delivered: u64,
    /// Interims not delivered to a backed-up app.
    pub dropped: u64,
    /// The sessions shown [`FEED_OFFLINE`] when the feed went, cleared when it comes back.
    notified: Vec<SessKey>,
    /// The translations its live publisher was last told its followers want
    /// ([`super::demand`]); `None` until told, since it connected.
    pub(super) demand_sent: Option<Vec<Box<str>>>,
    /// What its followers want translated: each pair, with how many following sessions want
    /// it (never 0); kept with every change of a session's set or of who follows the feed
    /// ([`super::demand`]).
    pub(super) demand: std::collections::BTreeMap<Box<str>, u32>,
    /// The demanded translations its live publisher last said it cannot serve
    /// ([`super::unserved`]); empty since it connected until it says so.
    pub(super) unserved: Box<[Box<str>]>,
    /// Its delivery lists (see [`super::fanout`]).
    pub(super) fanout: FanOut,
}

/// What the glasses of a session left without captions show when its feed goes.
pub const FEED_OFFLINE: &str = "Captions feed offline";

#[derive(Debug)]
struct LastLine {
    translation: bool,
    from: Box<str>,
    to: Box<str>,
    data: Box<str>,
}

/// Kinds of last final line kept per feed (a transcript and a few translations of it).
const LAST_LINES: usize = 8;
/// Final lines kept per feed for the operator page.
const RECENT_LINES: usize = 5;
/// Characters of a final line kept for the operator page.
const RECENT_CHARS: usize = 200;

impl Feed {
    /// The feed as the operator sees it.
    fn operator(&self, package: &str, followers: usize) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "packageName": package,
            "connected": self.conn.is_some(),
            "language": self.last_finals.last().map(|l| &*l.from),
            "lastLines": self.recent,
            "followers": followers,
            "published": self.published,
            "delivered": self.delivered,
            "dropped": self.dropped,
            "listsBuilt": self.fanout.built,
        })
    }

    /// Keep the text of a final line (`data` as published) for the operator.
    fn note_line(&mut self, data: &str) {
        #[derive(serde::Deserialize)]
        struct Text<'a> {
            #[serde(borrow)]
            text: Option<std::borrow::Cow<'a, str>>,
        }
        let Some(text) = crate::protocol::inbound::decode::<Text<'_>>(data).and_then(|t| t.text)
        else {
            return;
        };
        if self.recent.len() == RECENT_LINES {
            self.recent.pop_front();
        }
        self.recent
            .push_back(text.chars().take(RECENT_CHARS).collect::<String>().into());
    }
}

/// The venue's feeds.
#[derive(Debug, Default)]
pub struct Venue {
    pub feeds: Vec<Feed>,
    /// The users the operator pointed at a feed, as resolved against the config: user id →
    /// feed (the durable choice, by name, is in the hub's durable state). Who follows which
    /// feed is part of every feed's delivery lists: whatever changes this map drops them
    /// (`FanOut::clear`), as [`Hub::venue_follow`] does.
    follows: std::collections::HashMap<Box<str>, usize>,
}

impl Venue {
    /// The feeds of the config: `(feed name, app index)`.
    pub(super) fn new(feeds: impl Iterator<Item = (String, usize)>) -> Venue {
        Venue {
            feeds: feeds
                .map(|(name, app)| Feed {
                    name,
                    app,
                    ..Feed::default()
                })
                .collect(),
            follows: Default::default(),
        }
    }

    /// Whether `app` publishes a venue feed (it is never started per session).
    pub(super) fn is_feed_app(&self, app: usize) -> bool {
        self.feeds.iter().any(|f| f.app == app)
    }

    /// The feed `sessionId` names: `"venue"` the only feed, `"venue:<name>"` that one.
    /// `None` when the id is not a venue id at all; `Some(None)` when it is but names no feed.
    fn named(&self, session_id: &str) -> Option<Option<usize>> {
        if session_id == "venue" {
            return Some((self.feeds.len() == 1).then_some(0));
        }
        let name = session_id.strip_prefix("venue:")?;
        Some(self.feeds.iter().position(|f| f.name == name))
    }

    /// The feed `user`'s session follows: the one the operator chose, else the first.
    pub(super) fn feed_of(&self, user: &str) -> usize {
        self.follows.get(user).copied().unwrap_or(0)
    }

    /// The feed `user`'s session follows, if the venue has any.
    fn followed(&self, user: &str) -> Option<&Feed> {
        self.feeds.get(self.feed_of(user))
    }
}

/// Whether a `tpa_connection_init`'s `sessionId` names a venue feed (rather than a session).
pub(super) fn is_venue_id(session_id: &str) -> bool {
    session_id == "venue" || session_id.starts_with("venue:")
}

impl Hub {
    /// Every feed, for the operator page: connected or not, language, the last final lines,
    /// how many sessions follow it, what it published, delivered and dropped.
    pub fn operator_feeds(&self) -> serde_json::Value {
        let mut followers = vec![0; self.venue.feeds.len()];
        for (_, s) in self.sessions.iter() {
            if let Some(n) = followers.get_mut(self.venue.feed_of(&s.user)) {
                *n += 1;
            }
        }
        self.venue
            .feeds
            .iter()
            .zip(followers)
            .map(|(f, n)| f.operator(&self.cfg.apps[f.app].package_name, n))
            .collect()
    }

    /// The name of the feed `user`'s session follows (`None` when the venue has no feed).
    pub(super) fn venue_followed_name(&self, user: &str) -> Option<&str> {
        self.venue.followed(user).map(|f| f.name.as_str())
    }

    /// The operator points `user` at the feed named `feed` (`POST /ui/api/feeds/{feed}/follow`):
    /// 200 with the choice, or 404 `NO_SUCH_FEED`. The user's session, if any, switches at
    /// once: its microphone is recomputed and its subscribers get the new feed's last line.
    pub fn venue_follow(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        user: &str,
        feed: &str,
        now: Now,
    ) {
        let Some(to) = self.venue.feeds.iter().position(|f| f.name == feed) else {
            self.refused("NO_SUCH_FEED");
            return net.respond_error(id, 404, "NO_SUCH_FEED", "no venue feed has this name", &[]);
        };
        let from = self.venue.feed_of(user);
        // Who follows which feed is part of every feed's delivery lists.
        for f in &mut self.venue.feeds {
            f.fanout.clear();
        }
        self.venue.follows.insert(user.into(), to);
        self.durable.set_follow(user, feed);
        log::info!("event=venue_follow user={user:?} feed={feed:?}");
        if let Some(sk) = self.sessions.by_user(user).filter(|_| from != to) {
            self.venue_demand_moved(sk, from, to);
            self.mic_changed(net, sk, now);
            self.venue_replay_all(net, sk, now);
            self.venue_notice_moved(net, sk, from, to, now);
            self.venue_demand_changed(net, from, now);
            self.venue_demand_changed(net, to, now);
            self.unserved_moved(net, sk, from, to, now);
        }
        let body = serde_json::json!({"user": user, "feed": feed});
        net.respond_json(id, 200, &body, &[]);
    }

    /// A new session of `user` starts: it follows the durable choice if the config still has
    /// a feed of that name, else the first feed (the stale choice logged and counted).
    pub(super) fn venue_session_follow(&mut self, user: &str) {
        // Who follows which feed is part of every feed's delivery lists.
        for f in &mut self.venue.feeds {
            f.fanout.clear();
        }
        let Some(name) = self.durable.follow(user) else {
            self.venue.follows.remove(user);
            return;
        };
        match self.venue.feeds.iter().position(|f| f.name == name) {
            Some(feed) => {
                log::info!("event=venue_follow_restored user={user:?} feed={name:?}");
                self.venue.follows.insert(user.into(), feed);
            }
            None => {
                let default = self.venue.feeds.first().map(|f| f.name.as_str());
                log::warn!(
                    "event=venue_follow_unknown user={user:?} feed={name:?} following={default:?} reason=\"no configured feed has this name\""
                );
                self.venue.follows.remove(user);
                self.refused("VENUE_FOLLOW_UNKNOWN_FEED");
            }
        }
    }

    /// The session's subscriptions or apps changed: show [`FEED_OFFLINE`] if it now wants what
    /// its followed feed publishes while the feed is offline and no app of its own publishes
    /// it (a latecomer), or clear it if it no longer lacks a source.
    pub(super) fn venue_notice_check(&mut self, net: &mut impl Outbox, sk: SessKey, now: Now) {
        let Some(s) = self.session(sk) else { return };
        let feed = self.venue.feed_of(&s.user);
        let Some(f) = self.venue.feeds.get(feed) else {
            return;
        };
        let want = f.conn.is_none() && self.feed_uncovered(sk, feed);
        let had = f.notified.contains(&sk);
        let notified = &mut self.venue.feeds[feed].notified;
        match (want, had) {
            (true, false) => {
                notified.push(sk);
                self.screen_system_line(net, sk, Some(FEED_OFFLINE), now);
            }
            (false, true) => {
                notified.retain(|&k| k != sk);
                self.screen_system_line(net, sk, None, now);
            }
            _ => {}
        }
    }

    /// The boot of an app in `sk` ended (its card replaced by what was held, or a clear): the
    /// [`FEED_OFFLINE`] line shown meanwhile (a latecomer's app subscribed while starting) is
    /// shown again.
    pub(super) fn venue_notice_after_boot(&mut self, net: &mut impl Outbox, sk: SessKey, now: Now) {
        let Some(s) = self.session(sk) else { return };
        let shown = self
            .venue
            .followed(&s.user)
            .is_some_and(|f| f.conn.is_none() && f.notified.contains(&sk));
        if shown {
            self.screen_system_line(net, sk, Some(FEED_OFFLINE), now);
        }
    }

    /// Send every active app in `sk` the followed feed's last final line, if it subscribes to it.
    fn venue_replay_all(&self, net: &mut impl Outbox, sk: SessKey, now: Now) {
        let Some(s) = self.session(sk) else { return };
        for &app in s.apps.keys() {
            self.venue_replay(net, sk, app, &[], now);
        }
    }

    /// A `tpa_connection_init` naming a venue feed, key already checked: bind it as the feed's
    /// publisher (replacing any other), or refuse it.
    pub(super) fn venue_init(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        app: usize,
        session_id: &str,
        now: Now,
    ) {
        let peer = net.peer(id).cloned().unwrap_or(Peer::InProcess);
        if !self.cfg.apps[app].address_allowed(&peer) {
            return self.refuse_app(net, id, JoinError::AddressNotAllowed, now);
        }
        let feed = match self.venue.named(session_id) {
            Some(Some(f)) if self.venue.feeds[f].app == app => f,
            _ => return self.refuse_app(net, id, JoinError::NotVenueFeed, now),
        };
        let old = self.venue.feeds[feed].conn.replace(id);
        if let Some(old) = old.filter(|o| *o != id) {
            self.links.remove(&old);
            self.refused("VENUE_FEED_REPLACED");
            net.close_websocket(old, 1008, "Replaced by a newer connection", now.mono);
        }
        self.links.insert(id, Link::Venue { feed });
        log::info!(
            "event=venue_feed_connected feed={:?} connection={id}",
            self.venue.feeds[feed].name
        );
        let ack = crate::protocol::outbound::TpaConnectionAck {
            kind: "tpa_connection_ack",
            session_id,
            settings: &self.settings_for("venue", app),
            mentraos_settings: &serde_json::json!({}),
            capabilities: &crate::protocol::capabilities::conservative(None),
            timestamp: now.iso(),
        };
        net.send_json(id, &ack);
        self.venue.feeds[feed].demand_sent = None;
        self.venue.feeds[feed].unserved = Box::default();
        self.venue_demand_changed(net, feed, now);
        if old.is_none() {
            self.venue_mic_changed(net, feed, now);
            self.venue_notice(net, feed, false, now);
        }
    }

    /// A text message from the publisher of `feed`: `data_stream` is published,
    /// `publish_unserved` taken for every follower, a repeated init
    /// or a subscription list is ignored; anything else a feed may not send is refused (`NOT_ALLOWED_FOR_VENUE_FEED`), the feed stays up.
    pub(super) fn venue_message(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        feed: usize,
        text: &str,
        now: Now,
    ) {
        match AppMsg::decode(text) {
            Ok(AppMsg::DataStream) => self.venue_publish(net, id, feed, text, now),
            Ok(AppMsg::PublishUnserved) => self.venue_unserved(net, id, feed, text, now),
            // A feed subscribes to nothing; the SDK sends its (empty) list after every ack.
            Ok(AppMsg::TpaConnectionInit | AppMsg::SubscriptionUpdate) => {}
            Ok(_) => self.app_error(
                net,
                id,
                "NOT_ALLOWED_FOR_VENUE_FEED",
                "a venue feed may only publish data_stream",
                now,
            ),
            Err(e) => self.app_error(net, id, "MALFORMED_MESSAGE", e.message(), now),
        }
    }

    /// The publisher of `feed` closed.
    pub(super) fn venue_closed(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        feed: usize,
        now: Now,
    ) {
        let Some(f) = self.venue.feeds.get_mut(feed) else {
            return;
        };
        if f.conn != Some(id) {
            return;
        }
        f.conn = None;
        f.demand_sent = None;
        let listed = std::mem::take(&mut f.unserved);
        log::info!("event=venue_feed_lost feed={:?} connection={id}", f.name);
        self.venue_mic_changed(net, feed, now);
        self.venue_notice(net, feed, true, now);
        self.unserved_feed_gone(net, feed, &listed, now);
    }

    /// The feed went (`offline`): every follower left without captions (an app wants what the
    /// feed publishes and no app of the session's own publishes it) is shown [`FEED_OFFLINE`]
    /// on the main view, so a frozen line is not taken for silence. The feed came back: that
    /// line is cleared for those that still follow it.
    fn venue_notice(&mut self, net: &mut impl Outbox, feed: usize, offline: bool, now: Now) {
        if offline {
            let keys: Vec<SessKey> = self
                .followers(feed)
                .filter(|&sk| self.feed_uncovered(sk, feed))
                .collect();
            for &sk in &keys {
                self.screen_system_line(net, sk, Some(FEED_OFFLINE), now);
            }
            self.venue.feeds[feed].notified = keys;
            return;
        }
        for sk in std::mem::take(&mut self.venue.feeds[feed].notified) {
            let follows = self
                .session(sk)
                .is_some_and(|s| self.venue.feed_of(&s.user) == feed);
            if follows {
                self.screen_system_line(net, sk, None, now);
            }
        }
    }

    /// `sk` moved from feed `from` to `to`: the offline line goes with the old feed, and comes
    /// with the new one if it is offline and the session has no other source.
    fn venue_notice_moved(
        &mut self,
        net: &mut impl Outbox,
        sk: SessKey,
        from: usize,
        to: usize,
        now: Now,
    ) {
        let old = &mut self.venue.feeds[from].notified;
        let had = old.contains(&sk);
        old.retain(|&k| k != sk);
        let show = self.venue.feeds[to].conn.is_none() && self.feed_uncovered(sk, to);
        if show {
            self.venue.feeds[to].notified.push(sk);
        }
        match (had, show) {
            (_, true) => self.screen_system_line(net, sk, Some(FEED_OFFLINE), now),
            (true, false) => self.screen_system_line(net, sk, None, now),
            (false, false) => {}
        }
    }

    /// Whether `sk` wants what `feed` publishes and has no connected app of its own publishing
    /// it (a per-session transcriber that takes over).
    fn feed_uncovered(&self, sk: SessKey, feed: usize) -> bool {
        let Some(s) = self.session(sk) else {
            return false;
        };
        let Some(routes) = s.streams.as_deref().map(|st| &st.routes) else {
            return false;
        };
        let apps = &self.cfg.apps;
        apps[self.venue.feeds[feed].app].publishes.iter().any(|p| {
            routes.wants(p)
                && !s.apps.iter().any(|(&a, run)| {
                    matches!(run.state, AppState::Active) && apps[a].publishes.contains(p)
                })
        })
    }

    /// Every session that follows `feed` brings its microphone in line (the feed came or went).
    fn venue_mic_changed(&mut self, net: &mut impl Outbox, feed: usize, now: Now) {
        let keys: Vec<SessKey> = self.followers(feed).collect();
        for sk in keys {
            self.mic_changed(net, sk, now);
        }
    }

    /// The sessions that follow `feed`.
    fn followers(&self, feed: usize) -> impl Iterator<Item = SessKey> + '_ {
        let venue = &self.venue;
        self.sessions
            .iter()
            .filter(move |(_, s)| venue.feed_of(&s.user) == feed)
            .map(|(sk, _)| sk)
    }

    /// Whether a live venue feed that `user`'s session follows publishes `stream`: then the
    /// session needs no recogniser of its own (nor its microphone) for it.
    pub(super) fn venue_covers(&self, user: &str, stream: &str) -> bool {
        self.venue.followed(user).is_some_and(|f| {
            f.conn.is_some() && self.cfg.apps[f.app].publishes.iter().any(|p| p == stream)
        })
    }

    /// A `data_stream` from the publisher of `feed`: checked as a per-session publisher's is,
    /// then delivered in every session that follows the feed; a final is kept for latecomers.
    pub(super) fn venue_publish(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        feed: usize,
        text: &str,
        now: Now,
    ) {
        let app = self.venue.feeds[feed].app;
        let Some(p) = self.checked_publish(net, id, app, text, now) else {
            return;
        };
        let f = &mut self.venue.feeds[feed];
        f.published += 1;
        if p.is_final {
            f.note_line(p.data);
            let line = LastLine {
                translation: p.translation,
                from: p.from.as_deref().unwrap_or("en-US").into(),
                to: p.to.as_deref().unwrap_or("").into(),
                data: p.data.into(),
            };
            f.last_finals.retain(|l| {
                (l.translation, &l.from, &l.to) != (line.translation, &line.from, &line.to)
            });
            if f.last_finals.len() == LAST_LINES {
                f.last_finals.remove(0);
            }
            f.last_finals.push(line);
        }
        let (delivered, dropped) = self.venue_fan_out(net, feed, &p, now);
        let f = &mut self.venue.feeds[feed];
        f.delivered += delivered;
        f.dropped += dropped;
    }

    /// Send `app` in `sk`, newly subscribed to some of `subs` (not in `before`), the followed
    /// feed's last final line of each kind it subscribed to, under its own subscription string.
    pub(super) fn venue_replay(
        &self,
        net: &mut impl Outbox,
        sk: SessKey,
        app: usize,
        before: &[String],
        now: Now,
    ) {
        let Some(s) = self.session(sk) else { return };
        let lines = match self.venue.followed(&s.user) {
            Some(f) if !f.last_finals.is_empty() => &f.last_finals,
            _ => return,
        };
        let Some(run) = s.apps.get(&app) else { return };
        let (AppState::Active, Some(conn)) = (&run.state, run.conn) else {
            return;
        };
        let new: Vec<String> = run
            .subs
            .iter()
            .filter(|x| !before.contains(x))
            .cloned()
            .collect();
        let routes = Routes::build(std::iter::once((app, &new[..])));
        for line in lines {
            replay_line(net, &routes, conn, &run.prefix, line, now);
        }
    }
}

/// One kept final line to the app whose new subscriptions are `routes`: once, under the
/// first of them it matches.
fn replay_line(
    net: &mut impl Outbox,
    routes: &Routes,
    conn: ConnId,
    prefix: &[u8],
    line: &LastLine,
    now: Now,
) {
    let event = if line.translation {
        Event::Translation {
            from: &line.from,
            to: &line.to,
        }
    } else {
        Event::Transcription {
            language: &line.from,
        }
    };
    let name: &[u8] = if line.translation {
        b"translation"
    } else {
        b"transcription"
    };
    let mut sent = false;
    routes.each(event, |_, own| {
        if sent {
            return;
        }
        sent = true;
        let stream: [&[u8]; 3] = match own {
            Some(own) => [own, b"", b""],
            None => [b"\"", name, b"\""],
        };
        let parts = data_stream_parts(prefix, stream, line.data.as_bytes(), now.iso());
        net.send_frame(conn, Opcode::Text, &parts);
    });
}
