//! Core layer (values) and its one shell-side room: durable state.
//!
//! What the box remembers across restarts: each user's running apps, app settings values per
//! (user, app), SDK simple-storage per (user, app), TPA server registrations, and the venue's
//! provisioned glasses ([`Device`]: their token's claims, never the token, and revocations), and
//! the venue feed each user was pointed at by the operator. The core keeps
//! all of it in memory ([`Durable`], loaded once at start from a [`Snapshot`]) and never touches
//! a disk: every change is queued as a [`Persist`] event that the caller polls, quinn-style,
//! and hands to the writer thread ([`writer`]), which applies them in order, batched in
//! transactions, through the [`Store`] interface ([`sqlite`] implements it with SQLite).
//!
//! Invariants: the in-memory state is the truth for the running process; the store lags it by
//! at most the batches in flight, and applies them in the order they were made; nothing the
//! store does can stall the event loop; no SQLite type crosses the [`Store`] interface, so
//! another store (a shared PostgreSQL for a venue with several boxes) can replace it.

pub mod postgres;
pub mod sqlite;
pub mod writer;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A TPA server's registration (PROTOCOL §14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub id: String,
    pub package: String,
    pub webhook_url: String,
    /// Wall-clock microseconds since the Unix epoch.
    pub registered_at: u64,
    pub last_seen: u64,
}

/// A provisioned pair of glasses: what its token says (the token itself is not kept; the same
/// claims sign to the same token), when it was last seen, and whether it was revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The operator's name for it (unique).
    pub name: String,
    /// The user id its token carries.
    pub user: String,
    /// The token's `jti` (unique).
    pub jti: String,
    /// Unix seconds: issued (`iat`), expires (`exp`), last connected, revoked.
    pub created: u64,
    pub expires: u64,
    pub last_seen: Option<u64>,
    pub revoked: Option<u64>,
}

/// Everything the store holds, as loaded at start.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// (user, package)
    pub running: Vec<(String, String)>,
    /// (user, package, key, value as JSON text)
    pub settings: Vec<(String, String, String, String)>,
    /// (user, package, key, value as JSON text)
    pub storage: Vec<(String, String, String, String)>,
    pub registrations: Vec<Registration>,
    pub devices: Vec<Device>,
    /// (user, venue feed name): the feed the operator chose for the user.
    pub follows: Vec<(String, String)>,
}

/// One change to durable state. `None` values delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persist {
    Running {
        user: String,
        package: String,
        running: bool,
    },
    Setting {
        user: String,
        package: String,
        key: String,
        value: Option<String>,
    },
    Storage {
        user: String,
        package: String,
        key: String,
        value: Option<String>,
    },
    Registration(Registration),
    RegistrationGone(String),
    /// A device added or changed (seen, revoked): the whole row.
    Device(Device),
    /// The operator pointed `user` at the venue feed named `feed`.
    Follow {
        user: String,
        feed: String,
    },
}

/// What a shared store's read-back found: everything (`users` `None`), or the rows of the
/// users changed since the previous read (`users`) with the registrations and devices whole.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changed {
    pub snapshot: Snapshot,
    pub users: Option<Vec<String>>,
    /// The store's own time of this read, as it writes it: the next read's `since`.
    pub read_at: String,
}

impl Changed {
    /// This read followed by `newer` (the loop had not taken this one yet), as one.
    pub fn then(mut self, newer: Changed) -> Changed {
        let Some(users) = newer.users else {
            return newer;
        };
        let set: std::collections::HashSet<&str> = users.iter().map(String::as_str).collect();
        let s = &mut self.snapshot;
        s.running.retain(|(u, _)| !set.contains(u.as_str()));
        s.settings.retain(|(u, ..)| !set.contains(u.as_str()));
        s.storage.retain(|(u, ..)| !set.contains(u.as_str()));
        s.follows.retain(|(u, _)| !set.contains(u.as_str()));
        s.running.extend(newer.snapshot.running);
        s.follows.extend(newer.snapshot.follows);
        s.settings.extend(newer.snapshot.settings);
        s.storage.extend(newer.snapshot.storage);
        s.registrations = newer.snapshot.registrations;
        s.devices = newer.snapshot.devices;
        if let Some(mine) = &mut self.users {
            mine.extend(users);
            mine.sort();
            mine.dedup();
        }
        self.read_at = newer.read_at;
        self
    }
}

