//! Core layer (sans-IO, top), part of the server composition: the HTTP route table — every
//! path the box answers, in one place — and the hand-over of each route to its handler.
//!
//! [`route`] is a pure function from (method, path) and the config's switches to a typed
//! [`Route`]: which handler, with its path parameters decoded (package, user, key), or the
//! refusal the method and path alone decide (404 `NOT_FOUND`, 405 `METHOD_NOT_ALLOWED` with
//! `Allow`, 400 `BAD_PATH` for a malformed escape). `Server::serve` then reads the headers a
//! handler needs (the bearer token, `X-Session-Id`) and calls it with plain values: the hub's
//! REST calls, the `/ui/` pages (`ui.rs`), `/health`, `/metrics`, the WebSocket upgrades.
//!
//! | Method      | Path                                            | Route                      |
//! |-------------|-------------------------------------------------|----------------------------|
//! | any         | `/glasses-ws`, `/app-ws`, `/tpa-ws`, `/echo`¹   | [`Route::Upgrade`]         |
//! | GET, HEAD   | `/health`, `/metrics`                           | [`Route::Health`], [`Route::Metrics`] |
//! | GET, HEAD²  | `/ui`, `/ui/`, `/ui/{file}`                     | [`Route::Page`]            |
//! | any²        | `/ui/config.json`                               | [`Route::UiConfig`]        |
//! | POST²       | `/ui/dev/token`                                 | [`Route::DevToken`]        |
//! | any²        | `/ui/api/…` (state, sessions/{user}/apps/{pkg}/start\|stop, devices, devices/{name}/revoke\|token, feeds/{feed}/follow) | [`Route::Operator`] |
//! | POST        | `/apps/{pkg}/start\|stop`                       | [`Route::AppAction`]       |
//! | GET, PUT, DELETE | `/api/sdk/simple-storage/{user}[/{key}]`   | [`Route::Storage`]         |
//! | GET         | `/appsettings/user/{pkg}`, `/tpasettings/user/{pkg}` | [`Route::SettingsRead`] |
//! | PUT         | `/api/settings/{pkg}`                           | [`Route::SettingsWrite`]   |
//! | POST        | `/api/tpa-server/register\|heartbeat\|restart`  | [`Route::TpaServer`]       |
//! | GET         | `/api/public/permissions/{pkg}`                 | [`Route::Permissions`]     |
//! | GET         | `/api/tts?text=…&voice_id=…`                    | [`Route::Tts`] (`tts.rs`)  |
//! | POST        | `/api/auth/exchange-token`                      | [`Route::ExchangeToken`]   |
//! | anything else |                                               | 404 `no such endpoint`     |
//!
//! ¹ `/echo` only when configured. ² Only when the pages are served (an operator token is
//! configured); otherwise these paths are unknown.
//!
//! Invariants: the order of checks is part of the answer and is kept as the handlers expect
//! it — a refusal that must come after the caller is authenticated (a wrong method on simple
//! storage, the settings of an unknown package, anything under `/ui/api/`) travels inside the
//! route and is answered by the handler at its step; nothing here reads a clock or panics on
//! any method or path.

use super::Server;
use crate::http::{bearer, percent_decode, MethodNotAllowed, Request};
use crate::hub::{SettingsRequest, StorageMethod, StorageRequest, TpaServerAction};
use crate::net::{ConnId, Endpoint, Outbox};
use crate::time::Now;

/// What the table depends on besides the request: switches from the config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Switches {
    /// `/echo` is served.
    pub echo: bool,
    /// The `/ui/` pages are served.
    pub ui: bool,
}

/// A request's route: its handler and the values decoded from its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A WebSocket upgrade (any method: the upgrade's own checks refuse a wrong one).
    Upgrade(Endpoint),
    Health,
    Metrics,
    /// One of the embedded `/ui/` files.
    Page(Page),
    /// `/ui/config.json`: what the pages may offer.
    UiConfig,
    /// `POST /ui/dev/token`.
    DevToken,
    /// Under `/ui/api/`: checked against the operator token first, whatever it asks.
    Operator(Operator),
    /// `POST /apps/{package}/start|stop` (the package as it stands in the path, not decoded).
    AppAction {
        package: String,
        start: bool,
    },
    /// `/api/sdk/simple-storage/{user}[/{key}]`.
    Storage {
        user: String,
        key: Option<String>,
        method: Result<StorageMethod, MethodNotAllowed>,
    },
    /// `/appsettings/user/{package}` or `/tpasettings/user/{package}` (the last segment).
    SettingsRead {
        package: String,
        method: Result<(), MethodNotAllowed>,
    },
    /// `/api/settings/{package}`.
    SettingsWrite {
        package: String,
        method: Result<(), MethodNotAllowed>,
    },
    /// `POST /api/tpa-server/{action}`.
    TpaServer(TpaServerAction),
    /// `GET /api/public/permissions/{package}`: the app's permissions, public (no token), as
    /// the SDK reads them to warn about a missing one.
    Permissions(String),
    /// `GET /api/tts`: speech for the SDK's `audio.speak` (the query is read by `tts.rs`).
    Tts,
    /// `POST /api/auth/exchange-token`: an account login for a core token.
    ExchangeToken,
    /// Refused from the method and path alone.
    Refuse(Refusal),
}

