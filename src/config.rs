//! Config layer: the JSON configuration and the embedded default — parsing only.
//!
//! Pure: takes the file's text ([`Config::from_json`]) and reads no file and no environment
//! (the shell in `main.rs` does both). The file is described by raw `serde` structs, one per
//! JSON object, whose field types carry their own checks (ranges, URL schemes, permissions,
//! addresses), and `serde_path_to_error` names the path of whatever fails; the raw structs are
//! then turned into the core's config types, starting from their defaults. Invariants: every
//! key is known (an unknown key is an error naming its path), `null` is never a value (leave a
//! key out for its default), every value is range-checked, and a parsed [`Config`] is complete
//! (defaults filled in), so nothing downstream re-validates.

use crate::hub::registry::{parse_http_url, AppSpec};
use crate::hub::HubConfig;
use crate::net::{ServerConfig, Target};
use crate::server::tts::{valid_voice, TtsConfig};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::Value;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Where to listen is the shell's (`reactor`) type; the config reads it from JSON here.
pub use crate::reactor::{ListenSpec, TlsListen};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
struct RawListen {
    address: NonEmpty,
    tls: Option<RawTls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
struct RawTls {
    certificate: NonEmpty,
    key: NonEmpty,
}

impl<'de> Deserialize<'de> for ListenSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ListenSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string (an address) or an object (address and tls)")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ListenSpec, E> {
                ListenSpec::parse(s).map_err(E::custom)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, m: A) -> Result<ListenSpec, A::Error> {
                let raw = RawListen::deserialize(de::value::MapAccessDeserializer::new(m))?;
                let NonEmpty(address) = raw.address;
                let Some(RawTls { certificate, key }) = raw.tls else {
                    return ListenSpec::parse(&address).map_err(de::Error::custom);
                };
                let address = address.parse::<SocketAddr>().map_err(|_| {
                    de::Error::custom(format!("'{address}' is not an IP:port address (TLS)"))
                })?;
                Ok(ListenSpec::Tls(TlsListen {
                    address,
                    certificate: certificate.0.into(),
                    key: key.0.into(),
                }))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<ListenSpec>,
    pub server: ServerConfig,
    pub hub: HubConfig,
    /// Where durable state is kept; `None`: in memory only (lost on restart).
    pub state_dir: Option<PathBuf>,
    /// A shared PostgreSQL for durable state instead of `stateDir` (several processes or boxes).
    pub postgres: Option<PostgresConfig>,
    /// True when the glasses-token secret is the public development one.
    pub dev_secret: bool,
    /// True when the `/ui/` pages are served with the public development operator token.
    pub dev_operator_token: bool,
    /// Speech for `GET /api/tts` (the `tts` key).
    pub tts: TtsConfig,
}

/// The `postgres` key: the database every process of a venue shares, and how many rows'
/// changes a process holds while it is unreachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    pub url: crate::state::postgres::PgUrl,
    pub queue_limit: usize,
}

/// The default bound of changes held while the database is down (a few MB at most).
pub const DEFAULT_QUEUE_LIMIT: usize = 100_000;

/// The public development secrets the config falls back to (they live with the auth code).
pub use crate::auth::{DEV_OPERATOR_TOKEN, DEV_SECRET};

/// The configuration used when no file is given: loopback only, no apps, the `/ui/` pages on.
pub const EMBEDDED_DEFAULT: &str = r#"{
  "listen": ["127.0.0.1:8002"],
  "publicWsUrl": "ws://127.0.0.1:8002",
  "echoRoute": false,
  "ui": {"enabled": true},
  "apps": []
}"#;

const PERMISSIONS: &[&str] = &[
    "MICROPHONE",
    "LOCATION",
    "BACKGROUND_LOCATION",
    "CALENDAR",
    "CAMERA",
    "NOTIFICATIONS",
    "READ_NOTIFICATIONS",
    "POST_NOTIFICATIONS",
    "ALL",
];

impl Config {
    pub fn embedded() -> Config {
        Config::from_json(EMBEDDED_DEFAULT).expect("the embedded default is valid")
    }

    /// Parse and check a configuration file's text. The error names the failing key's path.
    pub fn from_json(text: &str) -> Result<Config, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        if !v.is_object() {
            return Err("the config must be a JSON object".into());
        }
        refuse_null(&v, &mut String::new())?;
        let raw: RawConfig = serde_path_to_error::deserialize(v).map_err(describe)?;
        raw.into_config()
    }
}

// ---------------------------------------------------------------------------------------------
// The file as written. Every key may be left out (its default applies) except an app's identity.

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "an object")]
struct RawConfig {
    listen: Option<Vec<ListenSpec>>,
    echo_route: Option<bool>,
    limits: Option<RawLimits>,
    timings: Option<RawTimings>,
    public_ws_url: Option<WsUrl>,
    internal_ws_url: Option<WsUrl>,
    jwt_secret: Option<Secret>,
    state_dir: Option<NonEmpty>,
    postgres: Option<RawPostgres>,
    ui: Option<RawUi>,
    tts: Option<RawTts>,
    tokens: Option<RawTokens>,
    account_login: Option<RawAccountLogin>,
    /// Fetch each app's `tpa_config.json` for its settings (default true).
    fetch_app_config: Option<bool>,
    apps: Option<Vec<RawApp>>,
}

/// A shared PostgreSQL (instead of `stateDir`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "an object")]
struct RawPostgres {
    url: NonEmpty,
    queue_limit: Option<Ranged<0, 10_000_000>>,
}

impl RawPostgres {
    fn into_config(self, state_dir: bool) -> Result<PostgresConfig, String> {
        if state_dir {
            return Err(
                "postgres: stateDir and postgres are exclusive (durable state is kept in one place)"
                    .into(),
            );
        }
        Ok(PostgresConfig {
            url: crate::state::postgres::PgUrl::parse(&self.url.0)
                .map_err(|e| format!("postgres.url: {e}"))?,
            queue_limit: self.queue_limit.map_or(DEFAULT_QUEUE_LIMIT, usize::from),
        })
    }
}

/// How the phone app's account login is verified for `POST /api/auth/exchange-token` (offline:
/// the account service's HS256 secret); left out, the box takes no account logins.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "an object")]
struct RawAccountLogin {
    hs256_secret: Option<Secret>,
    jwks_file: Option<NonEmpty>,
    issuer: Option<NonEmpty>,
    audience: Option<NonEmpty>,
    user_claim: Option<NonEmpty>,
}

/// The glasses tokens the box issues and takes: their default lifetime, the clock leeway
/// around `exp`/`nbf`, and whether a token without `exp` (older tooling) is taken.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "an object")]
struct RawTokens {
    lifetime_seconds: Option<Ranged<1, { crate::hub::devices::MAX_TOKEN_LIFETIME_SECS }>>,
    leeway_seconds: Option<Ranged<0, 3_600>>,
    accept_without_expiry: Option<bool>,
}

/// Speech for `GET /api/tts` (espeak-ng on the box).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "an object")]
struct RawTts {
    command: Option<NonEmpty>,
    max_chars: Option<Ranged<1, 5_000>>,
    max_concurrent: Option<Ranged<1, 64>>,
    cache_bytes: Option<Ranged<0, { 1 << 30 }>>,
    timeout_ms: Option<Ranged<100, 600_000>>,
    default_voice: Option<Voice>,
    /// `voice_id` (as the SDK sends it) → espeak-ng voice.
    voices: Option<std::collections::BTreeMap<String, Voice>>,
}

/// The `/ui/` pages: off unless `enabled`; `operatorToken` guards their API (required unless
/// the development secret is in use, which brings the public development operator token).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "an object")]
struct RawUi {
    enabled: Option<bool>,
    operator_token: Option<Secret>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "an object")]
