//! Core layer (sans-IO), part of the hub: the REST calls apps and their servers make against
//! the box, answered from durable state — SDK simple storage (PROTOCOL §1.4), app settings (the
//! SDK's `/appsettings/user/{pkg}`, and a settings change by the user), and TPA server
//! registration and recovery (PROTOCOL §14). The server's route table decodes the paths and
//! reads the headers: each call here takes a typed request ([`StorageRequest`],
//! [`SettingsRequest`], [`TpaServerAction`] and its body), never the HTTP request itself.
//!
//! Who may do what:
//! - simple storage: the app itself, `Authorization: Bearer <packageName>:<apiKey>` (the key is
//!   checked like the WebSocket key); it reaches only its own (user, package) scope;
//! - reading an app's settings for a user: the SDK sends the session id `<userId>-<pkg>` (or a
//!   user id) as the bearer, which proves nothing, so it is answered only while that user has a
//!   session in which the app is running (settings are not for secrets);
//! - changing a user's settings: that user's glasses token;
//! - registrations: the app's key in the body.
//!
//! Invariants: every refusal is an HTTP status with a JSON body carrying a `code`; a value or
//! scope over its size limit is refused with 413 and changes nothing; every change goes through
//! [`Durable`](crate::state::Durable), so it is written by the store.

use super::{messages, registry, Hub, TimerKey};
use crate::auth;
use crate::http::MethodNotAllowed;
use crate::net::{ConnId, Outbox};
use crate::state::Registration;
use crate::time::Now;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// The SDK's own limit on one value, and the box's on one (user, app) scope.
pub const MAX_STORAGE_VALUE: usize = 100_000;
pub const MAX_STORAGE_SCOPE: usize = 1_000_000;

/// Registrations not heard from for this long are dropped (PROTOCOL §14).
pub const REGISTRATION_TTL: Duration = Duration::from_secs(30 * 60);
/// How often expired registrations are looked for.
pub const REGISTRATION_SWEEP: Duration = Duration::from_secs(15 * 60);

/// What simple storage is asked to do (with or without a key in the path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageMethod {
    Get,
    Put,
    Delete,
}

/// `GET/PUT/DELETE /api/sdk/simple-storage/{userId}[/{key}]`, as the router decoded it.
#[derive(Debug, Clone, Copy)]
pub struct StorageRequest<'a> {
    pub user: &'a str,
    /// `None`: the whole scope.
    pub key: Option<&'a str>,
    /// Any other method is refused, after the caller's key was checked.
    pub method: Result<StorageMethod, MethodNotAllowed>,
    /// The token of `Authorization: Bearer`, `<packageName>:<apiKey>`.
    pub bearer: Option<&'a str>,
    pub body: &'a [u8],
}

/// `GET /appsettings/user/{pkg}` or `PUT /api/settings/{pkg}`, as the router decoded it.
#[derive(Debug, Clone, Copy)]
pub struct SettingsRequest<'a> {
    /// The package, decoded (empty when it was malformed: no app has that name).
    pub package: &'a str,
    /// A wrong method is refused once the package is known.
    pub method: Result<(), MethodNotAllowed>,
    pub bearer: Option<&'a str>,
    pub body: &'a [u8],
}

/// `POST /api/tpa-server/{register,heartbeat,restart}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TpaServerAction {
    Register,
    Heartbeat,
    Restart,
}

/// Answer `id` with a 405 naming the allowed methods.
pub(super) fn refuse_method(net: &mut impl Outbox, id: ConnId, m: MethodNotAllowed) {
    net.respond_error(id, 405, MethodNotAllowed::CODE, m.message, &[m.allow]);
}