/// A change to this process's leases in a shared store: fencing, so that no user is served by
/// two processes at once. Queued by the core like [`Persist`] changes, answered by the writer
/// thread as [`LeaseNews`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// A session for the user started here: hold the user (granted if the lease is free,
    /// expired, held by a process whose database connection is gone, or already ours).
    /// `claim` names this session among the user's sessions here (the session's generation):
    /// news answering the claim carries it, so news of an earlier session of the user, answered
    /// after it ended, is told apart from news of the current one.
    Claim { user: String, claim: u32 },
    /// The session ended here: let the user go.
    Release(String),
}

/// What a store answered to one lease round.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LeaseAnswer {
    /// Users whose lease is this process's after the round (claimed or renewed).
    pub held: Vec<String>,
    /// Of those, the users another process asked for since the last round.
    pub wanted: Vec<String>,
}

/// What the writer thread tells the core about its leases: each user with the claim
/// ([`Lease::Claim`]'s `claim`) the news is about.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LeaseNews {
    /// Users another process holds now (our claim was refused past its patience, or our lease
    /// was taken): this process ends its copy of their session.
    pub lost: Vec<(String, u32)>,
    /// Users held here that another process asked for (their glasses connected there).
    pub wanted: Vec<(String, u32)>,
}

/// Where durable state is kept. Owned by the writer thread; nothing else calls it.
pub trait Store: Send {
    /// Everything stored, for the core to start from.
    fn load(&mut self) -> Result<Snapshot, String>;
    /// Apply a batch of changes atomically, in order.
    fn apply(&mut self, batch: &[Persist]) -> Result<(), String>;
    /// A store shared with other processes: how often to read back what they wrote
    /// ([`Store::load`], merged with [`Durable::merge_shared`]). `None`: this process is the
    /// only writer.
    fn shared_refresh(&self) -> Option<std::time::Duration> {
        None
    }
    /// A read-back of a shared store: what changed since the read at `since` (a
    /// [`Changed::read_at`]), or everything when `since` is `None`. Default: everything.
    fn load_changed(&mut self, since: Option<&str>) -> Result<Changed, String> {
        let _ = since;
        Ok(Changed {
            snapshot: self.load()?,
            users: None,
            read_at: String::new(),
        })
    }
    /// After a failed `apply`: the store was unreachable (a lost database connection), so the
    /// same changes may be applied again later; false when the changes themselves failed.
    fn retry_later(&self) -> bool {
        false
    }
    /// One lease round for this process: claim `claim`, renew every lease it holds, give up
    /// `release`. Only called on a shared store ([`Store::shared_refresh`]); a store only
    /// this process writes grants everything.
    fn lease(
        &mut self,
        claim: &[String],
        renew: &[String],
        release: &[String],
    ) -> Result<LeaseAnswer, String> {
        let _ = release;
        Ok(LeaseAnswer {
            held: claim.iter().chain(renew).cloned().collect(),
            wanted: Vec::new(),
        })
    }
}

/// How the store is doing, for `/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStatus {
    /// `"memory"`, `"sqlite"` or `"postgres"`.
    pub kind: &'static str,
    /// The database file, or the database's URL without its password, if any.
    pub path: Option<String>,
    /// The last write failed with this (cleared by the next success).
    pub error: Option<String>,
    /// At start the database could not be read: where it was moved, and why.
    pub recovered: Option<String>,
    /// Batches written, and changes in them.
    pub batches: u64,
    pub changes: u64,
    /// Changes kept for the store while it is unreachable (written when it is back).
    pub queued: usize,
    /// Changes given up past the queue's bound, since start.
    pub lost: u64,
}

impl StoreStatus {
    pub fn memory() -> StoreStatus {
        StoreStatus {
            kind: "memory",
            path: None,
            error: None,
            recovered: None,
            batches: 0,
            changes: 0,
            queued: 0,
            lost: 0,
        }
    }
}

