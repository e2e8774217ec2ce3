//! Core layer (sans-IO), part of the hub: the app side. `tpa_connection_init` (key, address,
//! session and started checks), structured refusals, binding and replacing connections,
//! subscriptions with permission checks, and display requests passed to the glasses.
//!
//! Every app text message is decoded once, into an [`AppMsg`], and dispatched by the one
//! `match` in [`Hub::app_message`]; a bound app's handlers start from an [`AppCtx`].
//!
//! Invariant: an app message acts only through the (session, app) its connection is bound to.

use super::registry::{check_subscription, SubCheck};
use super::{AppState, Hub, JoinError, Link, SessKey};
use crate::auth;
use crate::net::{ConnId, Outbox, Peer};
use crate::protocol::inbound::{self, SubscriptionUpdate, TpaConnectionInit};
use crate::protocol::message::AppMsg;
use crate::protocol::outbound as messages;
use crate::time::Now;
use serde_json::json;

/// What every handler of a bound app's message starts from: the connection it came on, the
/// (session, app) that connection is bound to, and the turn's time.
#[derive(Clone, Copy)]
pub(super) struct AppCtx {
    pub id: ConnId,
    pub sk: SessKey,
    pub app: usize,
    pub now: Now,
}

impl Hub {
    // ---- apps ----------------------------------------------------------------------------

    pub(super) fn refuse_app(&mut self, net: &mut impl Outbox, id: ConnId, e: JoinError, now: Now) {
        self.refused(e.code());
        log::info!("event=app_refused connection={id} code={}", e.code());
        let msg = messages::tpa_error(e.code(), e.message(), json!({}), now.iso());
        net.send_json(id, &msg);
        let bound = match self.links.remove(&id) {
            Some(Link::App { bound, .. }) => bound,
            _ => None,
        };
        net.close_websocket(id, 1008, e.reason(), now.mono);
        // A bound connection refused (a second init for another app) was its app's only
        // connection: handle it as a drop, or the app stays "active" on a closed socket.
        if let Some((sk, app)) = bound {
            self.app_dropped(net, id, sk, app, now);
        }
    }

    /// Every text message of an app connection: decoded once, dispatched by its kind. Until
    /// the connection is bound, only `tpa_connection_init` is taken.
    pub(super) fn app_message(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        bound: Option<(SessKey, usize)>,
        text: &str,
        now: Now,
    ) {
        let msg = match AppMsg::decode(text) {
            Ok(msg) => msg,
            Err(_) if bound.is_none() => {
                return self.refuse_app(net, id, JoinError::Malformed, now)
            }
            Err(e) => return self.app_error(net, id, "MALFORMED_MESSAGE", e.message(), now),
        };
        let Some((sk, app)) = bound else {
            return match msg {
                AppMsg::TpaConnectionInit => self.app_init(net, id, text, now),
                _ => self.refuse_app(net, id, JoinError::NotInitialized, now),
            };
        };
        let cx = AppCtx { id, sk, app, now };
        match msg {
            AppMsg::TpaConnectionInit => {
                // Same app again: acknowledge again. Another app on this socket: refused.
                let pkg = inbound::decode::<TpaConnectionInit<'_>>(text).map(|m| m.package_name);
                if pkg.as_deref() == Some(self.cfg.apps[app].package_name.as_str()) {
                    self.send_ack(net, id, sk, app, now);
                } else {
                    self.refuse_app(net, id, JoinError::AlreadyInitialized, now);
                }
            }
            AppMsg::SubscriptionUpdate => self.subscription_update(net, cx, text),
            AppMsg::DataStream => self.publish(net, cx, text),
            AppMsg::DisplayEvent => self.app_display(net, cx, text),
            AppMsg::Dashboard(d) => self.app_dashboard(net, cx, d, text),
            AppMsg::Request(kind) => self.app_request(net, cx, kind, text),
            AppMsg::AudioStop => self.audio_stop(net, cx, text),
            AppMsg::StreamStop => self.stream_stop(net, cx, text),
            AppMsg::OwnershipRelease => self.ownership_release(net, cx, text),
            AppMsg::PublishUnserved => self.publish_unserved(net, cx, text),
            AppMsg::Other(ty) => log::debug!("ignored app message of type {ty:?}"),
        }
    }

    pub(super) fn app_error(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        code: &'static str,
        message: &str,
        now: Now,
    ) {
        self.refused(code);
        net.send_json(
            id,
            &messages::tpa_error(code, message, json!({}), now.iso()),
        );
    }

