//! Core layer (sans-IO), part of the hub: webhooks in flight and waiting, per app server
//! (host and port). At most `maxWebhooksPerServer` are in flight to one app server; the rest
//! wait here in that server's FIFO, at most `maxQueuedWebhooks` in all servers together, and
//! the head of a FIFO is handed out as soon as one in flight to its server finishes.
//!
//! Bookkeeping only: the lifecycle (`lifecycle.rs`) decides what to send, when a waiting
//! start is given up, and what a refusal means; time comes in as values.
//!
//! Invariants:
//! - a server's FIFO is non-empty only while its in-flight count is at the cap (the caller
//!   asks for the next one after every finish, and a new webhook waits whenever anyone waits),
//!   so arrival order is sending order;
//! - the FIFOs hold at most the bound in total;
//! - a server with nothing in flight and nothing waiting holds no entry (an emptied FIFO gives
//!   its memory back).

use super::sessions::SessKey;
use super::webhooks::WebhookKind;
use crate::net::Target;
use crate::time::Instant;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// A webhook waiting for a slot at its app server.
#[derive(Debug)]
pub(super) struct Waiting {
    pub sess: SessKey,
    pub app: usize,
    pub kind: WebhookKind,
    pub request: Vec<u8>,
    /// When it began to wait.
    pub since: Instant,
}

#[derive(Debug, Default)]
struct Server {
    in_flight: usize,
    fifo: VecDeque<Waiting>,
}

/// One app server's load, for `/metrics` and the operator page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLoad {
    pub server: String,
    pub in_flight: usize,
    pub waiting: usize,
    /// How long the oldest waiting webhook has waited (zero when none waits).
    pub oldest: Duration,
}

#[derive(Debug, Default)]
pub(super) struct WebhookQueue {
    servers: HashMap<Target, Server>,
    waiting: usize,
}

impl WebhookQueue {
    /// A new webhook to `target` may be sent now: a slot is free and none waits before it.
    pub fn can_send(&self, target: &Target, cap: usize) -> bool {
        self.servers
            .get(target)
            .is_none_or(|s| s.in_flight < cap && s.fifo.is_empty())
    }

    /// One more in flight to `target`.
    pub fn sent(&mut self, target: &Target) {
        self.servers.entry(target.clone()).or_default().in_flight += 1;
    }

    /// One in flight to `target` finished.
    pub fn finished(&mut self, target: &Target) {
        if let Some(s) = self.servers.get_mut(target) {
            s.in_flight = s.in_flight.saturating_sub(1);
            self.forget_if_idle(target);
        }
    }

    /// Queue `w` at the back of `target`'s FIFO; given back when `bound` webhooks wait already.
    pub fn push(&mut self, target: &Target, w: Waiting, bound: usize) -> Result<(), Waiting> {
        if self.waiting >= bound {
            return Err(w);
        }
        self.servers
            .entry(target.clone())
            .or_default()
            .fifo
            .push_back(w);
        self.waiting += 1;
        Ok(())
    }

    /// The head of `target`'s FIFO, if a slot is free for it.
    pub fn next(&mut self, target: &Target, cap: usize) -> Option<Waiting> {
        let s = self.servers.get_mut(target)?;
        if s.in_flight >= cap {
            return None;
        }
        let w = s.fifo.pop_front();
        if w.is_some() {
            self.waiting -= 1;
        }
        self.forget_if_idle(target);
        w
    }

    /// Take the start of (`sess`, `app`) out of the FIFO it waits in (it was cancelled);
    /// returns it. Every server is looked at: a reload may have moved the app since.
    pub fn cancel_start(&mut self, sess: SessKey, app: usize) -> Option<Waiting> {
        let (target, at) = self.servers.iter().find_map(|(t, s)| {
            let at = s.fifo.iter().position(|w| {
                w.sess == sess && w.app == app && matches!(w.kind, WebhookKind::Start { .. })
            })?;
            Some((t.clone(), at))
        })?;
        let w = self.servers.get_mut(&target)?.fifo.remove(at);
        if w.is_some() {
            self.waiting -= 1;
        }
        self.forget_if_idle(&target);
        w
    }

    /// Webhooks waiting, all servers together.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// The load of `target` at `now`.
    pub fn load(&self, target: &Target, now: Instant) -> ServerLoad {
        let s = self.servers.get(target);
        ServerLoad {
            server: format!("{}:{}", target.host, target.port),
            in_flight: s.map_or(0, |s| s.in_flight),
            waiting: s.map_or(0, |s| s.fifo.len()),
            oldest: s
                .and_then(|s| s.fifo.front())
                .map_or(Duration::ZERO, |w| now.saturating_since(w.since)),
        }
    }

    fn forget_if_idle(&mut self, target: &Target) {
        if self
            .servers
            .get(target)
            .is_some_and(|s| s.in_flight == 0 && s.fifo.is_empty())
        {
            self.servers.remove(target);
        } else if let Some(s) = self.servers.get_mut(target) {
            if s.fifo.is_empty() && s.fifo.capacity() > 0 {
                s.fifo = VecDeque::new();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(port: u16) -> Target {
        Target {
            host: "apps.example".into(),
            port,
            tls: None,
        }
    }

    fn sk(slot: u32) -> SessKey {
        SessKey { slot, gen: 0 }
    }

    fn waiting(slot: u32, since: Instant) -> Waiting {
        Waiting {
            sess: sk(slot),
            app: 0,
            kind: WebhookKind::Start {
                start: slot,
                attempt: 1,
            },
            request: Vec::new(),
            since,
        }
    }

    #[test]
    fn fifo_per_server_bounded_in_total_and_forgotten_when_idle() {
        let (a, b) = (target(1), target(2));
        let t0 = Instant::from_micros(0);
        let mut q = WebhookQueue::default();
        assert!(q.can_send(&a, 1));
        q.sent(&a);
        assert!(!q.can_send(&a, 1));
        assert!(q.can_send(&b, 1), "another server is not held up");
        for i in 0..3 {
            q.push(&a, waiting(i, t0 + Duration::from_secs(i as u64)), 4)
                .unwrap();
        }
        q.push(&b, waiting(9, t0), 4).unwrap();
        assert!(
            !q.can_send(&b, 1),
            "one waits at b: a new one waits behind it"
        );
        assert!(
            q.push(&b, waiting(10, t0), 4).is_err(),
            "the bound is total"
        );
        let load = q.load(&a, t0 + Duration::from_secs(5));
        assert_eq!((load.in_flight, load.waiting), (1, 3));
        assert_eq!(load.oldest, Duration::from_secs(5));
        // Nothing is handed out while the slot is taken; then in arrival order.
        assert!(q.next(&a, 1).is_none());
        q.finished(&a);
        assert_eq!(q.next(&a, 1).map(|w| w.sess), Some(sk(0)));
        q.sent(&a);
        assert_eq!(q.cancel_start(sk(1), 0).map(|w| w.sess), Some(sk(1)));
        assert!(q.cancel_start(sk(1), 0).is_none(), "taken out once");
        q.finished(&a);
        assert_eq!(q.next(&a, 1).map(|w| w.sess), Some(sk(2)));
        assert_eq!(q.waiting(), 1);
        q.sent(&a);
        q.finished(&a);
        assert!(q.next(&a, 1).is_none());
        assert!(!q.servers.contains_key(&a), "an idle server holds nothing");
    }
}
