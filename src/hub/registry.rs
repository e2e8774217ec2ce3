//! Core layer (sans-IO): the app registry — the apps this box may start, as configured.
//!
//! Owns each app's identity, webhook target, stored key hash, permissions and allowed source
//! addresses, and the rules derived from them: which stream a subscription names, which
//! permission it needs, and whether a peer address may speak for a system app. Invariant: a
//! registry is immutable after load; packages are unique.

use crate::net::{Peer, Target, Tls};
use std::net::IpAddr;

#[derive(Debug, Clone)]
pub struct AppSpec {
    pub package_name: String,
    pub name: String,
    /// The app server's base URL, as configured (`http[s]://host:port[/prefix]`).
    pub public_url: String,
    pub webhook_target: Target,
    /// Path of the webhook: `<prefix>/webhook`.
    pub webhook_path: String,
    pub hashed_api_key: String,
    pub is_system_app: bool,
    pub permissions: Vec<String>,
    pub allowed_addresses: Vec<String>,
    /// Streams this (system) app may publish into its sessions: `transcription`, `translation`.
    pub publishes: Vec<String>,
    /// The settings the app declares (its `tpa_config.json` `settings` array): objects with
    /// `key`, `type`, `label`, `defaultValue`, `options`…
    pub settings: Vec<serde_json::Value>,
}

impl AppSpec {
    /// Whether `peer` may connect as this app. Only system apps are restricted: to the listed
    /// IP addresses, `unix` for the Unix socket, `in-process` for the in-process transport.
    pub fn address_allowed(&self, peer: &Peer) -> bool {
        if !self.is_system_app {
            return true;
        }
        self.allowed_addresses.iter().any(|a| match peer {
            Peer::Ip(addr) => {
                let ip = match addr.ip() {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                    v4 => v4,
                };
                a.parse::<IpAddr>().is_ok_and(|want| want == ip)
            }
            Peer::Unix => a == "unix",
            Peer::InProcess => a == "in-process",
        })
    }

    /// Whether the app holds `permission` (or `ALL`; `NOTIFICATIONS` is the legacy name of
    /// `READ_NOTIFICATIONS`).
    pub fn has_permission(&self, permission: &str) -> bool {
        self.permissions.iter().any(|p| {
            p == "ALL"
                || p == permission
                || (permission == "READ_NOTIFICATIONS" && p == "NOTIFICATIONS")
        })
    }
}

/// The permission types the SDK checks (`GET /api/public/permissions/{pkg}`), with the
/// description the box gives each.
const PUBLIC_PERMISSIONS: &[(&str, &str)] = &[
    (
        "MICROPHONE",
        "audio and transcripts from the glasses' microphone",
    ),
    ("LOCATION", "the wearer's location"),
    (
        "BACKGROUND_LOCATION",
        "the wearer's location while the app is in the background",
    ),
    ("CALENDAR", "the phone's calendar events"),
    (
        "CAMERA",
        "photos and video streams from the glasses' camera",
    ),
    ("NOTIFICATIONS", "the phone's notifications (legacy name)"),
    ("READ_NOTIFICATIONS", "the phone's notifications"),
    ("POST_NOTIFICATIONS", "notifications posted to the phone"),
];

impl AppSpec {
    /// The app's permissions as the SDK reads them, each `(type, description)`: `ALL` stands for
    /// every type and `NOTIFICATIONS` also for `READ_NOTIFICATIONS` (as [`Self::has_permission`]
    /// reads them), so an SDK check and the box's own agree.
    pub fn public_permissions(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        PUBLIC_PERMISSIONS
            .iter()
            .copied()
            .filter(|(p, _)| self.has_permission(p))
    }
}

