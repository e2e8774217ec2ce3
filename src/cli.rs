//! Shell layer: the command line's grammar — subcommands, their options, `--help` on each,
//! `--version` — parsed with `lexopt` (which knows `--opt value`, `--opt=value`, `-h`, `--` and
//! non-UTF-8 arguments; the help texts are ours). Also the `check-config` report: the effective
//! configuration, defaults filled in, secrets masked.
//!
//! Invariant: a usage error is a [`Usage`] value; `main` prints it with the command's usage and
//! exits 2. Nothing here reads a file or runs anything.

use augmentos_edge::config::{Config, ListenSpec};
use augmentos_edge::hub::accounts::UpstreamKeys;
use serde_json::{json, Value};

pub const VERSION: &str = concat!("augmentos-edge ", env!("CARGO_PKG_VERSION"));

pub const USAGE: &str = "usage:
  augmentos-edge serve [--config FILE]                 run the server (embedded loopback default without --config)
  augmentos-edge check-config FILE                     check a config file and print the effective config, secrets masked
  augmentos-edge hash-key KEY                          print the stored form (hashedApiKey) of an app API key
  augmentos-edge token --user EMAIL [--expires DURATION] [--config FILE]
                                                       print a glasses token for that user
  augmentos-edge device add NAME... [--expires DURATION] [--config FILE]
  augmentos-edge device list [--config FILE]
  augmentos-edge device revoke NAME [--config FILE]    venue-owned glasses: tokens, audit, revocation
  augmentos-edge app-token --package NAME [--config FILE]
                                                       print an app token (one secret instead of package + key)
  augmentos-edge help [COMMAND]                        this text, or a command's
  augmentos-edge --version                             the version

Every command takes --help. Usage errors exit with status 2.";

/// The help of one command.
pub fn help(command: &str) -> Option<&'static str> {
    Some(match command {
        "serve" => {
            "usage: augmentos-edge serve [--config FILE]

Run the server. Without --config it runs on an embedded default (127.0.0.1:8002, no apps, the
public development secret). AUGMENTOS_AUTH_JWT_SECRET overrides the configured jwtSecret.
Signals: SIGTERM/SIGINT stop in order (WebSockets closed with 1001, exit 0); SIGHUP reloads the
app registry from FILE and re-reads TLS certificates without dropping sessions."
        }
        "check-config" => {
            "usage: augmentos-edge check-config FILE

Parse and check FILE as `serve --config FILE` would (the environment override included) and
print the effective configuration as JSON, defaults filled in, secrets masked. TLS certificate
files are read too. Exits 0 when the config is valid, 2 with a message naming the key if not."
        }
        "hash-key" => {
            "usage: augmentos-edge hash-key KEY

Print the stored form of an app API key, for the app's hashedApiKey in the config."
        }
        "token" => {
            "usage: augmentos-edge token --user EMAIL [--expires DURATION] [--config FILE]

Print a glasses token for EMAIL, signed with the config's jwtSecret. It expires after DURATION
(90s, 30m, 12h, 7d; plain seconds too), by default after the config's tokens.lifetimeSeconds."
        }
        "device" => {
            "usage: augmentos-edge device add NAME... [--expires DURATION] [--config FILE]
       augmentos-edge device list [--config FILE]
       augmentos-edge device revoke NAME [--config FILE]

Venue-owned glasses, on the RUNNING box: these commands call its operator API
(/ui/api/devices, with ui.operatorToken from FILE) over its first Unix or plain TCP listener,
so a revoke takes effect at once (the pair is disconnected) and is durable (stateDir).
add: one device and token per NAME (A-Z a-z 0-9 . _ -, never reused), expiring after DURATION
(90s, 30m, 12h, 7d) or the config's tokens.lifetimeSeconds; prints NAME, user id, expiry, token.
list: name, user id, created, expires, last seen, revoked (no tokens).
revoke: the device's tokens are refused from now on, and its connected glasses closed."
        }
        "app-token" => {
            "usage: augmentos-edge app-token --package NAME [--config FILE]

Print an app token for the app NAME of the config (one secret instead of package + key)."
        }
        "help" => "usage: augmentos-edge help [COMMAND]",
        _ => return None,
    })
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Serve {
        config: Option<String>,
    },
    CheckConfig {
        file: String,
    },
    HashKey {
        key: String,
    },
    Token {
        user: String,
        config: Option<String>,
        /// Seconds; `None`: the config's default lifetime.
        expires: Option<u64>,
    },
    Device {
        action: DeviceAction,
        config: Option<String>,
    },
    AppToken {
        package: String,
        config: Option<String>,
    },
    /// Print this text and exit 0.
    Print(String),
}

