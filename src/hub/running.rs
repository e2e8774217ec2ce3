//! Core layer: the list of apps each user is running, behind one small interface so that a
//! durable implementation can replace the in-memory one without touching the hub.
//!
//! Invariant: `apps(user)` returns packages in a stable (sorted) order, each once.

use std::collections::{BTreeSet, HashMap};

pub trait RunningApps: Send {
    fn apps(&self, user: &str) -> Vec<String>;
    fn add(&mut self, user: &str, package: &str);
    fn remove(&mut self, user: &str, package: &str);
}

/// Running apps kept in memory (lost on restart).
#[derive(Default)]
pub struct MemoryRunningApps {
    by_user: HashMap<String, BTreeSet<String>>,
}

impl RunningApps for MemoryRunningApps {
    fn apps(&self, user: &str) -> Vec<String> {
        self.by_user
            .get(user)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn add(&mut self, user: &str, package: &str) {
        self.by_user
            .entry(user.to_string())
            .or_default()
            .insert(package.to_string());
    }

    fn remove(&mut self, user: &str, package: &str) {
        if let Some(s) = self.by_user.get_mut(user) {
            s.remove(package);
            if s.is_empty() {
                self.by_user.remove(user);
            }
        }
    }
}
