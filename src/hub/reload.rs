//! Core layer (sans-IO): the hub's part of an orderly stop and of a configuration reload.
//!
//! Owns no state of its own. [`Hub::shutdown`] closes every glasses and app WebSocket with
//! 1001 "going away" and forgets their links first, so no close starts a grace period, a
//! reconnect wait or a restart webhook (the durable record of running apps is left as it is, so
//! they come back after the restart). [`Hub::reload_apps`] swaps the app registry while
//! sessions run.
//!
//! Invariant kept by a reload: an app's index never changes while the hub lives (sessions key
//! their apps by it). A kept app's spec is replaced in place (a changed key, URL or permission
//! applies to the next connection and the next webhook); a new app is appended; a removed app
//! is first stopped in every session, then its slot is retired: its package name is emptied,
//! which no lookup matches, and it can no longer be started or auto-started.

use super::Hub;
use crate::hub::registry::AppSpec;
use crate::net::Outbox;
use crate::time::Now;

/// What a reload changed, by package name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl Hub {
    /// Close every glasses and app connection with 1001 "going away".
    pub fn shutdown(&mut self, net: &mut impl Outbox, now: Now) {
        // Let every user go at once: their glasses land on another process, whose claims
        // must not wait for this one's leases to run out.
        let users: Vec<String> = self
            .sessions
            .iter()
            .map(|(_, s)| s.user.to_string())
            .collect();
        for u in users {
            self.durable.release(&u);
        }
        let mut ids: Vec<_> = self.links.drain().map(|(id, _)| id).collect();
        ids.sort();
        for id in ids {
            net.close_websocket(id, 1001, "going away", now.mono);
        }
    }

    /// Replace the app registry with `apps` (packages unique, as the config guarantees).
    pub fn reload_apps(&mut self, net: &mut impl Outbox, apps: Vec<AppSpec>, now: Now) -> Reloaded {
        let mut done = Reloaded::default();
        let removed: Vec<usize> = (0..self.cfg.apps.len())
            .filter(|&i| {
                let pkg = &self.cfg.apps[i].package_name;
                !pkg.is_empty() && !apps.iter().any(|a| a.package_name == *pkg)
            })
            .collect();
        for &app in &removed {
            let running: Vec<_> = self
                .sessions
                .iter()
                .filter(|(_, s)| s.apps.contains_key(&app))
                .map(|(sk, _)| sk)
                .collect();
            for sk in running {
                self.stop_app(
                    net,
                    sk,
                    app,
                    "removed from the configuration",
                    "App removed from the configuration",
                    now,
                );
            }
            let spec = &mut self.cfg.apps[app];
            done.removed.push(std::mem::take(&mut spec.package_name));
            spec.hashed_api_key.clear();
            spec.is_system_app = false;
            spec.permissions.clear();
            spec.publishes.clear();
        }
        // Connections still in a handshake or init for a removed app are refused by their
        // next lookup (its package is gone); bound ones were closed by `stop_app`.
        for spec in apps {
            match self.app_index(&spec.package_name) {
                Some(i) => {
                    let old = &self.cfg.apps[i];
                    if old.hashed_api_key != spec.hashed_api_key
                        || old.public_url != spec.public_url
                        || old.permissions != spec.permissions
                        || old.is_system_app != spec.is_system_app
                        || old.allowed_addresses != spec.allowed_addresses
                        || old.publishes != spec.publishes
                        || old.name != spec.name
                        || old.webhook_target != spec.webhook_target
                    {
                        done.changed.push(spec.package_name.clone());
                    }
                    self.cfg.apps[i] = spec;
                }
                None => {
                    done.added.push(spec.package_name.clone());
                    self.cfg.apps.push(spec);
                }
            }
        }
        // The apps' own files are read again (a reload is how an operator says "look again").
        self.refresh_app_configs(net, now);
        done
    }

    /// Connections the hub holds a link for (glasses and apps), for tests and checks.
    pub fn linked_connections(&self) -> usize {
        self.links.len()
    }
}
