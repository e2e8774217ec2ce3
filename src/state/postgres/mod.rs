//! Shell layer: the PostgreSQL store, one database shared by every process and box of a venue
//! (DESIGN §7). Our own small client of the frontend/backend protocol ([`wire`], sans-IO),
//! blocking on a `std::net::TcpStream` on the writer thread only (and once at start to load):
//! no async runtime, no system library. Authentication: trust, cleartext password and
//! SCRAM-SHA-256 ([`scram`]); md5 is refused with a message (PostgreSQL's default has been
//! SCRAM since version 14). No TLS: the database is reached on loopback or a private network.
//!
//! Invariants: the schema version is the one row of `edge_schema`; a database of an older
//! version is migrated forward in one transaction under an advisory lock (several processes
//! starting at once migrate it once), one of a newer version is never touched — the store
//! refuses it and the box runs in memory; every batch is one transaction (an extended-query
//! pipeline up to one Sync, one round trip); every change is idempotent (upserts and deletes
//! keyed by the row), so a batch whose commit was lost with the connection is safely applied
//! again. A lost connection is reported by [`Store::retry_later`], and the writer keeps the
//! batch and tries again; an error from the server (a constraint) is not retried.

pub mod scram;
pub mod wire;

use super::{Changed, Device, LeaseAnswer, Persist, Registration, Snapshot, Store};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;
use wire::Backend;

/// The schema this binary writes (the same steps as SQLite's, in PostgreSQL's words).
pub const SCHEMA_VERSION: i64 = 6;

/// How long a lease lives in the store without a renewal (renewed every
/// [`super::writer::LEASE_TICK`]); a lease whose holder's database connection is gone is free
/// at once, whatever this says.
pub const LEASE_TTL_SECS: u32 = 5;

/// How often the state other processes wrote is read back (a user failing over finds their
/// apps at most this old).
pub const SHARED_REFRESH: Duration = Duration::from_secs(1);

/// Changes per pipelined transaction (their replies, ~30 bytes each, stay far below what the
/// socket buffers hold while the client is still writing).
const CHUNK: usize = 1000;

/// The advisory lock the migration holds (any constant; "edge" in ASCII).
const MIGRATION_LOCK: i64 = 0x6564_6765;

/// Each step takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 → 1: running apps.
    "CREATE TABLE running_apps (
        user_id text NOT NULL,
        package text NOT NULL,
        PRIMARY KEY (user_id, package)
    );",
    // 1 → 2: settings, simple storage, TPA server registrations.
    "CREATE TABLE app_settings (
        user_id text NOT NULL,
        package text NOT NULL,
        key text NOT NULL,
        value text NOT NULL,
        PRIMARY KEY (user_id, package, key)
    );
    CREATE TABLE simple_storage (
        user_id text NOT NULL,
        package text NOT NULL,
        key text NOT NULL,
        value text NOT NULL,
        PRIMARY KEY (user_id, package, key)
    );
    CREATE TABLE registrations (
        id text PRIMARY KEY,
        package text NOT NULL,
        webhook_url text NOT NULL,
        registered_at bigint NOT NULL,
        last_seen bigint NOT NULL
    );",
    // 2 → 3: provisioned devices (their token's claims, not the token) and revocations.
    "CREATE TABLE devices (
        name text PRIMARY KEY,
        user_id text NOT NULL,
        jti text NOT NULL UNIQUE,
        created bigint NOT NULL,
        expires bigint NOT NULL,
        last_seen bigint,
        revoked bigint
    );",
    // 3 → 4: the venue feed the operator chose for each user.
    "CREATE TABLE venue_follows (
        user_id text PRIMARY KEY,
        feed text NOT NULL
    );",
    // 4 → 5: user leases (fencing): which process holds each user's session, through which
    // database connection (`backend`, its pid), until when; and who else asked for it.
    "CREATE TABLE user_leases (
        user_id text PRIMARY KEY,
        owner text NOT NULL,
        backend integer NOT NULL,
        expires timestamptz NOT NULL,
        wanted_by text,
        wanted_at timestamptz
    );",
    // 5 → 6: when each user's apps, settings, storage or followed feed last changed (the read-back takes
    // only the users changed since its last read).
    "CREATE TABLE user_changes (
        user_id text PRIMARY KEY,
        changed_at timestamptz NOT NULL
    );",
];

