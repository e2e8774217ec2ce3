//! Core layer (sans-IO), part of the hub: the app side. `tpa_connection_init` (key, address,
//! session and started checks), structured refusals, binding and replacing connections,
//! subscriptions with permission checks, and display requests passed to the glasses.
//! Invariant: an app message acts only through the (session, app) its connection is bound to.

use super::*;

impl Hub {
    // ---- apps ----------------------------------------------------------------------------

    pub(super) fn refuse_app(&mut self, net: &mut Net, id: ConnId, e: JoinError, now: Instant) {
        self.refused(e.code());
        let msg = messages::tpa_error(e.code(), e.message(), json!({}), &iso8601(now));
        net.send_text(id, &msg.to_string());
        let bound = match self.links.remove(&id) {
            Some(Link::App { bound }) => bound,
            _ => None,
        };
        net.close_websocket(id, 1008, e.reason(), now);
        // A bound connection refused (a second init for another app) was its app's only
        // connection: handle it as a drop, or the app stays "active" on a closed socket.
        if let Some((sk, app)) = bound {
            self.app_dropped(net, id, sk, app, now);
        }
    }

    pub(super) fn app_message(
        &mut self,
        net: &mut Net,
        id: ConnId,
        bound: Option<(SessKey, usize)>,
        text: &str,
        now: Instant,
    ) {
        let v: Value = match serde_json::from_str(text) {
            Ok(v @ Value::Object(_)) => v,
            _ if bound.is_none() => return self.refuse_app(net, id, JoinError::Malformed, now),
            _ => {
                return self.app_error(
                    net,
                    id,
                    "MALFORMED_MESSAGE",
                    "expected a JSON object with a 'type'",
                    now,
                )
            }
        };
        let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
        match (ty, bound) {
            ("tpa_connection_init", None) => self.app_init(net, id, &v, now),
            ("tpa_connection_init", Some((sk, app))) => {
                // Same app again: acknowledge again. Another app on this socket: refused.
                if v.get("packageName").and_then(Value::as_str)
                    == Some(&self.cfg.apps[app].package_name)
                {
                    self.send_ack(net, id, sk, app, now);
                } else {
                    self.refuse_app(net, id, JoinError::AlreadyInitialized, now);
                }
            }
            (_, None) => self.refuse_app(net, id, JoinError::NotInitialized, now),
            ("subscription_update", Some((sk, app))) => {
                self.subscription_update(net, id, sk, app, &v, now)
            }
            ("display_event", Some((sk, app))) => {
                let mut v = v;
                if let Some(o) = v.as_object_mut() {
                    o.insert(
                        "packageName".into(),
                        Value::from(self.cfg.apps[app].package_name.as_str()),
                    );
                    o.remove("sessionId");
                }
                self.send_to_glasses(net, sk, &v);
            }
            _ => log::debug!("ignored app message of type {ty:?}"),
        }
    }

    pub(super) fn app_error(
        &mut self,
        net: &mut Net,
        id: ConnId,
        code: &'static str,
        message: &str,
        now: Instant,
    ) {
        self.refused(code);
        net.send_text(
            id,
            &messages::tpa_error(code, message, json!({}), &iso8601(now)).to_string(),
        );
    }

    pub(super) fn app_init(&mut self, net: &mut Net, id: ConnId, v: &Value, now: Instant) {
        let field = |k: &str| v.get(k).and_then(Value::as_str);
        let (Some(pkg), Some(session_id)) = (field("packageName"), field("sessionId")) else {
            return self.refuse_app(net, id, JoinError::Malformed, now);
        };
        let Some(app) = self.app_index(pkg) else {
            return self.refuse_app(net, id, JoinError::PackageNotFound, now);
        };
        if !field("apiKey")
            .is_some_and(|k| auth::verify_api_key(k, &self.cfg.apps[app].hashed_api_key))
        {
            return self.refuse_app(net, id, JoinError::InvalidApiKey, now);
        }
        let peer = net.peer(id).cloned().unwrap_or(Peer::InProcess);
        match self.check_join(app, session_id, &peer) {
            Ok((sk, app)) => self.bind_app(net, id, sk, app, now),
            Err(e) => self.refuse_app(net, id, e, now),
        }
    }

