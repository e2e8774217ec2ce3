//! Core layer (sans-IO): the server's part of an orderly stop and of a configuration reload —
//! inputs the shell gives on a signal, like any other input, with the turn's time.
//!
//! [`Server::handle_shutdown`]: the hub closes its glasses and app connections (1001 "going
//! away"); the server closes what the hub does not own the same way (the echo route) and
//! finishes HTTP exchanges in progress; outbound requests are left to end on their own
//! deadlines. The shell keeps flushing until [`Server::drained`] or its own bound.
//! [`Server::handle_reload`]: a new app registry, applied by the hub without dropping sessions.

use super::Server;
use crate::hub::registry::AppSpec;
use crate::hub::Reloaded;
use crate::net::{ConnId, Outbox, Phase};
use crate::time::Now;

impl Server {
    /// Begin an orderly stop: every client WebSocket is closed with 1001 "going away".
    pub fn handle_shutdown(&mut self, now: Now) {
        self.net.now = now.mono;
        self.stopping = true;
        self.listeners = Some(0);
        self.hub.shutdown(&mut self.net, now);
        let ids: Vec<ConnId> = self
            .proto
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                p.as_ref().map(|p| ConnId {
                    index: i as u32,
                    gen: p.gen,
                })
            })
            .collect();
        for id in ids {
            match self.net.get(id).map(|c| &c.phase) {
                Some(Phase::Ws(_)) => self.net.close_websocket(id, 1001, "going away", now.mono),
                Some(Phase::Http) => self.net.finish(id),
                _ => continue,
            }
            self.net.mark_dirty(id);
        }
        self.after(now);
    }

    /// No client connection is left (outbound requests are not waited for).
    pub fn drained(&self) -> bool {
        self.net.inbound_count() == 0
    }

    /// Swap the app registry (from a re-read config) while sessions run.
    pub fn handle_reload(&mut self, apps: Vec<AppSpec>, now: Now) -> Reloaded {
        self.net.now = now.mono;
        let done = self.hub.reload_apps(&mut self.net, apps, now);
        self.after(now);
        done
    }
}
