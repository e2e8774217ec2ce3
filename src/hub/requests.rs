//! Core layer (sans-IO), part of the hub: app requests to the glasses and their replies —
//! photos, audio playback and stop, the RGB LED, single location fixes and RTMP streams
//! (PROTOCOL §4, §5, §10).
//!
//! Owns each session's pending requests (`Requests`): which app asked, by which id, until
//! when. A request is checked (the app's permission: `CAMERA` for photos and streams,
//! `LOCATION` for location), refused when no glasses are connected, when the id is already
//! pending in the session, or past `max_pending_requests`; otherwise forwarded to the glasses
//! in the 2.1.29 shape with the SDK's own id (the box makes the id only for streams, whose
//! request carries none). A reply is routed by that id to the app that asked, only within its
//! session. A request not answered by its deadline is answered by the box.
//!
//! Every refusal and timeout reaches the app in the form its SDK module understands: photos as
//! a `photo_error` POSTed to the app server's `/photo-upload` (SDK 2.1.29 reads photo outcomes
//! only there), audio as `audio_play_response` with `success: false`, streams as an ending
//! `rtmp_stream_status`, LED and location as `tpa_connection_error` (the SDK's `error` event;
//! it has no reply of its own for those). Every refusal is counted by code.
//!
//! Invariants: a reply reaches at most the one app whose request in this session carries its
//! id — a reply matching nothing is dropped (counted as `UNMATCHED_REPLY`), never relayed to
//! subscribers; the session's `TimerKey::Requests` slot is the earliest pending deadline,
//! re-armed by `Hub::requests_flush` after every change; a stopped app's requests are gone
//! with it (its stream is stopped on the glasses).

use super::apps::AppCtx;
use super::{Hub, SessKey, TimerKey};
use crate::net::{Outbox, Target};
use crate::protocol::inbound;
use crate::protocol::outbound as messages;
use crate::protocol::outbound::data_stream_parts;
use crate::protocol::requests::RequestKind as Kind;
use crate::protocol::requests::{
    self as wire, AudioPlayFailed, AudioPlayRequest, AudioStopRequest, AudioToGlasses, LedControl,
    LedToGlasses, LocationPoll, PhotoRequest, PhotoToGlasses, ReplyIds, RtmpStreamRequest,
    RtmpStreamStop, SingleLocation, StartRtmp, StopRtmp, StreamStatusOut,
};
use crate::time::{Instant, Now};
use crate::ws::frame::Opcode;
use serde_json::json;
use std::time::Duration;

/// How long the box waits for each kind of reply before answering the app itself. Each is
/// shorter than the SDK's own timeout (PROTOCOL §10, §15), so the app hears the box's reason
/// before its SDK gives up.
#[derive(Debug, Clone)]
pub struct RequestTimings {
    /// SDK: 30 s.
    pub photo: Duration,
    /// SDK: 60 s (when `stopOtherAudio`).
    pub audio: Duration,
    /// SDK: fire-and-forget.
    pub led: Duration,
    /// SDK: 15 s.
    pub location: Duration,
    /// From `start_rtmp_stream` (or `stop_rtmp_stream`) to the glasses' first status.
    pub stream: Duration,
}

impl Default for RequestTimings {
    fn default() -> Self {
        RequestTimings {
            photo: Duration::from_secs(25),
            audio: Duration::from_secs(55),
            led: Duration::from_secs(10),
            location: Duration::from_secs(12),
            stream: Duration::from_secs(15),
        }
    }
}

#[derive(Debug)]
struct Pending {
    kind: Kind,
    app: usize,
    /// `requestId`, `correlationId` or `streamId`, as the glasses got it.
    id: Box<str>,
    /// `None`: a running stream, which ends by its status or a stop.
    deadline: Option<Instant>,
    /// A photo whose outcome the box may POST to the app's own `/photo-upload` (not when the
    /// app named another webhook); a stream being stopped.
    flag: bool,
}

/// One session's pending requests: the list and its armed deadline are made by the first
/// request and dropped once none is pending (most sessions never make one).
#[derive(Debug, Default)]
pub(super) struct Requests {
    next_stream: u32,
    active: Option<Box<Active>>,
}

