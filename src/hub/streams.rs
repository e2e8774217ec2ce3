//! Core layer (sans-IO), part of the hub: the streams of a session — glasses events and audio
//! relayed to the apps subscribed to them, transcripts and translations published by a system
//! app with the right to, the last location and recent calendar events replayed to a new
//! subscriber, and the glasses' microphone switched on exactly while some app needs audio.
//!
//! The hot path (DESIGN §3): a relayed message is never decoded beyond its `type` (and a
//! transcript's languages, a touch event's gesture); each delivery is the per-app prefix built
//! when the app bound, the subscriber's own `streamType`, the original bytes as `data`, and the
//! turn's timestamp, written straight into the subscriber's output. Nothing is allocated per
//! event or per delivery.
//!
//! Invariants: an event reaches only apps of its own session that subscribed to it (by the
//! subscription index, [`super::routes`]) and are active on a live connection; the
//! `microphone_state_change` the glasses last received always matches what the apps need once
//! the debounce has run out (the first change is sent at once, later ones at most once per
//! debounce interval); the caches are bounded.

use super::apps::AppCtx;
use super::routes::{Event, Routes};
use super::{AppRun, AppState, Hub, Link, SessKey, Session, TimerKey};
use crate::net::{ConnId, Outbox};
use crate::protocol::inbound::{self, Publish, PublishedMeta, TouchEvent};
use crate::protocol::message::{EventType, RawEvent, Stream};
use crate::protocol::outbound::{
    data_stream_parts, data_stream_tail, MicUserSession, MicrophoneState,
};
use crate::time::{Instant, Now};
use crate::ws::frame::Opcode;
use std::borrow::Cow;
use std::collections::VecDeque;

/// Calendar events kept per session for replay.
const CALENDAR_CACHE: usize = 32;
/// The largest shared delivery tail kept between events; a larger one is freed after use.
pub(super) const MAX_KEPT_TAIL: usize = 16 * 1024;

/// A checked `data_stream` publication: what it is, its languages, its `data` as it came.
pub(super) struct Published<'t> {
    pub translation: bool,
    pub from: Option<Cow<'t, str>>,
    pub to: Option<Cow<'t, str>>,
    pub data: &'t str,
    pub is_final: bool,
}

/// What the apps of a session subscribe to, and what is kept for replay. Allocated the first
/// time a session has either, so an idle session pays one pointer for it.
#[derive(Debug, Default)]
pub(super) struct Streams {
    pub(super) routes: Routes,
    /// Made by the first location or calendar event (most sessions see neither).
    cached: Option<Box<Cached>>,
    /// The translations the session's apps want, as last told to its publishers (see
    /// [`super::demand`]).
    pub(super) translations: Vec<Box<str>>,
    /// What each of its translation publishers (by app) last said it cannot serve, as far as
    /// it was demanded (see [`super::unserved`]); no entry: serves everything.
    pub(super) unserved: Vec<(usize, Box<[Box<str>]>)>,
}

/// What is kept for replay to a new subscriber.
#[derive(Debug, Default)]
struct Cached {
    last_location: Option<Box<str>>,
    calendar: VecDeque<Box<str>>,
}

/// What the glasses' microphone must feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct MicNeed {
    pcm: bool,
    transcription: bool,
}

impl MicNeed {
    fn enabled(self) -> bool {
        self.pcm || self.transcription
    }
}

/// The microphone state last sent to the glasses, and a debounced change waiting.
#[derive(Debug, Default)]
pub(super) struct Mic {
    sent: Option<MicNeed>,
    sent_at: Option<Instant>,
    /// When a changed need will be sent (the authoritative slot of `TimerKey::Mic`).
    pub(super) pending_until: Option<Instant>,
}

impl Mic {
    /// The glasses were last told to turn the microphone on.
    pub(super) fn is_on(&self) -> bool {
        self.sent.is_some_and(MicNeed::enabled)
    }
}

