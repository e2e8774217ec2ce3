//! Shell layer: the SQLite store (bundled SQLite through `rusqlite`), one file in `stateDir`.
//!
//! Owns the database connection; used only by the writer thread and, once at start, by the
//! shell to load. Crash safety is SQLite's (WAL journal, `synchronous=NORMAL`); an operator can
//! open the file with `sqlite3` to see what the box remembers.
//!
//! Invariants: the schema version is `PRAGMA user_version`; a database of an older version is
//! migrated forward in one transaction, step by step, at open; one of a newer version, or one
//! that fails its integrity check or cannot be read, is moved aside (never deleted) and a fresh
//! one started, and the move is reported; every batch is one transaction.

use super::{Device, Persist, Registration, Snapshot, Store};
use rusqlite::{params, Connection};
use std::path::{Path, PathBuf};

/// The file name inside `stateDir`.
pub const FILE: &str = "augmentos-edge.sqlite3";

/// The schema this binary writes.
pub const SCHEMA_VERSION: i64 = 4;

/// Each step takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 → 1: what the first durable release kept, running apps.
    "CREATE TABLE running_apps (
        user TEXT NOT NULL,
        package TEXT NOT NULL,
        PRIMARY KEY (user, package)
    ) WITHOUT ROWID;",
    // 1 → 2: settings, simple storage, TPA server registrations.
    "CREATE TABLE app_settings (
        user TEXT NOT NULL,
        package TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (user, package, key)
    ) WITHOUT ROWID;
    CREATE TABLE simple_storage (
        user TEXT NOT NULL,
        package TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (user, package, key)
    ) WITHOUT ROWID;
    CREATE TABLE registrations (
        id TEXT PRIMARY KEY NOT NULL,
        package TEXT NOT NULL,
        webhook_url TEXT NOT NULL,
        registered_at INTEGER NOT NULL,
        last_seen INTEGER NOT NULL
    );",
    // 2 → 3: provisioned devices (their token's claims, not the token) and revocations.
    "CREATE TABLE devices (
        name TEXT PRIMARY KEY NOT NULL,
        user TEXT NOT NULL,
        jti TEXT NOT NULL UNIQUE,
        created INTEGER NOT NULL,
        expires INTEGER NOT NULL,
        last_seen INTEGER,
        revoked INTEGER
    );",
    // 3 → 4: the venue feed the operator chose for each user.
    "CREATE TABLE venue_follows (
        user TEXT PRIMARY KEY NOT NULL,
        feed TEXT NOT NULL
    );",
];

pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

/// The store opened, and what happened to a bad file found at its place.
pub struct Opened {
    pub store: SqliteStore,
    pub snapshot: Snapshot,
    /// The file could not be used: where it was moved and why.
    pub recovered: Option<String>,
}