/// A read-back takes the users changed since the previous read less this much: a transaction
/// stamped before that read but committed after it is still seen (ours last milliseconds).
pub const CHANGES_OVERLAP_SECS: u32 = 5;

/// Where the database is: `postgres://user[:password]@host[:port]/database`.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    pub user: String,
    pub password: Option<String>,
    pub host: String,
    pub port: u16,
    pub database: String,
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// The URL without its password (for logs and `/health`).
impl std::fmt::Display for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "postgres://{}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a bad %-escape")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "an escape that is not UTF-8".to_string())
}

impl PgUrl {
    /// Parse `postgres://` or `postgresql://` URLs; user, host and database are required,
    /// the port defaults to 5432; `%XX` escapes in the user and password. No query part.
    pub fn parse(url: &str) -> Result<PgUrl, String> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or("expected postgres://user[:password]@host[:port]/database")?;
        if rest.contains('?') {
            return Err("query parameters are not supported (no TLS: reach the database on loopback or a private network)".into());
        }
        let (auth, hostpath) = rest
            .rsplit_once('@')
            .ok_or("a user is required: postgres://user[:password]@host[:port]/database")?;
        let (user, password) = match auth.split_once(':') {
            Some((u, p)) => (percent_decode(u)?, Some(percent_decode(p)?)),
            None => (percent_decode(auth)?, None),
        };
        let (hostport, database) = hostpath
            .split_once('/')
            .ok_or("a database name is required: .../database")?;
        let (host, port) = match hostport.strip_prefix('[') {
            Some(v6) => {
                let (h, rest) = v6.split_once(']').ok_or("an unclosed [ in the host")?;
                (h, rest.strip_prefix(':'))
            }
            None => match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            },
        };
        let port = match port {
            None => 5432,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| format!("bad port '{p}'"))?,
        };
        let database = percent_decode(database)?;
        if user.is_empty() || host.is_empty() || database.is_empty() {
            return Err("user, host and database must not be empty".into());
        }
        Ok(PgUrl {
            user,
            password,
            host: host.to_string(),
            port,
            database,
        })
    }
}

/// Why a call failed: the connection is gone (try again later) or the server said no.
#[derive(Debug)]
enum PgError {
    Lost(String),
    Server(String),
    /// The server refused the connection (authentication, a newer schema): also tried again
    /// later, but at start it keeps the box in memory.
    Refused(String),
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PgError::Lost(e) => write!(f, "connection lost: {e}"),
            PgError::Server(e) | PgError::Refused(e) => write!(f, "{e}"),
        }
    }
}

type Row = Vec<Option<String>>;

/// One connection, blocking, with timeouts so a silent database fails the call.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

const IO_TIMEOUT: Duration = Duration::from_secs(10);