#[derive(Debug, Default)]
pub(super) struct Active {
    pending: Vec<Pending>,
    /// The deadline last pushed to the hub's timer heap for this session.
    armed: Option<Instant>,
}

impl std::ops::Deref for Requests {
    type Target = Active;
    fn deref(&self) -> &Active {
        static NONE: Active = Active {
            pending: Vec::new(),
            armed: None,
        };
        self.active.as_deref().unwrap_or(&NONE)
    }
}

impl std::ops::DerefMut for Requests {
    fn deref_mut(&mut self) -> &mut Active {
        self.active.get_or_insert_with(Box::default)
    }
}

impl Active {
    /// The authoritative deadline of the session's `TimerKey::Requests` slot.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.iter().filter_map(|p| p.deadline).min()
    }

    /// The session's running stream (its first status came, no stop asked): app and id.
    pub(super) fn live_stream(&self) -> Option<(usize, &str)> {
        self.pending
            .iter()
            .find(|p| p.kind == Kind::Stream && p.deadline.is_none() && !p.flag)
            .map(|p| (p.app, &*p.id))
    }

    /// Forget the running stream `id` (declared dead); the app that ran it.
    pub(super) fn end_stream(&mut self, id: &str) -> Option<usize> {
        let at = self.find(Kind::Stream, id)?;
        Some(self.pending.remove(at).app)
    }

    fn find(&self, kind: Kind, id: &str) -> Option<usize> {
        self.pending
            .iter()
            .position(|p| p.kind == kind && &*p.id == id)
    }
}

/// Why the box answered a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    NoGlasses,
    Permission(&'static str),
    Duplicate,
    TooMany,
    StreamBusy,
    Timeout,
    /// The glasses answered with an error (photos: their code and message are passed on).
    Glasses,
}

impl Failure {
    fn code(self) -> &'static str {
        match self {
            Failure::NoGlasses => "GLASSES_NOT_CONNECTED",
            Failure::Permission(_) => "PERMISSION_DENIED",
            Failure::Duplicate => "DUPLICATE_REQUEST_ID",
            Failure::TooMany => "TOO_MANY_REQUESTS",
            Failure::StreamBusy => "STREAM_BUSY",
            Failure::Timeout => "REQUEST_TIMEOUT",
            Failure::Glasses => "GLASSES_ERROR",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Failure::NoGlasses => "no glasses are connected to this session",
            Failure::Permission("CAMERA") => "this request needs the CAMERA permission",
            Failure::Permission(_) => "this request needs the LOCATION permission",
            Failure::Duplicate => "a request with this id is already pending in this session",
            Failure::TooMany => "too many requests are pending for this session",
            Failure::StreamBusy => "the camera is already streaming in this session",
            Failure::Timeout => "the glasses did not answer in time",
            Failure::Glasses => "the glasses could not serve the request",
        }
    }
}

