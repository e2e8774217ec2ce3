//! Protocol layer: the messages the box sends — to glasses, to apps, and to app servers
//! (webhooks) — as typed values serialised straight into output buffers, plus the default
//! settings and the glasses' capabilities (PROTOCOL.md §4, §6, §12).
//!
//! Owns no state. Invariant: each message's `type` is fixed by its struct, so a message can
//! never go out under the wrong name; field names are the SDK's (camelCase).

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The glasses settings a user has before changing any (PROTOCOL §4, key order kept).
pub fn default_settings() -> Value {
    json!({
        "useOnboardMic": false,
        "contextualDashboard": true,
        "metricSystemEnabled": false,
        "headUpAngle": 20,
        "brightness": 50,
        "autoBrightness": false,
        "sensingEnabled": true,
        "alwaysOnStatusBar": false,
        "bypassVad": false,
        "bypassAudioEncoding": false
    })
}

/// `set_location_tier` to the glasses: the tier the session's apps want at most.
#[derive(Serialize, Debug)]
pub struct SetLocationTier<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub tier: &'static str,
    pub timestamp: &'a str,
}

/// `capabilities_update`: the session's glasses changed model (SDK 2.1.29 replaces
/// `session.capabilities` and emits `capabilities_update`).
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct CapabilitiesUpdate<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub capabilities: &'a Value,
    pub model_name: &'a str,
    pub timestamp: &'a str,
}

/// `tpa_connection_error` (also the JSON body of an app upgrade refused over HTTP).
#[derive(Serialize, Debug)]
pub struct TpaConnectionError<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub code: &'a str,
    pub message: &'a str,
    pub details: Value,
    pub timestamp: &'a str,
}

pub fn tpa_error<'a>(
    code: &'a str,
    message: &'a str,
    details: Value,
    timestamp: &'a str,
) -> TpaConnectionError<'a> {
    TpaConnectionError {
        kind: "tpa_connection_error",
        code,
        message,
        details,
        timestamp,
    }
}

/// `connection_error` to glasses (also the JSON body of a glasses upgrade refused over HTTP).
#[derive(Serialize, Debug)]
pub struct ConnectionError<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub code: &'a str,
    pub message: &'a str,
    pub timestamp: &'a str,
}

pub fn connection_error<'a>(
    code: &'a str,
    message: &'a str,
    timestamp: &'a str,
) -> ConnectionError<'a> {
    ConnectionError {
        kind: "connection_error",
        code,
        message,
        timestamp,
    }
}

/// One app's state as the glasses (and the REST caller) see it.
#[derive(Serialize, Debug)]
pub struct AppStateView<'a> {
    pub state: &'static str,
    pub error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restarts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscriptions: Option<&'a [String]>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct InstalledApp<'a> {
    pub package_name: &'a str,
    pub name: &'a str,
    pub public_url: &'a str,
    pub is_system_app: bool,
}

/// The `userSession` object of `connection_ack` and `app_state_change`.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct UserSession<'a> {
    pub session_id: &'a str,
    pub user_id: &'a str,
    pub start_time: String,
    pub installed_apps: Vec<InstalledApp<'a>>,
    pub app_subscriptions: BTreeMap<&'a str, &'a [String]>,
    pub active_app_package_names: Vec<&'a str>,
    pub loading_apps: Vec<&'a str>,
    pub what_to_stream: Vec<&'a str>,
    pub app_states: BTreeMap<&'a str, AppStateView<'a>>,
}

/// `connection_ack` and `app_state_change` to glasses.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct SessionMessage<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub session_id: &'a str,
    pub user_session: UserSession<'a>,
    pub timestamp: &'a str,
}

/// `settings_update` to glasses.
#[derive(Serialize, Debug)]
pub struct SettingsUpdate<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(rename = "sessionId")]
    pub session_id: &'a str,
    pub success: bool,
    pub message: &'a str,
    pub settings: &'a Value,
    pub timestamp: &'a str,
}

/// `app_started` / `app_stopped` to glasses (with the package), and `app_stopped` to the app
/// (with the reason).
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct AppEvent<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    pub timestamp: &'a str,
}