impl Conn {
    fn connect(url: &PgUrl) -> Result<Conn, PgError> {
        let lost = |e: std::io::Error| PgError::Lost(e.to_string());
        let addrs: Vec<_> = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(lost)?
            .collect();
        let mut last = None;
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, Duration::from_secs(5)) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = stream.ok_or_else(|| {
            lost(last.unwrap_or_else(|| std::io::Error::other("no address for the host")))
        })?;
        stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(lost)?;
        stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(lost)?;
        let _ = stream.set_nodelay(true);
        let mut c = Conn {
            stream,
            buf: Vec::new(),
        };
        c.startup(url)?;
        Ok(c)
    }

    fn send(&mut self, out: &[u8]) -> Result<(), PgError> {
        self.stream
            .write_all(out)
            .map_err(|e| PgError::Lost(e.to_string()))
    }

    fn recv(&mut self) -> Result<Backend, PgError> {
        loop {
            match wire::decode(&self.buf) {
                Ok(Some((msg, used))) => {
                    self.buf.drain(..used);
                    return Ok(msg);
                }
                Ok(None) => {}
                Err(e) => return Err(PgError::Lost(format!("protocol error: {e}"))),
            }
            let mut chunk = [0u8; 16 << 10];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(PgError::Lost("closed by the server".into())),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(PgError::Lost(e.to_string())),
            }
        }
    }

    fn startup(&mut self, url: &PgUrl) -> Result<(), PgError> {
        let mut out = Vec::new();
        wire::startup(
            &mut out,
            &[
                ("user", &url.user),
                ("database", &url.database),
                ("application_name", "augmentos-edge"),
                ("client_encoding", "UTF8"),
            ],
        );
        self.send(&out)?;
        let need_password = || {
            url.password.clone().ok_or_else(|| {
                PgError::Server("the server asks for a password and the URL has none".into())
            })
        };
        let mut scram = None;
        loop {
            let mut out = Vec::new();
            match self.recv()? {
                Backend::AuthOk => {}
                Backend::AuthCleartext => wire::password(&mut out, &need_password()?),
                Backend::AuthMd5 => {
                    return Err(PgError::Server(
                        "md5 password authentication is not supported: use scram-sha-256 (password_encryption and pg_hba.conf)".into(),
                    ))
                }
                Backend::AuthSasl(mechs) => {
                    if !mechs.iter().any(|m| m == scram::MECHANISM) {
                        return Err(PgError::Server(format!(
                            "the server offers SASL {mechs:?}, not {}",
                            scram::MECHANISM
                        )));
                    }
                    let nonce = scram::Scram::random_nonce().map_err(PgError::Server)?;
                    let s = scram::Scram::new("", &need_password()?, &nonce);
                    wire::sasl_initial(&mut out, scram::MECHANISM, s.client_first().as_bytes());
                    scram = Some(s);
                }
                Backend::AuthSaslContinue(data) => {
                    let s = scram
                        .as_mut()
                        .ok_or(PgError::Server("SCRAM out of order".into()))?;
                    let reply = s.client_final(&data).map_err(PgError::Server)?;
                    wire::sasl_response(&mut out, reply.as_bytes());
                }
                Backend::AuthSaslFinal(data) => scram
                    .as_ref()
                    .ok_or(PgError::Server("SCRAM out of order".into()))?
                    .verify(&data)
                    .map_err(PgError::Server)?,
                Backend::AuthOther(code) => {
                    return Err(PgError::Server(format!(
                        "authentication method {code} is not supported (trust, password, scram-sha-256 are)"
                    )))
                }
                Backend::Error(e) => return Err(PgError::Server(e)),
                Backend::ReadyForQuery(_) => return Ok(()),
                _ => {}
            }
            if !out.is_empty() {
                self.send(&out)?;
            }
        }
    }

    /// Send `out` (ending in a Sync or a simple query) and read to ReadyForQuery: the rows,
    /// or the first error the server reported.
    fn round_trip(&mut self, out: &[u8]) -> Result<(Vec<Row>, u8), PgError> {
        self.send(out)?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.recv()? {
                Backend::DataRow(r) => rows.push(r),
                Backend::Error(e) => {
                    error.get_or_insert(e);
                }
                Backend::ReadyForQuery(status) => {
                    return match error {
                        Some(e) => Err(PgError::Server(e)),
                        None => Ok((rows, status)),
                    };
                }
                _ => {}
            }
        }
    }

    fn simple(&mut self, sql: &str) -> Result<Vec<Row>, PgError> {
        let mut out = Vec::new();
        wire::query(&mut out, sql);
        self.round_trip(&out).map(|(rows, _)| rows)
    }

    /// Bring the schema to [`SCHEMA_VERSION`], once across processes.
    fn migrate(&mut self) -> Result<(), PgError> {
        let found = self
            .simple(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({MIGRATION_LOCK});"
            ))
            .and_then(|_| {
                self.simple(
                    "CREATE TABLE IF NOT EXISTS edge_schema (version integer NOT NULL);
                     SELECT version FROM edge_schema;",
                )
            });
        let rows = match found {
            Ok(rows) => rows,
            Err(e) => {
                let _ = self.simple("ROLLBACK");
                return Err(e);
            }
        };
        let version: i64 = rows
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if version > SCHEMA_VERSION {
            let _ = self.simple("ROLLBACK");
            return Err(PgError::Server(format!(
                "schema version {version} is newer than this binary's ({SCHEMA_VERSION}); the database is left as it is"
            )));
        }
        let mut sql = String::new();
        for step in &MIGRATIONS[version.max(0) as usize..] {
            sql.push_str(step);
        }
        sql.push_str(&format!(
            "DELETE FROM edge_schema; INSERT INTO edge_schema VALUES ({SCHEMA_VERSION}); COMMIT;"
        ));
        if let Err(e) = self.simple(&sql) {
            let _ = self.simple("ROLLBACK");
            return Err(e);
        }
        Ok(())
    }
}