type AppKey = (String, String);

/// Add `item` to the sorted `set`; false if it was there.
fn set_insert(set: &mut Box<[Arc<str>]>, item: Arc<str>) -> bool {
    let Err(at) = set.binary_search(&item) else {
        return false;
    };
    let mut v = std::mem::take(set).into_vec();
    v.reserve_exact(1);
    v.insert(at, item);
    *set = v.into_boxed_slice();
    true
}

/// Remove `item` from the sorted `set`; false if it was not there.
fn set_remove(set: &mut Box<[Arc<str>]>, item: &str) -> bool {
    let Ok(at) = set.binary_search_by(|p| (**p).cmp(item)) else {
        return false;
    };
    let mut v = std::mem::take(set).into_vec();
    v.remove(at);
    *set = v.into_boxed_slice();
    true
}

/// The durable state as the core holds it: in memory, with the changes not yet handed to the
/// writer queued in order.
#[derive(Debug, Default)]
pub struct Durable {
    /// Each user's running packages, sorted: boxed slices of exact size, since every session
    /// with an app has an entry (a `BTreeSet` cost a B-tree leaf of eleven slots per user).
    /// The user is the caller's own string when it hands a shared one (the hub's session's),
    /// and the packages are [`Durable::packages`]' names, so an entry allocates only its slice.
    running: HashMap<Arc<str>, Box<[Arc<str>]>>,
    /// Every package name a running entry has named, once.
    packages: Vec<Arc<str>>,
    settings: HashMap<AppKey, BTreeMap<String, String>>,
    storage: HashMap<AppKey, BTreeMap<String, String>>,
    registrations: BTreeMap<String, Registration>,
    /// Provisioned devices by name.
    devices: BTreeMap<String, Device>,
    /// The venue feed the operator chose per user: user → feed name (kept as a name, so a
    /// feed removed from the config is noticed, not silently replaced by another).
    follows: HashMap<String, String>,
    pending: Vec<Persist>,
    /// Lease changes not yet handed to the writer, in order.
    leases: Vec<Lease>,
}

impl Durable {
    pub fn from_snapshot(s: Snapshot) -> Durable {
        let mut d = Durable::default();
        for (user, package) in s.running {
            d.set_running(user, &package, true);
        }
        d.pending.clear();
        for (user, package, key, value) in s.settings {
            d.settings
                .entry((user, package))
                .or_default()
                .insert(key, value);
        }
        for (user, package, key, value) in s.storage {
            d.storage
                .entry((user, package))
                .or_default()
                .insert(key, value);
        }
        for r in s.registrations {
            d.registrations.insert(r.id.clone(), r);
        }
        for dev in s.devices {
            d.devices.insert(dev.name.clone(), dev);
        }
        d.follows.extend(s.follows);
        d
    }

    /// Take in what a shared store holds (other processes' writes): each user for whom
    /// `local(user)` is false gets the store's running apps, settings, storage and followed
    /// venue feed; TPA server registrations are merged (the latest `last_seen` wins); devices
    /// the store knows are added, and a revocation or a later sighting there is taken. Queues
    /// no change (this is the store's own state). A user served here keeps this process's
    /// view: it is the truth for them, and the store catches up with it.
    pub fn merge_shared(&mut self, s: Snapshot, local: impl Fn(&str) -> bool) {
        self.merge_shared_users(s, None, local)
    }

