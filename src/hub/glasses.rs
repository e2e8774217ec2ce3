//! Core layer (sans-IO), part of the hub: the glasses side of a session. `connection_init`
//! (create or resume), app start/stop requests, settings, the relay of glasses events to
//! subscribed apps, the init deadline and the end of a session after its grace period.
//! Invariant: a glasses connection acts on a session only after `connection_init` bound it.

use super::*;

impl Hub {
    // ---- glasses -------------------------------------------------------------------------

    pub(super) fn glasses_error(
        &mut self,
        net: &mut Net,
        id: ConnId,
        code: &'static str,
        message: &str,
        close: bool,
        now: Instant,
    ) {
        self.refused(code);
        net.send_text(
            id,
            &messages::connection_error(code, message, &iso8601(now)).to_string(),
        );
        if close {
            // Unlink as a closed connection would be: a bound session starts its grace period
            // (removing the link alone would leave the session on this dead connection forever).
            self.on_closed(net, id, now);
            net.close_websocket(id, 1008, message, now);
        }
    }

    pub(super) fn glasses_message(&mut self, net: &mut Net, id: ConnId, text: &str, now: Instant) {
        let v: Value = match serde_json::from_str(text) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return self.glasses_error(
                    net,
                    id,
                    "MALFORMED_MESSAGE",
                    "expected a JSON object",
                    false,
                    now,
                )
            }
        };
        let Some(ty) = v.get("type").and_then(Value::as_str) else {
            return self.glasses_error(
                net,
                id,
                "MALFORMED_MESSAGE",
                "message has no string 'type'",
                false,
                now,
            );
        };
        let Some(Link::Glasses { user, session, .. }) = self.links.get(&id) else {
            return;
        };
        let session = *session;
        if ty == "connection_init" {
            let user = match user.clone() {
                Some(u) => u,
                None => match v.get("coreToken").and_then(Value::as_str) {
                    None => {
                        return self.glasses_error(
                            net,
                            id,
                            "MISSING_TOKEN",
                            "no token: send Authorization: Bearer or coreToken",
                            true,
                            now,
                        )
                    }
                    Some(t) => match auth::jwt::glasses_user(
                        t,
                        &self.cfg.jwt_secret,
                        now.as_micros() / 1_000_000,
                    ) {
                        Ok(u) => u,
                        Err(e) => {
                            return self.glasses_error(net, id, e.code(), e.message(), true, now)
                        }
                    },
                },
            };
            return self.attach_glasses(net, id, &user, now);
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
        match ty {
            "start_app" | "stop_app" => {
                let Some(pkg) = v.get("packageName").and_then(Value::as_str) else {
                    return self.glasses_error(
                        net,
                        id,
                        "MALFORMED_MESSAGE",
                        "packageName missing",
                        false,
                        now,
                    );
                };
                let Some(app) = self.app_index(pkg) else {
                    return self.glasses_error(
                        net,
                        id,
                        "PACKAGE_NOT_FOUND",
                        "no app with this packageName is registered",
                        false,
                        now,
                    );
                };
                if ty == "start_app" {
                    self.start_app(net, sk, app, now, false);
                } else {
                    self.stop_app(net, sk, app, "user_disabled", "App stopped", now);
                }
                self.running_changed(sk, app, ty == "start_app");
                self.send_app_state(net, sk, now);
            }
            "request_settings" | "settings_update_request" => {
                let Some(s) = self.session(sk) else { return };
                let msg = json!({
                    "type": "settings_update",
                    "sessionId": s.user,
                    "success": true,
                    "message": "Current settings retrieved successfully",
                    "settings": s.settings(),
                    "timestamp": iso8601(now),
                });
                net.send_text(id, &msg.to_string());
            }
            _ => self.relay(net, sk, ty, text, now),
        }
    }

    /// Deliver a glasses event to every app subscribed to its type, as `data_stream` with the
    /// original message as `data` (written from the input bytes, not re-encoded).
    pub(super) fn relay(&mut self, net: &mut Net, sk: SessKey, ty: &str, text: &str, now: Instant) {
        let Some(s) = self.session(sk) else { return };
        let ts = iso8601(now);
        let ty_json = Value::from(ty).to_string();
        for (&app, run) in &s.apps {
            let (AppState::Active, Some(conn)) = (run.state, run.conn) else {
                continue;
            };
            if !run.subs.iter().any(|x| x == ty || x == "all" || x == "*") {
                continue;
            }
            let sid =
                Value::from(format!("{}-{}", s.user, self.cfg.apps[app].package_name)).to_string();
            net.send_frame(
                conn,
                Opcode::Text,
                &[
                    b"{\"type\":\"data_stream\",\"sessionId\":",
                    sid.as_bytes(),
                    b",\"streamType\":",
                    ty_json.as_bytes(),
                    b",\"data\":",
                    text.as_bytes(),
                    b",\"timestamp\":\"",
                    ts.as_bytes(),
                    b"\"}",
                ],
            );
        }
    }

    pub(super) fn attach_glasses(&mut self, net: &mut Net, id: ConnId, user: &str, now: Instant) {
        let sk = match self.by_user.get(user) {
            Some(&sk) => {
                let old = self.session_mut(sk).and_then(|s| {
                    s.grace_until = None;
                    s.glasses.replace(id)
                });
                if let Some(old) = old.filter(|o| *o != id) {
                    self.links.remove(&old);
                    net.close_websocket(old, 1000, "Replaced by a newer connection", now);
                }
                log::info!("session of {user} resumed");
                sk
            }
            None => {
                self.next_gen = self.next_gen.wrapping_add(1);
                let gen = self.next_gen;
                let slot = self.sessions.insert(Session {
                    gen,
                    user: user.to_string(),
                    glasses: Some(id),
                    started: now,
                    grace_until: None,
                    apps: BTreeMap::new(),
                    settings: None,
                });
                let sk = SessKey { slot, gen };
                self.by_user.insert(user.to_string(), sk);
                log::info!("session of {user} created");
                sk
            }
        };
        if let Some(Link::Glasses {
            session,
            init_deadline,
            ..
        }) = self.links.get_mut(&id)
        {
            *session = Some(sk);
            *init_deadline = None;
        }
        let ack = json!({
            "type": "connection_ack",
            "sessionId": user,
            "userSession": self.user_session_json(sk),
            "timestamp": iso8601(now),
        });
        net.send_text(id, &ack.to_string());
        // System apps and the user's running apps (those not already alive).
        let mut wanted: Vec<usize> = (0..self.cfg.apps.len())
            .filter(|&i| self.cfg.apps[i].is_system_app)
            .collect();
        for pkg in self.running.apps(user) {
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
    }

    pub(super) fn glasses_init_tick(&mut self, net: &mut Net, id: ConnId, now: Instant) {
        let expired = matches!(
            self.links.get(&id),
            Some(Link::Glasses { session: None, init_deadline: Some(at), .. }) if *at <= now
        );
        if expired {
            self.glasses_error(
                net,
                id,
                "INIT_TIMEOUT",
                "no connection_init in time",
                true,
                now,
            );
        }
    }

    pub(super) fn session_tick(&mut self, net: &mut Net, sk: SessKey, now: Instant) {
        let due = self
            .session(sk)
            .is_some_and(|s| s.glasses.is_none() && s.grace_until.is_some_and(|g| g <= now));
        if due {
            self.end_session(net, sk, now);
        }
    }

    /// The grace period ran out: stop every app (they stay in the user's running list, so they
    /// come back when the glasses do) and forget the session.
    pub(super) fn end_session(&mut self, net: &mut Net, sk: SessKey, now: Instant) {
        let apps: Vec<usize> = self
            .session(sk)
            .map(|s| s.apps.keys().copied().collect())
            .unwrap_or_default();
        for app in apps {
            self.stop_app(net, sk, app, "system_stop", "User session ended", now);
        }
        if self.session(sk).is_some() {
            let s = self.sessions.remove(sk.slot);
            self.by_user.remove(&s.user);
            self.counters.sessions_ended += 1;
            log::info!("session of {} ended after the grace period", s.user);
        }
    }
}
