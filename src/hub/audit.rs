//! Core layer (sans-IO), for tests and fuzzing only (`sim` feature): the hub's structural
//! invariants, checked from the inside.
//!
//! Owns nothing; [`Hub::audit`] reads the state and names the first rule it finds broken:
//! - sessions and `by_user` agree, one session per user;
//! - a session has at most one glasses connection: its `glasses` slot, linked back to it; a
//!   session without glasses waits on a pending grace deadline;
//! - every app in a session's active set (started and not given up on) has exactly one live
//!   connection linked back to it (active), or none and a pending deadline (loading,
//!   reconnecting, restarting);
//! - every bound app link is its run's connection, and every linked connection is alive in the
//!   connection table (`is_live`).

use super::links::Link;
use super::sessions::AppState;
use super::timers::TimerKey;
use super::Hub;
use crate::net::ConnId;

impl Hub {
    /// The first broken structural invariant, if any; `is_live` says whether a connection is
    /// still open in the table.
    pub fn audit(&self, is_live: impl Fn(ConnId) -> bool) -> Result<(), String> {
        self.sessions.audit()?;
        for (sk, s) in &self.sessions {
            let (user, sk) = (&s.user, &sk);
            let glasses_links: Vec<ConnId> = self
                .links
                .iter()
                .filter(|(_, l)| matches!(l, Link::Glasses { session: Some(k), .. } if k == sk))
                .map(|(id, _)| *id)
                .collect();
            match s.glasses {
                Some(id) => {
                    if glasses_links != [id] {
                        return Err(format!(
                            "{user}: glasses {id:?} but glasses links {glasses_links:?}"
                        ));
                    }
                    if s.grace_until.is_some() {
                        return Err(format!("{user}: glasses connected and in grace"));
                    }
                }
                None => {
                    if !glasses_links.is_empty() {
                        return Err(format!("{user}: no glasses but links {glasses_links:?}"));
                    }
                    match s.grace_until {
                        Some(at) if self.timers.contains(at, TimerKey::Session(*sk)) => {}
                        _ => return Err(format!("{user}: no glasses and no grace deadline")),
                    }
                }
            }
            for (&app, run) in &s.apps {
                let package = &self.cfg.apps[app].package_name;
                match (run.state, run.conn) {
                    (AppState::Failed, None) => {}
                    (AppState::Active, Some(id)) => {
                        let linked = matches!(
                            self.links.get(&id),
                            Some(Link::App { bound: Some(b), .. }) if *b == (*sk, app)
                        );
                        if !linked {
                            return Err(format!("{user}/{package}: active on unlinked {id:?}"));
                        }
                    }
                    (state, None) if state.deadline().is_some() => {
                        let at = state.deadline().unwrap_or_default();
                        if !self.timers.contains(at, TimerKey::App(*sk, app)) {
                            return Err(format!(
                                "{user}/{package}: {} with no pending deadline",
                                state.name()
                            ));
                        }
                    }
                    (state, conn) => {
                        return Err(format!(
                            "{user}/{package}: {} with connection {conn:?}",
                            state.name()
                        ))
                    }
                }
            }
        }
        for (id, link) in &self.links {
            if !is_live(*id) {
                return Err(format!("link {link:?} on closed connection {id:?}"));
            }
            if let Link::App {
                bound: Some((sk, app)),
                ..
            } = link
            {
                let run = self.session(*sk).and_then(|s| s.apps.get(app));
                if run.and_then(|r| r.conn) != Some(*id) {
                    return Err(format!("app link {id:?} is not its run's connection"));
                }
            }
        }
        Ok(())
    }
}