    /// [`Durable::merge_shared`] for the users in `users` only (`None`: every user): their
    /// rows in `s` replace theirs here; registrations and devices as there.
    pub fn merge_shared_users(
        &mut self,
        s: Snapshot,
        users: Option<&[String]>,
        local: impl Fn(&str) -> bool,
    ) {
        let changed: Option<std::collections::HashSet<&str>> =
            users.map(|u| u.iter().map(String::as_str).collect());
        let replaced =
            |user: &str| !local(user) && changed.as_ref().is_none_or(|c| c.contains(user));
        let keep = |user: &str| !replaced(user);
        if changed.as_ref().is_none_or(|c| !c.is_empty()) {
            self.running.retain(|user, _| keep(user));
        }
        for (user, package) in s.running {
            if replaced(&user) {
                let pkg = self.package(&package);
                match self.running.get_mut(user.as_str()) {
                    Some(set) => {
                        set_insert(set, pkg);
                    }
                    None => {
                        self.running.insert(user.into(), Box::new([pkg]));
                    }
                }
            }
        }
        for (map, rows) in [
            (&mut self.settings, s.settings),
            (&mut self.storage, s.storage),
        ] {
            if changed.as_ref().is_none_or(|c| !c.is_empty()) {
                map.retain(|(user, _), _| keep(user));
            }
            for (user, package, key, value) in rows {
                if replaced(&user) {
                    map.entry((user, package)).or_default().insert(key, value);
                }
            }
        }
        if changed.as_ref().is_none_or(|c| !c.is_empty()) {
            self.follows.retain(|user, _| keep(user));
        }
        for (user, feed) in s.follows {
            if replaced(&user) {
                self.follows.insert(user, feed);
            }
        }
        // TPA server registrations are everyone's: a registration made on another process is
        // taken, the latest heartbeat wins, and one this process is deleting is not brought
        // back. Each process drops expired ones itself, by the same rule (`last_seen`).
        for r in s.registrations {
            let deleting = self
                .pending
                .iter()
                .any(|p| matches!(p, Persist::RegistrationGone(id) if *id == r.id));
            if deleting {
                continue;
            }
            match self.registrations.get_mut(&r.id) {
                Some(mine) if mine.last_seen >= r.last_seen => {}
                Some(mine) => *mine = r,
                None => {
                    self.registrations.insert(r.id.clone(), r);
                }
            }
        }
        for dev in s.devices {
            match self.devices.get_mut(&dev.name) {
                None => {
                    self.devices.insert(dev.name.clone(), dev);
                }
                Some(mine) => {
                    mine.revoked = match (mine.revoked, dev.revoked) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    mine.last_seen = mine.last_seen.max(dev.last_seen);
                }
            }
        }
    }

    /// Every change queued since the last call, oldest first.
    pub fn take_pending(&mut self) -> Vec<Persist> {
        std::mem::take(&mut self.pending)
    }

    // ---- leases ----------------------------------------------------------------------------

    /// A session for `user` started here (`claim`: its generation): ask the store to hold
    /// the user for this process.
    pub fn claim(&mut self, user: &str, claim: u32) {
        self.leases.push(Lease::Claim {
            user: user.to_string(),
            claim,
        });
    }

    /// The session of `user` ended here: let the user go.
    pub fn release(&mut self, user: &str) {
        self.leases.push(Lease::Release(user.to_string()));
    }

    /// Every lease change queued since the last call, oldest first.
    pub fn take_leases(&mut self) -> Vec<Lease> {
        std::mem::take(&mut self.leases)
    }

    // ---- running apps ----------------------------------------------------------------------

    /// The packages `user` is running, sorted.
    pub fn running(&self, user: &str) -> Vec<String> {
        self.running
            .get(user)
            .map(|s| s.iter().map(|p| p.to_string()).collect())
            .unwrap_or_default()
    }

    /// Record that `user` runs `package` or not. `user` may be a shared string (`Arc<str>`),
    /// which a new entry then keeps instead of a copy.
    pub fn set_running(
        &mut self,
        user: impl AsRef<str> + Into<Arc<str>>,
        package: &str,
        running: bool,
    ) {
        let name = user.as_ref().to_string();
        let changed = if running {
            let pkg = self.package(package);
            match self.running.get_mut(name.as_str()) {
                Some(set) => set_insert(set, pkg),
                None => {
                    self.running.insert(user.into(), Box::new([pkg]));
                    true
                }
            }
        } else {
            let removed = self
                .running
                .get_mut(name.as_str())
                .is_some_and(|s| set_remove(s, package));
            if self
                .running
                .get(name.as_str())
                .is_some_and(|s| s.is_empty())
            {
                self.running.remove(name.as_str());
            }
            removed
        };
        if changed {
            self.pending.push(Persist::Running {
                user: name,
                package: package.to_string(),
                running,
            });
        }
    }

