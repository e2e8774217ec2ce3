//! Core layer (sans-IO), part of the hub: the webhooks. Owns those in flight (by the outbound
//! connection they went on), the one waiting per (session, app) behind the one in flight for
//! it, the per-app-server FIFOs with their slots ([`WebhookQueue`]), and the counter that
//! gives every app start its id.
//!
//! Bookkeeping only: the lifecycle (`lifecycle.rs`) decides what to send, whether a waiting
//! one is still wanted, and what an outcome means.
//!
//! Invariants:
//! - a webhook in flight holds one slot at its app server from [`Webhooks::sent`] until
//!   [`Webhooks::finished`] gives it back (to the server it went to, whatever a reload
//!   changed since);
//! - at most one webhook waits per (session, app) behind the one in flight: a newer one
//!   replaces it, so the app server hears a burst of start/stop toggles as the latest wish;
//! - start ids are never reused while the hub lives (they wrap after `u32::MAX` starts).

use super::sessions::SessKey;
use super::webhook_queue::{ServerLoad, Waiting, WebhookQueue};
use crate::net::{ConnId, Target};
use crate::time::Instant;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy)]
pub(super) enum WebhookKind {
    Start { start: u32, attempt: u32 },
    Stop,
}

#[derive(Debug)]
pub(super) struct Webhook {
    pub(super) sess: SessKey,
    pub(super) app: usize,
    pub(super) kind: WebhookKind,
    /// When it was handed to the connection table (for the latency histogram).
    pub(super) sent: Instant,
    /// The app server it went to (its slot is given back there, whatever a reload changes).
    pub(super) target: Target,
}

/// A webhook waiting for the one in flight for the same (session, app) to finish; a newer one
/// replaces it (start/stop toggles coalesce, the app server hears only the latest).
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) kind: WebhookKind,
    pub(super) request: Vec<u8>,
}

/// The webhooks in flight and waiting.
#[derive(Debug, Default)]
pub(super) struct Webhooks {
    in_flight: IdMap<Webhook>,
    /// The next webhook of a (session, app) whose current one is still in flight.
    queued: HashMap<(SessKey, usize), Queued>,
    /// Slots and FIFOs per app server.
    servers: WebhookQueue,
    /// The id of the latest start.
    next_start: u32,
}

impl Webhooks {
    /// The id of a new start (unique in the hub).
    #[inline]
    pub fn new_start(&mut self) -> u32 {
        self.next_start = self.next_start.wrapping_add(1);
        self.next_start
    }

    /// The kinds of the webhooks in flight for (`sk`, `app`).
    #[inline]
    pub fn in_flight_for(&self, sk: SessKey, app: usize) -> impl Iterator<Item = WebhookKind> + '_ {
        self.in_flight
            .values()
            .filter(move |w| w.sess == sk && w.app == app)
            .map(|w| w.kind)
    }

    /// Keep `q` to send after the one in flight for (`sk`, `app`); true if it replaced one
    /// that waited already (coalesced).
    #[inline]
    pub fn wait_behind(&mut self, sk: SessKey, app: usize, q: Queued) -> bool {
        self.queued.insert((sk, app), q).is_some()
    }

    /// The webhook that waited behind the one in flight for (`sk`, `app`).
    #[inline]
    pub fn take_behind(&mut self, sk: SessKey, app: usize) -> Option<Queued> {
        self.queued.remove(&(sk, app))
    }

    /// A new webhook to `target` may be sent now: a slot is free and none waits before it.
    #[inline]
    pub fn can_send(&self, target: &Target, cap: usize) -> bool {
        self.servers.can_send(target, cap)
    }

    /// Queue `w` at the back of `target`'s FIFO; given back when `bound` wait already.
    #[inline]
    pub fn push(&mut self, target: &Target, w: Waiting, bound: usize) -> Result<(), Waiting> {
        self.servers.push(target, w, bound)
    }

    /// The head of `target`'s FIFO, if a slot is free for it.
    #[inline]
    pub fn next(&mut self, target: &Target, cap: usize) -> Option<Waiting> {
        self.servers.next(target, cap)
    }

    /// Take the start of (`sk`, `app`) out of the FIFO it waits in.
    #[inline]
    pub fn cancel_start(&mut self, sk: SessKey, app: usize) -> Option<Waiting> {
        self.servers.cancel_start(sk, app)
    }

    /// Webhooks waiting in the FIFOs, all servers together.
    #[inline]
    pub fn waiting(&self) -> usize {
        self.servers.waiting()
    }

    /// The load of `target` at `now`.
    #[inline]
    pub fn load(&self, target: &Target, now: Instant) -> ServerLoad {
        self.servers.load(target, now)
    }

    /// `w` went out on the outbound connection `conn`: it holds a slot at its server.
    #[inline]
    pub fn sent(&mut self, conn: ConnId, w: Webhook) {
        self.servers.sent(&w.target);
        self.in_flight.insert(conn, w);
    }

    /// The webhook on `conn` has its outcome: its slot is free again; it, if `conn` carried one.
    #[inline]
    pub fn finished(&mut self, conn: ConnId) -> Option<Webhook> {
        let w = self.in_flight.remove(&conn)?;
        self.servers.finished(&w.target);
        Some(w)
    }
}

