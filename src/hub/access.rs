//! Core layer (sans-IO), part of the hub: who may connect or call. Decides WebSocket upgrades
//! from the headers the server hands over (the `Authorization` value: glasses bearer tokens,
//! app tokens with `X-Session-Id`) and serves the REST start/stop calls (the router has
//! decoded their path). Invariant: nothing is upgraded or changed before the caller is
//! authenticated; every refusal is an HTTP status with a JSON body carrying a `code`.

use super::{messages, Hub, JoinError, LifecycleError, PreAuth, Refusal, SessKey};
use crate::auth;
use crate::http::bearer;
use crate::net::{ConnId, Endpoint, Outbox, Peer};
use crate::time::Now;
use serde_json::json;

/// The message of a `TOO_MANY_SESSIONS` refusal.
pub(super) const SESSIONS_FULL: &str = "the box holds as many sessions as it may; try again later";

impl Hub {
    // ---- upgrades and REST ---------------------------------------------------------------

    /// Decide an upgrade from its headers, before any socket is opened: `authorization` is
    /// the `Authorization` value (a bare token is taken as well as `Bearer <token>`),
    /// `session_id` the `X-Session-Id` value.
    pub fn authorize_upgrade(
        &mut self,
        endpoint: Endpoint,
        authorization: Option<&str>,
        session_id: Option<&str>,
        peer: &Peer,
        now: Now,
    ) -> Result<PreAuth, Refusal> {
        let ts = now.iso();
        let bearer = authorization.map(|v| bearer(v).unwrap_or(v.trim()));
        match endpoint {
            Endpoint::Echo => Ok(PreAuth::None),
            Endpoint::Glasses => match bearer {
                None => Ok(PreAuth::Glasses { user: None }),
                Some(token) => match self.check_glasses_token(token, now) {
                    Ok(user) if self.session_refused(&user) => {
                        let code = "TOO_MANY_SESSIONS";
                        self.refused(code);
                        Err(Refusal {
                            status: 503,
                            body: json!(messages::connection_error(code, SESSIONS_FULL, ts)),
                        })
                    }
                    Ok(user) => Ok(PreAuth::Glasses { user: Some(user) }),
                    Err(e) => {
                        self.refused(e.code());
                        Err(Refusal {
                            status: 401,
                            body: json!(messages::connection_error(e.code(), e.message(), ts)),
                        })
                    }
                },
            },
            Endpoint::App => {
                let Some(token) = bearer else {
                    return Ok(PreAuth::App { bound: None });
                };
                let result = self.header_join(token, session_id, peer, now);
                match result {
                    Ok(bound) => Ok(PreAuth::App { bound: Some(bound) }),
                    Err(e) => {
                        self.refused(e.code());
                        Err(Refusal {
                            status: e.status(),
                            body: json!(messages::tpa_error(e.code(), e.message(), json!({}), ts)),
                        })
                    }
                }
            }
        }
    }

    pub(super) fn header_join(
        &self,
        token: &str,
        session_id: Option<&str>,
        peer: &Peer,
        now: Now,
    ) -> Result<(SessKey, usize), JoinError> {
        let (package, binding) =
            auth::jwt::verify_app_token(token, &self.cfg.jwt_secret, now.wall.unix_secs())
                .map_err(|_| JoinError::InvalidAppToken)?;
        let app = self.app_index(&package).ok_or(JoinError::PackageNotFound)?;
        if auth::jwt::app_key_binding(&self.cfg.apps[app].hashed_api_key) != binding {
            return Err(JoinError::InvalidAppToken);
        }
        let session_id = session_id.ok_or(JoinError::MissingHeaders)?;
        self.check_join(app, session_id, peer)
    }

    /// The checks shared by both ways to join: address, session, started.
    pub(super) fn check_join(
        &self,
        app: usize,
        session_id: &str,
        peer: &Peer,
    ) -> Result<(SessKey, usize), JoinError> {
        let spec = &self.cfg.apps[app];
        if !spec.address_allowed(peer) {
            return Err(JoinError::AddressNotAllowed);
        }
        let user = session_id
            .strip_suffix(spec.package_name.as_str())
            .and_then(|u| u.strip_suffix('-'))
            .filter(|u| !u.is_empty())
            .ok_or(JoinError::SessionNotFound)?;
        let sk = self
            .sessions
            .by_user(user)
            .ok_or(JoinError::SessionNotFound)?;
        let started = self
            .session(sk)
            .and_then(|s| s.apps.get(&app))
            .is_some_and(|r| r.state.is_live());
        if !started {
            return Err(JoinError::AppNotStarted);
        }
        Ok((sk, app))
    }

    /// The user of the request's glasses bearer token (`Authorization: Bearer`'s token);
    /// refused (401 with the token's error code, counted) and `None` when it has none or a
    /// bad one.
    pub(super) fn glasses_bearer(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        token: Option<&str>,
        now: Now,
    ) -> Option<String> {
        let Some(token) = token else {
            self.refused("MISSING_TOKEN");
            net.respond_error(
                id,
                401,
                "MISSING_TOKEN",
                "Authorization: Bearer <glasses token> required",
                &[],
            );
            return None;
        };
        match self.check_glasses_token(token, now) {
            Ok(u) => Some(u),
            Err(e) => {
                self.refused(e.code());
                net.respond_error(id, 401, e.code(), e.message(), &[]);
                None
            }
        }
    }

    /// `POST /apps/{packageName}/start|stop` with the glasses bearer token (`bearer`).
    pub fn on_rest(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        package: &str,
        start: bool,
        bearer: Option<&str>,
        now: Now,
    ) {
        let Some(user) = self.glasses_bearer(net, id, bearer, now) else {
            return;
        };
        self.start_or_stop(net, id, &user, package, start, now);
    }

    /// Start or stop `package` in `user`'s session for a REST caller (the user's glasses
    /// bearer, or an operator), answering `id`: 200 with the app's state, or the refusal.
    pub fn start_or_stop(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        user: &str,
        package: &str,
        start: bool,
        now: Now,
    ) {
        let Some(app) = self.app_or_404(net, id, package) else {
            return;
        };
        let Some(sk) = self.sessions.by_user(user) else {
            return net.respond_error(
                id,
                404,
                "SESSION_NOT_FOUND",
                "no session for this user; connect the glasses first",
                &[],
            );
        };
        match self.lifecycle_request(net, sk, app, start, now) {
            Err(e @ LifecycleError::RateLimited) => {
                return net.respond_error(id, 429, e.code(), e.message(), &["Retry-After: 1"])
            }
            Err(e @ LifecycleError::TooManyApps) => {
                return net.respond_error(id, 429, e.code(), e.message(), &[])
            }
            Ok(()) => {}
        }
        let status = if start { "started" } else { "stopped" };
        let app_state = self.app_state_view(sk, app);
        let body = json!({ "success": true, "data": { "status": status, "packageName": package, "appState": app_state } });
        net.respond_json(id, 200, &body, &[]);
    }

    /// A new session for `user` would be one more than `max_sessions` (resuming one never is).
    pub(super) fn session_refused(&self, user: &str) -> bool {
        self.sessions.by_user(user).is_none() && self.sessions.len() >= self.cfg.max_sessions
    }

    pub(super) fn running_changed(&mut self, sk: SessKey, app: usize, running: bool) {
        let Some(user) = self.session(sk).map(|s| s.user.clone()) else {
            return;
        };
        let pkg = &self.cfg.apps[app].package_name;
        self.durable.set_running(user, pkg, running);
    }
}