struct RawLimits {
    max_frame_bytes: Option<Ranged<125, { 16 << 20 }>>,
    max_message_bytes: Option<Ranged<125, { 16 << 20 }>>,
    max_request_head_bytes: Option<Ranged<1024, { 64 << 10 }>>,
    max_body_bytes: Option<Ranged<0, { 16 << 20 }>>,
    max_output_bytes: Option<Ranged<{ 16 << 10 }, { 256 << 20 }>>,
    /// Output past which a connection is backed up (its feeders pause; lossy streams drop).
    high_water_bytes: Option<Ranged<{ 4 << 10 }, { 64 << 20 }>>,
    /// Output waiting in all connections together past which feeders pause (memory in total).
    max_total_output_bytes: Option<Ranged<{ 1 << 20 }, { 1 << 40 }>>,
    max_connections: Option<Ranged<1, { crate::net::MAX_INDEX as u64 - 1 }>>,
    /// Client connections from one IP address (Unix and in-process ones are exempt).
    max_connections_per_address: Option<Ranged<1, { crate::net::MAX_INDEX as u64 - 1 }>>,
    /// Addresses or networks (CIDR) not held to `maxConnectionsPerAddress`: a venue's NAT.
    per_address_exempt: Option<Vec<Network>>,
    /// User sessions held at once, and apps running in one session.
    max_sessions: Option<Ranged<1, 1_000_000>>,
    max_apps_per_session: Option<Ranged<1, 1_000>>,
    /// Outbound requests (webhooks) in flight, in total and to one app server.
    max_outbound: Option<Ranged<1, 65_536>>,
    max_webhooks_per_server: Option<Ranged<1, 65_536>>,
    /// Webhooks waiting for a slot at their app server, all servers together.
    max_queued_webhooks: Option<Ranged<1, 1_000_000>>,
    /// App start/stop requests per session: a burst, then one per `lifecycleRefillMs`.
    lifecycle_burst: Option<Ranged<1, 10_000>>,
    /// A `display_event` layout larger than this is refused (`LAYOUT_TOO_LARGE`).
    max_layout_bytes: Option<Ranged<256, { 16 << 20 }>>,
    /// App requests to the glasses pending per session (`TOO_MANY_REQUESTS` past it).
    max_pending_requests: Option<Ranged<1, 1_024>>,
}

