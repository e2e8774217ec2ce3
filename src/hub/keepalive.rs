//! Core layer (sans-IO), part of the hub: keep-alives of a live RTMP stream. The glasses end a
//! stream the cloud stops confirming; while the session's stream is live (its first
//! non-ending `rtmp_stream_status` came and no stop was asked), the box sends the glasses
//! `keep_rtmp_stream_alive` (`streamId`, `ackId`) every [`INTERVAL`], and they answer
//! `keep_alive_ack` with the same ids. After [`MAX_MISSED`] keep-alives in a row go
//! unanswered the stream is declared dead: the app is sent `rtmp_stream_status` `timeout`
//! (`errorDetails` `KEEPALIVE_TIMEOUT: …`), the glasses `stop_rtmp_stream`, and it is counted
//! (`refusals{code="KEEPALIVE_TIMEOUT"}`).
//!
//! Owns [`KeepAlive`], one per session with a live stream (`Session::keepalive`). Its
//! `next_at` is the slot of `TimerKey::KeepAlive`.
//!
//! Invariants: the state follows the session's requests — a tick that finds the stream no
//! longer live (ended, stopped, its app gone) drops the state and sends nothing; an ack
//! counts only for the live stream and an `ackId` the box sent it (any of them: a late ack
//! still proves the glasses alive); any other ack is dropped and counted
//! (`UNMATCHED_KEEPALIVE_ACK`), never relayed.

use super::{Hub, SessKey, TimerKey};
use crate::net::{ConnId, Outbox};
use crate::protocol::inbound;
use crate::protocol::requests::{KeepAliveAck, KeepStreamAlive, StopRtmp};
use crate::time::{Instant, Now};
use std::time::Duration;

/// How often a live stream is kept alive (the MentraOS cloud's period).
pub(super) const INTERVAL: Duration = Duration::from_secs(15);
/// Keep-alives in a row without an ack after which the stream is dead.
pub(super) const MAX_MISSED: u32 = 3;

/// The keep-alives of one live stream.
#[derive(Debug)]
pub(super) struct KeepAlive {
    stream_id: Box<str>,
    /// The last `ackId` sent (they count from 1; 0: none sent yet).
    sent: u32,
    /// Whether the last one sent is still unanswered.
    waiting: bool,
    /// Keep-alives in a row that went unanswered.
    missed: u32,
    /// When the next keep-alive is due.
    pub(super) next_at: Instant,
}

impl Hub {
    /// A stream status came: keep the session's live stream alive (a new one from its first
    /// keep-alive, due one [`INTERVAL`] from now).
    pub(super) fn keepalive_sync(&mut self, sk: SessKey, now: Now) {
        let Some(s) = self.session_mut(sk) else {
            return;
        };
        let live = s.requests.live_stream().map(|(_, id)| Box::<str>::from(id));
        let kept = s.keepalive.as_ref().map(|k| &k.stream_id);
        if live.as_ref() == kept {
            return;
        }
        let Some(stream_id) = live else {
            s.keepalive = None;
            return;
        };
        let next_at = now.mono + INTERVAL;
        s.keepalive = Some(Box::new(KeepAlive {
            stream_id,
            sent: 0,
            waiting: false,
            missed: 0,
            next_at,
        }));
        self.arm(next_at, TimerKey::KeepAlive(sk));
    }

    /// A keep-alive is due: count the last one if it went unanswered, declare the stream dead
    /// after [`MAX_MISSED`], else send the next.
    pub(super) fn keepalive_tick(&mut self, net: &mut impl Outbox, sk: SessKey, now: Now) {
        let Some(s) = self.session_mut(sk) else {
            return;
        };
        let Some(k) = s.keepalive.as_deref_mut() else {
            return;
        };
        let live = s.requests.live_stream();
        let Some((app, _)) = live.filter(|(_, id)| **id == *k.stream_id) else {
            s.keepalive = None;
            return;
        };
        if k.waiting {
            k.missed += 1;
        }
        if k.missed >= MAX_MISSED {
            let stream_id = k.stream_id.clone();
            s.keepalive = None;
            return self.stream_dead(net, sk, app, &stream_id, now);
        }
        k.sent += 1;
        k.waiting = true;
        k.next_at = now.mono + INTERVAL;
        let (next_at, ack_id) = (k.next_at, k.sent.to_string());
        if let Some(g) = s.glasses {
            let msg = KeepStreamAlive {
                kind: "keep_rtmp_stream_alive",
                stream_id: &k.stream_id,
                ack_id: &ack_id,
                timestamp: now.iso(),
            };
            net.send_json(g, &msg);
        }
        self.arm(next_at, TimerKey::KeepAlive(sk));
    }

    /// `keep_alive_ack` from the glasses.
    pub(super) fn keepalive_ack(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        sk: SessKey,
        text: &str,
        now: Now,
    ) {
        let Some(ack) = inbound::decode::<KeepAliveAck<'_>>(text) else {
            let why = "keep_alive_ack needs string streamId and ackId";
            return self.glasses_error(net, id, "MALFORMED_MESSAGE", why, false, now);
        };
        let k = self
            .session_mut(sk)
            .and_then(|s| s.keepalive.as_deref_mut());
        let known = k.filter(|k| ack.stream_id.as_deref() == Some(&*k.stream_id));
        let n = ack.ack_id.as_deref().and_then(|a| a.parse::<u32>().ok());
        match (known, n) {
            (Some(k), Some(n)) if (1..=k.sent).contains(&n) => {
                k.waiting = false;
                k.missed = 0;
            }
            _ => {
                self.refused("UNMATCHED_KEEPALIVE_ACK");
                log::debug!("a keep_alive_ack matching no live stream was dropped");
            }
        }
    }

    /// The glasses stopped answering: the stream is over for the app and the glasses.
    fn stream_dead(
        &mut self,
        net: &mut impl Outbox,
        sk: SessKey,
        app: usize,
        stream_id: &str,
        now: Now,
    ) {
        self.refused("KEEPALIVE_TIMEOUT");
        log::warn!(
            "event=stream_dead session={:?} package={:?} stream={stream_id:?}",
            self.session(sk).map_or("", |s| &*s.user),
            self.cfg.apps[app].package_name
        );
        if let Some(s) = self.session_mut(sk) {
            s.requests.end_stream(stream_id);
        }
        let details = "KEEPALIVE_TIMEOUT: the glasses stopped answering keep-alives";
        self.send_stream_status(net, (sk, app), Some(stream_id), "timeout", details, now);
        if let Some(g) = self.session(sk).and_then(|s| s.glasses) {
            let msg = StopRtmp {
                kind: "stop_rtmp_stream",
                app_id: &self.cfg.apps[app].package_name,
                stream_id,
                timestamp: now.iso(),
            };
            net.send_json(g, &msg);
        }
        self.requests_flush(sk);
    }
}
