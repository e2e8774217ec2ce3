//! Core layer (sans-IO), part of the hub: each app's own `tpa_config.json`, as the cloud
//! fetches it. Owns the settings each app's file declares (by app index, as last fetched), the
//! fetches in flight (by their outbound connection), and the rule that merges the file's
//! settings under the config's.
//!
//! When: at an app's first start (`GET ${publicUrl}/tpa_config.json`, timed out after
//! [`FETCH_TIMEOUT`]; a start whose file is not in yet is not held back: its ack carries the
//! config's settings), again at a later start while none was fetched, and on a reload for every
//! app whose file was fetched (the old settings stay until the new arrive). System apps are the
//! operator's own and are not asked: their settings are the config's.
//!
//! Invariants: a file never replaces what the config declares (config wins, key by key); a bad
//! or missing file (an error status, a body past the response limit of 64 KiB, invalid JSON,
//! no answer in time, a refused certificate) is logged and counted by outcome
//! (`app_config_fetches_total`), keeps what was fetched before, and leaves the app usable; at
//! most one fetch per app is in flight.

use super::Hub;
use crate::http::ResponseError;
use crate::net::{ConnId, HttpOutcome, Outbox};
use crate::time::Now;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

/// How long an app server has to answer for its `tpa_config.json`.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The outcomes counted, in the order `/metrics` lists them.
pub const OUTCOMES: [&str; 8] = [
    "ok",
    "missing",
    "http_error",
    "too_large",
    "invalid",
    "timed_out",
    "failed",
    "tls",
];

/// What the apps' files declared, and the fetches in flight.
#[derive(Debug, Default)]
pub(super) struct AppConfigs {
    /// The `settings` of each app's file as last fetched (`None`: none fetched yet).
    settings: Vec<Option<Vec<Value>>>,
    in_flight: HashMap<ConnId, usize>,
}

impl AppConfigs {
    /// The settings `app`'s file declared (empty when none was fetched).
    pub fn settings(&self, app: usize) -> &[Value] {
        self.settings
            .get(app)
            .and_then(Option::as_deref)
            .unwrap_or(&[])
    }

    fn fetched(&self, app: usize) -> bool {
        self.settings.get(app).is_some_and(Option::is_some)
    }

    fn in_flight(&self, app: usize) -> bool {
        self.in_flight.values().any(|&a| a == app)
    }

    fn store(&mut self, app: usize, settings: Vec<Value>) {
        if self.settings.len() <= app {
            self.settings.resize(app + 1, None);
        }
        self.settings[app] = Some(settings);
    }
}

/// The `settings` a `tpa_config.json` body declares: an object whose `settings`, if present,
/// is an array of objects each with a non-empty string `key` (or a `group` heading).
pub fn parse(body: &[u8]) -> Result<Vec<Value>, &'static str> {
    let v: Value = serde_json::from_slice(body).map_err(|_| "not JSON")?;
    let Value::Object(mut o) = v else {
        return Err("not a JSON object");
    };
    let settings = match o.remove("settings") {
        None => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err("settings is not an array"),
    };
    let ok = |s: &Value| {
        s.is_object() && (s["type"] == "group" || s["key"].as_str().is_some_and(|k| !k.is_empty()))
    };
    if settings.iter().all(ok) {
        Ok(settings)
    } else {
        Err("a setting without a string key")
    }
}

impl Hub {
    /// Fetch `app`'s `tpa_config.json` if it was never fetched and none is in flight (and the
    /// box fetches them at all; system apps never).
    pub(super) fn fetch_app_config(&mut self, net: &mut impl Outbox, app: usize, now: Now) {
        let spec = &self.cfg.apps[app];
        if !self.cfg.fetch_app_config
            || spec.is_system_app
            || spec.package_name.is_empty()
            || self.app_configs.fetched(app)
        {
            return;
        }
        self.refetch_app_config(net, app, now);
    }