/// Durations in milliseconds, counts as plain integers.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "an object")]
struct RawTimings {
    handshake_timeout_ms: Option<Ranged<100, 600_000>>,
    close_timeout_ms: Option<Ranged<10, 60_000>>,
    grace_period_ms: Option<Ranged<0, 86_400_000>>,
    app_connect_timeout_ms: Option<Ranged<100, 600_000>>,
    app_reconnect_grace_ms: Option<Ranged<0, 600_000>>,
    webhook_timeout_ms: Option<Ranged<100, 600_000>>,
    webhook_attempts: Option<Ranged<1, 10>>,
    webhook_backoff_ms: Option<Ranged<0, 600_000>>,
    /// How long a start may wait for a webhook slot at its app server.
    webhook_queue_timeout_ms: Option<Ranged<100, 3_600_000>>,
    restart_attempts: Option<Ranged<0, 100>>,
    restart_backoff_ms: Option<Ranged<0, 600_000>>,
    glasses_init_timeout_ms: Option<Ranged<100, 600_000>>,
    app_init_timeout_ms: Option<Ranged<100, 600_000>>,
    mic_debounce_ms: Option<Ranged<0, 60_000>>,
    stall_timeout_ms: Option<Ranged<100, 600_000>>,
    lifecycle_refill_ms: Option<Ranged<1, 3_600_000>>,
    /// 0: never ping.
    ping_interval_ms: Option<Ranged<0, 3_600_000>>,
    idle_timeout_ms: Option<Ranged<1_000, 3_600_000>>,
    /// The display manager (PROTOCOL §15).
    display_throttle_ms: Option<Ranged<0, 60_000>>,
    display_boot_ms: Option<Ranged<0, 60_000>>,
    display_lock_ms: Option<Ranged<0, 3_600_000>>,
    display_lock_inactive_ms: Option<Ranged<0, 3_600_000>>,
    display_min_lifetime_ms: Option<Ranged<0, 3_600_000>>,
    /// How long app requests wait for the glasses' reply before the box answers them.
    photo_request_timeout_ms: Option<Ranged<100, 600_000>>,
    audio_request_timeout_ms: Option<Ranged<100, 600_000>>,
    led_request_timeout_ms: Option<Ranged<100, 600_000>>,
    location_request_timeout_ms: Option<Ranged<100, 600_000>>,
    stream_request_timeout_ms: Option<Ranged<100, 600_000>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", expecting = "an object")]
struct RawApp {
    package_name: PackageName,
    name: NonEmpty,
    public_url: HttpUrl,
    hashed_api_key: KeyHash,
    #[serde(default)]
    is_system_app: bool,
    #[serde(default)]
    permissions: Vec<Permission>,
    #[serde(default)]
    allowed_addresses: Vec<AllowedAddress>,
    /// Streams a system app may publish into its sessions.
    #[serde(default)]
    publishes: Vec<Published>,
    /// The venue feed this publishing system app is: it connects once, with `sessionId`
    /// `"venue"` or `"venue:<feed>"`, and its transcripts reach every session.
    #[serde(default)]
    venue_feed: Option<FeedName>,
    /// The app's settings, as its `tpa_config.json` declares them.
    #[serde(default)]
    settings: Vec<SettingSpec>,
    /// For an `https://` `publicUrl`: a PEM file of the CAs its certificate is verified
    /// against instead of the system's (a venue's private CA).
    ca_file: Option<NonEmpty>,
}

/// One declared app setting: an object with a string `key`; `group` entries are headings.
#[derive(Deserialize)]
#[serde(try_from = "serde_json::Value")]
struct SettingSpec(serde_json::Value);

impl TryFrom<serde_json::Value> for SettingSpec {
    type Error = String;
    fn try_from(v: serde_json::Value) -> Result<Self, String> {
        let ok = v.is_object()
            && (v["type"] == "group" || v["key"].as_str().is_some_and(|k| !k.is_empty()));
        if ok {
            Ok(SettingSpec(v))
        } else {
            Err("expected an object with a non-empty string 'key' (or a 'group')".into())
        }
    }
}

impl RawConfig {
    /// Fill the core's config types in, from their defaults; then the checks across keys.
    fn into_config(self) -> Result<Config, String> {
        let mut server = ServerConfig::default();
        let mut hub = HubConfig::default();

        let listen = match self.listen {
            None => vec![ListenSpec::Tcp(SocketAddr::from(([127, 0, 0, 1], 8002)))],
            Some(l) if l.is_empty() => {
                return Err("listen: expected a non-empty array of addresses".into())
            }
            Some(l) => l,
        };
        if let Some(echo) = self.echo_route {
            server.echo = echo;
        }
        if let Some(WsUrl(u)) = self.public_ws_url {
            hub.public_ws_url = u;
        }
        hub.internal_ws_url = match self.internal_ws_url {
            Some(WsUrl(u)) => u,
            None => hub.public_ws_url.clone(),
        };
        let dev_secret = match self.jwt_secret {
            None => {
                hub.jwt_secret = DEV_SECRET.as_bytes().to_vec();
                true
            }
            Some(Secret(s)) => {
                let dev = s == DEV_SECRET;
                hub.jwt_secret = s.into_bytes();
                dev
            }
        };
        let state_dir = self.state_dir.map(|NonEmpty(s)| PathBuf::from(s));
        let postgres = self
            .postgres
            .map(|p| p.into_config(state_dir.is_some()))
            .transpose()?;
        let mut dev_operator_token = false;
        if let Some(RawUi {
            enabled: Some(true),
            operator_token,
        }) = self.ui
        {
            server.operator_token = Some(match operator_token {
                Some(Secret(t)) => t,
                None if dev_secret => {
                    dev_operator_token = true;
                    DEV_OPERATOR_TOKEN.to_string()
                }
                None => {
                    return Err(
                        "ui.operatorToken: required when ui.enabled and jwtSecret is set".into(),
                    )
                }
            });
        }

        if let Some(t) = self.tokens {
            if let Some(Ranged(secs)) = t.lifetime_seconds {
                hub.token_lifetime = Duration::from_secs(secs);
            }
            set(
                &mut hub.tokens.leeway_secs,
                t.leeway_seconds.map(|Ranged(s)| s),
            );
            set(
                &mut hub.tokens.accept_without_expiry,
                t.accept_without_expiry,
            );
        }
        hub.fetch_app_config = self.fetch_app_config.unwrap_or(true);
        if let Some(a) = self.account_login {
            use crate::hub::accounts::{AccountLogin, UpstreamKeys};
            let keys = match (a.hs256_secret, a.jwks_file) {
                (Some(Secret(s)), None) => UpstreamKeys::Hs256(s.into_bytes()),
                (None, Some(NonEmpty(path))) => UpstreamKeys::Jwks {
                    path: path.into(),
                    keys: Default::default(),
                },
                _ => {
                    return Err("accountLogin: give exactly one of hs256Secret and jwksFile".into())
                }
            };
            hub.account_login = Some(AccountLogin {
                keys,
                issuer: a.issuer.map(|NonEmpty(s)| s),
                audience: a.audience.map(|NonEmpty(s)| s),
                user_claim: a.user_claim.map_or_else(|| "email".into(), |NonEmpty(s)| s),
            });
        }
        if let Some(l) = self.limits {
            set(&mut server.ws.max_frame, l.max_frame_bytes);
            set(&mut server.ws.max_message, l.max_message_bytes);
            set(&mut server.http.max_head, l.max_request_head_bytes);
            set(&mut server.http.max_body, l.max_body_bytes);
            set(&mut server.max_output, l.max_output_bytes);
            set(&mut server.read_pause, l.high_water_bytes);
            set(&mut server.max_total_output, l.max_total_output_bytes);
            set(&mut server.max_connections, l.max_connections);
            set(&mut server.max_per_address, l.max_connections_per_address);
            if let Some(nets) = l.per_address_exempt {
                server.per_address_exempt = nets.into_iter().map(|Network(n)| n).collect();
            }
            set(&mut hub.max_sessions, l.max_sessions);
            set(&mut hub.max_apps_per_session, l.max_apps_per_session);
            set(&mut server.max_outbound, l.max_outbound);
            set(&mut hub.max_webhooks_per_server, l.max_webhooks_per_server);
            set(&mut hub.max_queued_webhooks, l.max_queued_webhooks);
            set(&mut hub.lifecycle_burst, l.lifecycle_burst);
            set(&mut hub.max_layout_bytes, l.max_layout_bytes);
            set(&mut hub.max_pending_requests, l.max_pending_requests);
        }
        if server.read_pause >= server.max_output {
            return Err(format!(
                "limits.highWaterBytes: must be below limits.maxOutputBytes ({})",
                server.max_output
            ));
        }
        if let Some(t) = self.timings {
            let h = &mut hub.timings;
            set(&mut server.handshake_timeout, t.handshake_timeout_ms);
            set(&mut server.close_timeout, t.close_timeout_ms);
            set(&mut h.grace_period, t.grace_period_ms);
            set(&mut h.app_connect_timeout, t.app_connect_timeout_ms);
            set(&mut h.app_reconnect_grace, t.app_reconnect_grace_ms);
            set(&mut h.webhook_timeout, t.webhook_timeout_ms);
            set(&mut h.webhook_attempts, t.webhook_attempts);
            set(&mut h.webhook_backoff, t.webhook_backoff_ms);
            set(&mut h.webhook_queue_timeout, t.webhook_queue_timeout_ms);
            set(&mut h.restart_attempts, t.restart_attempts);
            set(&mut h.restart_backoff, t.restart_backoff_ms);
            set(&mut h.glasses_init_timeout, t.glasses_init_timeout_ms);
            set(&mut h.app_init_timeout, t.app_init_timeout_ms);
            set(&mut h.mic_debounce, t.mic_debounce_ms);
            set(&mut server.stall_timeout, t.stall_timeout_ms);
            set(&mut hub.lifecycle_refill, t.lifecycle_refill_ms);
            if let Some(ms) = t.ping_interval_ms {
                let d: Duration = ms.into();
                server.ping_interval = (!d.is_zero()).then_some(d);
            }
            set(&mut server.idle_timeout, t.idle_timeout_ms);
            let d = &mut hub.timings.display;
            set(&mut d.throttle, t.display_throttle_ms);
            set(&mut d.boot, t.display_boot_ms);
            set(&mut d.lock, t.display_lock_ms);
            set(&mut d.lock_inactive, t.display_lock_inactive_ms);
            set(&mut d.min_lifetime, t.display_min_lifetime_ms);
            let r = &mut hub.timings.requests;
            set(&mut r.photo, t.photo_request_timeout_ms);
            set(&mut r.audio, t.audio_request_timeout_ms);
            set(&mut r.led, t.led_request_timeout_ms);
            set(&mut r.location, t.location_request_timeout_ms);
            set(&mut r.stream, t.stream_request_timeout_ms);
        }

        let mut tts = TtsConfig::default();
        if let Some(t) = self.tts {
            if let Some(NonEmpty(c)) = t.command {
                tts.command = c;
            }
            set(&mut tts.max_chars, t.max_chars);
            set(&mut tts.max_concurrent, t.max_concurrent);
            set(&mut tts.cache_bytes, t.cache_bytes);
            set(&mut tts.timeout, t.timeout_ms);
            if let Some(Voice(v)) = t.default_voice {
                tts.default_voice = v;
            }
            if let Some(voices) = t.voices {
                tts.voices = voices.into_iter().map(|(id, Voice(v))| (id, v)).collect();
            }
        }

        add_apps(&mut hub, self.apps.unwrap_or_default())?;

        Ok(Config {
            listen,
            server,
            hub,
            state_dir,
            postgres,
            dev_secret,
            dev_operator_token,
            tts,
        })
    }
}

/// The app entries into the hub's registry (and its venue feeds), checked against each other.
fn add_apps(hub: &mut HubConfig, apps: Vec<RawApp>) -> Result<(), String> {
    for (i, mut app) in apps.into_iter().enumerate() {
        if let Some(FeedName(feed)) = app.venue_feed.take() {
            if app.publishes.is_empty() {
                return Err(format!(
                    "apps[{i}].venueFeed: a venue feed must publish (set 'publishes')"
                ));
            }
            if hub.venue_feeds.iter().any(|(f, _)| *f == feed) {
                return Err(format!("apps[{i}].venueFeed: '{feed}' is listed twice"));
            }
            hub.venue_feeds.push((feed, app.package_name.0.clone()));
        }
        let spec = app.into_spec(i)?;
        if !spec.publishes.is_empty() && !spec.is_system_app {
            return Err(format!(
                "apps[{i}].publishes: only a system app (isSystemApp: true) may publish"
            ));
        }
        if hub.apps.iter().any(|a| a.package_name == spec.package_name) {
            return Err(format!(
                "apps[{i}].packageName: '{}' is listed twice",
                spec.package_name
            ));
        }
        hub.apps.push(spec);
    }
    Ok(())
}

impl RawApp {
    /// The spec of `apps[i]`, with the trust of an `https://` target read now, so a missing or
    /// empty CA file stops the start (or the reload) here rather than failing every webhook.
    fn into_spec(self, i: usize) -> Result<AppSpec, String> {
        let ca_file = self.ca_file.as_ref().map(|f| PathBuf::from(&f.0));
        let mut spec = self.into_plain_spec();
        if let Some(tls) = &mut spec.webhook_target.tls {
            augmentos_edge_transports::client_config(ca_file.as_deref()).map_err(|e| {
                let key = if ca_file.is_some() {
                    "caFile"
                } else {
                    "publicUrl"
                };
                format!("apps[{i}].{key}: {e}")
            })?;
            tls.ca_file = ca_file;
        } else if ca_file.is_some() {
            return Err(format!("apps[{i}].caFile: only for an https:// publicUrl"));
        }
        Ok(spec)
    }