/// The store: one connection, opened again after it is lost.
pub struct PgStore {
    url: PgUrl,
    conn: Option<Conn>,
    /// The last failure was the connection (the batch may be tried again).
    lost: bool,
    /// ... and the server refused the connection.
    refused: bool,
    /// This process's name in `user_leases` (new at every start: a restarted process holds
    /// nothing its previous life held).
    owner: String,
}

/// A name no other process, and no earlier life of this one, has: the pid, the start time
/// and random bytes.
fn new_owner() -> String {
    use ring::rand::SecureRandom;
    let mut r = [0u8; 6];
    let _ = ring::rand::SystemRandom::new().fill(&mut r);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{t}-{hex}", std::process::id())
}

impl PgStore {
    /// Connect, migrate and return the store (a refused or unreachable database is an error).
    pub fn open(url: &PgUrl) -> Result<PgStore, String> {
        let mut s = PgStore {
            url: url.clone(),
            conn: None,
            lost: false,
            refused: false,
            owner: new_owner(),
        };
        s.conn().map_err(|e| e.to_string())?;
        Ok(s)
    }

    /// The store without a connection yet: the first call connects (a box started while the
    /// database is down).
    pub fn unconnected(url: &PgUrl) -> PgStore {
        PgStore {
            url: url.clone(),
            conn: None,
            lost: true,
            refused: false,
            owner: new_owner(),
        }
    }

    /// This process's name in the lease table.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The last failure was the server refusing the connection.
    pub fn refused(&self) -> bool {
        self.refused
    }

    pub fn url(&self) -> &PgUrl {
        &self.url
    }

    /// Run `sql` (one or more statements, no parameters) and return its rows as text: for
    /// an operator's checks and the tests.
    pub fn query_text(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        self.with(|c| c.simple(sql))
    }