/// A call under `/ui/api/`, once the operator token is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    /// `GET /ui/api/state`.
    State,
    /// `POST /ui/api/sessions/{user}/apps/{package}/start|stop`.
    Action {
        user: String,
        package: String,
        start: bool,
    },
    /// `GET /ui/api/devices`: the provisioned devices.
    Devices,
    /// `POST /ui/api/devices` `{"names": [...], "expiresSeconds": n}`.
    AddDevices,
    /// `POST /ui/api/devices/{name}/revoke`.
    RevokeDevice(String),
    /// `GET /ui/api/devices/{name}/token`: the token and its QR code, on explicit request.
    DeviceToken(String),
    /// `POST /ui/api/feeds/{feed}/follow` `{"user": …}`: that user's session follows the feed.
    Follow(String),
    Refuse(Refusal),
}

/// A refusal decided from the method and path alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 404 `NOT_FOUND` with this message.
    NotFound(&'static str),
    /// 405 `METHOD_NOT_ALLOWED` with its `Allow` header.
    WrongMethod(MethodNotAllowed),
    /// 400 `BAD_PATH` with this message: a path parameter is malformed or empty.
    BadPath(&'static str),
}

impl Refusal {
    /// Answer `id` with this refusal's status and JSON error body.
    pub fn respond(self, net: &mut impl Outbox, id: ConnId) {
        match self {
            Refusal::NotFound(message) => net.respond_error(id, 404, "NOT_FOUND", message, &[]),
            Refusal::WrongMethod(m) => {
                net.respond_error(id, 405, MethodNotAllowed::CODE, m.message, &[m.allow])
            }
            Refusal::BadPath(message) => net.respond_error(id, 400, "BAD_PATH", message, &[]),
        }
    }
}

/// The files embedded under `/ui/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Index,
    Operator,
    Glasses,
    Css,
    Render,
    OperatorScript,
    GlassesScript,
    Favicon,
}

/// Each page's path under `/ui/` (`""`: `/ui` and `/ui/`).
const PAGES: &[(&str, Page)] = &[
    ("", Page::Index),
    ("operator", Page::Operator),
    ("glasses", Page::Glasses),
    ("ui.css", Page::Css),
    ("render.js", Page::Render),
    ("operator.js", Page::OperatorScript),
    ("glasses.js", Page::GlassesScript),
    ("favicon.svg", Page::Favicon),
];

const NO_SUCH_ENDPOINT: &str = "no such endpoint";
const NO_SUCH_PAGE: &str = "no such page";
const USE_OPERATOR_API: &str =
    "use GET /ui/api/state, POST /ui/api/sessions/{userId}/apps/{packageName}/start|stop, GET|POST /ui/api/devices, POST /ui/api/devices/{name}/revoke, GET /ui/api/devices/{name}/token or POST /ui/api/feeds/{feed}/follow";
const GET_POST: MethodNotAllowed = MethodNotAllowed {
    message: "use GET or POST",
    allow: "Allow: GET, POST",
};
const USE_APPS: &str = "use /apps/{packageName}/start or /stop";
const USE_TPA_SERVER: &str = "use /api/tpa-server/register, /heartbeat or /restart";
const BAD_USER_OR_KEY: &str = "malformed user id or key";
const BAD_KEY: &str = "malformed or empty key";
const BAD_PACKAGE: &str = "malformed or empty package name";

fn is_get(method: &str) -> bool {
    matches!(method, "GET" | "HEAD")
}

fn wrong(m: MethodNotAllowed) -> Route {
    Route::Refuse(Refusal::WrongMethod(m))
}

