//! Core layer (sans-IO), part of the hub: the glasses side of a session. `connection_init`
//! (create or resume), app start/stop requests, settings, the relay of glasses events to
//! subscribed apps, the init deadline and the end of a session after its grace period.
//!
//! Every glasses text message is decoded once, into a [`GlassesMsg`], and dispatched by the
//! one `match` in [`Hub::glasses_message`]; no handler after it reads the `type` as text.
//!
//! Invariants: a glasses connection acts on a session only after `connection_init` bound it,
//! and belongs to that one session for its whole life: a later `connection_init` for another
//! user is refused (`ALREADY_INITIALIZED`) and the connection closed, which starts the first
//! session's grace period like any other close.

use super::{access, screen, Hub, JoinError, Link, RateLimit, SessKey, Session};
use crate::net::{ConnId, Outbox};
use crate::protocol::inbound::{self, AppLifecycle, ConnectionInit};
use crate::protocol::message::GlassesMsg;
use crate::protocol::outbound as messages;
use crate::protocol::outbound::SettingsUpdate;
use crate::protocol::requests::RequestKind;
use crate::state::LeaseNews;
use crate::time::Now;

impl Hub {
    // ---- glasses -------------------------------------------------------------------------

    pub(super) fn glasses_error(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        code: &'static str,
        message: &str,
        close: bool,
        now: Now,
    ) {
        self.refused(code);
        log::info!("event=glasses_refused connection={id} code={code} close={close}");
        net.send_json(id, &messages::connection_error(code, message, now.iso()));
        if close {
            // Unlink as a closed connection would be: a bound session starts its grace period
            // (removing the link alone would leave the session on this dead connection forever).
            self.on_closed(net, id, now);
            net.close_websocket(id, 1008, message, now.mono);
        }
    }

    /// Every text message of a glasses connection: decoded once, dispatched by its kind.
    /// Until `connection_init` bound the connection to a session, only that is taken.
    pub(super) fn glasses_message(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        text: &str,
        now: Now,
    ) {
        let msg = match GlassesMsg::decode(text) {
            Ok(msg) => msg,
            Err(e) => {
                return self.glasses_error(net, id, "MALFORMED_MESSAGE", e.message(), false, now)
            }
        };
        let Some(Link::Glasses {
            user,
            bearer,
            session,
            ..
        }) = self.links.get(&id)
        else {
            return;
        };
        let session = *session;
        if matches!(msg, GlassesMsg::ConnectionInit) {
            let token_user = match (user, session) {
                (Some(u), _) => Some(u.clone()),
                (None, Some(sk)) if *bearer => self.session(sk).map(|s| s.user.to_string()),
                _ => None,
            };
            return self.glasses_init(net, id, token_user, session, text, now);
        }
        let Some(sk) = session else {
            return self.glasses_error(
                net,
                id,
                "NOT_INITIALIZED",
                "send connection_init first",
                false,
                now,
            );
        };
        match msg {
            GlassesMsg::ConnectionInit => {}
            GlassesMsg::StartApp => self.glasses_lifecycle(net, id, sk, true, text, now),
            GlassesMsg::StopApp => self.glasses_lifecycle(net, id, sk, false, text, now),
            GlassesMsg::RequestSettings => {
                let Some(s) = self.session(sk) else { return };
                let settings = s.settings();
                net.send_json(
                    id,
                    &SettingsUpdate {
                        kind: "settings_update",
                        session_id: &s.user,
                        success: true,
                        message: "Current settings retrieved successfully",
                        settings: &settings,
                        timestamp: now.iso(),
                    },
                );
            }
            GlassesMsg::Reply(kind) => {
                self.glasses_reply(net, sk, kind, text, now);
                if kind == RequestKind::Stream {
                    self.keepalive_sync(sk, now);
                }
            }
            GlassesMsg::KeepAliveAck => self.keepalive_ack(net, id, sk, text, now),
            GlassesMsg::Location(ev) => {
                if !self.glasses_reply(net, sk, RequestKind::Location, text, now) {
                    self.relay(net, sk, &ev, now);
                }
            }
            GlassesMsg::CoreStatus(ev) => {
                self.core_status(net, sk, text, now);
                self.relay(net, sk, &ev, now);
            }
            GlassesMsg::ConnectionState(ev) => {
                self.connection_state(net, sk, text, now);
                self.relay(net, sk, &ev, now);
            }
            GlassesMsg::Event(ev) => self.relay(net, sk, &ev, now),
        }
    }

