//! Core layer: builders for the JSON messages the hub sends (PROTOCOL.md §4, §6, §12), and
//! the default settings. Owns no state; every function is pure given its inputs.

use serde_json::{json, Value};

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

/// What this box can offer apps (reported in `tpa_connection_ack`).
pub fn capabilities() -> Value {
    json!({
        "modelName": "augmentos-edge",
        "hasCamera": false,
        "hasDisplay": true,
        "hasMicrophone": true,
        "hasSpeaker": false,
        "hasIMU": false,
        "hasButton": true,
        "hasLight": false,
        "hasWifi": false,
        "camera": null,
        "display": null,
        "microphone": null,
        "speaker": null,
        "imu": null,
        "button": null,
        "light": null,
        "power": { "hasExternalBattery": false }
    })
}

/// `tpa_connection_error` (also the JSON body of an app upgrade refused over HTTP).
pub fn tpa_error(code: &str, message: &str, details: Value, timestamp: &str) -> Value {
    json!({
        "type": "tpa_connection_error",
        "code": code,
        "message": message,
        "details": details,
        "timestamp": timestamp,
    })
}

/// `connection_error` to glasses (also the JSON body of a glasses upgrade refused over HTTP).
pub fn connection_error(code: &str, message: &str, timestamp: &str) -> Value {
    json!({ "type": "connection_error", "code": code, "message": message, "timestamp": timestamp })
}

/// The `session_request` webhook body (both websocket URL fields, PROTOCOL §12.1).
pub fn session_request(session_id: &str, user: &str, ws_url: &str, timestamp: &str) -> Value {
    json!({
        "type": "session_request",
        "sessionId": session_id,
        "userId": user,
        "timestamp": timestamp,
        "augmentOSWebsocketUrl": ws_url,
        "mentraOSWebsocketUrl": ws_url,
    })
}

pub fn stop_request(session_id: &str, user: &str, reason: &str, timestamp: &str) -> Value {
    json!({
        "type": "stop_request",
        "sessionId": session_id,
        "userId": user,
        "reason": reason,
        "timestamp": timestamp,
    })
}

/// An HTTP/1.1 POST with a JSON body, for the webhook client.
pub fn http_post(host: &str, port: u16, path: &str, body: &Value) -> Vec<u8> {
    let body = body.to_string();
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
    req.extend_from_slice(body.as_bytes());
    req
}