/// A decoded app request.
enum Req<'a> {
    Photo(PhotoRequest<'a>),
    Audio(AudioPlayRequest<'a>),
    Led(LedControl<'a>),
    Location(LocationPoll<'a>),
    Stream(RtmpStreamRequest<'a>),
}

impl Req<'_> {
    fn kind(&self) -> Kind {
        match self {
            Req::Photo(_) => Kind::Photo,
            Req::Audio(_) => Kind::Audio,
            Req::Led(_) => Kind::Led,
            Req::Location(_) => Kind::Location,
            Req::Stream(_) => Kind::Stream,
        }
    }

    /// The app's id for it (none for a stream: the box makes one).
    fn id(&self) -> &str {
        match self {
            Req::Photo(r) => &r.request_id,
            Req::Audio(r) => &r.request_id,
            Req::Led(r) => &r.request_id,
            Req::Location(r) => &r.correlation_id,
            Req::Stream(_) => "",
        }
    }
}

impl Hub {
    /// An app's request to the glasses, of the kind its type named.
    pub(super) fn app_request(
        &mut self,
        net: &mut impl Outbox,
        cx: AppCtx,
        kind: Kind,
        text: &str,
    ) {
        let AppCtx { id, sk, app, now } = cx;
        let req = match kind {
            Kind::Photo => inbound::decode(text).map(Req::Photo),
            Kind::Audio => inbound::decode(text).map(Req::Audio),
            Kind::Led => inbound::decode(text).map(Req::Led),
            Kind::Location => inbound::decode(text).map(Req::Location),
            Kind::Stream => inbound::decode(text).map(Req::Stream),
        };
        let Some(req) = req.filter(|r| r.kind() == Kind::Stream || !r.id().is_empty()) else {
            return self.app_error(
                net,
                id,
                "MALFORMED_MESSAGE",
                "the request lacks a field it needs (requestId, correlationId, audioUrl, action or rtmpUrl)",
                now,
            );
        };
        let kind = req.kind();
        let photo_upload = match &req {
            Req::Photo(p) => p.custom_webhook_url.as_deref().is_none_or(str::is_empty),
            _ => false,
        };
        let needs = match kind {
            Kind::Photo | Kind::Stream => Some("CAMERA"),
            Kind::Location => Some("LOCATION"),
            Kind::Audio | Kind::Led => None,
        };
        let max = self.cfg.max_pending_requests;
        let Some(s) = self.session(sk) else {
            return;
        };
        let pending = &s.requests.pending;
        let failure = if let Some(p) = needs.filter(|p| !self.cfg.apps[app].has_permission(p)) {
            Some(Failure::Permission(p))
        } else if s.glasses.is_none() {
            Some(Failure::NoGlasses)
        } else if kind != Kind::Stream && s.requests.find(kind, req.id()).is_some() {
            Some(Failure::Duplicate)
        } else if kind == Kind::Stream && pending.iter().any(|p| p.kind == kind) {
            Some(Failure::StreamBusy)
        } else if pending.len() >= max {
            Some(Failure::TooMany)
        } else {
            None
        };
        let glasses = match (failure, s.glasses) {
            (None, Some(g)) => g,
            (f, _) => {
                let f = f.unwrap_or(Failure::NoGlasses);
                let rid = req.id().to_string();
                return self.request_failed(net, (sk, app), kind, &rid, photo_upload, f, None, now);
            }
        };
        let timings = &self.cfg.timings.requests;
        let wait = match kind {
            Kind::Photo => timings.photo,
            Kind::Audio => timings.audio,
            Kind::Led => timings.led,
            Kind::Location => timings.location,
            Kind::Stream => timings.stream,
        };
        let Some(s) = self.session_mut(sk) else {
            return;
        };
        let stream_id = (kind == Kind::Stream).then(|| {
            s.requests.next_stream = s.requests.next_stream.wrapping_add(1);
            format!("edge-{}-{}", sk.gen, s.requests.next_stream)
        });
        let pid: Box<str> = stream_id.as_deref().unwrap_or(req.id()).into();
        s.requests.pending.push(Pending {
            kind,
            app,
            id: pid,
            deadline: Some(now.mono + wait),
            flag: photo_upload,
        });
        let spec = &self.cfg.apps[app];
        let app_id = spec.package_name.as_str();
        let ts = now.iso();
        match &req {
            Req::Photo(r) => {
                let default_url;
                let webhook_url = match r.custom_webhook_url.as_deref() {
                    Some(u) if !u.is_empty() => u,
                    _ => {
                        default_url =
                            format!("{}/photo-upload", spec.public_url.trim_end_matches('/'));
                        &default_url
                    }
                };
                net.send_json(
                    glasses,
                    &PhotoToGlasses {
                        kind: "photo_request",
                        request_id: &r.request_id,
                        app_id,
                        webhook_url,
                        auth_token: r.auth_token.as_deref(),
                        save_to_gallery: r.save_to_gallery.unwrap_or(false),
                        size: r.size.as_deref().unwrap_or("medium"),
                        compress: r.compress.as_deref().unwrap_or("none"),
                        timestamp: ts,
                    },
                )
            }
            Req::Audio(r) => net.send_json(
                glasses,
                &AudioToGlasses {
                    kind: "audio_play_request",
                    request_id: &r.request_id,
                    app_id,
                    audio_url: &r.audio_url,
                    volume: r.volume,
                    stop_other_audio: r.stop_other_audio.unwrap_or(true),
                    track_id: r.track_id,
                    timestamp: ts,
                },
            ),
            Req::Led(r) => net.send_json(
                glasses,
                &LedToGlasses {
                    kind: "rgb_led_control",
                    request_id: &r.request_id,
                    app_id,
                    action: &r.action,
                    color: r.color.as_deref(),
                    ontime: r.ontime,
                    offtime: r.offtime,
                    count: r.count,
                    timestamp: ts,
                },
            ),
            Req::Location(r) => net.send_json(
                glasses,
                &SingleLocation {
                    kind: "request_single_location",
                    accuracy: r.accuracy.as_deref().unwrap_or("standard"),
                    correlation_id: &r.correlation_id,
                    timestamp: ts,
                },
            ),
            Req::Stream(r) => net.send_json(
                glasses,
                &StartRtmp {
                    kind: "start_rtmp_stream",
                    rtmp_url: &r.rtmp_url,
                    app_id,
                    stream_id: stream_id.as_deref().unwrap_or(""),
                    video: r.video,
                    audio: r.audio,
                    stream: r.stream,
                    timestamp: ts,
                },
            ),
        };
        self.requests_flush(sk);
    }

    /// `audio_stop_request`: passed on (nothing waits for a reply).
    pub(super) fn audio_stop(&mut self, net: &mut impl Outbox, cx: AppCtx, text: &str) {
        let AppCtx { id, sk, app, now } = cx;
        let track_id = inbound::decode::<AudioStopRequest<'_>>(text).and_then(|r| r.track_id);
        match self.session(sk).and_then(|s| s.glasses) {
            Some(g) => {
                net.send_json(
                    g,
                    &wire::AudioStopToGlasses {
                        kind: "audio_stop_request",
                        app_id: &self.cfg.apps[app].package_name,
                        track_id,
                        timestamp: now.iso(),
                    },
                );
            }
            None => {
                let f = Failure::NoGlasses;
                self.app_error(net, id, f.code(), f.message(), now);
            }
        }
    }

    /// `rtmp_stream_stop`: the app's stream (by `streamId`, or its only one) is stopped on the
    /// glasses; the app hears `stopped` from them, or from the box when there are no glasses
    /// or they do not confirm in time.
    pub(super) fn stream_stop(&mut self, net: &mut impl Outbox, cx: AppCtx, text: &str) {
        let AppCtx { sk, app, now, .. } = cx;
        let want = inbound::decode::<RtmpStreamStop<'_>>(text).and_then(|r| r.stream_id);
        let wait = self.cfg.timings.requests.stream;
        let Hub { sessions, cfg, .. } = self;
        let Some(s) = sessions.get_mut(sk) else {
            return;
        };
        let at = s.requests.pending.iter().position(|p| {
            p.kind == Kind::Stream
                && p.app == app
                && want.as_deref().is_none_or(|w| w.is_empty() || *p.id == *w)
        });
        let Some(at) = at else {
            return; // nothing of this app's is streaming: already stopped
        };
        let stream_id = s.requests.pending[at].id.clone();
        match s.glasses {
            Some(g) => {
                let p = &mut s.requests.pending[at];
                p.flag = true;
                p.deadline = Some(now.mono + wait);
                net.send_json(
                    g,
                    &StopRtmp {
                        kind: "stop_rtmp_stream",
                        app_id: &cfg.apps[app].package_name,
                        stream_id: &stream_id,
                        timestamp: now.iso(),
                    },
                );
            }
            None => {
                s.requests.pending.remove(at);
                self.send_stream_status(net, (sk, app), Some(&stream_id), "stopped", "", now);
            }
        }
        self.requests_flush(sk);
    }

    /// A glasses message that is a reply to a request of `kind`: routed to the app that asked,
    /// or dropped. False when it is no reply after all (a `location_update` without
    /// `correlationId` is an ordinary location, for the subscribers).
    pub(super) fn glasses_reply(
        &mut self,
        net: &mut impl Outbox,
        sk: SessKey,
        kind: Kind,
        text: &str,
        now: Now,
    ) -> bool {
        let reply = inbound::decode::<ReplyIds<'_>>(text).unwrap_or_default();
        let rid = match kind {
            Kind::Location => match reply.correlation_id.as_deref() {
                Some(c) if !c.is_empty() => Some(c),
                _ => return false,
            },
            Kind::Stream => reply.stream_id.as_deref(),
            _ => reply.request_id.as_deref(),
        };
        let Some(s) = self.session_mut(sk) else {
            return true;
        };
        let at = match (kind, rid) {
            (_, Some(rid)) => s.requests.find(kind, rid),
            // A status without a stream id: the session's one stream.
            (Kind::Stream, None) => s.requests.pending.iter().position(|p| p.kind == kind),
            _ => None,
        };
        let Some(at) = at else {
            self.refused("UNMATCHED_REPLY");
            log::debug!("a {kind:?} reply matching no pending request was dropped");
            return true;
        };
        let p = &mut s.requests.pending[at];
        let app = p.app;
        let ended = match kind {
            Kind::Stream => reply.status.as_deref().is_none_or(wire::stream_ended),
            _ => true,
        };
        let upload = p.flag;
        let pid = p.id.clone();
        if ended {
            s.requests.pending.remove(at);
        } else {
            p.deadline = None; // running: ends by its status or a stop
            p.flag = false;
        }
        let conn = s.apps.get(&app).and_then(|r| r.conn);
        match kind {
            Kind::Audio | Kind::Led | Kind::Stream => {
                if let Some(c) = conn {
                    net.send_text(c, text);
                }
            }
            Kind::Location => {
                if let Some((c, run)) = conn.zip(s.apps.get(&app)) {
                    let parts = data_stream_parts(
                        &run.prefix,
                        [b"\"", b"location_update", b"\""],
                        text.as_bytes(),
                        now.iso(),
                    );
                    net.send_frame(c, Opcode::Text, &parts);
                }
            }
            Kind::Photo => {
                // The photo itself went from the glasses to the app server; a failure is told
                // to the app server the same way, in the glasses' words.
                if reply.success == Some(false) || reply.error.is_some() {
                    let code = reply.error.as_ref().and_then(|e| e.code());
                    let message = reply.error.as_ref().and_then(|e| e.message());
                    let (code, message) = (
                        code.unwrap_or(Failure::Glasses.code()),
                        message.unwrap_or(Failure::Glasses.message()),
                    );
                    self.refused(Failure::Glasses.code());
                    if upload {
                        self.post_photo_error(net, app, &pid, code, message, now);
                    }
                }
            }
        }
        self.requests_flush(sk);
        true
    }

    /// The box answers a request itself, in the form the app's SDK understands.
    #[allow(clippy::too_many_arguments)]
    fn request_failed(
        &mut self,
        net: &mut impl Outbox,
        (sk, app): (SessKey, usize),
        kind: Kind,
        rid: &str,
        photo_upload: bool,
        f: Failure,
        stopping: Option<bool>,
        now: Now,
    ) {
        self.refused(f.code());
        let conn = self
            .session(sk)
            .and_then(|s| s.apps.get(&app))
            .and_then(|r| r.conn);
        let text = format!("{}: {}", f.code(), f.message());
        match kind {
            Kind::Photo if photo_upload => {
                self.post_photo_error(net, app, rid, f.code(), f.message(), now)
            }
            Kind::Audio => {
                if let Some(c) = conn {
                    net.send_json(
                        c,
                        &AudioPlayFailed {
                            kind: "audio_play_response",
                            request_id: rid,
                            success: false,
                            error: &text,
                            timestamp: now.iso(),
                        },
                    );
                }
            }
            Kind::Stream => {
                let (status, details) = match stopping {
                    Some(true) => ("stopped", "the glasses did not confirm the stop"),
                    _ => ("error", text.as_str()),
                };
                let id = (!rid.is_empty()).then_some(rid);
                self.send_stream_status(net, (sk, app), id, status, details, now);
            }
            Kind::Photo | Kind::Led | Kind::Location => {
                if let Some(c) = conn {
                    let key = if kind == Kind::Location {
                        "correlationId"
                    } else {
                        "requestId"
                    };
                    let msg =
                        messages::tpa_error(f.code(), f.message(), json!({ key: rid }), now.iso());
                    net.send_json(c, &msg);
                }
            }
        }
    }

    pub(super) fn send_stream_status(
        &self,
        net: &mut impl Outbox,
        (sk, app): (SessKey, usize),
        stream_id: Option<&str>,
        status: &str,
        details: &str,
        now: Now,
    ) {
        let conn = self
            .session(sk)
            .and_then(|s| s.apps.get(&app))
            .and_then(|r| r.conn);
        if let Some(c) = conn {
            net.send_json(
                c,
                &StreamStatusOut {
                    kind: "rtmp_stream_status",
                    stream_id,
                    status,
                    error_details: details,
                    app_id: &self.cfg.apps[app].package_name,
                    timestamp: now.iso(),
                },
            );
        }
    }

    /// POST a `photo_error` to the app server's `/photo-upload`, as webhooks are sent (an
    /// outbound request of its own; its outcome is only logged).
    fn post_photo_error(
        &mut self,
        net: &mut impl Outbox,
        app: usize,
        request_id: &str,
        code: &str,
        message: &str,
        now: Now,
    ) {
        let spec = &self.cfg.apps[app];
        let Target { host, port, .. } = &spec.webhook_target;
        let body = wire::PhotoError {
            request_id,
            kind: "photo_error",
            success: false,
            error_code: code,
            error_message: message,
        };
        let path = format!("{}/photo-upload", spec.webhook_path);
        let request = messages::http_post(host, *port, &path, &body);
        let deadline = now.mono + self.cfg.timings.webhook_timeout;
        if net
            .open_client(spec.webhook_target.clone(), &request, deadline)
            .is_none()
        {
            log::warn!(
                "photo error for {:?} not sent: too many outbound requests",
                spec.package_name
            );
        }
    }

    /// The session's requests deadline came: every request past its deadline is answered.
    pub(super) fn requests_tick(&mut self, net: &mut impl Outbox, sk: SessKey, now: Now) {
        let Some(s) = self.session_mut(sk) else {
            return;
        };
        s.requests.armed = None;
        let mut due = Vec::new();
        s.requests.pending.retain(|p| {
            let expired = p.deadline.is_some_and(|d| d <= now.mono);
            if expired {
                due.push((p.kind, p.app, p.id.clone(), p.flag));
            }
            !expired
        });
        for (kind, app, rid, flag) in due {
            let stopping = (kind == Kind::Stream).then_some(flag);
            let upload = kind == Kind::Photo && flag;
            self.request_failed(
                net,
                (sk, app),
                kind,
                &rid,
                upload,
                Failure::Timeout,
                stopping,
                now,
            );
        }
        self.requests_flush(sk);
    }

    /// Re-arm the session's `TimerKey::Requests` slot if its deadline moved.
    pub(super) fn requests_flush(&mut self, sk: SessKey) {
        let Some(s) = self.session_mut(sk) else {
            return;
        };
        let deadline = s.requests.deadline();
        let moved = deadline != s.requests.armed;
        if deadline.is_none() && s.requests.pending.is_empty() {
            s.requests.active = None;
        } else {
            s.requests.armed = deadline;
        }
        if let Some(at) = deadline.filter(|_| moved) {
            self.arm(at, TimerKey::Requests(sk));
        }
    }

    /// `app` was stopped in the session: its requests are forgotten (their late replies are
    /// dropped) and its stream is stopped on the glasses.
    pub(super) fn requests_app_stopped(
        &mut self,
        net: &mut impl Outbox,
        sk: SessKey,
        app: usize,
        now: Now,
    ) {
        let Hub { sessions, cfg, .. } = self;
        let Some(s) = sessions.get_mut(sk) else {
            return;
        };
        if !s.requests.pending.iter().any(|p| p.app == app) {
            return;
        }
        let glasses = s.glasses;
        let package = &cfg.apps[app].package_name;
        s.requests.pending.retain(|p| {
            if p.app != app {
                return true;
            }
            if let (Kind::Stream, Some(g)) = (p.kind, glasses) {
                net.send_json(
                    g,
                    &StopRtmp {
                        kind: "stop_rtmp_stream",
                        app_id: package,
                        stream_id: &p.id,
                        timestamp: now.iso(),
                    },
                );
            }
            false
        });
        self.requests_flush(sk);
    }

    /// Requests pending in `user`'s session (for tests and reports).
    pub fn pending_requests(&self, user: &str) -> usize {
        self.sessions
            .by_user(user)
            .and_then(|sk| self.session(sk))
            .map_or(0, |s| s.requests.pending.len())
    }
}