/// What `device` is asked to do.
#[derive(Debug, PartialEq, Eq)]
pub enum DeviceAction {
    Add {
        names: Vec<String>,
        expires: Option<u64>,
    },
    List,
    Revoke {
        name: String,
    },
}

/// A duration as an operator types it: `90s`, `30m`, `12h`, `7d`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => 0,
    };
    digits
        .parse::<u64>()
        .ok()
        .filter(|n| scale > 0 && *n > 0)
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("'{text}' is not a duration (like 90s, 30m, 12h, 7d)"))
}

/// A usage error: what was wrong, and the usage to show with it.
#[derive(Debug)]
pub struct Usage {
    pub message: String,
    pub usage: &'static str,
}

pub fn parse(args: Vec<std::ffi::OsString>) -> Result<Command, Usage> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let fail = |message: String, usage: &'static str| Usage { message, usage };
    let command = match p.next() {
        Ok(None) => return Ok(Command::Serve { config: None }),
        Ok(Some(Long("version") | Short('V'))) => return Ok(Command::Print(VERSION.into())),
        Ok(Some(Long("help") | Short('h'))) => return Ok(Command::Print(USAGE.into())),
        Ok(Some(Value(v))) => v.string().map_err(|e| fail(e.to_string(), USAGE))?,
        Ok(Some(other)) => return Err(fail(other.unexpected().to_string(), USAGE)),
        Err(e) => return Err(fail(e.to_string(), USAGE)),
    };
    let Some(usage) = help(&command) else {
        return Err(fail(format!("unknown command '{command}'"), USAGE));
    };
    let mut config = None;
    let mut named = None; // --user or --package
    let mut expires = None;
    let mut positional: Vec<String> = Vec::new();
    let name_flag = match command.as_str() {
        "token" => Some("user"),
        "app-token" => Some("package"),
        _ => None,
    };
    let takes_config = matches!(command.as_str(), "serve" | "token" | "app-token" | "device");
    let takes_expires = matches!(command.as_str(), "token" | "device");
    let positionals = match command.as_str() {
        "check-config" | "hash-key" | "help" => 1,
        "device" => usize::MAX,
        _ => 0,
    };
    loop {
        let arg = p.next().map_err(|e| fail(e.to_string(), usage))?;
        let Some(arg) = arg else { break };
        match arg {
            Long("help") | Short('h') => return Ok(Command::Print(usage.into())),
            Long("config") if takes_config => {
                let v = p.value().map_err(|e| fail(e.to_string(), usage))?;
                config = Some(v.string().map_err(|e| fail(e.to_string(), usage))?);
            }
            Long("expires") if takes_expires => {
                let v = p.value().map_err(|e| fail(e.to_string(), usage))?;
                let v = v.string().map_err(|e| fail(e.to_string(), usage))?;
                expires = Some(parse_duration(&v).map_err(|e| fail(e, usage))?);
            }
            Long(f) if Some(f) == name_flag => {
                let v = p.value().map_err(|e| fail(e.to_string(), usage))?;
                named = Some(v.string().map_err(|e| fail(e.to_string(), usage))?);
            }
            Value(v) if positional.len() < positionals => {
                positional.push(v.string().map_err(|e| fail(e.to_string(), usage))?);
            }
            other => return Err(fail(other.unexpected().to_string(), usage)),
        }
    }
    let needs = |what: &str| fail(format!("{command} needs {what}"), usage);
    Ok(match command.as_str() {
        "serve" => Command::Serve { config },
        "check-config" => Command::CheckConfig {
            file: positional.pop().ok_or_else(|| needs("FILE"))?,
        },
        "hash-key" => Command::HashKey {
            key: positional.pop().ok_or_else(|| needs("exactly one KEY"))?,
        },
        "token" => Command::Token {
            user: named.ok_or_else(|| needs("--user EMAIL"))?,
            config,
            expires,
        },
        "device" => {
            let mut args = positional.into_iter();
            let action = match (args.next().as_deref(), args.len()) {
                (Some("add"), n) if n > 0 => DeviceAction::Add {
                    names: args.collect(),
                    expires,
                },
                (Some("list"), 0) if expires.is_none() => DeviceAction::List,
                (Some("revoke"), 1) if expires.is_none() => DeviceAction::Revoke {
                    name: args.next().unwrap_or_default(),
                },
                _ => return Err(needs("add NAME..., list or revoke NAME")),
            };
            Command::Device { action, config }
        }
        "app-token" => Command::AppToken {
            package: named.ok_or_else(|| needs("--package NAME"))?,
            config,
        },
        _ => match positional.pop() {
            None => Command::Print(USAGE.into()),
            Some(c) => match help(&c) {
                Some(h) => Command::Print(h.into()),
                None => return Err(fail(format!("unknown command '{c}'"), USAGE)),
            },
        },
    })
}