/// The `userSession` of a `microphone_state_change` (PROTOCOL §4).
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct MicUserSession<'a> {
    pub session_id: &'a str,
    pub user_id: &'a str,
    pub start_time: String,
    pub active_app_sessions: Vec<&'a str>,
    pub loading_apps: Vec<&'a str>,
    pub is_transcribing: bool,
}

/// `microphone_state_change` to glasses: whether the microphone must be on, and what for.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct MicrophoneState<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub session_id: &'a str,
    pub user_session: MicUserSession<'a>,
    pub is_microphone_enabled: bool,
    pub required_data: &'a [&'static str],
    pub bypass_vad: bool,
    pub timestamp: &'a str,
}

/// `tpa_connection_ack` to an app.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct TpaConnectionAck<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub session_id: &'a str,
    /// The app's declared settings with the user's values (`value`) merged in.
    pub settings: &'a [Value],
    pub mentraos_settings: &'a Value,
    pub capabilities: &'a Value,
    pub timestamp: &'a str,
}

/// One refused subscription of a `permission_error`.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct DeniedStream {
    pub stream: String,
    pub required_permission: &'static str,
    pub message: String,
}

/// `permission_error` to an app.
#[derive(Serialize, Debug)]
pub struct PermissionError<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub message: &'a str,
    pub details: &'a [DeniedStream],
    pub timestamp: &'a str,
}

/// The `session_request` and `stop_request` webhook bodies (PROTOCOL §12.1; a session
/// request carries both WebSocket URL fields, for old and new SDKs).
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct WebhookBody<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub session_id: &'a str,
    pub user_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    pub timestamp: &'a str,
    #[serde(
        rename = "augmentOSWebsocketUrl",
        skip_serializing_if = "Option::is_none"
    )]
    pub augmentos_websocket_url: Option<&'a str>,
    #[serde(
        rename = "mentraOSWebsocketUrl",
        skip_serializing_if = "Option::is_none"
    )]
    pub mentraos_websocket_url: Option<&'a str>,
}

pub fn session_request<'a>(
    session_id: &'a str,
    user: &'a str,
    ws_url: &'a str,
    timestamp: &'a str,
) -> WebhookBody<'a> {
    WebhookBody {
        kind: "session_request",
        session_id,
        user_id: user,
        reason: None,
        timestamp,
        augmentos_websocket_url: Some(ws_url),
        mentraos_websocket_url: Some(ws_url),
    }
}

pub fn stop_request<'a>(
    session_id: &'a str,
    user: &'a str,
    reason: &'a str,
    timestamp: &'a str,
) -> WebhookBody<'a> {
    WebhookBody {
        kind: "stop_request",
        session_id,
        user_id: user,
        reason: Some(reason),
        timestamp,
        augmentos_websocket_url: None,
        mentraos_websocket_url: None,
    }
}

/// `display_event` to glasses (PROTOCOL §4): the app's request as the glasses know it, with
/// the sender's package and the layout passed through.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct DisplayEvent<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub package_name: &'a str,
    pub view: &'static str,
    pub layout: LayoutOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    pub timestamp: &'a str,
}

/// A layout object: passed through as it came, or one the box makes.
#[derive(Serialize, Debug)]
#[serde(untagged)]
pub enum LayoutOut<'a> {
    Raw(&'a RawValue),
    ReferenceCard {
        #[serde(rename = "layoutType")]
        layout_type: &'static str,
        title: &'a str,
        text: &'a str,
    },
    TextWall {
        #[serde(rename = "layoutType")]
        layout_type: &'static str,
        text: &'a str,
    },
}

/// `dashboard_mode_changed` to apps, and `dashboard_mode_change` to glasses.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct DashboardMode<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub mode: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<&'a str>,
    pub timestamp: &'a str,
}

/// `dashboard_always_on_changed` to apps, and `dashboard_always_on_change` to glasses.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct DashboardAlwaysOn<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<&'a str>,
    pub timestamp: &'a str,
}

/// An HTTP/1.1 POST with a JSON body, for the webhook client.
pub fn http_post<T: Serialize + ?Sized>(host: &str, port: u16, path: &str, body: &T) -> Vec<u8> {
    let body = serde_json::to_vec(body).unwrap_or_default();
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\nAccept: application/json\r\nUser-Agent: augmentos-edge/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION"),
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    req
}