impl Streams {
    fn cached_mut(&mut self) -> &mut Cached {
        self.cached.get_or_insert_with(Box::default)
    }
}

impl Hub {
    // ---- glasses events and audio ---------------------------------------------------------

    /// A glasses event for the session's subscribers, as it was decoded: its stream picks the
    /// routes, its text is what they receive.
    pub(super) fn relay(
        &mut self,
        net: &mut impl Outbox,
        sk: SessKey,
        ev: &RawEvent<'_>,
        now: Now,
    ) {
        let RawEvent { ty, text } = ev;
        let stream = ev.stream();
        let Some(s) = self.session_mut(sk) else {
            return;
        };
        match stream {
            Some(Stream::LocationUpdate) => {
                s.streams_mut().cached_mut().last_location = Some((*text).into());
            }
            Some(Stream::CalendarEvent) => {
                let cal = &mut s.streams_mut().cached_mut().calendar;
                if cal.len() == CALENDAR_CACHE {
                    cal.pop_front();
                }
                cal.push_back((*text).into());
            }
            _ => {}
        }
        let touch;
        let event = match stream {
            Some(Stream::TouchEvent) => {
                touch = inbound::decode::<TouchEvent<'_>>(text);
                Event::Touch {
                    gesture: touch.as_ref().map_or("", |t| &t.gesture_name),
                }
            }
            Some(stream) => Event::Plain(stream),
            None => Event::Other,
        };
        // The `streamType` of wildcard subscribers: the stream's name, or the type as it came
        // (quoted as is when it has no escapes).
        let escaped;
        let base: [&[u8]; 3] = match ty {
            EventType::Stream(s) => [b"\"", s.name().as_bytes(), b"\""],
            EventType::Other(Cow::Borrowed(t)) => [b"\"", t.as_bytes(), b"\""],
            EventType::Other(Cow::Owned(t)) => {
                escaped = serde_json::to_string(t).unwrap_or_default();
                [escaped.as_bytes(), b"", b""]
            }
        };
        let lossy = match stream {
            Some(s @ (Stream::HeadPosition | Stream::LocationUpdate)) => Some(s.name()),
            _ => None,
        };
        let (_, dropped) =
            self.deliver(net, sk, event, base, text.as_bytes(), lossy.is_some(), now);
        self.count_drops(lossy, dropped);
        if stream == Some(Stream::GlassesConnectionState) && connected(text) {
            self.send_mic_state(net, sk, now);
        }
    }

    /// Audio from the glasses: the same bytes, in a binary frame, to every app subscribed to
    /// `audio_chunk` (or everything) that [hears audio](Hub::hears_audio) now.
    pub(super) fn relay_audio(&mut self, net: &mut impl Outbox, sk: SessKey, data: &[u8]) {
        let Some(s) = self.session(sk) else { return };
        let Some(streams) = s.streams.as_deref() else {
            return;
        };
        let mut dropped = 0;
        streams
            .routes
            .each(Event::Plain(Stream::AudioChunk), |app, _| {
                if !self.hears_audio(app, &streams.routes, &s.user) {
                    return;
                }
                if let Some(conn) = active_conn(s, app) {
                    if net.backed_up(conn) {
                        dropped += 1;
                    } else {
                        net.send_frame(conn, Opcode::Binary, &[data]);
                    }
                }
            });
        self.count_drops(Some("audio_chunk"), dropped);
    }

    pub(super) fn count_drops(&mut self, stream: Option<&'static str>, n: u64) {
        if let (Some(stream), 1..) = (stream, n) {
            *self.counters.dropped.entry(stream).or_default() += n;
        }
    }

