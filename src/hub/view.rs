//! Core layer (sans-IO), part of the hub: what the glasses see of a session — the
//! `userSession` object, per-app states, and `app_state_change` messages.

use super::sessions::{AppRun, AppState, SessKey, Session};
use super::Hub;
use crate::net::{ConnId, Outbox};
use crate::protocol::outbound::{AppStateView, InstalledApp, SessionMessage, UserSession};
use crate::time::Now;

impl Hub {
    // ---- what the glasses see ------------------------------------------------------------

    pub(super) fn send_to_glasses<T: serde::Serialize>(
        &self,
        net: &mut impl Outbox,
        sk: SessKey,
        msg: &T,
    ) {
        if let Some(g) = self.session(sk).and_then(|s| s.glasses) {
            net.send_json(g, msg);
        }
    }

    /// `connection_ack` or `app_state_change` for the session, to connection `to`.
    pub(super) fn send_session(
        &self,
        net: &mut impl Outbox,
        to: ConnId,
        sk: SessKey,
        kind: &'static str,
        now: Now,
    ) {
        let Some(s) = self.session(sk) else { return };
        let msg = SessionMessage {
            kind,
            session_id: &s.user,
            user_session: self.user_session(s),
            timestamp: now.iso(),
        };
        net.send_json(to, &msg);
    }

    pub(super) fn send_app_state(&self, net: &mut impl Outbox, sk: SessKey, now: Now) {
        if let Some(g) = self.session(sk).and_then(|s| s.glasses) {
            self.send_session(net, g, sk, "app_state_change", now);
        }
    }

    pub(super) fn app_state_view(&self, sk: SessKey, app: usize) -> AppStateView<'_> {
        match self.session(sk).and_then(|s| s.apps.get(&app)) {
            Some(r) => view_of(r),
            None => AppStateView {
                state: "stopped",
                error: None,
                restarts: None,
                subscriptions: None,
            },
        }
    }

    /// The packages of the session's apps whose state passes `f`.
    pub(super) fn packages_where<'a>(
        &'a self,
        s: &'a Session,
        f: fn(&AppState) -> bool,
    ) -> Vec<&'a str> {
        s.apps
            .iter()
            .filter(|(_, r)| f(&r.state))
            .map(|(i, _)| self.cfg.apps[*i].package_name.as_str())
            .collect()
    }

    fn user_session<'a>(&'a self, s: &'a Session) -> UserSession<'a> {
        let pkg = |i: &usize| self.cfg.apps[*i].package_name.as_str();
        let with_state = |f| self.packages_where(s, f);
        let mut what = Vec::<&str>::new();
        for r in s.apps.values() {
            for x in &r.subs {
                if !what.contains(&x.as_str()) {
                    what.push(x);
                }
            }
        }
        UserSession {
            session_id: &s.user,
            user_id: &s.user,
            start_time: crate::time::iso8601(s.started),
            installed_apps: self
                .cfg
                .apps
                .iter()
                .map(|a| InstalledApp {
                    package_name: &a.package_name,
                    name: &a.name,
                    public_url: &a.public_url,
                    is_system_app: a.is_system_app,
                })
                .collect(),
            app_subscriptions: s.apps.iter().map(|(i, r)| (pkg(i), &r.subs[..])).collect(),
            active_app_package_names: with_state(|st| {
                matches!(st, AppState::Active | AppState::Reconnecting { .. })
            }),
            loading_apps: with_state(|st| {
                matches!(st, AppState::Loading { .. } | AppState::RestartWait { .. })
            }),
            what_to_stream: what,
            app_states: s.apps.iter().map(|(i, r)| (pkg(i), view_of(r))).collect(),
        }
    }
}

fn view_of(r: &AppRun) -> AppStateView<'_> {
    AppStateView {
        state: r.state.name(),
        error: r.error,
        restarts: Some(r.restarts),
        subscriptions: Some(&r.subs),
    }
}