/// The effective configuration as JSON, in the file's own shape, with secrets masked.
pub fn effective(c: &Config) -> Value {
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    let s = &c.server;
    let t = &c.hub.timings;
    let listen: Vec<Value> = c
        .listen
        .iter()
        .map(|l| match l {
            ListenSpec::Tcp(a) => json!(a.to_string()),
            ListenSpec::Unix(p) => json!(format!("unix:{}", p.display())),
            ListenSpec::Tls(t) => json!({"address": t.address.to_string(), "tls": {
                "certificate": t.certificate.display().to_string(),
                "key": t.key.display().to_string()}}),
        })
        .collect();
    let secret = if c.dev_secret {
        "<masked: the PUBLIC development secret>".to_string()
    } else {
        format!("<masked: {} bytes>", c.hub.jwt_secret.len())
    };
    let apps: Vec<Value> = c
        .hub
        .apps
        .iter()
        .map(|a| {
            json!({
                "packageName": a.package_name,
                "name": a.name,
                "publicUrl": a.public_url,
                "hashedApiKey": "<masked>",
                "isSystemApp": a.is_system_app,
                "permissions": a.permissions,
                "allowedAddresses": a.allowed_addresses,
                "publishes": a.publishes,
            })
        })
        .collect();
    json!({
        "listen": listen,
        "publicWsUrl": c.hub.public_ws_url,
        "internalWsUrl": c.hub.internal_ws_url,
        "jwtSecret": secret,
        "stateDir": c.state_dir.as_ref().map(|d| d.display().to_string()),
        "postgres": c.postgres.as_ref().map(|p| json!({"url": p.url.to_string(), "queueLimit": p.queue_limit})),
        "echoRoute": s.echo,
        "tts": {
            "command": c.tts.command,
            "maxChars": c.tts.max_chars,
            "maxConcurrent": c.tts.max_concurrent,
            "cacheBytes": c.tts.cache_bytes,
            "timeoutMs": ms(c.tts.timeout),
            "defaultVoice": c.tts.default_voice,
            "voices": c.tts.voices.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<String, Value>>(),
        },
        "ui": {
            "enabled": s.operator_token.is_some(),
            "operatorToken": match (&s.operator_token, c.dev_operator_token) {
                (None, _) => None,
                (Some(_), true) => Some("<masked: the PUBLIC development operator token>"),
                (Some(_), false) => Some("<masked>"),
            },
        },
        "limits": {
            "maxFrameBytes": s.ws.max_frame,
            "maxMessageBytes": s.ws.max_message,
            "maxRequestHeadBytes": s.http.max_head,
            "maxBodyBytes": s.http.max_body,
            "maxOutputBytes": s.max_output,
            "highWaterBytes": s.read_pause,
            "maxTotalOutputBytes": s.max_total_output,
            "maxConnections": s.max_connections,
            "maxConnectionsPerAddress": s.max_per_address,
            "perAddressExempt": s.per_address_exempt.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            "maxOutbound": s.max_outbound,
            "maxWebhooksPerServer": c.hub.max_webhooks_per_server,
            "maxQueuedWebhooks": c.hub.max_queued_webhooks,
            "lifecycleBurst": c.hub.lifecycle_burst,
        },
        "timings": {
            "handshakeTimeoutMs": ms(s.handshake_timeout),
            "closeTimeoutMs": ms(s.close_timeout),
            "pingIntervalMs": s.ping_interval.map_or(0, ms),
            "idleTimeoutMs": ms(s.idle_timeout),
            "stallTimeoutMs": ms(s.stall_timeout),
            "gracePeriodMs": ms(t.grace_period),
            "glassesInitTimeoutMs": ms(t.glasses_init_timeout),
            "appConnectTimeoutMs": ms(t.app_connect_timeout),
            "appReconnectGraceMs": ms(t.app_reconnect_grace),
            "appInitTimeoutMs": ms(t.app_init_timeout),
            "webhookTimeoutMs": ms(t.webhook_timeout),
            "webhookAttempts": t.webhook_attempts,
            "webhookBackoffMs": ms(t.webhook_backoff),
            "webhookQueueTimeoutMs": ms(t.webhook_queue_timeout),
            "restartAttempts": t.restart_attempts,
            "restartBackoffMs": ms(t.restart_backoff),
            "micDebounceMs": ms(t.mic_debounce),
            "lifecycleRefillMs": ms(c.hub.lifecycle_refill),
        },
        "tokens": {
            "lifetimeSeconds": c.hub.token_lifetime.as_secs(),
            "leewaySeconds": c.hub.tokens.leeway_secs,
            "acceptWithoutExpiry": c.hub.tokens.accept_without_expiry,
        },
        "accountLogin": c.hub.account_login.as_ref().map(|a| json!({
            "hs256Secret": match &a.keys {
                UpstreamKeys::Hs256(_) => Some("<masked>"),
                UpstreamKeys::Jwks { .. } => None,
            },
            "jwksFile": match &a.keys {
                UpstreamKeys::Jwks { path, keys } => {
                    Some(format!("{} ({} keys)", path.display(), keys.len()))
                }
                UpstreamKeys::Hs256(_) => None,
            },
            "issuer": a.issuer,
            "audience": a.audience,
            "userClaim": a.user_claim,
        })),
        "apps": apps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, Usage> {
        parse(args.iter().map(Into::into).collect())
    }

    #[test]
    fn commands_and_their_options() {
        assert_eq!(p(&[]).unwrap(), Command::Serve { config: None });
        assert_eq!(
            p(&["serve", "--config=a.json"]).unwrap(),
            Command::Serve {
                config: Some("a.json".into())
            }
        );
        assert_eq!(
            p(&["token", "--config", "c", "--user", "u@x"]).unwrap(),
            Command::Token {
                user: "u@x".into(),
                config: Some("c".into()),
                expires: None,
            }
        );
        assert_eq!(
            p(&["token", "--user", "u@x", "--expires", "12h"]).unwrap(),
            Command::Token {
                user: "u@x".into(),
                config: None,
                expires: Some(12 * 3600),
            }
        );
        assert_eq!(
            p(&["device", "add", "a", "b", "--expires=7d", "--config", "c"]).unwrap(),
            Command::Device {
                action: DeviceAction::Add {
                    names: vec!["a".into(), "b".into()],
                    expires: Some(7 * 86_400)
                },
                config: Some("c".into())
            }
        );
        assert_eq!(
            p(&["device", "list"]).unwrap(),
            Command::Device {
                action: DeviceAction::List,
                config: None
            }
        );
        assert_eq!(
            p(&["device", "revoke", "a"]).unwrap(),
            Command::Device {
                action: DeviceAction::Revoke { name: "a".into() },
                config: None
            }
        );
        assert_eq!(
            p(&["check-config", "f.json"]).unwrap(),
            Command::CheckConfig {
                file: "f.json".into()
            }
        );
        assert_eq!(
            p(&["hash-key", "--", "--looks-like-a-flag"]).unwrap(),
            Command::HashKey {
                key: "--looks-like-a-flag".into()
            }
        );
    }

    #[test]
    fn help_and_version_everywhere() {
        for cmd in [
            "serve",
            "check-config",
            "hash-key",
            "token",
            "app-token",
            "device",
            "help",
        ] {
            let Ok(Command::Print(text)) = p(&[cmd, "--help"]) else {
                panic!("{cmd} --help");
            };
            assert!(
                text.starts_with(&format!("usage: augmentos-edge {cmd}")),
                "{text}"
            );
            assert_eq!(p(&["help", cmd]).unwrap(), Command::Print(text));
        }
        assert_eq!(p(&["--version"]).unwrap(), Command::Print(VERSION.into()));
        assert_eq!(p(&["-h"]).unwrap(), Command::Print(USAGE.into()));
    }

    #[test]
    fn durations() {
        for (text, secs) in [
            ("90", 90),
            ("90s", 90),
            ("30m", 1800),
            ("12h", 43_200),
            ("7d", 604_800),
        ] {
            assert_eq!(parse_duration(text), Ok(secs), "{text}");
        }
        for bad in [
            "",
            "s",
            "0",
            "-1h",
            "1w",
            "1.5h",
            "h1",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn usage_errors() {
        for (args, want) in [
            (&["frob"][..], "unknown command 'frob'"),
            (&["serve", "--port", "1"][..], "--port"),
            (&["serve", "--config"][..], "--config"),
            (&["hash-key"][..], "hash-key needs exactly one KEY"),
            (&["hash-key", "a", "b"][..], "unexpected argument \"b\""),
            (&["token", "--config", "c"][..], "token needs --user EMAIL"),
            (&["check-config", "--config", "c"][..], "--config"),
            (&["help", "frob"][..], "unknown command 'frob'"),
            (
                &["token", "--user", "u", "--expires", "soon"][..],
                "not a duration",
            ),
            (
                &["token", "--user", "u", "--expires", "0s"][..],
                "not a duration",
            ),
            (&["device"][..], "add NAME..., list or revoke NAME"),
            (&["device", "add"][..], "add NAME..., list or revoke NAME"),
            (
                &["device", "revoke", "a", "b"][..],
                "add NAME..., list or revoke NAME",
            ),
            (&["device", "list", "--expires", "1d"][..], "list or revoke"),
            (&["hash-key", "k", "--expires", "1d"][..], "--expires"),
        ] {
            let err = p(args).expect_err("a usage error");
            assert!(err.message.contains(want), "{args:?}: {}", err.message);
        }
    }
}