    /// Write one event to every subscriber of it in session `sk`, each under its own
    /// `streamType`; a `lossy` event skips subscribers that are backed up. Returns how many
    /// it reached and how many were skipped. The tail every delivery shares (`data`, timestamp) is built once, in a
    /// buffer kept between events (dropped when an event made it large).
    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &mut self,
        net: &mut impl Outbox,
        sk: SessKey,
        event: Event<'_>,
        base: [&[u8]; 3],
        data: &[u8],
        lossy: bool,
        now: Now,
    ) -> (u64, u64) {
        let Hub {
            sessions,
            delivery_tail: tail,
            ..
        } = self;
        let Some(s) = sessions.get(sk) else {
            return (0, 0);
        };
        let Some(streams) = s.streams.as_deref() else {
            return (0, 0);
        };
        data_stream_tail(tail, data, now.iso_bytes());
        let (mut delivered, mut dropped) = (0, 0);
        streams.routes.each(event, |app, stream| {
            let Some(AppRun {
                state: AppState::Active,
                conn: Some(conn),
                prefix,
                ..
            }) = s.apps.get(&app)
            else {
                return;
            };
            if lossy && net.backed_up(*conn) {
                dropped += 1;
                return;
            }
            delivered += 1;
            match stream {
                Some(own) => net.send_frame(*conn, Opcode::Text, &[prefix, own, tail]),
                None => net.send_frame(
                    *conn,
                    Opcode::Text,
                    &[prefix, base[0], base[1], base[2], tail],
                ),
            };
        });
        if tail.capacity() > MAX_KEPT_TAIL {
            *tail = Vec::new();
        }
        (delivered, dropped)
    }

    /// The session `id` feeds, if it is a feeder: its glasses, or an app that publishes into
    /// it (what one read of it can fan out to many subscribers).
    fn fed_session(&self, id: ConnId) -> Option<SessKey> {
        match self.links.get(&id) {
            Some(Link::Glasses {
                session: Some(sk), ..
            }) => Some(*sk),
            Some(Link::App {
                bound: Some((sk, app)),
                ..
            }) if !self.cfg.apps[*app].publishes.is_empty() => Some(*sk),
            _ => None,
        }
    }

    /// Whether `id` is a feeder (see `Hub::fed_session`), or a venue feed's publisher: that
    /// one feeds every session, so no one backed-up subscriber holds it (it is never
    /// [blocked](Hub::feeder_blocked)), but it is held with every other feeder while the output
    /// of all connections together is over its budget.
    pub fn is_feeder(&self, id: ConnId) -> bool {
        self.fed_session(id).is_some() || matches!(self.links.get(&id), Some(Link::Venue { .. }))
    }

    /// Whether `id` feeds a session (its glasses, or an app that publishes into it) one of
    /// whose subscribers is backed up and wants something that may not be dropped.
    pub fn feeder_blocked(&self, net: &impl Outbox, id: ConnId) -> bool {
        let Some(sk) = self.fed_session(id) else {
            return false;
        };
        let Some(s) = self.session(sk) else {
            return false;
        };
        s.apps.values().any(|run| {
            run.conn
                .is_some_and(|c| c != id && net.backed_up(c) && wants_lossless(&run.subs))
        })
    }

    /// Every feeder (see `Hub::fed_session`), for holding them all while the output of all
    /// connections together is over its budget.
    pub fn each_feeder(&self, mut f: impl FnMut(ConnId)) {
        for (&id, _) in self.links.iter() {
            if self.is_feeder(id) {
                f(id);
            }
        }
    }

    /// The feeders backed-up `id` holds back (the other side of [`Hub::feeder_blocked`]): if it
    /// is the connection of an app subscribed to something that may not be dropped, every
    /// feeder of that app's session but itself.
    pub fn feeders_held_by(&self, id: ConnId, mut f: impl FnMut(ConnId)) {
        let Some(Link::App {
            bound: Some((sk, app)),
            ..
        }) = self.links.get(&id)
        else {
            return;
        };
        let Some(s) = self.session(*sk) else { return };
        if !s
            .apps
            .get(app)
            .is_some_and(|run| run.conn == Some(id) && wants_lossless(&run.subs))
        {
            return;
        }
        let conns = s
            .glasses
            .into_iter()
            .chain(s.apps.values().filter_map(|r| r.conn));
        for c in conns {
            if c != id && self.fed_session(c) == Some(*sk) {
                f(c);
            }
        }
    }

    // ---- publishing ----------------------------------------------------------------------

    /// A `data_stream` from an app: a transcript or translation to route into its session, if
    /// the app may publish that stream.
    pub(super) fn publish(&mut self, net: &mut impl Outbox, cx: AppCtx, text: &str) {
        let AppCtx { id, sk, app, now } = cx;
        if let Some(p) = self.checked_publish(net, id, app, text, now) {
            self.deliver_published(net, sk, &p, now);
        }
    }

    /// A published `data_stream` checked: the data's kind, the app's right to publish it, its
    /// languages. `None` when refused (the app was told, with the error counted).
    pub(super) fn checked_publish<'t>(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        app: usize,
        text: &'t str,
        now: Now,
    ) -> Option<Published<'t>> {
        let Some(msg) = inbound::decode::<Publish<'_>>(text) else {
            self.app_error(
                net,
                id,
                "MALFORMED_MESSAGE",
                "data_stream needs a 'data' object",
                now,
            );
            return None;
        };
        let data = msg.data.get();
        let Some(meta) = inbound::decode::<PublishedMeta<'_>>(data) else {
            self.app_error(
                net,
                id,
                "MALFORMED_MESSAGE",
                "data needs a string 'type'",
                now,
            );
            return None;
        };
        let translation = match &*meta.kind {
            "transcription" => false,
            "translation" => true,
            _ => {
                self.app_error(
                    net,
                    id,
                    "PUBLISH_NOT_ALLOWED",
                    "only transcription and translation data may be published",
                    now,
                );
                return None;
            }
        };
        let stream = if translation {
            Stream::Translation
        } else {
            Stream::Transcription
        };
        if !self.cfg.apps[app]
            .publishes
            .iter()
            .any(|p| p == stream.name())
        {
            self.app_error(
                net,
                id,
                "PUBLISH_NOT_ALLOWED",
                "this app may not publish this stream (see the app's 'publishes' in the config)",
                now,
            );
            return None;
        }
        if translation && meta.translate_language.is_none() {
            self.app_error(
                net,
                id,
                "MALFORMED_MESSAGE",
                "translation data needs 'translateLanguage'",
                now,
            );
            return None;
        }
        Some(Published {
            translation,
            from: meta.transcribe_language,
            to: meta.translate_language,
            data,
            is_final: meta.is_final != Some(false),
        })
    }

    /// A checked publication delivered to the subscribers of session `sk`. Returns how many
    /// apps it reached and how many it skipped (interims to a backed-up app, counted).
    pub(super) fn deliver_published(
        &mut self,
        net: &mut impl Outbox,
        sk: SessKey,
        p: &Published<'_>,
        now: Now,
    ) -> (u64, u64) {
        let language = p.from.as_deref().unwrap_or("en-US");
        let (event, stream) = if p.translation {
            let to = p.to.as_deref().unwrap_or("");
            (
                Event::Translation { from: language, to },
                Stream::Translation,
            )
        } else {
            (Event::Transcription { language }, Stream::Transcription)
        };
        let base: [&[u8]; 3] = [b"\"", stream.name().as_bytes(), b"\""];
        let lossy = (!p.is_final).then_some(stream.name());
        let (delivered, dropped) = self.deliver(
            net,
            sk,
            event,
            base,
            p.data.as_bytes(),
            lossy.is_some(),
            now,
        );
        self.count_drops(lossy, dropped);
        (delivered, dropped)
    }

    // ---- subscriptions -------------------------------------------------------------------

    /// The apps' subscriptions changed: rebuild the index, replay what new subscribers of
    /// location and calendar streams have missed (`replay_to`), and bring the microphone in
    /// line, and tell translation publishers what is wanted now.
    pub(super) fn subs_changed(
        &mut self,
        net: &mut impl Outbox,
        sk: SessKey,
        replay_to: Option<(usize, &[String])>,
        now: Now,
    ) {
        let Some(s) = self.sessions.routing_mut(sk) else {
            return;
        };
        let routes = Routes::build(s.apps.iter().map(|(&a, r)| (a, &r.subs[..])));
        let empty = routes.is_empty();
        match (&mut s.streams, empty) {
            (Some(st), _) => st.routes = routes,
            (None, false) => s.streams_mut().routes = routes,
            (None, true) => {}
        }
        if let Some((app, before)) = replay_to {
            self.replay(net, sk, app, before, now);
            self.venue_replay(net, sk, app, before, now);
        }
        self.mic_changed(net, sk, now);
        self.venue_notice_check(net, sk, now);
        self.location_tier_changed(net, sk, now);
        self.demand_changed(net, sk, now);
    }

    /// Send a newly subscribed app the last location and the cached calendar events.
    fn replay(&self, net: &mut impl Outbox, sk: SessKey, app: usize, before: &[String], now: Now) {
        let Some(s) = self.session(sk) else { return };
        let (Some(streams), Some(run)) = (s.streams.as_deref(), s.apps.get(&app)) else {
            return;
        };
        let Some(conn) = active_conn(s, app) else {
            return;
        };
        let newly = |names: &[&str]| -> Option<&String> {
            run.subs.iter().find(|x| {
                let base = x.split('?').next().unwrap_or(x);
                names.contains(&base) && !before.contains(x)
            })
        };
        let Some(cached) = streams.cached.as_deref() else {
            return;
        };
        if let (Some(sub), Some(loc)) = (
            newly(&["location_update", "location_stream"]),
            &cached.last_location,
        ) {
            send_one(net, conn, &run.prefix, sub, loc, now);
        }
        if let Some(sub) = newly(&["calendar_event"]) {
            for ev in &cached.calendar {
                send_one(net, conn, &run.prefix, sub, ev, now);
            }
        }
    }

    // ---- the microphone ------------------------------------------------------------------

    /// Whether `app`'s audio subscription counts now. A publisher (an on-box transcriber)
    /// subscribes to audio all the time, but its subscription counts only while some app wants
    /// what it publishes and no live venue feed covers it: no audio is routed to it, and the microphone is not on for it, while
    /// nobody wants transcripts. Any other app's counts always.
    fn hears_audio(&self, app: usize, routes: &Routes, user: &str) -> bool {
        let publishes = &self.cfg.apps[app].publishes;
        publishes.is_empty()
            || publishes
                .iter()
                .any(|p| routes.wants(p) && !self.venue_covers(user, p))
    }

    /// What the session's apps need the microphone for: audio for the apps that
    /// [hear it](Hub::hears_audio), transcripts for the apps that want them.
    fn mic_need(&self, sk: SessKey) -> MicNeed {
        let Some(s) = self.session(sk) else {
            return MicNeed::default();
        };
        let Some(routes) = s.streams.as_deref().map(|st| &st.routes) else {
            return MicNeed::default();
        };
        // A live venue feed the session follows covers what it publishes.
        let wanted = |stream: &str| routes.wants(stream) && !self.venue_covers(&s.user, stream);
        let transcription = wanted("transcription") || wanted("translation");
        let pcm = s.apps.iter().any(|(&app, run)| {
            let listens = run
                .subs
                .iter()
                .any(|x| matches!(x.as_str(), "audio_chunk" | "all" | "*"));
            listens && self.hears_audio(app, routes, &s.user)
        });
        MicNeed { pcm, transcription }
    }

    /// The need may have changed: send it now if nothing was sent within the debounce
    /// interval, else once the interval has passed.
    pub(super) fn mic_changed(&mut self, net: &mut impl Outbox, sk: SessKey, now: Now) {
        let need = self.mic_need(sk);
        let debounce = self.cfg.timings.mic_debounce;
        let Some(s) = self.session_mut(sk) else {
            return;
        };
        if s.mic.sent == Some(need) {
            s.mic.pending_until = None;
            return;
        }
        if s.mic.pending_until.is_some() {
            return;
        }
        match s.mic.sent_at {
            Some(at) if now.mono.saturating_since(at) < debounce => {
                let until = at + debounce;
                s.mic.pending_until = Some(until);
                self.arm(until, TimerKey::Mic(sk));
            }
            _ => self.send_mic(net, sk, true, now),
        }
    }

    pub(super) fn mic_tick(&mut self, net: &mut impl Outbox, sk: SessKey, now: Now) {
        let need = self.mic_need(sk);
        let Some(s) = self.session_mut(sk) else {
            return;
        };
        s.mic.pending_until = None;
        if s.mic.sent != Some(need) {
            self.send_mic(net, sk, true, now);
        }
    }

    /// Tell the glasses what the microphone must do now, whatever was sent before (on init,
    /// resume and their reconnect). This does not start a debounce interval: only changes do.
    pub(super) fn send_mic_state(&mut self, net: &mut impl Outbox, sk: SessKey, now: Now) {
        self.send_mic(net, sk, false, now);
    }

    fn send_mic(&mut self, net: &mut impl Outbox, sk: SessKey, change: bool, now: Now) {
        let need = self.mic_need(sk);
        let Some(s) = self.session_mut(sk) else {
            return;
        };
        s.mic.pending_until = None;
        let Some(g) = s.glasses else { return };
        s.mic.sent = Some(need);
        if change {
            s.mic.sent_at = Some(now.mono);
        }
        let Some(s) = self.session(sk) else { return };
        let with = |f| self.packages_where(s, f);
        let mut required = Vec::new();
        if need.pcm {
            required.push("pcm");
        }
        if need.transcription {
            required.push("transcription");
        }
        let msg = MicrophoneState {
            kind: "microphone_state_change",
            session_id: &s.user,
            user_session: MicUserSession {
                session_id: &s.user,
                user_id: &s.user,
                start_time: crate::time::iso8601(s.started),
                active_app_sessions: with(|st| matches!(st, AppState::Active)),
                loading_apps: with(|st| matches!(st, AppState::Loading { .. })),
                is_transcribing: need.transcription,
            },
            is_microphone_enabled: need.enabled(),
            required_data: &required,
            bypass_vad: false,
            timestamp: now.iso(),
        };
        net.send_json(g, &msg);
    }
}