    fn conn(&mut self) -> Result<&mut Conn, PgError> {
        if self.conn.is_none() {
            let refused = |e| match e {
                PgError::Server(e) => PgError::Refused(e),
                e => e,
            };
            let mut c = Conn::connect(&self.url).map_err(refused)?;
            c.migrate().map_err(refused)?;
            self.conn = Some(c);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// Run `f` on the connection; a lost connection is dropped and remembered.
    fn with<T>(&mut self, f: impl FnOnce(&mut Conn) -> Result<T, PgError>) -> Result<T, String> {
        let r = self.conn().and_then(f);
        self.lost = matches!(r, Err(PgError::Lost(_) | PgError::Refused(_)));
        self.refused = matches!(r, Err(PgError::Refused(_)));
        if self.lost {
            self.conn = None;
        }
        r.map_err(|e| format!("{}: {e}", self.url))
    }

    fn encode(out: &mut Vec<u8>, p: &Persist) {
        let num = |n: u64| (n as i64).to_string();
        match p {
            Persist::Running {
                user,
                package,
                running: true,
            } => wire::execute(
                out,
                "INSERT INTO running_apps (user_id, package) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[Some(user), Some(package)],
            ),
            Persist::Running {
                user,
                package,
                running: false,
            } => wire::execute(
                out,
                "DELETE FROM running_apps WHERE user_id = $1 AND package = $2",
                &[Some(user), Some(package)],
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
                    Some(v) => wire::execute(
                        out,
                        &format!(
                            "INSERT INTO {table} (user_id, package, key, value) VALUES ($1, $2, $3, $4)
                             ON CONFLICT (user_id, package, key) DO UPDATE SET value = EXCLUDED.value"
                        ),
                        &[Some(user), Some(package), Some(key), Some(v)],
                    ),
                    None => wire::execute(
                        out,
                        &format!(
                            "DELETE FROM {table} WHERE user_id = $1 AND package = $2 AND key = $3"
                        ),
                        &[Some(user), Some(package), Some(key)],
                    ),
                }
            }
            Persist::Registration(r) => wire::execute(
                out,
                "INSERT INTO registrations (id, package, webhook_url, registered_at, last_seen)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO UPDATE SET package = EXCLUDED.package,
                   webhook_url = EXCLUDED.webhook_url, registered_at = EXCLUDED.registered_at,
                   last_seen = EXCLUDED.last_seen",
                &[
                    Some(&r.id),
                    Some(&r.package),
                    Some(&r.webhook_url),
                    Some(&num(r.registered_at)),
                    Some(&num(r.last_seen)),
                ],
            ),
            Persist::RegistrationGone(id) => wire::execute(
                out,
                "DELETE FROM registrations WHERE id = $1",
                &[Some(id)],
            ),
            Persist::Device(d) => {
                let last_seen = d.last_seen.map(num);
                let revoked = d.revoked.map(num);
                wire::execute(
                    out,
                    "INSERT INTO devices (name, user_id, jti, created, expires, last_seen, revoked)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (name) DO UPDATE SET user_id = EXCLUDED.user_id,
                       jti = EXCLUDED.jti, created = EXCLUDED.created, expires = EXCLUDED.expires,
                       last_seen = EXCLUDED.last_seen, revoked = EXCLUDED.revoked",
                    &[
                        Some(&d.name),
                        Some(&d.user),
                        Some(&d.jti),
                        Some(&num(d.created)),
                        Some(&num(d.expires)),
                        last_seen.as_deref(),
                        revoked.as_deref(),
                    ],
                )
            }
            Persist::Follow { user, feed } => wire::execute(
                out,
                "INSERT INTO venue_follows (user_id, feed) VALUES ($1, $2)
                 ON CONFLICT (user_id) DO UPDATE SET feed = EXCLUDED.feed",
                &[Some(user), Some(feed)],
            ),
        }
    }
}

fn text(row: &Row, i: usize) -> Result<String, PgError> {
    row.get(i)
        .cloned()
        .flatten()
        .ok_or_else(|| PgError::Server(format!("column {i} is missing or NULL")))
}

fn secs(row: &Row, i: usize) -> Result<Option<u64>, PgError> {
    match row.get(i).cloned().flatten() {
        None => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .map(|n| Some(n.max(0) as u64))
            .map_err(|_| PgError::Server(format!("column {i} is not a number: {v}"))),
    }
}

fn num(row: &Row, i: usize) -> Result<u64, PgError> {
    secs(row, i)?.ok_or_else(|| PgError::Server(format!("column {i} is NULL")))
}

/// Everything stored, or (`users` false) only the registrations and devices.
fn load_tables(c: &mut Conn, users: bool) -> Result<Snapshot, PgError> {
    let mut s = Snapshot::default();
    if users {
        for r in c.simple("SELECT user_id, package FROM running_apps ORDER BY user_id, package")? {
            s.running.push((text(&r, 0)?, text(&r, 1)?));
        }
        for (table, into) in [
            ("app_settings", &mut s.settings),
            ("simple_storage", &mut s.storage),
        ] {
            for r in c.simple(&format!(
                "SELECT user_id, package, key, value FROM {table} ORDER BY user_id, package, key"
            ))? {
                into.push((text(&r, 0)?, text(&r, 1)?, text(&r, 2)?, text(&r, 3)?));
            }
        }
        for r in
            c.simple("SELECT user_id, feed FROM venue_follows ORDER BY user_id COLLATE \"C\"")?
        {
            s.follows.push((text(&r, 0)?, text(&r, 1)?));
        }
    }
    for r in c.simple(
        "SELECT id, package, webhook_url, registered_at, last_seen FROM registrations ORDER BY id",
    )? {
        s.registrations.push(Registration {
            id: text(&r, 0)?,
            package: text(&r, 1)?,
            webhook_url: text(&r, 2)?,
            registered_at: num(&r, 3)?,
            last_seen: num(&r, 4)?,
        });
    }
    for r in c.simple(
        "SELECT name, user_id, jti, created, expires, last_seen, revoked FROM devices ORDER BY name",
    )? {
        s.devices.push(Device {
            name: text(&r, 0)?,
            user: text(&r, 1)?,
            jti: text(&r, 2)?,
            created: num(&r, 3)?,
            expires: num(&r, 4)?,
            last_seen: secs(&r, 5)?,
            revoked: secs(&r, 6)?,
        });
    }
    Ok(s)
}

impl Store for PgStore {
    fn load(&mut self) -> Result<Snapshot, String> {
        self.with(|c| load_tables(c, true))
    }