/// Parse `http[s]://host[:port][/prefix]` into a webhook target and path prefix. An `https`
/// target trusts the system's CAs (the config may name a CA file instead).
pub fn parse_http_url(url: &str) -> Result<(Target, String), String> {
    let (rest, tls, default_port) = if let Some(rest) = url.strip_prefix("https://") {
        (rest, Some(Tls { ca_file: None }), "443")
    } else if let Some(rest) = url.strip_prefix("http://") {
        (rest, None, "80")
    } else {
        return Err(format!("'{url}' must start with http:// or https://"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("bad IPv6 host in '{url}'"))?;
        let port = after.strip_prefix(':').unwrap_or(default_port);
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (authority.to_string(), default_port),
        }
    };
    if host.is_empty() {
        return Err(format!("no host in '{url}'"));
    }
    let port: u16 = port.parse().map_err(|_| format!("bad port in '{url}'"))?;
    Ok((Target { host, port, tls }, path.to_string()))
}

/// Outcome of checking one subscription entry.
#[derive(Debug, PartialEq, Eq)]
pub enum SubCheck {
    Ok,
    Unknown,
    NeedsPermission(&'static str),
}

const PLAIN_STREAMS: &[&str] = &[
    "button_press",
    "head_position",
    "touch_event",
    "glasses_battery_update",
    "phone_battery_update",
    "glasses_connection_state",
    "location_update",
    "location_stream",
    "vps_coordinates",
    "transcription",
    "translation",
    "VAD",
    "audio_chunk",
    "phone_notification",
    "phone_notification_dismissed",
    "notification_dismissed",
    "calendar_event",
    "start_app",
    "stop_app",
    "open_dashboard",
    "dashboard_state",
    "core_status_update",
    "video",
    "photo_request",
    "photo_response",
    "rtmp_stream_status",
    "managed_stream_status",
    "photo_taken",
    "all",
    "*",
    "settings_update_request",
    "custom_message",
];

const GESTURES: &[&str] = &[
    "single_tap",
    "double_tap",
    "triple_tap",
    "long_press",
    "forward_swipe",
    "backward_swipe",
    "up_swipe",
    "down_swipe",
];

fn is_lang(code: &str) -> bool {
    let Some((l, r)) = code.split_once('-') else {
        return false;
    };
    (2..=3).contains(&l.len())
        && l.bytes().all(|b| b.is_ascii_lowercase())
        && r.len() == 2
        && r.bytes().all(|b| b.is_ascii_uppercase())
}

/// Check a subscription string (SDK 2.1.29 grammar) against the app's permissions.
pub fn check_subscription(app: &AppSpec, sub: &str) -> SubCheck {
    let base = sub.split('?').next().unwrap_or(sub);
    let known = match base.split_once(':') {
        None => PLAIN_STREAMS.contains(&base),
        Some(("transcription", lang)) => is_lang(lang),
        Some(("translation", pair)) => pair
            .split_once("-to-")
            .is_some_and(|(src, dst)| (src == "all" || is_lang(src)) && is_lang(dst)),
        Some(("touch_event", g)) => GESTURES.contains(&g),
        Some(("augmentos", key)) => !key.is_empty(),
        _ => false,
    };
    if !known {
        return SubCheck::Unknown;
    }
    let stream = base.split(':').next().unwrap_or(base);
    let needs = match stream {
        "transcription" | "translation" | "VAD" | "audio_chunk" => Some("MICROPHONE"),
        "location_update" | "location_stream" => Some("LOCATION"),
        "phone_notification" | "phone_notification_dismissed" | "notification_dismissed" => {
            Some("READ_NOTIFICATIONS")
        }
        "calendar_event" => Some("CALENDAR"),
        "photo_response" | "photo_taken" | "rtmp_stream_status" | "managed_stream_status" => {
            Some("CAMERA")
        }
        _ => None,
    };
    match needs {
        Some(p) if !app.has_permission(p) => SubCheck::NeedsPermission(p),
        _ => SubCheck::Ok,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(perms: &[&str]) -> AppSpec {
        AppSpec {
            package_name: "com.x".into(),
            name: "X".into(),
            public_url: "http://127.0.0.1:1".into(),
            webhook_target: Target {
                host: "127.0.0.1".into(),
                port: 1,
                tls: None,
            },
            webhook_path: "/webhook".into(),
            hashed_api_key: String::new(),
            is_system_app: true,
            permissions: perms.iter().map(|s| s.to_string()).collect(),
            allowed_addresses: vec!["127.0.0.1".into(), "unix".into()],
            publishes: Vec::new(),
            settings: Vec::new(),
        }
    }

    #[test]
    fn urls() {
        let (t, p) = parse_http_url("http://localhost:3000/base/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, p.as_str()),
            ("localhost", 3000, "/base")
        );
        let (t, p) = parse_http_url("http://[::1]:80").unwrap();
        assert_eq!((t.host.as_str(), t.port, p.as_str()), ("::1", 80, ""));
        let (t, p) = parse_http_url("https://apps.example/base").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, p.as_str()),
            ("apps.example", 443, "/base")
        );
        assert_eq!(t.tls, Some(Tls { ca_file: None }));
        assert_eq!(parse_http_url("http://x").unwrap().0.tls, None);
        assert!(parse_http_url("ftp://x").is_err());
        assert!(parse_http_url("http://x:notaport").is_err());
    }