impl Session {
    pub(super) fn streams_mut(&mut self) -> &mut Streams {
        self.streams.get_or_insert_with(Box::default)
    }
}

/// The connection of `app` if it is active in `s`.
fn active_conn(s: &Session, app: usize) -> Option<ConnId> {
    match s.apps.get(&app) {
        Some(AppRun {
            state: AppState::Active,
            conn: Some(conn),
            ..
        }) => Some(*conn),
        _ => None,
    }
}

/// Whether a subscription list holds anything that must not be dropped (everything but audio,
/// head position and location; transcripts count, for their finals).
fn wants_lossless(subs: &[String]) -> bool {
    subs.iter().any(|x| {
        !matches!(
            x.as_str(),
            "audio_chunk" | "head_position" | "location_update" | "location_stream"
        )
    })
}

/// One replayed event to one app, under the subscription string `sub`.
fn send_one(net: &mut impl Outbox, conn: ConnId, prefix: &[u8], sub: &str, data: &str, now: Now) {
    let stream = serde_json::to_vec(sub).unwrap_or_default();
    let parts = data_stream_parts(prefix, [&stream, b"", b""], data.as_bytes(), now.iso());
    net.send_frame(conn, Opcode::Text, &parts);
}

/// Whether a `glasses_connection_state` message says the glasses are connected.
fn connected(text: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct State<'a> {
        #[serde(borrow)]
        status: Option<Cow<'a, str>>,
    }
    inbound::decode::<State<'_>>(text)
        .and_then(|s| s.status)
        .is_some_and(|s| s.eq_ignore_ascii_case("connected"))
}