    /// One transaction per `CHUNK` changes: every change stands alone (keyed, idempotent),
    /// and a pipeline that long never fills the socket buffers both ways.
    fn apply(&mut self, batch: &[Persist]) -> Result<(), String> {
        for chunk in batch.chunks(CHUNK) {
            let mut out = Vec::new();
            let mut users: Vec<&str> = Vec::new();
            for p in chunk {
                PgStore::encode(&mut out, p);
                if let Persist::Running { user, .. }
                | Persist::Setting { user, .. }
                | Persist::Storage { user, .. }
                | Persist::Follow { user, .. } = p
                {
                    users.push(user);
                }
            }
            users.sort_unstable();
            users.dedup();
            for u in users {
                wire::execute(
                    &mut out,
                    "INSERT INTO user_changes (user_id, changed_at) VALUES ($1, now())
                     ON CONFLICT (user_id) DO UPDATE SET changed_at = EXCLUDED.changed_at",
                    &[Some(u)],
                );
            }
            wire::sync(&mut out);
            self.with(|c| c.round_trip(&out).map(|_| ()))?;
        }
        Ok(())
    }

    fn retry_later(&self) -> bool {
        self.lost
    }

    /// The users changed since `since` (less [`CHANGES_OVERLAP_SECS`]) and their rows; the
    /// registrations and devices whole (a venue has few).
    fn load_changed(&mut self, since: Option<&str>) -> Result<Changed, String> {
        let read_at = self
            .with(|c| c.simple("SELECT now()::text"))?
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .ok_or_else(|| format!("{}: no time from the server", self.url))?;
        let Some(since) = since else {
            return Ok(Changed {
                snapshot: self.load()?,
                users: None,
                read_at,
            });
        };
        let changed = format!(
            "SELECT user_id FROM user_changes WHERE changed_at > $1::timestamptz - interval '{CHANGES_OVERLAP_SECS} seconds'"
        );
        let mut out = Vec::new();
        wire::execute(
            &mut out,
            &format!("SELECT 'u', user_id FROM ({changed}) c"),
            &[Some(since)],
        );
        wire::execute(
            &mut out,
            &format!("SELECT 'r', user_id, package FROM running_apps WHERE user_id IN ({changed})"),
            &[Some(since)],
        );
        for (tag, table) in [("s", "app_settings"), ("t", "simple_storage")] {
            wire::execute(
                &mut out,
                &format!(
                    "SELECT '{tag}', user_id, package, key, value FROM {table} WHERE user_id IN ({changed})"
                ),
                &[Some(since)],
            );
        }
        wire::execute(
            &mut out,
            &format!("SELECT 'f', user_id, feed FROM venue_follows WHERE user_id IN ({changed})"),
            &[Some(since)],
        );
        wire::sync(&mut out);
        let rows = self.with(|c| c.round_trip(&out).map(|(rows, _)| rows))?;
        let mut snapshot = self.with(|c| load_tables(c, false))?;
        let mut users = Vec::new();
        let bad = |e: PgError| e.to_string();
        for r in rows {
            let f = |i| text(&r, i).map_err(bad);
            match r.first().cloned().flatten().as_deref() {
                Some("u") => users.push(f(1)?),
                Some("r") => snapshot.running.push((f(1)?, f(2)?)),
                Some("s") => snapshot.settings.push((f(1)?, f(2)?, f(3)?, f(4)?)),
                Some("t") => snapshot.storage.push((f(1)?, f(2)?, f(3)?, f(4)?)),
                Some("f") => snapshot.follows.push((f(1)?, f(2)?)),
                other => return Err(format!("{}: an unexpected row {other:?}", self.url)),
            }
        }
        Ok(Changed {
            snapshot,
            users: Some(users),
            read_at,
        })
    }

