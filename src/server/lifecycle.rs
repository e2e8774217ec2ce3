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
        self.watch_drain();
        self.hub.shutdown(&mut self.net, now);
        let ids: Vec<ConnId> = self.net.ids().collect();
        for id in ids {
            match self.net.get(id).map(|c| &c.phase) {
                Some(Phase::Ws(_)) => self.net.close_websocket(id, 1001, "going away", now.mono),
                Some(Phase::Http) => self.net.finish(id),
                _ => continue,
            }
            self.net.mark_dirty(id);
        }
        self.after(now, None);
    }

    /// No client connection is left (outbound requests are not waited for).
    pub fn drained(&self) -> bool {
        self.net.inbound_count() == 0
    }

    /// Swap the app registry (from a re-read config) while sessions run.
    pub fn handle_reload(&mut self, apps: Vec<AppSpec>, now: Now) -> Reloaded {
        self.net.now = now.mono;
        let done = self.hub.reload_apps(&mut self.net, apps, now);
        self.after(now, None);
        self.settle_flow(false, None, true);
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::HubConfig;
    use crate::net::Peer;
    use crate::server::ServerConfig;
    use crate::time::{Instant, Wall};

    #[test]
    fn a_stop_finishes_a_connection_that_never_sent_a_byte() {
        let now = Now::new(Instant::ZERO, Wall::from_micros(0));
        let mut s = Server::new(ServerConfig::default(), HubConfig::default(), now);
        let silent = s.handle_accept(Peer::InProcess, now).unwrap();
        let mut req = b"GET /health HTTP/1.1\r\nHost: x\r\n".to_vec();
        let started = s.handle_accept(Peer::InProcess, now).unwrap();
        s.handle_input(started, &mut req, now);
        s.handle_shutdown(now);
        // Both are closed at once, not held until their handshake deadline.
        assert!(s.wants_close(silent));
        assert!(s.wants_close(started));
    }
}