#[derive(Deserialize)]
struct PutStorage {
    data: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Register {
    package_name: String,
    api_key: String,
    webhook_url: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ById {
    registration_id: String,
}

impl Hub {
    /// An app authenticated by `Bearer <packageName>:<apiKey>`: its index.
    fn app_by_key(&self, bearer: Option<&str>) -> Option<usize> {
        let (package, key) = bearer?.split_once(':')?;
        let app = self.app_index(package)?;
        auth::verify_api_key(key, &self.cfg.apps[app].hashed_api_key).then_some(app)
    }

    // ---- simple storage ------------------------------------------------------------------

    /// `GET/PUT/DELETE /api/sdk/simple-storage/{userId}[/{key}]`.
    pub fn on_storage(&mut self, net: &mut impl Outbox, id: ConnId, req: StorageRequest<'_>) {
        let StorageRequest { user, key, .. } = req;
        let Some(app) = self.app_by_key(req.bearer) else {
            self.refused("INVALID_API_KEY");
            return net.respond_error(
                id,
                401,
                "INVALID_API_KEY",
                "Authorization: Bearer <packageName>:<apiKey> required",
                &[],
            );
        };
        let package = self.cfg.apps[app].package_name.clone();
        let method = match req.method {
            Ok(m) => m,
            Err(m) => return refuse_method(net, id, m),
        };
        let current = self.durable.storage(user, &package);
        let data = |m: Option<&BTreeMap<String, String>>| -> serde_json::Map<String, Value> {
            m.into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), serde_json::from_str(v).unwrap_or(Value::Null)))
                .collect()
        };
        match (method, key) {
            (StorageMethod::Get, None) => {
                let body = json!({ "success": true, "data": data(current) });
                net.respond_json(id, 200, &body, &[]);
            }
            (StorageMethod::Get, Some(k)) => match current.and_then(|m| m.get(k)) {
                Some(v) => {
                    let v: Value = serde_json::from_str(v).unwrap_or(Value::Null);
                    net.respond_json(id, 200, &json!({ "success": true, "data": { k: v } }), &[]);
                }
                None => net.respond_error(id, 404, "KEY_NOT_FOUND", "no such key", &[]),
            },
            (StorageMethod::Put, None) => {
                let Ok(put) = serde_json::from_slice::<PutStorage>(req.body) else {
                    return net.respond_error(
                        id,
                        400,
                        "MALFORMED_BODY",
                        "expected {\"data\": {key: value, ...}}",
                        &[],
                    );
                };
                let mut sizes: BTreeMap<String, usize> = current
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), k.len() + v.len()))
                    .collect();
                let mut encoded = Vec::with_capacity(put.data.len());
                for (k, v) in &put.data {
                    let text = v.to_string();
                    if text.len() > MAX_STORAGE_VALUE {
                        return net.respond_error(
                            id,
                            413,
                            "VALUE_TOO_LARGE",
                            "a value is over the 100 000-byte limit",
                            &[],
                        );
                    }
                    sizes.insert(k.clone(), k.len() + text.len());
                    encoded.push((k.clone(), text));
                }
                if sizes.values().sum::<usize>() > MAX_STORAGE_SCOPE {
                    return net.respond_error(
                        id,
                        413,
                        "STORAGE_FULL",
                        "this app's storage for this user would exceed 1 MB",
                        &[],
                    );
                }
                for (k, text) in encoded {
                    self.durable.set_storage(user, &package, &k, Some(text));
                }
                net.respond_json(id, 200, &json!({ "success": true }), &[]);
            }
            (StorageMethod::Delete, Some(k)) => {
                self.durable.set_storage(user, &package, k, None);
                net.respond_json(id, 200, &json!({ "success": true }), &[]);
            }
            (StorageMethod::Delete, None) => {
                let keys: Vec<String> = current
                    .into_iter()
                    .flatten()
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in keys {
                    self.durable.set_storage(user, &package, &k, None);
                }
                net.respond_json(id, 200, &json!({ "success": true }), &[]);
            }
            (StorageMethod::Put, Some(_)) => {
                refuse_method(net, id, MethodNotAllowed::GET_PUT_DELETE)
            }
        }
    }

    // ---- settings --------------------------------------------------------------------------

    /// The app's declared settings with the user's values merged over the defaults.
    pub(super) fn settings_for(&self, user: &str, app: usize) -> Vec<Value> {
        let values = self
            .durable
            .settings(user, &self.cfg.apps[app].package_name);
        self.declared_settings(app)
            .filter(|s| s["type"] != "group")
            .map(|s| {
                let mut s = s.clone();
                let key = s["key"].as_str().unwrap_or("").to_string();
                let value = values
                    .and_then(|m| m.get(&key))
                    .and_then(|v| serde_json::from_str(v).ok())
                    .unwrap_or_else(|| s["defaultValue"].clone());
                if let Some(o) = s.as_object_mut() {
                    o.insert("value".into(), value);
                }
                s
            })
            .collect()
    }

    /// `GET /appsettings/user/{pkg}` and `/tpasettings/user/{pkg}`.
    pub fn on_settings_read(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        req: SettingsRequest<'_>,
    ) {
        let package = req.package;
        let Some(app) = self.app_or_404(net, id, package) else {
            return;
        };
        if let Err(m) = req.method {
            return refuse_method(net, id, m);
        }
        // The SDK sends its session id, `<userId>-<pkg>`; a plain user id is accepted too.
        let who = req.bearer.unwrap_or("");
        let user = who
            .strip_suffix(package)
            .and_then(|u| u.strip_suffix('-'))
            .unwrap_or(who);
        let running = self
            .sessions
            .by_user(user)
            .and_then(|sk| self.session(sk))
            .and_then(|s| s.apps.get(&app))
            .is_some_and(|r| r.state.is_live());
        if !running {
            self.refused("APP_NOT_STARTED");
            return net.respond_error(
                id,
                403,
                "APP_NOT_STARTED",
                "settings are answered for a user whose session runs this app; send Authorization: Bearer <userId>-<packageName>",
                &[],
            );
        }
        let body = json!({ "success": true, "settings": self.settings_for(user, app) });
        net.respond_json(id, 200, &body, &[]);
    }

    /// `PUT /api/settings/{pkg}` with the user's glasses token and `{"settings": {key: value}}`:
    /// saved, sent to the app's open session as `settings_update`, and POSTed to the app
    /// server's `/settings` (PROTOCOL §12.3).
    pub fn on_settings_write(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        req: SettingsRequest<'_>,
        now: Now,
    ) {
        let package = req.package;
        let Some(app) = self.app_or_404(net, id, package) else {
            return;
        };
        if let Err(m) = req.method {
            return refuse_method(net, id, m);
        }
        let Some(user) = self.glasses_bearer(net, id, req.bearer, now) else {
            return;
        };
        #[derive(Deserialize)]
        struct Change {
            settings: serde_json::Map<String, Value>,
        }
        let Ok(change) = serde_json::from_slice::<Change>(req.body) else {
            return net.respond_error(
                id,
                400,
                "MALFORMED_BODY",
                "expected {\"settings\": {key: value, ...}}",
                &[],
            );
        };
        let declared: Vec<&str> = self.cfg.apps[app]
            .settings
            .iter()
            .filter_map(|s| s["key"].as_str())
            .collect();
        if let Some(unknown) = change
            .settings
            .keys()
            .find(|k| !declared.contains(&k.as_str()))
        {
            let msg = format!("'{unknown}' is not a setting of {package}");
            return net.respond_error(id, 400, "UNKNOWN_SETTING", &msg, &[]);
        }
        for (k, v) in &change.settings {
            self.durable
                .set_setting(&user, package, k, Some(v.to_string()));
        }
        let settings = self.settings_for(&user, app);
        // The app's open session hears it at once.
        let conn = self
            .sessions
            .by_user(user.as_str())
            .and_then(|sk| self.session(sk))
            .and_then(|s| s.apps.get(&app))
            .and_then(|r| r.conn);
        if let Some(conn) = conn {
            let msg = json!({
                "type": "settings_update",
                "packageName": package,
                "sessionId": format!("{user}-{package}"),
                "settings": settings,
                "timestamp": now.iso(),
            });
            net.send_json(conn, &msg);
        }
        // And its server, as the cloud did.
        let body = json!({ "userIdForSettings": user, "settings": settings });
        let spec = &self.cfg.apps[app];
        let request = messages::http_post(
            &spec.webhook_target.host,
            spec.webhook_target.port,
            &format!("{}/settings", spec.webhook_path),
            &body,
        );
        let target = spec.webhook_target.clone();
        if net
            .open_client(
                target,
                &request,
                now.mono + self.cfg.timings.webhook_timeout,
            )
            .is_some()
        {
            self.counters.webhooks_sent += 1;
        }
        net.respond_json(
            id,
            200,
            &json!({ "success": true, "settings": settings }),
            &[],
        );
    }

    // ---- TPA server registration -----------------------------------------------------------

    /// `POST /api/tpa-server/{register,heartbeat,restart}` with its JSON `body`.
    pub fn on_tpa_server(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        action: TpaServerAction,
        body: &[u8],
        now: Now,
    ) {
        if action == TpaServerAction::Register {
            return self.register(net, id, body, now);
        }
        let body = match serde_json::from_slice::<ById>(body) {
            Ok(b) => b,
            Err(e) => {
                let msg = format!("registrationId: {e}");
                return net.respond_error(id, 400, "MALFORMED_BODY", &msg, &[]);
            }
        };
        let Some(mut r) = self.durable.registration(&body.registration_id).cloned() else {
            return net.respond_error(
                id,
                404,
                "REGISTRATION_NOT_FOUND",
                "no such registration (it may have expired)",
                &[],
            );
        };
        r.last_seen = now.wall.as_micros();
        self.durable.put_registration(r.clone());
        if action == TpaServerAction::Heartbeat {
            return net.respond_json(id, 200, &json!({ "success": true }), &[]);
        }
        let recovered = self.recover(net, &r, now);
        net.respond_json(
            id,
            200,
            &json!({ "success": true, "recoveredSessions": recovered }),
            &[],
        );
    }

    fn register(&mut self, net: &mut impl Outbox, id: ConnId, body: &[u8], now: Now) {
        let body = match serde_json::from_slice::<Register>(body) {
            Ok(b) => b,
            Err(e) => {
                let msg = format!("expected packageName, apiKey and webhookUrl: {e}");
                return net.respond_error(id, 400, "MALFORMED_BODY", &msg, &[]);
            }
        };
        let Some(app) = self.app_index(&body.package_name) else {
            return net.respond_error(
                id,
                404,
                "PACKAGE_NOT_FOUND",
                "packageName: no app with this packageName is registered",
                &[],
            );
        };
        if !auth::verify_api_key(&body.api_key, &self.cfg.apps[app].hashed_api_key) {
            self.refused("INVALID_API_KEY");
            return net.respond_error(
                id,
                401,
                "INVALID_API_KEY",
                "apiKey: does not match this app",
                &[],
            );
        }
        if let Err(e) = registry::parse_http_url(&body.webhook_url) {
            let msg = format!("webhookUrl: {e}");
            return net.respond_error(id, 400, "MALFORMED_BODY", &msg, &[]);
        }
        self.next_registration = self.next_registration.wrapping_add(1);
        let digest = auth::hash_api_key(&format!(
            "{}|{}|{}|{}",
            body.package_name,
            body.webhook_url,
            now.wall.as_micros(),
            self.next_registration
        ));
        let reg = Registration {
            id: format!(
                "{}-{}-{}-{}-{}",
                &digest[0..8],
                &digest[8..12],
                &digest[12..16],
                &digest[16..20],
                &digest[20..32]
            ),
            package: body.package_name,
            webhook_url: body.webhook_url,
            registered_at: now.wall.as_micros(),
            last_seen: now.wall.as_micros(),
        };
        let rid = reg.id.clone();
        self.durable.put_registration(reg);
        self.arm_registration_sweep(now);
        net.respond_json(
            id,
            201,
            &json!({ "success": true, "registrationId": rid }),
            &[],
        );
    }

    /// Send `session_request` to the registration's webhook for every live session running
    /// its package; returns how many.
    fn recover(&mut self, net: &mut impl Outbox, r: &Registration, now: Now) -> usize {
        let Some(app) = self.app_index(&r.package) else {
            return 0;
        };
        let Ok((target, path)) = registry::parse_http_url(&r.webhook_url) else {
            return 0;
        };
        let spec = &self.cfg.apps[app];
        let base = if spec.is_system_app {
            &self.cfg.internal_ws_url
        } else {
            &self.cfg.public_ws_url
        };
        let ws_url = format!("{}/app-ws", base.trim_end_matches('/'));
        let mut sent = 0;
        let users: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.apps.get(&app).is_some_and(|run| run.state.is_live()))
            .map(|(_, s)| s.user.to_string())
            .collect();
        for user in users {
            let session_id = format!("{user}-{}", r.package);
            let body = messages::session_request(&session_id, &user, &ws_url, now.iso());
            let path = if path.is_empty() { "/" } else { path.as_str() };
            let request = messages::http_post(&target.host, target.port, path, &body);
            let deadline = now.mono + self.cfg.timings.webhook_timeout;
            if net
                .open_client(target.clone(), &request, deadline)
                .is_some()
            {
                self.counters.webhooks_sent += 1;
                sent += 1;
            }
        }
        sent
    }

    pub(super) fn arm_registration_sweep(&mut self, now: Now) {
        if self.sweep_at.is_none() {
            let at = now.mono + REGISTRATION_SWEEP;
            self.sweep_at = Some(at);
            self.arm(at, TimerKey::Sweep);
        }
    }

    /// Drop registrations not heard from within [`REGISTRATION_TTL`] (wall clock).
    pub(super) fn sweep_tick(&mut self, now: Now) {
        self.sweep_at = None;
        let ttl = REGISTRATION_TTL.as_micros() as u64;
        let expired: Vec<String> = self
            .durable
            .registrations()
            .filter(|r| now.wall.as_micros().saturating_sub(r.last_seen) > ttl)
            .map(|r| r.id.clone())
            .collect();
        for id in expired {
            log::info!("event=registration_expired registration={id:?}");
            self.durable.remove_registration(&id);
        }
        if self.durable.registrations().next().is_some() {
            self.arm_registration_sweep(now);
        }
    }
}