    fn into_plain_spec(self) -> AppSpec {
        AppSpec {
            package_name: self.package_name.0,
            name: self.name.0,
            public_url: self.public_url.url,
            webhook_target: self.public_url.target,
            webhook_path: self.public_url.path,
            hashed_api_key: self.hashed_api_key.0,
            is_system_app: self.is_system_app,
            permissions: self.permissions.into_iter().map(|p| p.0).collect(),
            allowed_addresses: self.allowed_addresses.into_iter().map(|a| a.0).collect(),
            publishes: self.publishes.into_iter().map(|p| p.0).collect(),
            settings: self.settings.into_iter().map(|s| s.0).collect(),
        }
    }
}

/// Overwrite a default with a value the file gave.
fn set<T, R: Into<T>>(field: &mut T, value: Option<R>) {
    if let Some(v) = value {
        *field = v.into();
    }
}

// ---------------------------------------------------------------------------------------------
// Values that check themselves while they are parsed, so the error carries their path.

/// An integer from `LO` to `HI` inclusive.
#[derive(Clone, Copy)]
struct Ranged<const LO: u64, const HI: u64>(u64);

impl<'de, const LO: u64, const HI: u64> Deserialize<'de> for Ranged<LO, HI> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Within<const LO: u64, const HI: u64>;
        impl<const LO: u64, const HI: u64> Within<LO, HI> {
            fn check<E: de::Error>(n: impl Into<i128>) -> Result<u64, E> {
                let wide: i128 = n.into();
                u64::try_from(wide)
                    .ok()
                    .filter(|v| (LO..=HI).contains(v))
                    .ok_or_else(|| {
                        E::custom(format_args!(
                            "expected an integer from {LO} to {HI}, got {wide}"
                        ))
                    })
            }
        }
        impl<const LO: u64, const HI: u64> Visitor<'_> for Within<LO, HI> {
            type Value = Ranged<LO, HI>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "an integer from {LO} to {HI}")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                Self::check(n).map(Ranged)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                Self::check(n).map(Ranged)
            }
        }
        d.deserialize_u64(Within::<LO, HI>)
    }
}

impl<const LO: u64, const HI: u64> From<Ranged<LO, HI>> for usize {
    fn from(r: Ranged<LO, HI>) -> usize {
        // Every bound above is below 2^32.
        usize::try_from(r.0).unwrap_or(usize::MAX)
    }
}

impl<const LO: u64, const HI: u64> From<Ranged<LO, HI>> for u32 {
    fn from(r: Ranged<LO, HI>) -> u32 {
        u32::try_from(r.0).unwrap_or(u32::MAX)
    }
}

/// A `…Ms` key: milliseconds.
impl<const LO: u64, const HI: u64> From<Ranged<LO, HI>> for Duration {
    fn from(r: Ranged<LO, HI>) -> Duration {
        Duration::from_millis(r.0)
    }
}

/// A `String` newtype that checks (and may normalise) its text while it is parsed: `Name(s) =>
/// expr` makes `Name` deserialise from a JSON string through `TryFrom<String>`, whose error
/// serde reports at the value's path.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident($s:ident) => $check:expr) => {
        $(#[$doc])*
        #[derive(Deserialize)]
        #[serde(try_from = "String")]
        struct $name(String);

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from($s: String) -> Result<Self, String> {
                $check.map($name)
            }
        }
    };
}

checked_string! {
    NonEmpty(s) => if s.is_empty() {
        Err("expected a non-empty string".to_string())
    } else {
        Ok(s)
    }
}

checked_string! {
    /// A WebSocket base URL, kept without a trailing `/`.
    WsUrl(u) => if u.starts_with("ws://") || u.starts_with("wss://") {
        Ok(u.trim_end_matches('/').to_string())
    } else {
        Err(format!("expected a ws:// or wss:// URL, got '{u}'"))
    }
}

checked_string! {
    Secret(s) => if s.len() >= 16 {
        Ok(s)
    } else {
        Err("expected a string of at least 16 characters".to_string())
    }
}

checked_string! {
    PackageName(p) => if p.is_empty() {
        Err("expected a non-empty string".to_string())
    } else if p.chars().any(|c| c.is_whitespace() || c == '/') {
        Err(format!("'{p}' may not contain spaces or '/'"))
    } else {
        Ok(p)
    }
}

checked_string! {
    /// Lowercase hex SHA-256 (any case in the file).
    KeyHash(k) => {
        let k = k.to_ascii_lowercase();
        if k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(k)
        } else {
            Err("expected 64 hex characters (run `augmentos-edge hash-key KEY`)".to_string())
        }
    }
}

checked_string! {
    Permission(p) => if PERMISSIONS.contains(&p.as_str()) {
        Ok(p)
    } else {
        Err(format!("unknown permission '{p}' (known: {})", PERMISSIONS.join(", ")))
    }
}

checked_string! {
    /// An espeak-ng voice name (it is passed as an argument: never an option).
    Voice(v) => if valid_voice(&v) {
        Ok(v)
    } else {
        Err(format!("'{v}' is not an espeak-ng voice name (letters, digits, '-', '_', '+', '/'; starting with a letter or digit)"))
    }
}

checked_string! {
    /// A stream an app may publish.
    Published(p) => if p == "transcription" || p == "translation" {
        Ok(p)
    } else {
        Err(format!("'{p}' cannot be published (known: transcription, translation)"))
    }
}

checked_string! {
    /// A venue feed's name (`sessionId` `"venue:<name>"`).
    FeedName(n) => if !n.is_empty() && n.len() <= 64
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        Ok(n)
    } else {
        Err(format!("'{n}' is not a feed name (1-64 letters, digits, '-', '_')"))
    }
}

checked_string! {
    /// Where a system app may connect from: an IP address, `unix` or `in-process`.
    AllowedAddress(a) => if a == "unix" || a == "in-process" || a.parse::<IpAddr>().is_ok() {
        Ok(a)
    } else {
        Err(format!("'{a}' is not an IP address, 'unix' or 'in-process'"))
    }
}

/// An IP address or network in CIDR notation (`10.8.0.0/16`, `fd00::/8`, `192.168.50.1`).
#[derive(Deserialize)]
#[serde(try_from = "String")]
struct Network(crate::net::Cidr);

impl TryFrom<String> for Network {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse().map(Network)
    }
}

/// An app's base URL and the webhook target parsed from it.
#[derive(Deserialize)]
#[serde(try_from = "String")]
struct HttpUrl {
    url: String,
    target: Target,
    path: String,
}