    pub(super) fn app_init(&mut self, net: &mut impl Outbox, id: ConnId, text: &str, now: Now) {
        let Some(init) = inbound::decode::<TpaConnectionInit<'_>>(text) else {
            return self.refuse_app(net, id, JoinError::Malformed, now);
        };
        let Some(app) = self.app_index(&init.package_name) else {
            return self.refuse_app(net, id, JoinError::PackageNotFound, now);
        };
        let key_ok = init
            .api_key
            .as_deref()
            .is_some_and(|k| auth::verify_api_key(k, &self.cfg.apps[app].hashed_api_key));
        if !key_ok {
            return self.refuse_app(net, id, JoinError::InvalidApiKey, now);
        }
        if super::venue::is_venue_id(&init.session_id) {
            return self.venue_init(net, id, app, &init.session_id, now);
        }
        let peer = net.peer(id).cloned().unwrap_or(Peer::InProcess);
        match self.check_join(app, &init.session_id, &peer) {
            Ok((sk, app)) => self.bind_app(net, id, sk, app, now),
            Err(e) => self.refuse_app(net, id, e, now),
        }
    }

    pub(super) fn bind_app(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        sk: SessKey,
        app: usize,
        now: Now,
    ) {
        let Some(user) = self.session(sk).map(|s| s.user.clone()) else {
            return;
        };
        // Connected before its start webhook left the queue: that webhook is moot.
        self.cancel_waiting_start(sk, app);
        let prefix =
            messages::data_stream_prefix(&format!("{user}-{}", self.cfg.apps[app].package_name));
        let Some(run) = self.run_mut(sk, app) else {
            return;
        };
        let old = run.conn.replace(id);
        let was_loading = !matches!(run.state, AppState::Active);
        run.state = AppState::Active;
        run.active_since = Some(now.mono);
        run.error = None;
        run.released = None;
        run.prefix = prefix;
        if let Some(old) = old.filter(|o| *o != id) {
            self.links.remove(&old);
            net.close_websocket(old, 1008, "Replaced by a newer connection", now.mono);
        }
        self.links.insert(
            id,
            Link::App {
                bound: Some((sk, app)),
                init_deadline: None,
            },
        );
        self.send_ack(net, id, sk, app, now);
        self.unserved_forget(sk, app);
        self.demand_after_ack(net, id, sk, app, now);
        if was_loading {
            self.send_to_glasses(
                net,
                sk,
                &messages::AppEvent {
                    kind: "app_started",
                    package_name: Some(&self.cfg.apps[app].package_name),
                    reason: None,
                    error: None,
                    timestamp: now.iso(),
                },
            );
        }
        self.send_app_state(net, sk, now);
        self.screen_app_connected(net, sk, app, now);
    }

    pub(super) fn send_ack(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        sk: SessKey,
        app: usize,
        now: Now,
    ) {
        let Some(s) = self.session(sk) else { return };
        let session_id = format!("{}-{}", s.user, self.cfg.apps[app].package_name);
        let settings = s.settings();
        let app_settings = self.settings_for(&s.user, app);
        let conservative;
        let capabilities = match &s.capabilities {
            Some(c) => &**c,
            None => {
                conservative = crate::protocol::capabilities::conservative(None);
                &conservative
            }
        };
        let ack = messages::TpaConnectionAck {
            kind: "tpa_connection_ack",
            session_id: &session_id,
            settings: &app_settings,
            mentraos_settings: &settings,
            capabilities,
            timestamp: now.iso(),
        };
        net.send_json(id, &ack);
    }

    /// Replace the app's subscriptions with the valid, permitted entries; report the rest
    /// (unknown entries as `tpa_connection_error`, forbidden ones as `permission_error`).
    pub(super) fn subscription_update(&mut self, net: &mut impl Outbox, cx: AppCtx, text: &str) {
        let AppCtx { id, sk, app, now } = cx;
        let Some(SubscriptionUpdate {
            subscriptions: list,
        }) = inbound::decode(text)
        else {
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
        for entry in &list {
            let name = SubscriptionUpdate::stream(entry);
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
                SubCheck::NeedsPermission(p) => denied.push(messages::DeniedStream {
                    stream: name.to_string(),
                    required_permission: p,
                    message: format!("{name} needs the {p} permission"),
                }),
            }
        }
        if !unknown.is_empty() {
            let msg = messages::tpa_error(
                "INVALID_SUBSCRIPTION",
                "unknown stream types were ignored; the rest were applied",
                json!({ "invalid": unknown }),
                now.iso(),
            );
            self.refused("INVALID_SUBSCRIPTION");
            net.send_json(id, &msg);
        }
        if !denied.is_empty() {
            self.refused("PERMISSION_DENIED");
            let msg = messages::PermissionError {
                kind: "permission_error",
                message: "some subscriptions need permissions this app does not have",
                details: &denied,
                timestamp: now.iso(),
            };
            net.send_json(id, &msg);
        }
        let rate = self.location_rate(net, id, &list, now);
        // Kept while the app runs: no room for subscriptions it did not make.
        subs.shrink_to_fit();
        let before = match self.run_mut(sk, app) {
            Some(run) => {
                run.location_rate = rate;
                std::mem::replace(&mut run.subs, subs)
            }
            None => return,
        };
        self.subs_changed(net, sk, Some((app, &before)), now);
        self.unavailable_subscribed(net, cx, &before);
        self.send_app_state(net, sk, now);
    }
}
