//! `edge-load route --peer PORT` / `--raw PORT`: the client side of the minimal routing
//! protocol the comparison peers in benches/peers/ speak (see benches/peers/README.md). No
//! tokens and no webhooks: the glasses name their session in `connection_init`, and the load
//! generator connects each app itself with `tpa_connection_init` for that session. `--raw` is
//! the floor: a TCP byte forwarder that only wants one line naming the connection.

use crate::wsc::{self, Ws};
use serde_json::json;

/// Which protocol the peer speaks.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Proto {
    /// WebSocket + JSON: the routing subset (benches/peers/rust-tokio, node-ws/relay.mjs).
    Ws,
    /// Raw TCP byte forwarding (benches/peers/rust-tokio raw-forward).
    Raw,
}

/// Glasses of session `user`, initialised (for `Ws`: acked).
pub fn open_glasses(proto: Proto, port: u16, user: &str) -> Result<Ws, String> {
    match proto {
        Proto::Raw => Ws::raw(port, &format!("glasses {user}\n")),
        Proto::Ws => {
            let mut ws = Ws::connect(port, "/glasses-ws", "", 64 << 10)?;
            let init = json!({"type": "connection_init", "sessionId": user}).to_string();
            ws.send(wsc::TEXT, init.as_bytes())
                .map_err(|e| e.to_string())?;
            ws.wait_for_text("connection_ack", "connection_error")
                .map_err(|e| format!("glasses {user}: no connection_ack: {e}"))?;
            Ok(ws)
        }
    }
}

/// App `package` of session `user`, connected and subscribed to `streams`.
pub fn connect_app(
    proto: Proto,
    port: u16,
    user: &str,
    package: &str,
    streams: &[&str],
) -> Result<Ws, String> {
    match proto {
        Proto::Raw => Ws::raw(port, &format!("app {user}\n")),
        Proto::Ws => {
            let mut ws = Ws::connect(port, "/app-ws", "", 64 << 10)?;
            init_app(&mut ws, user, package, "peer", streams)?;
            Ok(ws)
        }
    }
}

/// What an app sends on its fresh connection, as SDK 2.1.29 does: `tpa_connection_init`, then
/// (once acked) its subscriptions.
pub fn init_app(
    ws: &mut Ws,
    session_id: &str,
    package: &str,
    api_key: &str,
    streams: &[&str],
) -> Result<(), String> {
    let init = json!({
        "type": "tpa_connection_init",
        "sessionId": session_id,
        "packageName": package,
        "apiKey": api_key,
    });
    ws.send(wsc::TEXT, init.to_string().as_bytes())
        .map_err(|e| e.to_string())?;
    ws.wait_for_text("tpa_connection_ack", "tpa_connection_error")?;
    let sub = json!({
        "type": "subscription_update",
        "packageName": package,
        "subscriptions": streams,
        "sessionId": session_id,
    });
    ws.send(wsc::TEXT, sub.to_string().as_bytes())
        .map_err(|e| e.to_string())
}