/// Hashes the connection ids the hub keys its maps by. They are ours (slab index and
/// generation), not a peer's, so SipHash's flooding resistance buys nothing; a multiply per word
/// spreads them well enough and costs a fraction (these maps are read once per message).
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type IdMap<V> = HashMap<ConnId, V, std::hash::BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            host: "apps.example".into(),
            port: 80,
            tls: None,
        }
    }

    fn webhook(slot: u32, app: usize, kind: WebhookKind) -> Webhook {
        Webhook {
            sess: SessKey { slot, gen: 1 },
            app,
            kind,
            sent: Instant::from_micros(0),
            target: target(),
        }
    }

    fn conn(index: u32) -> ConnId {
        ConnId { index, gen: 0 }
    }

    #[test]
    fn in_flight_until_finished_holding_a_slot_at_its_server() {
        let mut w = Webhooks::default();
        let start = WebhookKind::Start {
            start: w.new_start(),
            attempt: 1,
        };
        w.sent(conn(1), webhook(0, 2, start));
        w.sent(conn(2), webhook(0, 3, WebhookKind::Stop));
        assert!(!w.can_send(&target(), 2), "both slots are taken");
        let sk = SessKey { slot: 0, gen: 1 };
        let kinds: Vec<_> = w.in_flight_for(sk, 2).collect();
        assert!(matches!(kinds[..], [WebhookKind::Start { attempt: 1, .. }]));
        assert_eq!(w.in_flight_for(sk, 4).count(), 0);
        assert_eq!(w.finished(conn(1)).map(|h| h.app), Some(2));
        assert!(w.finished(conn(1)).is_none(), "finished once");
        assert!(w.can_send(&target(), 2), "its slot is free again");
        assert_eq!(w.in_flight_for(sk, 2).count(), 0);
        w.finished(conn(2));
        assert_eq!(w.load(&target(), Instant::from_micros(0)).in_flight, 0);
    }

    #[test]
    fn one_waits_behind_the_one_in_flight_and_a_newer_replaces_it() {
        let mut w = Webhooks::default();
        let sk = SessKey { slot: 0, gen: 1 };
        let q = |kind| Queued {
            kind,
            request: Vec::new(),
        };
        assert!(!w.wait_behind(sk, 1, q(WebhookKind::Stop)));
        let start = WebhookKind::Start {
            start: 7,
            attempt: 1,
        };
        assert!(w.wait_behind(sk, 1, q(start)), "the newer one replaced it");
        assert!(!w.wait_behind(sk, 2, q(WebhookKind::Stop)), "another app");
        let next = w.take_behind(sk, 1).map(|q| q.kind);
        assert!(matches!(next, Some(WebhookKind::Start { start: 7, .. })));
        assert!(w.take_behind(sk, 1).is_none());
        assert!(w.take_behind(sk, 2).is_some());
    }

    #[test]
    fn start_ids_count_up() {
        let mut w = Webhooks::default();
        assert_eq!([w.new_start(), w.new_start(), w.new_start()], [1, 2, 3]);
    }
}