    /// `start_app` (`start`) or `stop_app` from the glasses.
    fn glasses_lifecycle(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        sk: SessKey,
        start: bool,
        text: &str,
        now: Now,
    ) {
        let Some(msg) = inbound::decode::<AppLifecycle<'_>>(text) else {
            return self.glasses_error(
                net,
                id,
                "MALFORMED_MESSAGE",
                "packageName missing",
                false,
                now,
            );
        };
        let Some(app) = self.app_index(&msg.package_name) else {
            return self.glasses_error(
                net,
                id,
                "PACKAGE_NOT_FOUND",
                "no app with this packageName is registered",
                false,
                now,
            );
        };
        if let Err(e) = self.lifecycle_request(net, sk, app, start, now) {
            self.glasses_error(net, id, e.code(), e.message(), false, now);
        }
    }

    /// `connection_init`: the user comes from the upgrade's token or from `coreToken`.
    fn glasses_init(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        token_user: Option<String>,
        bound: Option<SessKey>,
        text: &str,
        now: Now,
    ) {
        let user = match token_user {
            Some(u) if self.user_revoked(&u) => {
                let e = crate::auth::jwt::GlassesTokenError::Revoked;
                return self.glasses_error(net, id, e.code(), e.message(), true, now);
            }
            Some(u) => u,
            None => {
                let token = inbound::decode::<ConnectionInit<'_>>(text).and_then(|m| m.core_token);
                let Some(t) = token else {
                    return self.glasses_error(
                        net,
                        id,
                        "MISSING_TOKEN",
                        "no token: send Authorization: Bearer or coreToken",
                        true,
                        now,
                    );
                };
                match self.check_glasses_token(&t, now) {
                    Ok(u) => u,
                    Err(e) => return self.glasses_error(net, id, e.code(), e.message(), true, now),
                }
            }
        };
        if let Some(sk) = bound {
            if self.session(sk).is_some_and(|s| *s.user != *user) {
                return self.glasses_error(
                    net,
                    id,
                    "ALREADY_INITIALIZED",
                    "this connection already belongs to another user's session",
                    true,
                    now,
                );
            }
        }
        self.attach_glasses(net, id, &user, now)
    }

    pub(super) fn attach_glasses(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        user: &str,
        now: Now,
    ) {
        let sk = match self.sessions.by_user(user) {
            Some(sk) => {
                let old = self.session_mut(sk).and_then(|s| {
                    s.grace_until = None;
                    s.glasses.replace(id)
                });
                if let Some(old) = old.filter(|o| *o != id) {
                    self.links.remove(&old);
                    net.close_websocket(old, 1000, "Replaced by a newer connection", now.mono);
                }
                log::info!("event=session_resumed session={user:?} connection={id}");
                sk
            }
            None if self.session_refused(user) => {
                let full = access::SESSIONS_FULL;
                return self.glasses_error(net, id, "TOO_MANY_SESSIONS", full, true, now);
            }
            None => {
                let sk = self.sessions.insert(Session::new(
                    user,
                    id,
                    now.wall,
                    self.device_settings(user),
                    RateLimit::full(self.cfg.lifecycle_burst, now.mono),
                    screen::LazyScreen::new(&self.display_timings),
                ));
                log::info!("event=session_created session={user:?} connection={id}");
                // Served at once; the store arbitrates meanwhile (`on_lease_news`).
                self.durable.claim(user, sk.gen);
                self.venue_session_follow(user);
                sk
            }
        };
        if let Some(Link::Glasses {
            user,
            session,
            init_deadline,
            ..
        }) = self.links.get_mut(&id)
        {
            *session = Some(sk);
            *init_deadline = None;
            // The session has the user now: no second copy per connection.
            *user = None;
        }
        self.send_session(net, id, sk, "connection_ack", now);
        self.screen_resend(net, sk, now);
        // System apps (but venue feeds, which connect once for every session) and the user's
        // running apps (those not already alive).
        let mut wanted: Vec<usize> = (0..self.cfg.apps.len())
            .filter(|&i| self.cfg.apps[i].is_system_app && !self.venue.is_feed_app(i))
            .collect();
        for pkg in self.durable.running(user) {
            if let Some(i) = self.app_index(&pkg) {
                wanted.push(i);
            }
        }
        wanted.sort_unstable();
        wanted.dedup();
        for app in wanted {
            self.start_app(net, sk, app, now, false);
        }
        self.send_app_state(net, sk, now);
        self.send_mic_state(net, sk, now);
        self.send_location_tier(net, sk, now);
    }

    pub(super) fn init_tick(&mut self, net: &mut impl Outbox, id: ConnId, now: Now) {
        match self.links.get(&id) {
            Some(Link::Glasses {
                session: None,
                init_deadline: Some(at),
                ..
            }) if *at <= now.mono => self.glasses_error(
                net,
                id,
                "INIT_TIMEOUT",
                "no connection_init in time",
                true,
                now,
            ),
            Some(Link::App {
                bound: None,
                init_deadline: Some(at),
            }) if *at <= now.mono => self.refuse_app(net, id, JoinError::InitTimeout, now),
            _ => {}
        }
    }

    pub(super) fn session_tick(&mut self, net: &mut impl Outbox, sk: SessKey, now: Now) {
        let due = self
            .session(sk)
            .is_some_and(|s| s.glasses.is_none() && s.grace_until.is_some_and(|g| g <= now.mono));
        if due {
            self.end_session(net, sk, now);
        }
    }

    /// The grace period ran out: stop every app (they stay in the user's running list, so they
    /// come back when the glasses do) and forget the session.
    pub(super) fn end_session(&mut self, net: &mut impl Outbox, sk: SessKey, now: Now) {
        let mut apps: Vec<usize> = self
            .session(sk)
            .map(|s| s.apps.keys().copied().collect())
            .unwrap_or_default();
        // Translation publishers last: no app about to stop is told its pair became unavailable.
        apps.sort_by_key(|&a| self.publishes_translation(a));
        for app in apps {
            self.stop_app(net, sk, app, "system_stop", "User session ended", now);
        }
        if self.session(sk).is_some() {
            self.retire_display_stats(sk);
            let Some(s) = self.sessions.remove(sk) else {
                return;
            };
            self.counters.sessions_ended += 1;
            self.durable.release(&s.user);
            log::info!(
                "event=session_ended session={:?} reason=grace_period",
                s.user
            );
        }
    }

    /// What the shared store said of this process's leases (fencing). A user `lost` is held
    /// by another process: this copy of the session ends — the glasses get a
    /// `SESSION_ELSEWHERE` error and the close 1013 "try again later" (they reconnect through
    /// the balancer, which sends them where the session lives), the apps are stopped as at the
    /// end of a session, and the user's running apps stay recorded. A user `wanted` by another
    /// process (the glasses connected there) is let go if its glasses are gone from here, so
    /// the other process's claim gets it at its next round; with the glasses still connected
    /// here, this process keeps it and the other one's claim runs out of patience.
    ///
    /// News is about one claim (the session's generation): news of an earlier session of the
    /// user — answered after it ended, with a new session's claim still on its way — is not
    /// about the session here now, and is ignored.
    pub fn on_lease_news(&mut self, net: &mut impl Outbox, news: LeaseNews, now: Now) {
        let current = |hub: &Hub, user: &str, claim: u32| {
            hub.sessions.by_user(user).filter(|sk| sk.gen == claim)
        };
        for (user, claim) in news.lost {
            let Some(sk) = current(self, &user, claim) else {
                continue;
            };
            if let Some(g) = self.session(sk).and_then(|s| s.glasses) {
                self.links.remove(&g);
                self.refused("SESSION_ELSEWHERE");
                net.send_json(
                    g,
                    &messages::connection_error(
                        "SESSION_ELSEWHERE",
                        "this user's session is held by another process; reconnect",
                        now.iso(),
                    ),
                );
                net.close_websocket(g, 1013, "session held by another process", now.mono);
            }
            self.counters.sessions_fenced += 1;
            log::warn!("event=session_fenced session={user:?} reason=lease_lost");
            self.end_session(net, sk, now);
        }
        for (user, claim) in news.wanted {
            let Some(sk) = current(self, &user, claim) else {
                continue;
            };
            if self.session(sk).is_some_and(|s| s.glasses.is_none()) {
                self.counters.sessions_fenced += 1;
                log::info!("event=session_fenced session={user:?} reason=wanted_elsewhere");
                self.end_session(net, sk, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::hub::HubConfig;
    use crate::server::ServerConfig;
    use crate::sim::World;
    use crate::state::LeaseNews;
    use std::time::Duration;

    const SECRET: &[u8] = b"lease-news-secret-0123";
    const USER: &str = "ada@example.com";

    fn world() -> World {
        let cfg = ServerConfig {
            ping_interval: None,
            ..ServerConfig::default()
        };
        let hub = HubConfig {
            jwt_secret: SECRET.to_vec(),
            ..HubConfig::default()
        };
        World::with_hub(cfg, hub)
    }

    fn glasses(w: &mut World) -> usize {
        let g = w.connect();
        let token = crate::auth::jwt::glasses_token(USER, SECRET);
        let bearer = format!("Authorization: Bearer {token}");
        assert_eq!(w.upgrade_with(g, "/glasses-ws", &[&bearer]).0, 101);
        w.send_text(g, r#"{"type":"connection_init"}"#);
        g
    }

    /// The claim of the user's session here now (its generation), if there is one.
    fn claim(w: &World) -> Option<u32> {
        w.server.hub.sessions.by_user(USER).map(|sk| sk.gen)
    }

    fn news(w: &mut World, lost: &[u32], wanted: &[u32]) {
        let with = |c: &[u32]| c.iter().map(|&c| (USER.to_string(), c)).collect();
        let news = LeaseNews {
            lost: with(lost),
            wanted: with(wanted),
        };
        let now = w.clock();
        w.server.handle_lease_news(news, now);
        w.step();
    }

    fn fenced(w: &mut World, g: usize) -> bool {
        w.json_messages(g)
            .iter()
            .any(|m| m["type"] == "connection_error" && m["code"] == "SESSION_ELSEWHERE")
    }

    /// A session ends and a new one starts here while the writer answers the first one's
    /// claim: that answer is about a session gone, and must not end the new one.
    #[test]
    fn lease_news_of_an_earlier_session_of_the_user_leaves_the_current_one_alone() {
        let mut w = world();
        let grace = HubConfig::default().timings.grace_period;
        let g1 = glasses(&mut w);
        let first = claim(&w).expect("a session");
        w.client_eof(g1);
        w.advance(grace + Duration::from_secs(1));
        assert_eq!(claim(&w), None, "the first session ended");
        let g2 = glasses(&mut w);
        let second = claim(&w).expect("a new session");
        assert_ne!(first, second);
        // The first claim given up, and wanted elsewhere: not this session's news.
        news(&mut w, &[first], &[first]);
        assert_eq!(claim(&w), Some(second));
        assert!(
            !fenced(&mut w, g2),
            "the new session was fenced by stale news"
        );
        // In its grace period, the new session is not given up for the first one's news
        // either; for its own, it is.
        w.client_eof(g2);
        news(&mut w, &[], &[first]);
        assert_eq!(claim(&w), Some(second));
        news(&mut w, &[], &[second]);
        assert_eq!(claim(&w), None, "wanted elsewhere with its glasses gone");
        // Its own claim lost: the session here ends, its glasses told.
        let g3 = glasses(&mut w);
        let third = claim(&w).expect("a third session");
        news(&mut w, &[second], &[]);
        assert_eq!(claim(&w), Some(third));
        news(&mut w, &[third], &[]);
        assert_eq!(claim(&w), None);
        assert!(fenced(&mut w, g3));
    }
}