/// The route of a request with `method` and `path` (without its query).
pub fn route(method: &str, path: &str, on: Switches) -> Route {
    match path {
        "/echo" if on.echo => return Route::Upgrade(Endpoint::Echo),
        "/glasses-ws" => return Route::Upgrade(Endpoint::Glasses),
        "/app-ws" | "/tpa-ws" => return Route::Upgrade(Endpoint::App),
        "/health" if is_get(method) => return Route::Health,
        "/metrics" if is_get(method) => return Route::Metrics,
        "/health" | "/metrics" => return wrong(MethodNotAllowed::GET),
        _ => {}
    }
    if on.ui && (path == "/ui" || path.starts_with("/ui/")) {
        return ui(method, path);
    }
    if let Some(rest) = path.strip_prefix("/apps/") {
        return app_action(method, rest);
    }
    if let Some(rest) = path.strip_prefix("/api/sdk/simple-storage/") {
        return storage(method, rest);
    }
    if path.starts_with("/appsettings/user/") || path.starts_with("/tpasettings/user/") {
        let package = path.rsplit('/').next().and_then(percent_decode);
        return Route::SettingsRead {
            package: package.unwrap_or_default(),
            method: if method == "GET" {
                Ok(())
            } else {
                Err(MethodNotAllowed::GET)
            },
        };
    }
    if let Some(rest) = path.strip_prefix("/api/settings/") {
        return Route::SettingsWrite {
            package: percent_decode(rest).unwrap_or_default(),
            method: if method == "PUT" {
                Ok(())
            } else {
                Err(MethodNotAllowed::PUT)
            },
        };
    }
    if path == "/api/tts" {
        return if method == "GET" {
            Route::Tts
        } else {
            wrong(MethodNotAllowed::GET)
        };
    }
    if let Some(rest) = path.strip_prefix("/api/public/permissions/") {
        let Some(package) = percent_decode(rest).filter(|p| !p.is_empty() && !p.contains('/'))
        else {
            return Route::Refuse(Refusal::BadPath(BAD_PACKAGE));
        };
        if method != "GET" {
            return wrong(MethodNotAllowed::GET);
        }
        return Route::Permissions(package);
    }
    if path == "/api/auth/exchange-token" {
        return if method == "POST" {
            Route::ExchangeToken
        } else {
            wrong(MethodNotAllowed::POST)
        };
    }
    if let Some(action) = path.strip_prefix("/api/tpa-server/") {
        let action = match action {
            "register" => TpaServerAction::Register,
            "heartbeat" => TpaServerAction::Heartbeat,
            "restart" => TpaServerAction::Restart,
            _ => return Route::Refuse(Refusal::NotFound(USE_TPA_SERVER)),
        };
        if method != "POST" {
            return wrong(MethodNotAllowed::POST);
        }
        return Route::TpaServer(action);
    }
    Route::Refuse(Refusal::NotFound(NO_SUCH_ENDPOINT))
}

/// `/apps/{package}/start|stop`; `rest` is what follows `/apps/`.
fn app_action(method: &str, rest: &str) -> Route {
    let (package, start) = match rest.rsplit_once('/') {
        Some((p, "start")) if !p.is_empty() => (p, true),
        Some((p, "stop")) if !p.is_empty() => (p, false),
        _ => return Route::Refuse(Refusal::NotFound(USE_APPS)),
    };
    if method != "POST" {
        return wrong(MethodNotAllowed::POST);
    }
    Route::AppAction {
        package: package.to_string(),
        start,
    }
}

/// `/api/sdk/simple-storage/{user}[/{key}]`; `rest` is what follows the prefix. The key is
/// everything after the user's segment.
fn storage(method: &str, rest: &str) -> Route {
    let (user, key) = match rest.split_once('/') {
        Some((u, k)) => (percent_decode(u), Some(percent_decode(k))),
        None => (percent_decode(rest), None),
    };
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return Route::Refuse(Refusal::BadPath(BAD_USER_OR_KEY));
    };
    let key = match key {
        None => None,
        Some(Some(k)) if !k.is_empty() => Some(k),
        Some(_) => return Route::Refuse(Refusal::BadPath(BAD_KEY)),
    };
    // A value is put only as part of the whole scope's `{"data": …}`.
    let method = match (method, &key) {
        ("GET", _) => Ok(StorageMethod::Get),
        ("PUT", None) => Ok(StorageMethod::Put),
        ("DELETE", _) => Ok(StorageMethod::Delete),
        _ => Err(MethodNotAllowed::GET_PUT_DELETE),
    };
    Route::Storage { user, key, method }
}

/// A path under `/ui` (only when the pages are served).
fn ui(method: &str, path: &str) -> Route {
    let path = path.strip_prefix("/ui").unwrap_or("");
    let path = path.strip_prefix('/').unwrap_or(path);
    if let Some(api) = path.strip_prefix("api/") {
        return Route::Operator(operator(method, api));
    }
    if path == "dev/token" {
        return if method == "POST" {
            Route::DevToken
        } else {
            wrong(MethodNotAllowed::POST)
        };
    }
    if path == "config.json" {
        return Route::UiConfig;
    }
    let Some(&(_, page)) = PAGES.iter().find(|(p, _)| *p == path) else {
        return Route::Refuse(Refusal::NotFound(NO_SUCH_PAGE));
    };
    if !is_get(method) {
        return wrong(MethodNotAllowed::GET);
    }
    Route::Page(page)
}