    /// The shared name of `package`.
    fn package(&mut self, package: &str) -> Arc<str> {
        match self.packages.iter().find(|p| ***p == *package) {
            Some(p) => p.clone(),
            None => {
                let p: Arc<str> = package.into();
                self.packages.push(p.clone());
                p
            }
        }
    }

    // ---- settings and storage --------------------------------------------------------------

    /// The settings values `user` set for `package` (key → JSON text).
    pub fn settings(&self, user: &str, package: &str) -> Option<&BTreeMap<String, String>> {
        self.settings.get(&(user.to_string(), package.to_string()))
    }

    pub fn set_setting(&mut self, user: &str, package: &str, key: &str, value: Option<String>) {
        let k = (user.to_string(), package.to_string());
        match &value {
            Some(v) => {
                self.settings
                    .entry(k)
                    .or_default()
                    .insert(key.to_string(), v.clone());
            }
            None => {
                if let Some(m) = self.settings.get_mut(&k) {
                    m.remove(key);
                }
            }
        }
        self.pending.push(Persist::Setting {
            user: user.to_string(),
            package: package.to_string(),
            key: key.to_string(),
            value,
        });
    }

    /// The simple-storage of (user, package): key → value (JSON text of a string).
    pub fn storage(&self, user: &str, package: &str) -> Option<&BTreeMap<String, String>> {
        self.storage.get(&(user.to_string(), package.to_string()))
    }

    pub fn set_storage(&mut self, user: &str, package: &str, key: &str, value: Option<String>) {
        let k = (user.to_string(), package.to_string());
        let changed = match &value {
            Some(v) => {
                self.storage
                    .entry(k)
                    .or_default()
                    .insert(key.to_string(), v.clone())
                    .as_ref()
                    != Some(v)
            }
            None => self
                .storage
                .get_mut(&k)
                .is_some_and(|m| m.remove(key).is_some()),
        };
        if changed {
            self.pending.push(Persist::Storage {
                user: user.to_string(),
                package: package.to_string(),
                key: key.to_string(),
                value,
            });
        }
    }

    // ---- registrations ---------------------------------------------------------------------

    pub fn registration(&self, id: &str) -> Option<&Registration> {
        self.registrations.get(id)
    }

    pub fn registrations(&self) -> impl Iterator<Item = &Registration> {
        self.registrations.values()
    }

    pub fn put_registration(&mut self, r: Registration) {
        self.registrations.insert(r.id.clone(), r.clone());
        self.pending.push(Persist::Registration(r));
    }

    pub fn remove_registration(&mut self, id: &str) {
        if self.registrations.remove(id).is_some() {
            self.pending.push(Persist::RegistrationGone(id.to_string()));
        }
    }

    // ---- venue feed choices ----------------------------------------------------------------

    /// The name of the venue feed the operator chose for `user`, if any.
    pub fn follow(&self, user: &str) -> Option<&str> {
        self.follows.get(user).map(String::as_str)
    }

    /// Record that `user` follows the feed named `feed` (written only when it changes).
    pub fn set_follow(&mut self, user: &str, feed: &str) {
        if self.follow(user) == Some(feed) {
            return;
        }
        self.follows.insert(user.to_string(), feed.to_string());
        self.pending.push(Persist::Follow {
            user: user.to_string(),
            feed: feed.to_string(),
        });
    }

    // ---- provisioned devices ---------------------------------------------------------------

    /// Every device, by name.
    pub fn devices(&self) -> impl Iterator<Item = &Device> {
        self.devices.values()
    }

    pub fn device(&self, name: &str) -> Option<&Device> {
        self.devices.get(name)
    }

    /// The device whose token carries `jti` (a scan: devices are few, and looked up once per
    /// connect).
    pub fn device_by_jti(&self, jti: &str) -> Option<&Device> {
        self.devices.values().find(|d| d.jti == jti)
    }