    /// Two pipelined transactions: releases (only our own rows), the renewal of every row we
    /// own (one statement, moving it to this connection), then each claim — taken if the row
    /// is free, ours, expired, or its holder's connection is gone (`pg_stat_activity`); else
    /// marked wanted by us, which the holder sees at its next renewal.
    fn lease(
        &mut self,
        claim: &[String],
        renew: &[String],
        release: &[String],
    ) -> Result<LeaseAnswer, String> {
        let _ = renew;
        let me = self.owner.clone();
        let ttl = format!("interval '{LEASE_TTL_SECS} seconds'");
        let mut out = Vec::new();
        for u in release {
            wire::execute(
                &mut out,
                "DELETE FROM user_leases WHERE user_id = $1 AND owner = $2",
                &[Some(u), Some(&me)],
            );
        }
        wire::execute(
            &mut out,
            &format!(
                "UPDATE user_leases SET expires = now() + {ttl}, backend = pg_backend_pid()
                 WHERE owner = $1
                 RETURNING user_id,
                   CASE WHEN wanted_at > now() - {ttl} THEN wanted_by END"
            ),
            &[Some(&me)],
        );
        // Our rows' locks go with this commit, before any claim waits on another's row (two
        // processes claiming each other's users cannot deadlock); claims come sorted.
        wire::sync(&mut out);
        let mut rows = self.with(|c| c.round_trip(&out).map(|(rows, _)| rows))?;
        let mut out = Vec::new();
        for u in claim {
            wire::execute(
                &mut out,
                &format!(
                    "INSERT INTO user_leases AS l (user_id, owner, backend, expires)
                     VALUES ($1, $2, pg_backend_pid(), now() + {ttl})
                     ON CONFLICT (user_id) DO UPDATE SET owner = EXCLUDED.owner,
                       backend = EXCLUDED.backend, expires = EXCLUDED.expires,
                       wanted_by = NULL, wanted_at = NULL
                     WHERE l.owner = EXCLUDED.owner OR l.expires < now()
                       OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = l.backend)
                     RETURNING user_id, NULL::text"
                ),
                &[Some(u), Some(&me)],
            );
            wire::execute(
                &mut out,
                "UPDATE user_leases SET wanted_by = $2, wanted_at = now()
                 WHERE user_id = $1 AND owner <> $2",
                &[Some(u), Some(&me)],
            );
        }
        if !claim.is_empty() {
            wire::sync(&mut out);
            rows.extend(self.with(|c| c.round_trip(&out).map(|(rows, _)| rows))?);
        }
        let mut answer = LeaseAnswer::default();
        for r in rows {
            let Some(Some(user)) = r.first().cloned() else {
                continue;
            };
            if r.get(1).cloned().flatten().is_some_and(|w| w != me) {
                answer.wanted.push(user.clone());
            }
            answer.held.push(user);
        }
        Ok(answer)
    }

    fn shared_refresh(&self) -> Option<Duration> {
        Some(SHARED_REFRESH)
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(c) = &mut self.conn {
            let mut out = Vec::new();
            wire::terminate(&mut out);
            let _ = c.send(&out);
        }
    }
}

/// Open the shared database at `url`: never fails. Unreachable, the box starts with empty
/// state and the writer connects when the database is back (what the others wrote is not
/// loaded then; sessions started meanwhile are written). Refused (authentication, a newer
/// schema), the box keeps state in memory only. Either way the status says why.
pub fn open_configured(url: &PgUrl, queue_limit: usize) -> super::sqlite::Loaded {
    let mut status = super::StoreStatus::memory();
    status.kind = "postgres";
    status.path = Some(url.to_string());
    let mut store = PgStore::unconnected(url);
    match store.load() {
        Ok(snapshot) => {
            log::info!(
                "durable state from {url}: {} running app(s), {} registration(s)",
                snapshot.running.len(),
                snapshot.registrations.len()
            );
            super::sqlite::Loaded {
                snapshot,
                status,
                store: Some(Box::new(store)),
                queue_limit,
            }
        }
        Err(e) if store.retry_later() && !store.refused() => {
            log::error!("durable state: {e}; starting empty, writing when the database is back");
            status.error = Some(e);
            super::sqlite::Loaded {
                snapshot: Snapshot::default(),
                status,
                store: Some(Box::new(store)),
                queue_limit,
            }
        }
        Err(e) => {
            log::error!("durable state unavailable, keeping state in memory: {e}");
            status.kind = "memory";
            status.error = Some(e);
            super::sqlite::Loaded {
                snapshot: Snapshot::default(),
                status,
                store: None,
                queue_limit: 0,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_and_bad_ones_named() {
        let u = PgUrl::parse("postgres://edge:p%40ss@127.0.0.1:5433/venue").unwrap();
        assert_eq!(
            (
                u.user.as_str(),
                u.password.as_deref(),
                u.host.as_str(),
                u.port
            ),
            ("edge", Some("p@ss"), "127.0.0.1", 5433)
        );
        assert_eq!(u.to_string(), "postgres://edge@127.0.0.1:5433/venue");
        let u = PgUrl::parse("postgresql://edge@[::1]/venue").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.password), ("::1", 5432, None));
        for bad in [
            "mysql://a@b/c",
            "postgres://host/db",
            "postgres://a@b",
            "postgres://a@b:0/c",
            "postgres://a@b:x/c",
            "postgres://a@b/c?sslmode=require",
            "postgres://a@/c",
        ] {
            assert!(PgUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