/// A call under `/ui/api/`; `api` is what follows it.
fn operator(method: &str, api: &str) -> Operator {
    if api == "state" {
        return if is_get(method) {
            Operator::State
        } else {
            Operator::Refuse(Refusal::WrongMethod(MethodNotAllowed::GET))
        };
    }
    if let Some(devices) = api.strip_prefix("devices") {
        return device_call(method, devices);
    }
    // feeds/{feed}/follow
    let feed = api
        .strip_prefix("feeds/")
        .and_then(|r| r.strip_suffix("/follow"));
    if let Some(feed) = feed {
        return match percent_decode(feed).filter(|f| !f.is_empty() && !f.contains('/')) {
            None => Operator::Refuse(Refusal::NotFound(USE_OPERATOR_API)),
            Some(_) if method != "POST" => {
                Operator::Refuse(Refusal::WrongMethod(MethodNotAllowed::POST))
            }
            Some(feed) => Operator::Follow(feed),
        };
    }
    // sessions/{user}/apps/{package}/{start|stop}
    let action = api
        .strip_prefix("sessions/")
        .and_then(|r| r.rsplit_once('/'))
        .and_then(|(r, action)| {
            let (user, package) = r.split_once("/apps/")?;
            Some((percent_decode(user)?, percent_decode(package)?, action))
        })
        .filter(|(u, p, a)| !u.is_empty() && !p.is_empty() && matches!(*a, "start" | "stop"));
    let Some((user, package, action)) = action else {
        return Operator::Refuse(Refusal::NotFound(USE_OPERATOR_API));
    };
    if method != "POST" {
        return Operator::Refuse(Refusal::WrongMethod(MethodNotAllowed::POST));
    }
    Operator::Action {
        user,
        package,
        start: action == "start",
    }
}

/// `/ui/api/devices…`; `rest` is what follows `devices`.
fn device_call(method: &str, rest: &str) -> Operator {
    let wrong = |m| Operator::Refuse(Refusal::WrongMethod(m));
    if rest.is_empty() {
        return match method {
            "GET" | "HEAD" => Operator::Devices,
            "POST" => Operator::AddDevices,
            _ => wrong(GET_POST),
        };
    }
    let call = rest
        .strip_prefix('/')
        .and_then(|r| r.rsplit_once('/'))
        .and_then(|(name, what)| Some((percent_decode(name)?, what)))
        .filter(|(name, _)| !name.is_empty());
    match call {
        Some((name, "revoke")) if method == "POST" => Operator::RevokeDevice(name),
        Some((_, "revoke")) => wrong(MethodNotAllowed::POST),
        Some((name, "token")) if is_get(method) => Operator::DeviceToken(name),
        Some((_, "token")) => wrong(MethodNotAllowed::GET),
        _ => Operator::Refuse(Refusal::NotFound(USE_OPERATOR_API)),
    }
}

impl Server {
    /// The switches of the route table, from the config.
    fn switches(&self) -> Switches {
        Switches {
            echo: self.net.cfg.echo,
            ui: self.ui_enabled(),
        }
    }

