//! Core layer (sans-IO), part of the hub: what the glasses see of a session — the
//! `userSession` object, per-app states, and `app_state_change` messages.

use super::*;

impl Hub {
    // ---- what the glasses see ------------------------------------------------------------

    pub(super) fn send_to_glasses(&self, net: &mut Net, sk: SessKey, msg: &Value) {
        if let Some(g) = self.session(sk).and_then(|s| s.glasses) {
            net.send_text(g, &msg.to_string());
        }
    }

    pub(super) fn send_app_state(&self, net: &mut Net, sk: SessKey, now: Instant) {
        let Some(s) = self.session(sk) else { return };
        let msg = json!({
            "type": "app_state_change",
            "sessionId": s.user,
            "userSession": self.user_session_json(sk),
            "timestamp": iso8601(now),
        });
        self.send_to_glasses(net, sk, &msg);
    }

    pub(super) fn app_state_json(&self, sk: SessKey, app: usize) -> Value {
        match self.session(sk).and_then(|s| s.apps.get(&app)) {
            Some(r) => json!({
                "state": r.state.name(),
                "error": r.error,
                "restarts": r.restarts,
                "subscriptions": r.subs,
            }),
            None => json!({ "state": "stopped" }),
        }
    }

    pub(super) fn user_session_json(&self, sk: SessKey) -> Value {
        let Some(s) = self.session(sk) else {
            return Value::Null;
        };
        let pkg = |i: &usize| self.cfg.apps[*i].package_name.clone();
        let active: Vec<String> = s
            .apps
            .iter()
            .filter(|(_, r)| matches!(r.state, AppState::Active | AppState::Reconnecting { .. }))
            .map(|(i, _)| pkg(i))
            .collect();
        let loading: Vec<String> = s
            .apps
            .iter()
            .filter(|(_, r)| {
                matches!(
                    r.state,
                    AppState::Loading { .. } | AppState::RestartWait { .. }
                )
            })
            .map(|(i, _)| pkg(i))
            .collect();
        let mut subs = serde_json::Map::new();
        let mut what = Vec::<String>::new();
        let mut states = serde_json::Map::new();
        for (i, r) in &s.apps {
            subs.insert(pkg(i), json!(r.subs));
            for x in &r.subs {
                if !what.contains(x) {
                    what.push(x.clone());
                }
            }
            states.insert(pkg(i), self.app_state_json(sk, *i));
        }
        let installed: Vec<Value> = self
            .cfg
            .apps
            .iter()
            .map(|a| {
                json!({
                    "packageName": a.package_name,
                    "name": a.name,
                    "publicUrl": a.public_url,
                    "isSystemApp": a.is_system_app,
                })
            })
            .collect();
        json!({
            "sessionId": s.user,
            "userId": s.user,
            "startTime": iso8601(s.started),
            "installedApps": installed,
            "appSubscriptions": subs,
            "activeAppPackageNames": active,
            "loadingApps": loading,
            "whatToStream": what,
            "appStates": states,
        })
    }
}