    /// The device whose token carries the user id `user`.
    pub fn device_by_user(&self, user: &str) -> Option<&Device> {
        self.devices.values().find(|d| d.user == user)
    }

    /// Add or replace a device (the caller checked that the name is new).
    pub fn put_device(&mut self, dev: Device) {
        self.devices.insert(dev.name.clone(), dev.clone());
        self.pending.push(Persist::Device(dev));
    }

    /// Revoke `name` at `now` (Unix seconds); the device as it now is, `None` if unknown. A
    /// second revoke keeps the first time and writes nothing.
    pub fn revoke_device(&mut self, name: &str, now: u64) -> Option<&Device> {
        let dev = self.devices.get_mut(name)?;
        if dev.revoked.is_none() {
            dev.revoked = Some(now);
            self.pending.push(Persist::Device(dev.clone()));
        }
        Some(dev)
    }

    /// Note that the device `jti` connected at `now`; written at most once a minute per device.
    pub fn device_seen(&mut self, jti: &str, now: u64) {
        let Some(dev) = self.devices.values_mut().find(|d| d.jti == jti) else {
            return;
        };
        if dev.last_seen.is_some_and(|t| now < t.saturating_add(60)) {
            return;
        }
        dev.last_seen = Some(now);
        self.pending.push(Persist::Device(dev.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_queued_in_order_and_no_ops_are_not() {
        let mut d = Durable::default();
        d.set_running("u", "a", true);
        d.set_running("u", "a", true);
        d.set_running("u", "b", true);
        d.set_running("u", "a", false);
        d.set_running("u", "zz", false);
        d.set_storage("u", "a", "k", Some("\"v\"".into()));
        d.set_storage("u", "a", "k", Some("\"v\"".into()));
        d.set_follow("u", "track2");
        d.set_follow("u", "track2");
        assert_eq!(d.running("u"), vec!["b".to_string()]);
        let kinds: Vec<String> = d
            .take_pending()
            .iter()
            .map(|p| match p {
                Persist::Running {
                    package, running, ..
                } => format!("{package}:{running}"),
                Persist::Storage { key, .. } => format!("storage:{key}"),
                Persist::Follow { feed, .. } => format!("follow:{feed}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            vec!["a:true", "b:true", "a:false", "storage:k", "follow:track2"]
        );
        assert!(d.take_pending().is_empty());
    }

    #[test]
    fn a_shared_snapshot_replaces_the_users_not_served_here_and_queues_nothing() {
        let mut d = Durable::default();
        d.set_running("here", "a", true);
        d.set_running("gone", "a", true);
        d.set_setting("gone", "a", "k", Some("1".into()));
        d.set_follow("here", "main");
        d.set_follow("gone", "main");
        d.put_device(Device {
            name: "desk-1".into(),
            user: "device:desk-1".into(),
            jti: "j1".into(),
            created: 1,
            expires: 9,
            last_seen: None,
            revoked: None,
        });
        d.take_pending();
        let mut shared = Snapshot {
            running: vec![
                ("here".into(), "z".into()),
                ("other".into(), "b".into()),
                ("other".into(), "a".into()),
            ],
            storage: vec![("other".into(), "b".into(), "k".into(), "\"v\"".into())],
            follows: vec![
                ("here".into(), "track9".into()),
                ("other".into(), "track2".into()),
            ],
            ..Snapshot::default()
        };
        shared.devices.push(Device {
            revoked: Some(5),
            ..d.device("desk-1").unwrap().clone()
        });
        d.merge_shared(shared, |u| u == "here");
        assert_eq!(d.running("here"), vec!["a".to_string()]);
        assert_eq!(d.running("gone"), Vec::<String>::new());
        assert_eq!(d.running("other"), vec!["a".to_string(), "b".to_string()]);
        assert!(d.settings("gone", "a").is_none());
        assert_eq!(d.storage("other", "b").unwrap()["k"], "\"v\"");
        assert_eq!(d.device("desk-1").unwrap().revoked, Some(5));
        assert_eq!(d.follow("here"), Some("main"));
        assert_eq!(d.follow("gone"), None);
        assert_eq!(d.follow("other"), Some("track2"));
        assert!(d.take_pending().is_empty());
    }

    #[test]
    fn read_backs_not_taken_yet_add_up_to_one() {
        let rows = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect()
        };
        let read = |running: &[(&str, &str)], users: Option<&[&str]>, at: &str| Changed {
            snapshot: Snapshot {
                running: rows(running),
                ..Snapshot::default()
            },
            users: users.map(|u| u.iter().map(|s| s.to_string()).collect()),
            read_at: at.into(),
        };
        // A full read, then a partial one: full, with the changed user's rows replaced.
        let full = read(&[("a", "p"), ("b", "p")], None, "1");
        let got = full.then(read(&[("b", "q")], Some(&["b"]), "2"));
        assert_eq!(got.users, None);
        assert_eq!(got.snapshot.running, rows(&[("a", "p"), ("b", "q")]));
        assert_eq!(got.read_at, "2");
        // Two partial reads: both users' latest rows, a user gone in the newer one gone.
        let one = read(&[("a", "p"), ("b", "p")], Some(&["a", "b"]), "1");
        let got = one.then(read(&[], Some(&["a"]), "2"));
        assert_eq!(got.users, Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(got.snapshot.running, rows(&[("b", "p")]));
        // A full read after anything: the full one.
        let got = read(&[("a", "p")], Some(&["a"]), "1").then(read(&[("c", "p")], None, "2"));
        assert_eq!(
            (got.users, got.snapshot.running),
            (None, rows(&[("c", "p")]))
        );
    }

    #[test]
    fn registrations_from_other_processes_are_taken_the_latest_heartbeat_wins() {
        let reg = |id: &str, last_seen: u64| Registration {
            id: id.into(),
            package: "p".into(),
            webhook_url: "http://a/".into(),
            registered_at: 1,
            last_seen,
        };
        let mut d = Durable::default();
        d.put_registration(reg("mine", 10));
        d.put_registration(reg("stale-there", 50));
        d.put_registration(reg("going", 5));
        d.take_pending();
        d.remove_registration("going");
        let shared = Snapshot {
            registrations: vec![
                reg("mine", 5),
                reg("stale-there", 60),
                reg("theirs", 7),
                reg("going", 5),
            ],
            ..Snapshot::default()
        };
        d.merge_shared(shared, |_| false);
        let got: Vec<(String, u64)> = d
            .registrations()
            .map(|r| (r.id.clone(), r.last_seen))
            .collect();
        assert_eq!(
            got,
            vec![
                ("mine".into(), 10),
                ("stale-there".into(), 60),
                ("theirs".into(), 7)
            ]
        );
        assert_eq!(
            d.take_pending(),
            vec![Persist::RegistrationGone("going".into())]
        );
    }

    #[test]
    fn devices_are_kept_revoked_once_and_seen_at_most_once_a_minute() {
        let mut d = Durable::default();
        d.put_device(Device {
            name: "desk-1".into(),
            user: "device:desk-1".into(),
            jti: "j1".into(),
            created: 100,
            expires: 1000,
            last_seen: None,
            revoked: None,
        });
        d.device_seen("j1", 200);
        d.device_seen("j1", 259);
        d.device_seen("nope", 259);
        assert_eq!(d.device("desk-1").unwrap().last_seen, Some(200));
        d.device_seen("j1", 260);
        assert_eq!(d.revoke_device("desk-1", 300).unwrap().revoked, Some(300));
        assert_eq!(d.revoke_device("desk-1", 400).unwrap().revoked, Some(300));
        assert!(d.revoke_device("nope", 400).is_none());
        assert_eq!(d.device_by_jti("j1").unwrap().name, "desk-1");
        assert_eq!(d.device_by_user("device:desk-1").unwrap().jti, "j1");
        let writes: Vec<(Option<u64>, Option<u64>)> = d
            .take_pending()
            .iter()
            .map(|p| match p {
                Persist::Device(dev) => (dev.last_seen, dev.revoked),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            writes,
            vec![
                (None, None),
                (Some(200), None),
                (Some(260), None),
                (Some(260), Some(300))
            ]
        );
    }
}