    /// Answer a complete HTTP request on `id`: route it, then hand it to its handler with the
    /// values that handler reads. A connection held past a cap is answered only for
    /// `/health` and `/metrics`; anything else gets the cap's refusal.
    pub(super) fn serve(&mut self, id: ConnId, req: &Request<'_>, now: Now) {
        // A request behind one still waiting for its speech is not answered (the connection
        // closes after the speech).
        if self.tts.is_waiting(id) {
            return;
        }
        let route = route(req.method, req.path, self.switches());
        if let Some(why) = self.net.get(id).and_then(|c| c.over_cap) {
            if !matches!(route, Route::Health | Route::Metrics) {
                return self.refuse_over_cap(id, why);
            }
        }
        let token = req.header_str("authorization").and_then(bearer);
        match route {
            Route::Upgrade(endpoint) => self.upgrade(id, endpoint, req, now),
            Route::Health => {
                let body = self.health(now);
                self.net.respond_json(id, 200, &body, &[]);
            }
            Route::Metrics => {
                let text = self.metrics(now);
                if let Some(out) = self.net.out(id) {
                    crate::http::write_response(
                        out,
                        200,
                        "text/plain; version=0.0.4",
                        &[],
                        text.as_bytes(),
                    );
                }
                self.net.finish(id);
            }
            Route::Page(page) => self.ui_page(id, page),
            Route::UiConfig => self.ui_config(id),
            Route::DevToken => self.dev_token(id, req.body),
            Route::Operator(call) => self.ui_api(id, call, token, req.body, now),
            Route::AppAction { package, start } => {
                self.hub
                    .on_rest(&mut self.net, id, &package, start, token, now)
            }
            Route::Storage { user, key, method } => {
                let call = StorageRequest {
                    user: &user,
                    key: key.as_deref(),
                    method,
                    bearer: token,
                    body: req.body,
                };
                self.hub.on_storage(&mut self.net, id, call)
            }
            Route::SettingsRead { package, method } => {
                let call = SettingsRequest {
                    package: &package,
                    method,
                    bearer: token,
                    body: req.body,
                };
                self.hub.on_settings_read(&mut self.net, id, call)
            }
            Route::SettingsWrite { package, method } => {
                let call = SettingsRequest {
                    package: &package,
                    method,
                    bearer: token,
                    body: req.body,
                };
                self.hub.on_settings_write(&mut self.net, id, call, now)
            }
            Route::TpaServer(action) => {
                self.hub
                    .on_tpa_server(&mut self.net, id, action, req.body, now)
            }
            Route::Permissions(package) => self.permissions(id, &package),
            Route::Tts => self.tts.on_request(&mut self.net, id, req.query, now),
            Route::ExchangeToken => self.hub.on_exchange_token(&mut self.net, id, req.body, now),
            Route::Refuse(refusal) => refusal.respond(&mut self.net, id),
        }
    }