    /// Fetch `app`'s file again unless a fetch is in flight.
    fn refetch_app_config(&mut self, net: &mut impl Outbox, app: usize, now: Now) {
        if self.app_configs.in_flight(app) {
            return;
        }
        let spec = &self.cfg.apps[app];
        let target = &spec.webhook_target;
        let path = format!("{}/tpa_config.json", spec.webhook_path);
        let request = crate::protocol::outbound::http_get(&target.host, target.port, &path);
        match net.fetch(target.clone(), &request, now.mono + FETCH_TIMEOUT) {
            Some(conn) => {
                self.app_configs.in_flight.insert(conn, app);
            }
            None => self.app_config_outcome(app, "failed", "no outbound connection free"),
        }
    }

    /// After a reload: every app whose file was fetched is asked again.
    pub(super) fn refresh_app_configs(&mut self, net: &mut impl Outbox, now: Now) {
        for app in 0..self.cfg.apps.len() {
            let spec = &self.cfg.apps[app];
            if self.app_configs.fetched(app) && !spec.is_system_app && !spec.package_name.is_empty()
            {
                self.refetch_app_config(net, app, now);
            }
        }
    }

    /// The outcome of outbound request `id`, if it was a fetch of a `tpa_config.json`.
    pub(super) fn on_app_config_done(&mut self, id: ConnId, outcome: &HttpOutcome) -> bool {
        let Some(app) = self.app_configs.in_flight.remove(&id) else {
            return false;
        };
        let too_large = ResponseError::BodyTooLarge.message();
        match outcome {
            HttpOutcome::Body { status, body } if (200..300).contains(status) => {
                match parse(body) {
                    Ok(settings) => {
                        self.app_configs.store(app, settings);
                        self.app_config_outcome(app, "ok", "");
                    }
                    Err(why) => self.app_config_outcome(app, "invalid", why),
                }
            }
            HttpOutcome::Body { status: 404, .. } => {
                self.app_config_outcome(app, "missing", "404 Not Found")
            }
            HttpOutcome::Body { .. } | HttpOutcome::Status(_) => {
                self.app_config_outcome(app, "http_error", "an error status")
            }
            HttpOutcome::Failed(why) if *why == too_large => {
                self.app_config_outcome(app, "too_large", "the file is over 64 KiB")
            }
            HttpOutcome::Failed("timed out") => {
                self.app_config_outcome(app, "timed_out", "timed out")
            }
            HttpOutcome::Failed(why) => self.app_config_outcome(app, "failed", why),
            HttpOutcome::Tls(why) => self.app_config_outcome(app, "tls", why),
        }
        true
    }

    fn app_config_outcome(&mut self, app: usize, outcome: &'static str, why: &str) {
        *self
            .counters
            .app_config_outcomes
            .entry(outcome)
            .or_default() += 1;
        let package = &self.cfg.apps[app].package_name;
        if outcome == "ok" {
            log::info!(
                "event=app_config package={package:?} settings={}",
                self.app_configs.settings(app).len()
            );
        } else {
            log::warn!(
                "event=app_config_failed package={package:?} outcome={outcome} reason={why:?}; the app keeps the settings of its config"
            );
        }
    }

    /// The settings `app` declares: the config's, then those of its `tpa_config.json` whose
    /// key the config does not declare (config wins).
    pub(super) fn declared_settings(&self, app: usize) -> impl Iterator<Item = &Value> {
        let own = &self.cfg.apps[app].settings;
        let declared = |key: &Value| own.iter().any(|s| s["key"] == *key);
        own.iter().chain(
            self.app_configs
                .settings(app)
                .iter()
                .filter(move |s| s["type"] != "group" && !declared(&s["key"])),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_parse_or_say_why_not() {
        let ok = parse(br#"{"name":"x","settings":[{"key":"a","defaultValue":1},{"type":"group","title":"G"}]}"#);
        assert_eq!(ok.map(|s| s.len()), Ok(2));
        assert_eq!(parse(br#"{"name":"x"}"#), Ok(Vec::new()));
        assert_eq!(parse(b"{nope"), Err("not JSON"));
        assert_eq!(parse(b"[1]"), Err("not a JSON object"));
        assert_eq!(
            parse(br#"{"settings":{}}"#),
            Err("settings is not an array")
        );
        assert_eq!(
            parse(br#"{"settings":[{"key":""}]}"#),
            Err("a setting without a string key")
        );
    }
}
