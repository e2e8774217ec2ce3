//! Core layer (sans-IO), part of the hub: the user's device settings (`mentraosSettings`, the
//! ten keys of PROTOCOL §4) — what `core_status_update` from the glasses says, kept durable per
//! user, carried in every `tpa_connection_ack`, and pushed to apps subscribed to
//! `augmentos:<key>`, `augmentos:*` or `augmentos:all` as `augmentos_settings_update`. The
//! glasses model it names goes to [`super::capabilities`].
//!
//! Invariant: only fields present with the right type change a setting; a report that changes
//! nothing sends nothing.

use super::sessions::SessKey;
use super::Hub;
use crate::net::Outbox;
use crate::protocol::outbound as messages;
use crate::time::Now;
use serde_json::{json, Value};

/// Durable device settings are stored under this package name.
pub(super) const DEVICE: &str = "";

/// (setting, section of the status, field, as a number parsed from text)
const MAPPING: &[(&str, &str, &str)] = &[
    ("useOnboardMic", "core_info", "force_core_onboard_mic"),
    (
        "contextualDashboard",
        "core_info",
        "contextual_dashboard_enabled",
    ),
    ("metricSystemEnabled", "core_info", "metric_system_enabled"),
    ("headUpAngle", "connected_glasses", "headUp_angle"),
    ("brightness", "connected_glasses", "brightness"),
    ("autoBrightness", "connected_glasses", "auto_brightness"),
    ("sensingEnabled", "core_info", "sensing_enabled"),
    (
        "alwaysOnStatusBar",
        "core_info",
        "always_on_status_bar_enabled",
    ),
    ("bypassVad", "core_info", "bypass_vad_for_debugging"),
    (
        "bypassAudioEncoding",
        "core_info",
        "bypass_audio_encoding_for_debugging",
    ),
];

impl Hub {
    /// The user's device settings: the defaults with what was stored merged over them.
    pub(super) fn device_settings(&self, user: &str) -> Option<Box<Value>> {
        let stored = self.durable.settings(user, DEVICE)?;
        let mut s = messages::default_settings();
        for (k, v) in stored {
            if let (Some(o), Ok(v)) = (s.as_object_mut(), serde_json::from_str::<Value>(v)) {
                o.insert(k.clone(), v);
            }
        }
        Some(Box::new(s))
    }

    /// `core_status_update`: take the settings it reports, keep them, tell subscribed apps.
    pub(super) fn core_status(&mut self, net: &mut impl Outbox, sk: SessKey, text: &str, now: Now) {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return;
        };
        // The Android client nests it twice: {"status": {"status": {...}}}.
        let status = match &v["status"]["status"] {
            Value::Object(_) => &v["status"]["status"],
            _ => &v["status"],
        };
        if let Some(model) = status["connected_glasses"]["model_name"].as_str() {
            self.glasses_model(net, sk, model, None, now);
        }
        let Some(s) = self.session(sk) else { return };
        let mut settings = s.settings();
        let mut changed = Vec::new();
        for (key, section, field) in MAPPING {
            let reported = &status[section][field];
            let value = match (key, reported) {
                (&"headUpAngle" | &"brightness", Value::Number(n)) => {
                    Some(Value::Number(n.clone()))
                }
                (&"headUpAngle" | &"brightness", Value::String(t)) => {
                    t.trim().parse::<i64>().ok().map(Value::from)
                }
                (&"headUpAngle" | &"brightness", _) => None,
                (_, Value::Bool(b)) => Some(Value::Bool(*b)),
                _ => None,
            };
            if let Some(value) = value {
                if settings[key] != value {
                    if let Some(o) = settings.as_object_mut() {
                        o.insert(key.to_string(), value.clone());
                    }
                    changed.push((*key, value));
                }
            }
        }
        if changed.is_empty() {
            return;
        }
        let user = s.user.clone();
        for (key, value) in &changed {
            self.durable
                .set_setting(&user, DEVICE, key, Some(value.to_string()));
        }
        if let Some(s) = self.session_mut(sk) {
            s.settings = Some(Box::new(settings.clone()));
        }
        let Some(s) = self.session(sk) else { return };
        for (&app, run) in &s.apps {
            let Some(conn) = run.conn else { continue };
            let wants = run.subs.iter().any(|x| {
                x == "augmentos:*"
                    || x == "augmentos:all"
                    || changed
                        .iter()
                        .any(|(k, _)| x.strip_prefix("augmentos:") == Some(k))
            });
            if wants {
                let msg = json!({
                    "type": "augmentos_settings_update",
                    "sessionId": format!("{user}-{}", self.cfg.apps[app].package_name),
                    "settings": settings,
                    "timestamp": now.iso(),
                });
                net.send_json(conn, &msg);
            }
        }
    }
}