    #[test]
    fn public_permissions_expand_all_and_the_legacy_name() {
        let types = |perms: &[&str]| -> Vec<&str> {
            app(perms).public_permissions().map(|(t, _)| t).collect()
        };
        assert_eq!(types(&[]), Vec::<&str>::new());
        assert_eq!(types(&["CAMERA", "MICROPHONE"]), ["MICROPHONE", "CAMERA"]);
        assert_eq!(
            types(&["NOTIFICATIONS"]),
            ["NOTIFICATIONS", "READ_NOTIFICATIONS"]
        );
        assert_eq!(types(&["ALL"]).len(), PUBLIC_PERMISSIONS.len());
    }

    #[test]
    fn subscriptions_and_permissions() {
        let a = app(&["MICROPHONE"]);
        assert_eq!(check_subscription(&a, "transcription:en-US"), SubCheck::Ok);
        assert_eq!(
            check_subscription(&a, "transcription:fil-PH?hints=ja%2Cfr"),
            SubCheck::Ok
        );
        assert_eq!(
            check_subscription(&a, "translation:all-to-en-US"),
            SubCheck::Ok
        );
        assert_eq!(
            check_subscription(&a, "touch_event:double_tap"),
            SubCheck::Ok
        );
        assert_eq!(check_subscription(&a, "button_press"), SubCheck::Ok);
        assert_eq!(
            check_subscription(&a, "transcription:english"),
            SubCheck::Unknown
        );
        assert_eq!(check_subscription(&a, "bogus"), SubCheck::Unknown);
        assert_eq!(
            check_subscription(&a, "location_update"),
            SubCheck::NeedsPermission("LOCATION")
        );
        assert_eq!(
            check_subscription(&app(&["ALL"]), "location_update"),
            SubCheck::Ok
        );
        assert_eq!(
            check_subscription(&app(&["NOTIFICATIONS"]), "phone_notification"),
            SubCheck::Ok
        );
    }

    /// Every plain stream a subscription may name is a stream glasses events are decoded as
    /// (the subscription index keeps only those), and the other way round.
    #[test]
    fn plain_streams_are_the_decoded_streams() {
        use crate::protocol::message::Stream;
        for name in PLAIN_STREAMS {
            assert!(
                matches!(*name, "all" | "*") || Stream::from_name(name).is_some(),
                "{name}"
            );
        }
        for s in Stream::ALL {
            assert!(PLAIN_STREAMS.contains(&s.name()), "{}", s.name());
        }
    }

    #[test]
    fn system_app_addresses() {
        let a = app(&[]);
        assert!(a.address_allowed(&Peer::Ip("127.0.0.1:5".parse().unwrap())));
        assert!(a.address_allowed(&Peer::Ip("[::ffff:127.0.0.1]:5".parse().unwrap())));
        assert!(!a.address_allowed(&Peer::Ip("127.0.0.2:5".parse().unwrap())));
        assert!(a.address_allowed(&Peer::Unix));
        assert!(!a.address_allowed(&Peer::InProcess));
        let mut b = app(&[]);
        b.is_system_app = false;
        assert!(b.address_allowed(&Peer::InProcess));
    }
}