impl TryFrom<String> for HttpUrl {
    type Error = String;
    fn try_from(url: String) -> Result<Self, String> {
        let (target, path) = parse_http_url(&url)?;
        Ok(HttpUrl { url, target, path })
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// Refuse `null` anywhere: it would otherwise read as "left out" and pick a default silently.
fn refuse_null(v: &Value, path: &mut String) -> Result<(), String> {
    let len = path.len();
    match v {
        Value::Null => return Err(format!("{path}: null is not a value (leave the key out)")),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let _ = write!(path, "[{i}]");
                refuse_null(item, path)?;
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                refuse_null(item, path)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

/// `path: message`, with serde's unknown-field error reworded as "unknown key 'path'" (the path
/// already ends with the key).
fn describe(e: serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    let msg = e.inner().to_string();
    // serde: "unknown field `k`, expected one of `a`, `b`" (or "…, expected `a`").
    if let Some((_, expected)) = msg
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
    {
        let known = expected
            .trim_start_matches(", expected one of ")
            .trim_start_matches(", expected ")
            .replace('`', "");
        return format!("unknown key '{path}' (known: {known})");
    }
    format!("{path}: {msg}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Timings;

    #[test]
    fn tts_keys() {
        let c = Config::from_json(
            r#"{"tts": {"command": "/usr/bin/espeak-ng", "maxChars": 200, "maxConcurrent": 3,
                "cacheBytes": 1000, "timeoutMs": 2000, "defaultVoice": "en-gb",
                "voices": {"21m00Tcm4TlvDq8ikWAM": "en-us+f3"}}}"#,
        )
        .unwrap();
        let t = &c.tts;
        assert_eq!(
            (t.command.as_str(), t.max_chars, t.max_concurrent),
            ("/usr/bin/espeak-ng", 200, 3)
        );
        assert_eq!((t.cache_bytes, t.timeout), (1000, Duration::from_secs(2)));
        assert_eq!(t.default_voice, "en-gb");
        assert_eq!(
            t.voices,
            [("21m00Tcm4TlvDq8ikWAM".to_string(), "en-us+f3".to_string())]
        );
        assert_eq!(Config::embedded().tts, TtsConfig::default());
        for (json, want) in [
            (r#"{"tts": {"voice": "x"}}"#, "unknown key 'tts.voice'"),
            (
                r#"{"tts": {"maxChars": 0}}"#,
                "tts.maxChars: expected an integer from 1",
            ),
            (
                r#"{"tts": {"defaultVoice": "-w /etc/x"}}"#,
                "tts.defaultVoice: '-w /etc/x' is not",
            ),
            (
                r#"{"tts": {"voices": {"a": "en us"}}}"#,
                "tts.voices.a: 'en us' is not",
            ),
            (
                r#"{"tts": {"command": ""}}"#,
                "tts.command: expected a non-empty string",
            ),
        ] {
            let e = error(json);
            assert!(e.starts_with(want), "{json}: {e}");
        }
    }

    #[test]
    fn embedded_default_is_loopback() {
        let c = Config::embedded();
        assert_eq!(
            c.listen,
            vec![ListenSpec::Tcp("127.0.0.1:8002".parse().unwrap())]
        );
        assert!(!c.server.echo);
        assert_eq!(c.hub.internal_ws_url, c.hub.public_ws_url);
        assert_eq!(c.state_dir, None);
    }

    const APP: &str = r#"{"packageName": "com.x", "name": "X", "publicUrl": "http://127.0.0.1:3000",
        "hashedApiKey": "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"}"#;

    /// A valid app entry with one field replaced or added.
    fn app_with(field: &str) -> String {
        let key = field.split('"').nth(1).unwrap_or("");
        let mut v: serde_json::Value = serde_json::from_str(APP).unwrap();
        let extra: serde_json::Value = serde_json::from_str(&format!("{{{field}}}")).unwrap();
        v.as_object_mut()
            .unwrap()
            .insert(key.into(), extra[key].clone());
        format!(r#"{{"apps": [{v}]}}"#)
    }

    /// The error for `json`, which must be refused.
    fn error(json: &str) -> String {
        match Config::from_json(json) {
            Ok(_) => panic!("{json}: accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn apps_are_parsed() {
        let c = Config::from_json(&format!(
            r#"{{"apps": [{APP}], "jwtSecret": "0123456789abcdef0"}}"#
        ))
        .unwrap();
        let app = &c.hub.apps[0];
        assert_eq!(app.package_name, "com.x");
        assert_eq!(app.name, "X");
        assert_eq!(app.public_url, "http://127.0.0.1:3000");
        assert_eq!(app.webhook_target.port, 3000);
        assert_eq!(app.webhook_path, "", "the prefix of /webhook");
        assert!(!app.is_system_app);
        assert!(app.permissions.is_empty());
        assert!(app.allowed_addresses.is_empty());
        assert_eq!(c.hub.jwt_secret, b"0123456789abcdef0");
        assert!(!c.dev_secret);
        assert!(Config::embedded().dev_secret);
        assert_eq!(Config::embedded().hub.jwt_secret, DEV_SECRET.as_bytes());
    }

    #[test]
    fn venue_feeds() {
        let feed = |pkg: &str, name: &str| {
            format!(
                r#"{{"packageName": "{pkg}", "name": "F", "publicUrl": "http://127.0.0.1:3100",
                "hashedApiKey": "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",
                "isSystemApp": true, "allowedAddresses": ["unix"],
                "publishes": ["transcription"], "venueFeed": "{name}"}}"#
            )
        };
        let c = Config::from_json(&format!(
            r#"{{"apps": [{APP}, {}, {}]}}"#,
            feed("sys.a", "main"),
            feed("sys.b", "hall-b")
        ))
        .unwrap();
        assert_eq!(
            c.hub.venue_feeds,
            [
                ("main".to_string(), "sys.a".to_string()),
                ("hall-b".to_string(), "sys.b".to_string())
            ]
        );
        assert!(Config::embedded().hub.venue_feeds.is_empty());
        let twice = format!(
            r#"{{"apps": [{}, {}]}}"#,
            feed("sys.a", "main"),
            feed("sys.b", "main")
        );
        assert_eq!(error(&twice), "apps[1].venueFeed: 'main' is listed twice");
        assert!(error(&app_with(r#""venueFeed": "main""#))
            .starts_with("apps[0].venueFeed: a venue feed must publish"));
        assert!(error(&app_with(r#""venueFeed": "a b""#))
            .starts_with("apps[0].venueFeed: 'a b' is not a feed name"));
    }

    #[test]
    fn app_options_are_parsed() {
        let c = Config::from_json(
            r#"{"apps": [{"packageName": "com.sys", "name": "Sys",
                "publicUrl": "http://[::1]:4000/prefix/",
                "hashedApiKey": "5E884898DA28047151D0E56F8DC6292773603D0D6AABBDD62A11EF721D1542D8",
                "isSystemApp": true, "permissions": ["MICROPHONE", "ALL"],
                "allowedAddresses": ["127.0.0.1", "::1", "unix", "in-process"]}]}"#,
        )
        .unwrap();
        let app = &c.hub.apps[0];
        assert!(app.is_system_app);
        assert_eq!(app.webhook_target.port, 4000);
        assert_eq!(app.webhook_path, "/prefix");
        assert_eq!(
            app.hashed_api_key,
            "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
        );
        assert_eq!(app.permissions, ["MICROPHONE", "ALL"]);
        assert_eq!(
            app.allowed_addresses,
            ["127.0.0.1", "::1", "unix", "in-process"]
        );
    }

    #[test]
    fn errors_name_the_key() {
        let owned: Vec<(String, &str)> = vec![
            (
                app_with("\"publicUrl\": \"ftp://x\""),
                "apps[0].publicUrl: 'ftp://x' must start with http:// or https://",
            ),
            (
                app_with("\"caFile\": \"/etc/edge/ca.pem\""),
                "apps[0].caFile: only for an https:// publicUrl",
            ),
            (
                app_with("\"hashedApiKey\": \"abc\""),
                "apps[0].hashedApiKey: expected 64 hex",
            ),
            (
                app_with("\"permissions\": [\"MIC\"]"),
                "apps[0].permissions[0]: unknown permission 'MIC'",
            ),
            (
                app_with("\"permissions\": [\"CAMERA\", \"FOO\"]"),
                "apps[0].permissions[1]: unknown permission 'FOO' (known: MICROPHONE,",
            ),
            (
                app_with("\"allowedAddresses\": [\"somewhere\"]"),
                "apps[0].allowedAddresses[0]: 'somewhere'",
            ),
            (
                app_with("\"packageName\": \"com x\""),
                "apps[0].packageName: 'com x' may not contain spaces",
            ),
            (
                app_with("\"name\": \"\""),
                "apps[0].name: expected a non-empty",
            ),
            (app_with("\"colour\": 1"), "unknown key 'apps[0].colour'"),
            (
                format!(r#"{{"apps": [{APP}, {APP}]}}"#),
                "apps[1].packageName: 'com.x' is listed twice",
            ),
        ];
        let mut cases: Vec<(&str, &str)> = vec![
            (r#"{"lsten": []}"#, "unknown key 'lsten' (known: listen,"),
            (
                r#"{"limits": {"maxFrame": 1}}"#,
                "unknown key 'limits.maxFrame'",
            ),
            (
                r#"{"limits": {"maxFrameBytes": 1}}"#,
                "limits.maxFrameBytes: expected an integer from 125 to 16777216, got 1",
            ),
            (r#"{"listen": ["nowhere"]}"#, "listen[0]: 'nowhere'"),
            (r#"{"listen": []}"#, "listen: expected a non-empty array"),
            (
                r#"{"echoRoute": "yes"}"#,
                "echoRoute: invalid type: string \"yes\", expected a boolean",
            ),
            (
                r#"{"timings": {"closeTimeoutMs": -1}}"#,
                "timings.closeTimeoutMs: expected an integer from 10 to 60000, got -1",
            ),
            ("[1]", "must be a JSON object"),
            ("{", "invalid JSON"),
            (
                r#"{"publicWsUrl": "http://x"}"#,
                "publicWsUrl: expected a ws://",
            ),
            (
                r#"{"internalWsUrl": "x"}"#,
                "internalWsUrl: expected a ws://",
            ),
            (
                r#"{"jwtSecret": "short"}"#,
                "jwtSecret: expected a string of at least 16",
            ),
            (
                r#"{"postgres": {"url": "mysql://a@b/c"}}"#,
                "postgres.url: expected postgres://",
            ),
            (
                r#"{"postgres": {"url": "postgres://a@b/c", "pool": 2}}"#,
                "unknown key 'postgres.pool'",
            ),
            (
                r#"{"postgres": {"url": "postgres://a@b/c", "queueLimit": -1}}"#,
                "postgres.queueLimit: expected an integer from 0",
            ),
            (
                r#"{"postgres": {"queueLimit": 5}}"#,
                "postgres: missing field `url`",
            ),
            (
                r#"{"stateDir": "/x", "postgres": {"url": "postgres://a@b/c"}}"#,
                "postgres: stateDir and postgres are exclusive",
            ),
            (
                r#"{"stateDir": ""}"#,
                "stateDir: expected a non-empty string",
            ),
            (
                r#"{"apps": [{"packageName": "a"}]}"#,
                "apps[0]: missing field `name`",
            ),
            (
                r#"{"apps": {}}"#,
                "apps: invalid type: map, expected a sequence",
            ),
        ];
        cases.extend(owned.iter().map(|(j, w)| (j.as_str(), *w)));
        for (json, want) in cases {
            let err = error(json);
            assert!(err.contains(want), "{json}: {err}");
        }
    }

    #[test]
    fn unknown_nested_key_is_named_with_its_path() {
        let err = error(r#"{"timings": {"gracePeriodMs": 5, "bogus": 1}}"#);
        assert!(
            err.starts_with("unknown key 'timings.bogus' (known: "),
            "{err}"
        );
        assert!(err.contains("gracePeriodMs"), "{err}");
        let err = error(&format!(
            r#"{{"apps": [{APP}, {{"packageName": "b", "nmae": "B"}}]}}"#
        ));
        assert!(err.starts_with("unknown key 'apps[1].nmae'"), "{err}");
    }

    #[test]
    fn wrong_type_is_named_with_its_path() {
        for (json, want) in [
            (
                app_with("\"isSystemApp\": \"yes\""),
                "apps[0].isSystemApp: invalid type: string \"yes\", expected a boolean",
            ),
            (
                app_with("\"permissions\": \"ALL\""),
                "apps[0].permissions: invalid type: string \"ALL\", expected a sequence",
            ),
            (
                app_with("\"permissions\": [1]"),
                "apps[0].permissions[0]: invalid type: integer `1`, expected a string",
            ),
            (
                r#"{"limits": {"maxBodyBytes": "1M"}}"#.to_string(),
                "limits.maxBodyBytes: invalid type: string \"1M\", expected an integer from 0 to",
            ),
            (
                r#"{"timings": {"webhookAttempts": 2.5}}"#.to_string(),
                "timings.webhookAttempts: invalid type: floating point `2.5`, expected an integer",
            ),
            (
                r#"{"timings": 5}"#.to_string(),
                "timings: invalid type: integer `5`, expected an object",
            ),
            (
                r#"{"listen": [8002]}"#.to_string(),
                "listen[0]: invalid type: integer `8002`, expected a string",
            ),
        ] {
            let err = error(&json);
            assert!(err.contains(want), "{json}: {err}");
        }
    }

    #[test]
    fn out_of_range_number_is_named_with_its_path() {
        // Each bound is inclusive: the bound passes, one past it is refused.
        for (key, lo, hi) in [
            ("limits.maxFrameBytes", 125, 16 << 20),
            ("limits.maxRequestHeadBytes", 1024, 64 << 10),
            ("limits.maxConnections", 1, crate::net::MAX_INDEX as u64 - 1),
            ("timings.webhookAttempts", 1, 10),
            ("timings.idleTimeoutMs", 1000, 3_600_000),
        ] {
            let (object, field) = key.split_once('.').unwrap();
            let at = |n: u64| Config::from_json(&format!(r#"{{"{object}": {{"{field}": {n}}}}}"#));
            assert!(at(lo).is_ok(), "{key} = {lo}");
            assert!(at(hi).is_ok(), "{key} = {hi}");
            let want = format!("{key}: expected an integer from {lo} to {hi}, got ");
            for bad in [lo.wrapping_sub(1), hi + 1] {
                if bad == u64::MAX {
                    continue; // lo is 0: nothing below it
                }
                let err = at(bad).unwrap_err();
                assert_eq!(err, format!("{want}{bad}"), "{key} = {bad}");
            }
        }
        let err = error(r#"{"timings": {"restartAttempts": 18446744073709551615}}"#);
        assert!(
            err.contains("timings.restartAttempts: expected an integer from 0 to 100"),
            "{err}"
        );
    }

    #[test]
    fn null_is_not_a_value() {
        for (json, want) in [
            (r#"{"jwtSecret": null}"#.to_string(), "jwtSecret: null"),
            (
                r#"{"timings": {"gracePeriodMs": null}}"#.to_string(),
                "timings.gracePeriodMs: null",
            ),
            (
                app_with("\"permissions\": [\"ALL\", null]"),
                "apps[0].permissions[1]: null",
            ),
        ] {
            let err = error(&json);
            assert!(err.contains(want), "{json}: {err}");
        }
    }

    #[test]
    fn per_address_exempt_networks_are_parsed_and_bad_ones_refused_by_key() {
        let c = Config::from_json(
            r#"{"limits": {"perAddressExempt": ["192.168.50.1", "10.8.0.0/16", "fd00::/8"]}}"#,
        )
        .unwrap();
        let nets: Vec<String> = c
            .server
            .per_address_exempt
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["192.168.50.1/32", "10.8.0.0/16", "fd00::/8"]);
        assert!(Config::embedded().server.per_address_exempt.is_empty());
        for (bad, want) in [
            (
                r#"["10.8.0.0/33"]"#,
                "limits.perAddressExempt[0]: '10.8.0.0/33'",
            ),
            (
                r#"["10.0.0.1", "nat.example"]"#,
                "limits.perAddressExempt[1]: 'nat.example'",
            ),
            (
                r#"["fd00::/129"]"#,
                "limits.perAddressExempt[0]: 'fd00::/129'",
            ),
            (r#""10.0.0.0/8""#, "limits.perAddressExempt: "),
            (r#"[8]"#, "limits.perAddressExempt[0]: "),
        ] {
            let err = error(&format!(r#"{{"limits": {{"perAddressExempt": {bad}}}}}"#));
            assert!(err.starts_with(want), "{bad}: {err}");
        }
    }

    #[test]
    fn values_are_applied() {
        let c = Config::from_json(
            r#"{"listen": ["[::1]:9000", "unix:/tmp/x.sock"], "echoRoute": true,
                "limits": {"maxMessageBytes": 1000}, "timings": {"handshakeTimeoutMs": 500}}"#,
        )
        .unwrap();
        assert_eq!(c.listen[1], ListenSpec::Unix("/tmp/x.sock".into()));
        assert!(c.server.echo);
        assert_eq!(c.server.ws.max_message, 1000);
        assert_eq!(c.server.handshake_timeout, Duration::from_millis(500));
    }

    #[test]
    fn every_key_reaches_its_field() {
        let c = Config::from_json(
            r#"{"listen": ["/run/edge.sock"], "echoRoute": true,
                "publicWsUrl": "wss://edge.example/", "internalWsUrl": "ws://127.0.0.1:8002",
                "jwtSecret": "augmentos-edge-development-secret", "stateDir": "/var/lib/edge",
                "limits": {"maxFrameBytes": 1001, "maxMessageBytes": 1002,
                    "maxRequestHeadBytes": 1030, "maxBodyBytes": 1004,
                    "maxOutputBytes": 100005, "maxConnections": 1006, "maxLayoutBytes": 4096,
                    "maxConnectionsPerAddress": 1007, "maxSessions": 1008,
                    "maxAppsPerSession": 9},
                "timings": {"handshakeTimeoutMs": 2001, "closeTimeoutMs": 2002,
                    "gracePeriodMs": 2003, "appConnectTimeoutMs": 2004,
                    "appReconnectGraceMs": 2005, "webhookTimeoutMs": 2006,
                    "webhookAttempts": 7, "webhookBackoffMs": 2008, "restartAttempts": 9,
                    "restartBackoffMs": 2010, "glassesInitTimeoutMs": 2011,
                    "pingIntervalMs": 2012, "idleTimeoutMs": 2013,
                    "displayThrottleMs": 301, "displayBootMs": 1501, "displayLockMs": 10001,
                    "displayLockInactiveMs": 2001, "displayMinLifetimeMs": 1001}}"#,
        )
        .unwrap();
        let ms = Duration::from_millis;
        assert_eq!(c.listen, [ListenSpec::Unix("/run/edge.sock".into())]);
        assert!(c.server.echo);
        assert_eq!(c.hub.public_ws_url, "wss://edge.example");
        assert_eq!(c.hub.internal_ws_url, "ws://127.0.0.1:8002");
        assert!(
            c.dev_secret,
            "the development secret, even when written out"
        );
        assert_eq!(c.state_dir, Some(PathBuf::from("/var/lib/edge")));
        let s = &c.server;
        assert_eq!(
            (
                s.ws.max_frame,
                s.ws.max_message,
                s.http.max_head,
                s.http.max_body
            ),
            (1001, 1002, 1030, 1004)
        );
        assert_eq!((s.max_output, s.max_connections), (100_005, 1006));
        assert_eq!(c.hub.max_layout_bytes, 4096);
        assert_eq!(s.max_per_address, 1007);
        assert_eq!((c.hub.max_sessions, c.hub.max_apps_per_session), (1008, 9));
        assert_eq!((s.handshake_timeout, s.close_timeout), (ms(2001), ms(2002)));
        assert_eq!(
            (s.ping_interval, s.idle_timeout),
            (Some(ms(2012)), ms(2013))
        );
        let t = &c.hub.timings;
        assert_eq!(t.grace_period, ms(2003));
        assert_eq!(t.app_connect_timeout, ms(2004));
        assert_eq!(t.app_reconnect_grace, ms(2005));
        assert_eq!(t.webhook_timeout, ms(2006));
        assert_eq!(t.webhook_attempts, 7);
        assert_eq!(t.webhook_backoff, ms(2008));
        assert_eq!(t.restart_attempts, 9);
        assert_eq!(t.restart_backoff, ms(2010));
        assert_eq!(t.glasses_init_timeout, ms(2011));
        let d = &t.display;
        assert_eq!(
            (d.throttle, d.boot, d.lock, d.lock_inactive, d.min_lifetime),
            (ms(301), ms(1501), ms(10001), ms(2001), ms(1001))
        );
        // Keys left out keep the core's defaults.
        assert_eq!(
            t.restart_reset_after,
            Timings::default().restart_reset_after
        );
        assert_eq!(s.read_pause, ServerConfig::default().read_pause);
    }

    #[test]
    fn the_total_output_budget_is_a_limit_with_a_floor() {
        let c = Config::from_json(r#"{"limits": {"maxTotalOutputBytes": 8388608}}"#).unwrap();
        assert_eq!(c.server.max_total_output, 8 << 20);
        let c = Config::from_json("{}").unwrap();
        assert_eq!(
            c.server.max_total_output,
            ServerConfig::default().max_total_output
        );
        let e = Config::from_json(r#"{"limits": {"maxTotalOutputBytes": 4096}}"#)
            .err()
            .unwrap();
        assert!(e.contains("limits.maxTotalOutputBytes"), "{e}");
    }

    #[test]
    fn a_listen_entry_can_be_tls() {
        let c = Config::from_json(
            r#"{"listen": ["127.0.0.1:8002", {"address": "0.0.0.0:8443",
                "tls": {"certificate": "/etc/edge/chain.pem", "key": "/etc/edge/key.pem"}},
                {"address": "[::1]:9000"}]}"#,
        )
        .unwrap();
        assert_eq!(
            c.listen,
            [
                ListenSpec::Tcp("127.0.0.1:8002".parse().unwrap()),
                ListenSpec::Tls(TlsListen {
                    address: "0.0.0.0:8443".parse().unwrap(),
                    certificate: "/etc/edge/chain.pem".into(),
                    key: "/etc/edge/key.pem".into(),
                }),
                ListenSpec::Tcp("[::1]:9000".parse().unwrap()),
            ]
        );
        for (json, want) in [
            (
                r#"{"listen": [{"address": "0.0.0.0:8443", "tls": {"certificate": "c"}}]}"#,
                "listen[0].tls: missing field `key`",
            ),
            (
                r#"{"listen": [{"address": "0.0.0.0:8443", "tls": {"certificate": "c", "key": ""}}]}"#,
                "listen[0].tls.key: expected a non-empty string",
            ),
            (
                r#"{"listen": [{"address": "unix:/x", "tls": {"certificate": "c", "key": "k"}}]}"#,
                "listen[0]: 'unix:/x' is not an IP:port address (TLS)",
            ),
            (
                r#"{"listen": [{"address": "0.0.0.0:8443", "tsl": {}}]}"#,
                "unknown key 'listen[0].tsl'",
            ),
            (
                r#"{"listen": [{"port": 1}]}"#,
                "unknown key 'listen[0].port'",
            ),
            (r#"{"listen": [{}]}"#, "listen[0]: missing field `address`"),
        ] {
            let err = error(json);
            assert!(err.contains(want), "{json}: {err}");
        }
    }

    #[test]
    fn ping_interval_zero_turns_pings_off() {
        let c = Config::from_json(r#"{"timings": {"pingIntervalMs": 0}}"#).unwrap();
        assert_eq!(c.server.ping_interval, None);
        let c = Config::from_json("{}").unwrap();
        assert_eq!(
            c.server.ping_interval,
            ServerConfig::default().ping_interval
        );
    }

    #[test]
    fn request_keys_reach_their_fields() {
        let c = Config::from_json(
            r#"{"limits": {"maxPendingRequests": 3},
                "timings": {"photoRequestTimeoutMs": 1001, "audioRequestTimeoutMs": 1002,
                    "ledRequestTimeoutMs": 1003, "locationRequestTimeoutMs": 1004,
                    "streamRequestTimeoutMs": 1005}}"#,
        )
        .unwrap();
        let ms = Duration::from_millis;
        let r = &c.hub.timings.requests;
        assert_eq!(c.hub.max_pending_requests, 3);
        assert_eq!(
            (r.photo, r.audio, r.led, r.location, r.stream),
            (ms(1001), ms(1002), ms(1003), ms(1004), ms(1005))
        );
        let err = Config::from_json(r#"{"limits": {"maxPendingRequests": 0}}"#).unwrap_err();
        assert!(err.contains("limits.maxPendingRequests"), "{err}");
    }

    #[test]
    fn webhook_queue_keys_reach_their_fields_and_are_checked() {
        let c = Config::from_json(
            r#"{"limits": {"maxQueuedWebhooks": 7}, "timings": {"webhookQueueTimeoutMs": 1234}}"#,
        )
        .unwrap();
        assert_eq!(c.hub.max_queued_webhooks, 7);
        assert_eq!(
            c.hub.timings.webhook_queue_timeout,
            Duration::from_millis(1234)
        );
        let d = Config::embedded();
        assert_eq!(d.hub.max_queued_webhooks, 10_000);
        assert_eq!(d.hub.timings.webhook_queue_timeout, Duration::from_secs(60));
        for (bad, key) in [
            (
                r#"{"limits": {"maxQueuedWebhooks": 0}}"#,
                "limits.maxQueuedWebhooks",
            ),
            (
                r#"{"timings": {"webhookQueueTimeoutMs": 5}}"#,
                "timings.webhookQueueTimeoutMs",
            ),
        ] {
            let err = Config::from_json(bad).unwrap_err();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn the_ui_is_off_unless_enabled_and_needs_a_token_with_a_real_secret() {
        let c = Config::embedded();
        assert_eq!(c.server.operator_token.as_deref(), Some(DEV_OPERATOR_TOKEN));
        assert!(c.dev_operator_token);
        let secret = r#""jwtSecret": "0123456789abcdef0""#;
        for ui in [
            "",
            r#", "ui": {}"#,
            r#", "ui": {"enabled": false, "operatorToken": "0123456789abcdefX"}"#,
        ] {
            let c = Config::from_json(&format!("{{{secret}{ui}}}")).unwrap();
            assert_eq!(c.server.operator_token, None, "{ui}");
        }
        let c = Config::from_json(&format!(
            r#"{{{secret}, "ui": {{"enabled": true, "operatorToken": "0123456789abcdefX"}}}}"#
        ))
        .unwrap();
        assert_eq!(
            c.server.operator_token.as_deref(),
            Some("0123456789abcdefX")
        );
        assert!(!c.dev_operator_token);
        let err = error(&format!(r#"{{{secret}, "ui": {{"enabled": true}}}}"#));
        assert!(err.contains("ui.operatorToken"), "{err}");
        let err = error(r#"{"ui": {"enabled": true, "operatorToken": "short"}}"#);
        assert!(
            err.contains("ui.operatorToken") && err.contains("16"),
            "{err}"
        );
        let err = error(r#"{"ui": {"enabled": true, "token": "0123456789abcdefX"}}"#);
        assert!(err.contains("ui.token"), "{err}");
    }

    #[test]
    fn token_keys_reach_their_fields_and_are_checked() {
        let c = Config::embedded();
        assert_eq!(c.hub.token_lifetime, Duration::from_secs(86_400));
        assert_eq!(c.hub.tokens, crate::auth::jwt::TokenPolicy::default());
        let c = Config::from_json(
            r#"{"tokens": {"lifetimeSeconds": 3600, "leewaySeconds": 5,
                "acceptWithoutExpiry": false}}"#,
        )
        .unwrap();
        assert_eq!(c.hub.token_lifetime, Duration::from_secs(3600));
        assert_eq!(c.hub.tokens.leeway_secs, 5);
        assert!(!c.hub.tokens.accept_without_expiry);
        assert_eq!(c.hub.account_login, None);
        let c = Config::from_json(
            r#"{"accountLogin": {"hs256Secret": "0123456789abcdef", "issuer": "i",
                "audience": "a", "userClaim": "sub"}}"#,
        )
        .unwrap();
        let a = c.hub.account_login.expect("accountLogin");
        assert_eq!(
            a.keys,
            crate::hub::accounts::UpstreamKeys::Hs256(b"0123456789abcdef".to_vec())
        );
        assert_eq!(
            (a.issuer.as_deref(), a.audience.as_deref()),
            (Some("i"), Some("a"))
        );
        assert_eq!(a.user_claim, "sub");
        let c = Config::from_json(r#"{"accountLogin": {"hs256Secret": "0123456789abcdef"}}"#);
        assert_eq!(c.unwrap().hub.account_login.unwrap().user_claim, "email");
        for (json, key) in [
            (
                r#"{"tokens": {"lifetimeSeconds": 0}}"#,
                "tokens.lifetimeSeconds",
            ),
            (
                r#"{"tokens": {"leewaySeconds": 3601}}"#,
                "tokens.leewaySeconds",
            ),
            (
                r#"{"tokens": {"acceptWithoutExpiry": 1}}"#,
                "tokens.acceptWithoutExpiry",
            ),
            (r#"{"tokens": {"lifetime": 1}}"#, "tokens"),
            (r#"{"accountLogin": {}}"#, "accountLogin: give exactly one"),
            (
                r#"{"accountLogin": {"hs256Secret": "short"}}"#,
                "accountLogin.hs256Secret",
            ),
            (
                r#"{"accountLogin": {"hs256Secret": "0123456789abcdef", "jwks": "x"}}"#,
                "accountLogin",
            ),
            (
                r#"{"accountLogin": {"hs256Secret": "0123456789abcdef", "jwksFile": "x"}}"#,
                "accountLogin: give exactly one",
            ),
            (
                r#"{"accountLogin": {"jwksFile": ""}}"#,
                "accountLogin.jwksFile",
            ),
            (
                r#"{"accountLogin": {"hs256Secret": "0123456789abcdef", "issuer": ""}}"#,
                "accountLogin.issuer",
            ),
        ] {
            let err = error(json);
            assert!(err.contains(key), "{json}: {err}");
        }
    }
}