/// A `GET` of `path` on `host:port`, closed after the response.
pub fn http_get(host: &str, port: u16, path: &str) -> Vec<u8> {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json\r\nUser-Agent: augmentos-edge/{}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes()
}

/// The part of a `data_stream` message that is the same for every event one app receives in
/// one session: `{"type":"data_stream","sessionId":"<user>-<package>","streamType":`. Built
/// once when the app binds; each event then adds its stream type, the original message as
/// `data`, and the turn's timestamp (see [`data_stream_parts`]).
pub fn data_stream_prefix(session_id: &str) -> Box<[u8]> {
    let mut p = b"{\"type\":\"data_stream\",\"sessionId\":".to_vec();
    let _ = serde_json::to_writer(&mut p, session_id);
    p.extend_from_slice(b",\"streamType\":");
    p.into_boxed_slice()
}

/// The frame payload parts of one `data_stream`: `prefix`, the stream type as a JSON string
/// (given in up to three pieces, quotes included, so a plain name needs no copy), the original
/// message as `data`, and the timestamp.
pub fn data_stream_parts<'a>(
    prefix: &'a [u8],
    stream_json: [&'a [u8]; 3],
    data: &'a [u8],
    timestamp: &'a str,
) -> [&'a [u8]; 9] {
    let [s0, s1, s2] = stream_json;
    [
        prefix,
        s0,
        s1,
        s2,
        b",\"data\":",
        data,
        b",\"timestamp\":\"",
        timestamp.as_bytes(),
        b"\"}",
    ]
}

/// The end of a `data_stream` that is the same for every subscriber of one event: the original
/// message as `data`, and the timestamp. Written once per event into `out` (emptied first), so
/// each delivery is then `prefix`, stream type and this tail: the same bytes as
/// [`data_stream_parts`] in three copies instead of nine.
pub fn data_stream_tail(out: &mut Vec<u8>, data: &[u8], timestamp: &[u8]) {
    out.clear();
    for part in [b",\"data\":", data, b",\"timestamp\":\"", timestamp, b"\"}"] {
        out.extend_from_slice(part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_stream_tail_completes_the_same_message_as_the_parts() {
        let prefix = data_stream_prefix("u-com.x");
        let stream: [&[u8]; 3] = [b"\"", b"head_position", b"\""];
        let data = br#"{"type":"head_position","position":"up"}"#;
        let stamp = "2025-01-01T00:00:00.000Z";
        let mut tail = b"left over".to_vec();
        data_stream_tail(&mut tail, data, stamp.as_bytes());
        let joined = [&prefix[..], &stream.concat(), &tail].concat();
        assert_eq!(
            joined,
            data_stream_parts(&prefix, stream, data, stamp).concat()
        );
    }

    #[test]
    fn data_stream_is_valid_json_with_hostile_ids() {
        let prefix = data_stream_prefix("ev\"e\n-com.x");
        let parts = data_stream_parts(
            &prefix,
            [b"\"", b"head_position", b"\""],
            br#"{"type":"head_position","position":"up"}"#,
            "2025-01-01T00:00:00.000Z",
        );
        let v: Value = serde_json::from_slice(&parts.concat()).unwrap();
        assert_eq!(v["sessionId"], "ev\"e\n-com.x");
        assert_eq!(v["streamType"], "head_position");
        assert_eq!(v["data"]["position"], "up");
    }

    #[test]
    fn webhook_bodies_carry_both_url_fields_only_on_start() {
        let s = serde_json::to_value(session_request("u-p", "u", "ws://x/app-ws", "t")).unwrap();
        assert_eq!(s["augmentOSWebsocketUrl"], "ws://x/app-ws");
        assert_eq!(s["mentraOSWebsocketUrl"], "ws://x/app-ws");
        assert!(s.get("reason").is_none());
        let s = serde_json::to_value(stop_request("u-p", "u", "user_disabled", "t")).unwrap();
        assert_eq!(s["type"], "stop_request");
        assert!(s.get("mentraOSWebsocketUrl").is_none());
    }
}