    /// `GET /api/public/permissions/{package}`: `{packageName, permissions: [{type,
    /// description}]}` from the config (SDK 2.1.29 reads each `type`); an unknown package is
    /// 404 `PACKAGE_NOT_FOUND`.
    fn permissions(&mut self, id: ConnId, package: &str) {
        let Some(app) = self
            .hub
            .config()
            .apps
            .iter()
            .find(|a| a.package_name == package)
        else {
            self.hub.counters.refused("PACKAGE_NOT_FOUND");
            let message = "no app with this package name is registered on this box";
            return self
                .net
                .respond_error(id, 404, "PACKAGE_NOT_FOUND", message, &[]);
        };
        let permissions: Vec<_> = app
            .public_permissions()
            .map(
                |(kind, description)| serde_json::json!({"type": kind, "description": description}),
            )
            .collect();
        let body = serde_json::json!({"packageName": package, "permissions": permissions});
        self.net.respond_json(id, 200, &body, &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Switches = Switches {
        echo: true,
        ui: true,
    };
    const NONE: Switches = Switches {
        echo: false,
        ui: false,
    };

    fn not_found(message: &'static str) -> Route {
        Route::Refuse(Refusal::NotFound(message))
    }

    fn bad_path(message: &'static str) -> Route {
        Route::Refuse(Refusal::BadPath(message))
    }

    #[test]
    fn upgrades_whatever_the_method() {
        for method in ["GET", "POST", "HEAD"] {
            assert_eq!(
                route(method, "/glasses-ws", NONE),
                Route::Upgrade(Endpoint::Glasses)
            );
            assert_eq!(
                route(method, "/app-ws", NONE),
                Route::Upgrade(Endpoint::App)
            );
            assert_eq!(
                route(method, "/tpa-ws", NONE),
                Route::Upgrade(Endpoint::App)
            );
        }
        assert_eq!(route("GET", "/echo", ALL), Route::Upgrade(Endpoint::Echo));
        assert_eq!(route("GET", "/echo", NONE), not_found(NO_SUCH_ENDPOINT));
        assert_eq!(
            route("GET", "/glasses-ws/", NONE),
            not_found(NO_SUCH_ENDPOINT)
        );
    }

    #[test]
    fn health_and_metrics() {
        assert_eq!(route("GET", "/health", NONE), Route::Health);
        assert_eq!(route("HEAD", "/health", NONE), Route::Health);
        assert_eq!(route("GET", "/metrics", NONE), Route::Metrics);
        assert_eq!(route("HEAD", "/metrics", NONE), Route::Metrics);
        for path in ["/health", "/metrics"] {
            for method in ["POST", "PUT", "DELETE", "get"] {
                assert_eq!(route(method, path, NONE), wrong(MethodNotAllowed::GET));
            }
        }
        assert_eq!(route("GET", "/health/", NONE), not_found(NO_SUCH_ENDPOINT));
    }

    #[test]
    fn unknown_paths_are_404() {
        for path in [
            "", "/", "/nope", "/api", "/api/", "/apps", "/uix", "/ui", "/ui/",
        ] {
            assert_eq!(
                route("GET", path, NONE),
                not_found(NO_SUCH_ENDPOINT),
                "{path}"
            );
        }
        assert_eq!(route("GET", "/uix", ALL), not_found(NO_SUCH_ENDPOINT));
    }

    #[test]
    fn pages_only_when_served() {
        assert_eq!(route("GET", "/ui", ALL), Route::Page(Page::Index));
        assert_eq!(route("GET", "/ui/", ALL), Route::Page(Page::Index));
        assert_eq!(route("HEAD", "/ui/", ALL), Route::Page(Page::Index));
        for (path, page) in PAGES {
            assert_eq!(
                route("GET", &format!("/ui/{path}"), ALL),
                Route::Page(*page)
            );
            assert_eq!(
                route("POST", &format!("/ui/{path}"), ALL),
                wrong(MethodNotAllowed::GET)
            );
            assert_eq!(
                route("GET", &format!("/ui/{path}"), NONE),
                not_found(NO_SUCH_ENDPOINT)
            );
        }
        assert_eq!(
            route("GET", "/ui/operator.js", ALL),
            Route::Page(Page::OperatorScript)
        );
        // An unknown page is 404 whatever the method.
        assert_eq!(route("POST", "/ui/nope", ALL), not_found(NO_SUCH_PAGE));
        assert_eq!(route("GET", "/ui//operator", ALL), not_found(NO_SUCH_PAGE));
        // `/ui` followed by anything but `/` is not under `/ui`.
        assert_eq!(
            route("GET", "/uioperator", ALL),
            not_found(NO_SUCH_ENDPOINT)
        );
    }

    #[test]
    fn ui_config_and_dev_token() {
        for method in ["GET", "POST", "DELETE"] {
            assert_eq!(route(method, "/ui/config.json", ALL), Route::UiConfig);
        }
        assert_eq!(route("POST", "/ui/dev/token", ALL), Route::DevToken);
        assert_eq!(
            route("GET", "/ui/dev/token", ALL),
            wrong(MethodNotAllowed::POST)
        );
        assert_eq!(
            route("POST", "/ui/dev/token", NONE),
            not_found(NO_SUCH_ENDPOINT)
        );
    }

    #[test]
    fn operator_calls() {
        let op = |method, path| match route(method, path, ALL) {
            Route::Operator(o) => o,
            other => panic!("{path}: {other:?}"),
        };
        assert_eq!(op("GET", "/ui/api/state"), Operator::State);
        assert_eq!(op("HEAD", "/ui/api/state"), Operator::State);
        assert_eq!(
            op("POST", "/ui/api/state"),
            Operator::Refuse(Refusal::WrongMethod(MethodNotAllowed::GET))
        );
        assert_eq!(
            op(
                "POST",
                "/ui/api/sessions/alice%40x.com/apps/com.a%2Fb/start"
            ),
            Operator::Action {
                user: "alice@x.com".into(),
                package: "com.a/b".into(),
                start: true
            }
        );
        assert_eq!(
            op("POST", "/ui/api/sessions/bob/apps/com.x/stop"),
            Operator::Action {
                user: "bob".into(),
                package: "com.x".into(),
                start: false
            }
        );
        assert_eq!(
            op("GET", "/ui/api/sessions/bob/apps/com.x/stop"),
            Operator::Refuse(Refusal::WrongMethod(MethodNotAllowed::POST))
        );
        let unknown = Operator::Refuse(Refusal::NotFound(USE_OPERATOR_API));
        for path in [
            "/ui/api/",
            "/ui/api/nope",
            "/ui/api/sessions/bob/apps/com.x/pause",
            "/ui/api/sessions//apps/com.x/start",
            "/ui/api/sessions/bob/apps//start",
            "/ui/api/sessions/%zz/apps/com.x/start",
            "/ui/api/sessions/bob/apps/com.x%4/start",
            "/ui/api/sessions/bob/com.x/start",
        ] {
            assert_eq!(op("POST", path), unknown, "{path}");
        }
        // Devices.
        assert_eq!(op("GET", "/ui/api/devices"), Operator::Devices);
        assert_eq!(op("POST", "/ui/api/devices"), Operator::AddDevices);
        assert_eq!(
            op("DELETE", "/ui/api/devices"),
            Operator::Refuse(Refusal::WrongMethod(GET_POST))
        );
        assert_eq!(
            op("POST", "/ui/api/feeds/track%202/follow"),
            Operator::Follow("track 2".into())
        );
        assert_eq!(
            op("GET", "/ui/api/feeds/main/follow"),
            Operator::Refuse(Refusal::WrongMethod(MethodNotAllowed::POST))
        );
        for path in [
            "/ui/api/feeds//follow",
            "/ui/api/feeds/a/b/follow",
            "/ui/api/feeds/main",
        ] {
            assert_eq!(
                op("POST", path),
                Operator::Refuse(Refusal::NotFound(USE_OPERATOR_API)),
                "{path}"
            );
        }
        assert_eq!(
            op("POST", "/ui/api/devices/desk-1/revoke"),
            Operator::RevokeDevice("desk-1".into())
        );
        assert_eq!(
            op("GET", "/ui/api/devices/desk%2D1/token"),
            Operator::DeviceToken("desk-1".into())
        );
        assert_eq!(
            op("GET", "/ui/api/devices/desk-1/revoke"),
            Operator::Refuse(Refusal::WrongMethod(MethodNotAllowed::POST))
        );
        assert_eq!(
            op("POST", "/ui/api/devices/desk-1/token"),
            Operator::Refuse(Refusal::WrongMethod(MethodNotAllowed::GET))
        );
        for path in [
            "/ui/api/devicesx",
            "/ui/api/devices/",
            "/ui/api/devices//revoke",
            "/ui/api/devices/a/forget",
            "/ui/api/devices/%zz/revoke",
        ] {
            assert_eq!(op("POST", path), unknown, "{path}");
        }
        // Unknown calls too are the operator's (the token is checked first).
        assert_eq!(route("GET", "/ui/api", ALL), not_found(NO_SUCH_PAGE));
        assert_eq!(
            route("GET", "/ui/api/state", NONE),
            not_found(NO_SUCH_ENDPOINT)
        );
    }

    #[test]
    fn exchange_token() {
        assert_eq!(
            route("POST", "/api/auth/exchange-token", NONE),
            Route::ExchangeToken
        );
        assert_eq!(
            route("GET", "/api/auth/exchange-token", NONE),
            wrong(MethodNotAllowed::POST)
        );
        assert_eq!(
            route("POST", "/api/auth/exchange-token/", NONE),
            not_found(NO_SUCH_ENDPOINT)
        );
    }

    #[test]
    fn app_start_and_stop() {
        assert_eq!(
            route("POST", "/apps/com.x/start", NONE),
            Route::AppAction {
                package: "com.x".into(),
                start: true
            }
        );
        assert_eq!(
            route("POST", "/apps/com.x/stop", NONE),
            Route::AppAction {
                package: "com.x".into(),
                start: false
            }
        );
        // The package is taken as it stands, escapes and slashes included.
        assert_eq!(
            route("POST", "/apps/a%2Eb/c/start", NONE),
            Route::AppAction {
                package: "a%2Eb/c".into(),
                start: true
            }
        );
        assert_eq!(
            route("GET", "/apps/com.x/start", NONE),
            wrong(MethodNotAllowed::POST)
        );
        for path in ["/apps/", "/apps/com.x", "/apps//start", "/apps/com.x/pause"] {
            assert_eq!(route("POST", path, NONE), not_found(USE_APPS), "{path}");
            assert_eq!(route("GET", path, NONE), not_found(USE_APPS), "{path}");
        }
    }

    #[test]
    fn simple_storage() {
        let storage = |user: &str, key: Option<&str>, method| Route::Storage {
            user: user.into(),
            key: key.map(Into::into),
            method,
        };
        let p = "/api/sdk/simple-storage/";
        use StorageMethod::{Delete, Get, Put};
        assert_eq!(
            route("GET", &format!("{p}alice"), NONE),
            storage("alice", None, Ok(Get))
        );
        assert_eq!(
            route("PUT", &format!("{p}alice"), NONE),
            storage("alice", None, Ok(Put))
        );
        assert_eq!(
            route("DELETE", &format!("{p}alice"), NONE),
            storage("alice", None, Ok(Delete))
        );
        assert_eq!(
            route("GET", &format!("{p}alice%40x.com/a%20key"), NONE),
            storage("alice@x.com", Some("a key"), Ok(Get))
        );
        assert_eq!(
            route("DELETE", &format!("{p}alice/k/with/slashes"), NONE),
            storage("alice", Some("k/with/slashes"), Ok(Delete))
        );
        // Wrong methods travel with the route: they are refused after the key is checked.
        let refused = Err(MethodNotAllowed::GET_PUT_DELETE);
        assert_eq!(
            route("PUT", &format!("{p}alice/k"), NONE),
            storage("alice", Some("k"), refused)
        );
        assert_eq!(
            route("POST", &format!("{p}alice"), NONE),
            storage("alice", None, refused)
        );
        assert_eq!(
            route("HEAD", &format!("{p}alice"), NONE),
            storage("alice", None, refused)
        );
        // Malformed or empty segments.
        for path in ["", "%zz", "/k", "%4/k", "%ff"] {
            assert_eq!(
                route("GET", &format!("{p}{path}"), NONE),
                bad_path(BAD_USER_OR_KEY),
                "{path}"
            );
        }
        for path in ["alice/", "alice/%zz", "alice/%C3"] {
            assert_eq!(
                route("GET", &format!("{p}{path}"), NONE),
                bad_path(BAD_KEY),
                "{path}"
            );
        }
        assert_eq!(
            route("GET", "/api/sdk/simple-storage", NONE),
            not_found(NO_SUCH_ENDPOINT)
        );
    }

    #[test]
    fn settings() {
        for prefix in ["/appsettings/user/", "/tpasettings/user/"] {
            assert_eq!(
                route("GET", &format!("{prefix}com.x%2Dy"), NONE),
                Route::SettingsRead {
                    package: "com.x-y".into(),
                    method: Ok(())
                }
            );
            // The last segment is the package; a malformed one names no app.
            assert_eq!(
                route("GET", &format!("{prefix}a/com.x"), NONE),
                Route::SettingsRead {
                    package: "com.x".into(),
                    method: Ok(())
                }
            );
            assert_eq!(
                route("GET", &format!("{prefix}%zz"), NONE),
                Route::SettingsRead {
                    package: String::new(),
                    method: Ok(())
                }
            );
            for method in ["HEAD", "PUT", "POST"] {
                assert_eq!(
                    route(method, &format!("{prefix}com.x"), NONE),
                    Route::SettingsRead {
                        package: "com.x".into(),
                        method: Err(MethodNotAllowed::GET)
                    }
                );
            }
        }
        assert_eq!(
            route("PUT", "/api/settings/com.x", NONE),
            Route::SettingsWrite {
                package: "com.x".into(),
                method: Ok(())
            }
        );
        assert_eq!(
            route("GET", "/api/settings/a%2Fb", NONE),
            Route::SettingsWrite {
                package: "a/b".into(),
                method: Err(MethodNotAllowed::PUT)
            }
        );
        assert_eq!(
            route("PUT", "/api/settings/%4", NONE),
            Route::SettingsWrite {
                package: String::new(),
                method: Ok(())
            }
        );
        assert_eq!(
            route("PUT", "/api/settings", NONE),
            not_found(NO_SUCH_ENDPOINT)
        );
    }

    #[test]
    fn tpa_server() {
        for (path, action) in [
            ("register", TpaServerAction::Register),
            ("heartbeat", TpaServerAction::Heartbeat),
            ("restart", TpaServerAction::Restart),
        ] {
            let path = format!("/api/tpa-server/{path}");
            assert_eq!(route("POST", &path, NONE), Route::TpaServer(action));
            assert_eq!(route("GET", &path, NONE), wrong(MethodNotAllowed::POST));
        }
        for path in ["", "nope", "register/", "register/x"] {
            let path = format!("/api/tpa-server/{path}");
            assert_eq!(
                route("POST", &path, NONE),
                not_found(USE_TPA_SERVER),
                "{path}"
            );
            assert_eq!(
                route("GET", &path, NONE),
                not_found(USE_TPA_SERVER),
                "{path}"
            );
        }
    }

    #[test]
    fn tts() {
        assert_eq!(route("GET", "/api/tts", NONE), Route::Tts);
        assert_eq!(
            route("POST", "/api/tts", NONE),
            wrong(MethodNotAllowed::GET)
        );
        assert_eq!(route("GET", "/api/tts/", NONE), not_found(NO_SUCH_ENDPOINT));
    }

    #[test]
    fn public_permissions() {
        let p = "/api/public/permissions/";
        assert_eq!(
            route("GET", &format!("{p}com.x%2Dy"), NONE),
            Route::Permissions("com.x-y".into())
        );
        assert_eq!(
            route("POST", &format!("{p}com.x"), NONE),
            wrong(MethodNotAllowed::GET)
        );
        for bad in ["", "%zz", "a%2Fb", "a/b"] {
            assert_eq!(
                route("GET", &format!("{p}{bad}"), NONE),
                bad_path(BAD_PACKAGE),
                "{bad}"
            );
        }
        assert_eq!(
            route("GET", "/api/public/permissions", NONE),
            not_found(NO_SUCH_ENDPOINT)
        );
    }

    #[test]
    fn any_bytes_route_without_panic() {
        // Every split point of some awkward paths, with odd methods: never a panic.
        let paths = [
            "/api/sdk/simple-storage/%/%%/é%",
            "/ui/api/sessions/%é/apps/%/start",
            "/apps/%/start",
            "/appsettings/user/%C3%",
        ];
        for p in paths {
            for end in (0..=p.len()).filter(|&i| p.is_char_boundary(i)) {
                for method in ["GET", "", "PATCH", "\u{0}"] {
                    let _ = route(method, &p[..end], ALL);
                }
            }
        }
    }
}