impl SqliteStore {
    /// Open (or create) the store in `dir` and load it. A file that cannot be used is moved
    /// aside and a fresh store created; only a directory that cannot be written fails.
    pub fn open_dir(dir: &Path, now_unix: u64) -> Result<Opened, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create stateDir {}: {e}", dir.display()))?;
        let path = dir.join(FILE);
        match SqliteStore::open(&path).and_then(|mut s| s.load().map(|snap| (s, snap))) {
            Ok((store, snapshot)) => Ok(Opened {
                store,
                snapshot,
                recovered: None,
            }),
            Err(why) => {
                let aside = dir.join(format!("{FILE}.unreadable-{now_unix}"));
                for suffix in ["", "-wal", "-shm"] {
                    let from = PathBuf::from(format!("{}{suffix}", path.display()));
                    let to = PathBuf::from(format!("{}{suffix}", aside.display()));
                    if from.exists() {
                        std::fs::rename(&from, &to).map_err(|e| {
                            format!("cannot move the unreadable {} aside: {e}", from.display())
                        })?;
                    }
                }
                let mut store = SqliteStore::open(&path)?;
                let snapshot = store.load()?;
                Ok(Opened {
                    store,
                    snapshot,
                    recovered: Some(format!(
                        "{} could not be read ({why}); moved to {} and started empty",
                        path.display(),
                        aside.display()
                    )),
                })
            }
        }
    }

    /// Open the database at `path`, check it, and migrate it to [`SCHEMA_VERSION`].
    pub fn open(path: &Path) -> Result<SqliteStore, String> {
        let e = |e: rusqlite::Error| e.to_string();
        let mut conn = Connection::open(path).map_err(e)?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
            .map_err(e)?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(e)?;
        if check != "ok" {
            return Err(format!("integrity check failed: {check}"));
        }
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(e)?;
        if version > SCHEMA_VERSION {
            return Err(format!(
                "schema version {version} is newer than this binary's ({SCHEMA_VERSION})"
            ));
        }
        if version < SCHEMA_VERSION {
            let tx = conn.transaction().map_err(e)?;
            for step in &MIGRATIONS[version.max(0) as usize..] {
                tx.execute_batch(step).map_err(e)?;
            }
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(e)?;
            tx.commit().map_err(e)?;
        }
        Ok(SqliteStore {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn apply_one(tx: &rusqlite::Transaction<'_>, p: &Persist) -> rusqlite::Result<()> {
        match p {
            Persist::Running {
                user,
                package,
                running: true,
            } => tx.execute(
                "INSERT OR IGNORE INTO running_apps (user, package) VALUES (?1, ?2)",
                params![user, package],
            ),
            Persist::Running {
                user,
                package,
                running: false,
            } => tx.execute(
                "DELETE FROM running_apps WHERE user = ?1 AND package = ?2",
                params![user, package],
            ),
            Persist::Setting {
                user,
                package,
                key,
                value,
            }
            | Persist::Storage {
                user,
                package,
                key,
                value,
            } => {
                let table = match p {
                    Persist::Setting { .. } => "app_settings",
                    _ => "simple_storage",
                };
                match value {
                    Some(v) => tx.execute(
                        &format!(
                            "INSERT OR REPLACE INTO {table} (user, package, key, value)
                             VALUES (?1, ?2, ?3, ?4)"
                        ),
                        params![user, package, key, v],
                    ),
                    None => tx.execute(
                        &format!(
                            "DELETE FROM {table} WHERE user = ?1 AND package = ?2 AND key = ?3"
                        ),
                        params![user, package, key],
                    ),
                }
            }
            Persist::Registration(r) => tx.execute(
                "INSERT OR REPLACE INTO registrations
                 (id, package, webhook_url, registered_at, last_seen) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    r.id,
                    r.package,
                    r.webhook_url,
                    r.registered_at as i64,
                    r.last_seen as i64
                ],
            ),
            Persist::RegistrationGone(id) => {
                tx.execute("DELETE FROM registrations WHERE id = ?1", params![id])
            }
            Persist::Device(d) => tx.execute(
                "INSERT OR REPLACE INTO devices
                 (name, user, jti, created, expires, last_seen, revoked)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    d.name,
                    d.user,
                    d.jti,
                    d.created as i64,
                    d.expires as i64,
                    d.last_seen.map(|t| t as i64),
                    d.revoked.map(|t| t as i64)
                ],
            ),
            Persist::Follow { user, feed } => tx.execute(
                "INSERT OR REPLACE INTO venue_follows (user, feed) VALUES (?1, ?2)",
                params![user, feed],
            ),
        }
        .map(|_| ())
    }
}