    pub(super) fn bind_app(
        &mut self,
        net: &mut Net,
        id: ConnId,
        sk: SessKey,
        app: usize,
        now: Instant,
    ) {
        let Some(run) = self.run_mut(sk, app) else {
            return;
        };
        let old = run.conn.replace(id);
        let was_loading = !matches!(run.state, AppState::Active);
        run.state = AppState::Active;
        run.active_since = Some(now);
        run.error = None;
        if let Some(old) = old.filter(|o| *o != id) {
            self.links.remove(&old);
            net.close_websocket(old, 1008, "Replaced by a newer connection", now);
        }
        self.links.insert(
            id,
            Link::App {
                bound: Some((sk, app)),
            },
        );
        self.send_ack(net, id, sk, app, now);
        if was_loading {
            self.send_to_glasses(
                net,
                sk,
                &json!({
                    "type": "app_started",
                    "packageName": self.cfg.apps[app].package_name,
                    "timestamp": iso8601(now),
                }),
            );
        }
        self.send_app_state(net, sk, now);
    }

    pub(super) fn send_ack(
        &mut self,
        net: &mut Net,
        id: ConnId,
        sk: SessKey,
        app: usize,
        now: Instant,
    ) {
        let Some(s) = self.session(sk) else { return };
        let ack = json!({
            "type": "tpa_connection_ack",
            "sessionId": format!("{}-{}", s.user, self.cfg.apps[app].package_name),
            "settings": [],
            "mentraosSettings": s.settings(),
            "capabilities": messages::capabilities(),
            "timestamp": iso8601(now),
        });
        net.send_text(id, &ack.to_string());
    }

    /// Replace the app's subscriptions with the valid, permitted entries; report the rest
    /// (unknown entries as `tpa_connection_error`, forbidden ones as `permission_error`).
    pub(super) fn subscription_update(
        &mut self,
        net: &mut Net,
        id: ConnId,
        sk: SessKey,
        app: usize,
        v: &Value,
        now: Instant,
    ) {
        let Some(list) = v.get("subscriptions").and_then(Value::as_array) else {
            return self.app_error(
                net,
                id,
                "MALFORMED_MESSAGE",
                "subscriptions must be an array",
                now,
            );
        };
        let spec = &self.cfg.apps[app];
        let mut subs = Vec::new();
        let mut unknown = Vec::new();
        let mut denied = Vec::new();
        for entry in list {
            let name = match entry {
                Value::String(s) => s.as_str(),
                Value::Object(o) => o.get("stream").and_then(Value::as_str).unwrap_or(""),
                _ => "",
            };
            // A bare `transcription` means English, as the cloud has always read it.
            let name = if name == "transcription" {
                "transcription:en-US"
            } else {
                name
            };
            match check_subscription(spec, name) {
                SubCheck::Ok => {
                    if !subs.iter().any(|s| s == name) {
                        subs.push(name.to_string());
                    }
                }
                SubCheck::Unknown => unknown.push(entry.to_string()),
                SubCheck::NeedsPermission(p) => denied.push(json!({
                    "stream": name,
                    "requiredPermission": p,
                    "message": format!("{name} needs the {p} permission"),
                })),
            }
        }
        if !unknown.is_empty() {
            let msg = messages::tpa_error(
                "INVALID_SUBSCRIPTION",
                "unknown stream types were ignored; the rest were applied",
                json!({ "invalid": unknown }),
                &iso8601(now),
            );
            self.refused("INVALID_SUBSCRIPTION");
            net.send_text(id, &msg.to_string());
        }
        if !denied.is_empty() {
            self.refused("PERMISSION_DENIED");
            let msg = json!({
                "type": "permission_error",
                "message": "some subscriptions need permissions this app does not have",
                "details": denied,
                "timestamp": iso8601(now),
            });
            net.send_text(id, &msg.to_string());
        }
        if let Some(run) = self.run_mut(sk, app) {
            run.subs = subs;
        }
        self.send_app_state(net, sk, now);
    }
}
