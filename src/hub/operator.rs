//! Core layer (sans-IO), part of the hub: what an operator sees of every session — who is
//! connected or in grace since when, whether its microphone is on, the venue feed it follows,
//! each app's state, subscriptions and last error, and what
//! each view of the glasses shows (the layout as it was sent). Read-only: a JSON value built
//! from the state on each call, nothing kept; the `/ui/` feed serves it.

use super::sessions::Session;
use super::Hub;
use crate::time::Now;
use serde_json::{json, Value};

impl Hub {
    /// Every session, ordered by user id, for the operator page.
    pub fn operator_sessions(&self, now: Now) -> Value {
        let mut sessions: Vec<&Session> = self.sessions.iter().map(|(_, s)| s).collect();
        sessions.sort_by(|a, b| a.user.cmp(&b.user));
        let list: Vec<Value> = sessions
            .into_iter()
            .map(|s| {
                let apps: Vec<Value> = s
                    .apps
                    .iter()
                    .map(|(i, r)| {
                        let spec = &self.cfg.apps[*i];
                        json!({
                            "packageName": spec.package_name,
                            "name": spec.name,
                            "state": r.state.name(),
                            "subscriptions": r.subs,
                            "error": r.error,
                            "restarts": r.restarts,
                        })
                    })
                    .collect();
                let grace_ms = s
                    .grace_until
                    .map(|g| g.saturating_since(now.mono).as_millis() as u64);
                json!({
                    "userId": &*s.user,
                    "glasses": if s.glasses.is_some() { "connected" } else { "grace" },
                    "since": crate::time::iso8601(s.started),
                    "graceLeftMs": grace_ms,
                    "microphone": s.mic.is_on(),
                    "feed": self.venue_followed_name(&s.user),
                    "apps": apps,
                    "screens": self.screens(&s.user, now.mono),
                })
            })
            .collect();
        Value::Array(list)
    }

    /// The registered apps (package, name, system or not), for the operator's start buttons.
    pub fn operator_apps(&self) -> Value {
        self.cfg
            .apps
            .iter()
            .filter(|a| !a.package_name.is_empty())
            .map(|a| json!({"packageName": a.package_name, "name": a.name, "isSystemApp": a.is_system_app}))
            .collect()
    }
}