impl Store for SqliteStore {
    fn load(&mut self) -> Result<Snapshot, String> {
        let e = |e: rusqlite::Error| e.to_string();
        let mut s = Snapshot::default();
        let mut q = self
            .conn
            .prepare("SELECT user, package FROM running_apps ORDER BY user, package")
            .map_err(e)?;
        s.running = q
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(e)?
            .collect::<Result<_, _>>()
            .map_err(e)?;
        for (table, into) in [
            ("app_settings", &mut s.settings),
            ("simple_storage", &mut s.storage),
        ] {
            let mut q = self
                .conn
                .prepare(&format!(
                    "SELECT user, package, key, value FROM {table} ORDER BY user, package, key"
                ))
                .map_err(e)?;
            *into = q
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .map_err(e)?
                .collect::<Result<_, _>>()
                .map_err(e)?;
        }
        let mut q = self
            .conn
            .prepare(
                "SELECT id, package, webhook_url, registered_at, last_seen FROM registrations
                 ORDER BY id",
            )
            .map_err(e)?;
        s.registrations = q
            .query_map([], |r| {
                Ok(Registration {
                    id: r.get(0)?,
                    package: r.get(1)?,
                    webhook_url: r.get(2)?,
                    registered_at: r.get::<_, i64>(3)?.max(0) as u64,
                    last_seen: r.get::<_, i64>(4)?.max(0) as u64,
                })
            })
            .map_err(e)?
            .collect::<Result<_, _>>()
            .map_err(e)?;
        let mut q = self
            .conn
            .prepare(
                "SELECT name, user, jti, created, expires, last_seen, revoked FROM devices
                 ORDER BY name",
            )
            .map_err(e)?;
        let secs = |t: i64| t.max(0) as u64;
        s.devices = q
            .query_map([], |r| {
                Ok(Device {
                    name: r.get(0)?,
                    user: r.get(1)?,
                    jti: r.get(2)?,
                    created: secs(r.get(3)?),
                    expires: secs(r.get(4)?),
                    last_seen: r.get::<_, Option<i64>>(5)?.map(secs),
                    revoked: r.get::<_, Option<i64>>(6)?.map(secs),
                })
            })
            .map_err(e)?
            .collect::<Result<_, _>>()
            .map_err(e)?;
        let mut q = self
            .conn
            .prepare("SELECT user, feed FROM venue_follows ORDER BY user")
            .map_err(e)?;
        s.follows = q
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(e)?
            .collect::<Result<_, _>>()
            .map_err(e)?;
        Ok(s)
    }

    fn apply(&mut self, batch: &[Persist]) -> Result<(), String> {
        let tx = self.conn.transaction().map_err(|e| e.to_string())?;
        for p in batch {
            SqliteStore::apply_one(&tx, p).map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())
    }
}

/// Durable state as the server starts with it: what was loaded, how the store is, and the
/// store to hand to the writer (`None`: in memory only).
pub struct Loaded {
    pub snapshot: Snapshot,
    pub status: super::StoreStatus,
    pub store: Option<Box<dyn Store>>,
    /// While the store is unreachable, at most this many rows' changes are held (0: none).
    pub queue_limit: usize,
}

/// Open the store of `state_dir` (or none): never fails; whatever went wrong is in the status
/// and the log, and the server starts with empty state.
pub fn open_configured(state_dir: Option<&Path>, now_unix: u64) -> Loaded {
    let mut status = super::StoreStatus::memory();
    let Some(dir) = state_dir else {
        log::warn!(
            "no stateDir configured: running apps, settings and storage are kept in memory only"
        );
        return Loaded {
            snapshot: Snapshot::default(),
            status,
            store: None,
            queue_limit: 0,
        };
    };
    status.kind = "sqlite";
    status.path = Some(dir.join(FILE).display().to_string());
    match SqliteStore::open_dir(dir, now_unix) {
        Ok(o) => {
            if let Some(r) = &o.recovered {
                log::error!("durable state: {r}");
            }
            log::info!(
                "durable state from {}: {} running app(s), {} registration(s)",
                o.store.path().display(),
                o.snapshot.running.len(),
                o.snapshot.registrations.len()
            );
            status.recovered = o.recovered;
            Loaded {
                snapshot: o.snapshot,
                status,
                store: Some(Box::new(o.store)),
                queue_limit: 0,
            }
        }
        Err(e) => {
            log::error!("durable state unavailable, keeping state in memory: {e}");
            status.kind = "memory";
            status.error = Some(e);
            Loaded {
                snapshot: Snapshot::default(),
                status,
                store: None,
                queue_limit: 0,
            }
        }
    }
}
