//! Core layer (sans-IO, top), part of the server composition: the operator's device calls
//! under `/ui/api/devices` (list, add, revoke, show one token with its QR code), answered
//! from the hub's devices part once `ui.rs` has checked the operator token.
//!
//! Invariants: a token leaves the box only in the answer to an add or to an explicit
//! `GET /ui/api/devices/{name}/token` (`Cache-Control: no-store`), never in a log line; the QR
//! code is drawn here (`qrcodegen`, SVG, no external service).

use super::Server;
use crate::net::{ConnId, Outbox};
use crate::time::Now;
use serde_json::{json, Value};
use std::time::Duration;

const NO_STORE: &[&str] = &["Cache-Control: no-store"];

/// Most devices added by one call.
const MAX_ADD: usize = 1000;

impl Server {
    pub(super) fn devices_list(&mut self, id: ConnId) {
        let body = json!({ "devices": self.hub.devices_view() });
        self.net.respond_json(id, 200, &body, NO_STORE);
    }

    /// `{"names": [...], "expiresSeconds": n}` (expiry optional).
    pub(super) fn devices_add(&mut self, id: ConnId, body: &[u8], now: Now) {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let names: Option<Vec<String>> = v["names"].as_array().and_then(|a| {
            a.iter()
                .map(|n| n.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
        });
        let expires = match &v["expiresSeconds"] {
            Value::Null => Some(None),
            e => e.as_u64().map(|s| Some(Duration::from_secs(s))),
        };
        let (Some(names), Some(expires)) = (names, expires) else {
            return self.net.respond_error(
                id,
                400,
                "MALFORMED_BODY",
                "expected {\"names\": [\"a device name\", ...], \"expiresSeconds\": seconds (optional)}",
                &[],
            );
        };
        if names.is_empty() || names.len() > MAX_ADD {
            let message = format!("give 1 to {MAX_ADD} names");
            return self
                .net
                .respond_error(id, 400, "MALFORMED_BODY", &message, &[]);
        }
        match self.hub.add_devices(&names, expires, now) {
            Ok(devices) => self
                .net
                .respond_json(id, 200, &json!({ "devices": devices }), NO_STORE),
            Err(e) => self.refuse(id, e),
        }
    }

    pub(super) fn devices_revoke(&mut self, id: ConnId, name: &str, now: Now) {
        match self.hub.revoke_device(&mut self.net, name, now) {
            Ok(device) => self
                .net
                .respond_json(id, 200, &json!({ "device": device }), NO_STORE),
            Err(e) => self.refuse(id, e),
        }
    }

    /// The token of `name` and its QR code as SVG.
    pub(super) fn devices_token(&mut self, id: ConnId, name: &str) {
        match self.hub.device_token(name) {
            Ok(token) => {
                let body = json!({ "name": name, "token": token, "qrSvg": qr_svg(&token) });
                self.net.respond_json(id, 200, &body, NO_STORE)
            }
            Err(e) => self.refuse(id, e),
        }
    }

    fn refuse(&mut self, id: ConnId, e: crate::hub::DeviceError) {
        self.net
            .respond_error(id, e.status(), e.code(), &e.message(), &[]);
    }
}

/// `text` as a QR code drawn in SVG (a 4-module quiet zone, one path of dark modules); `None`
/// if it does not fit a QR code.
pub fn qr_svg(text: &str) -> Option<String> {
    use qrcodegen::{QrCode, QrCodeEcc};
    let qr = QrCode::encode_text(text, QrCodeEcc::Medium).ok()?;
    let size = qr.size();
    let border = 4;
    let mut path = String::new();
    for y in 0..size {
        for x in 0..size {
            if qr.get_module(x, y) {
                path.push_str(&format!("M{},{}h1v1h-1z", x + border, y + border));
            }
        }
    }
    let full = size + 2 * border;
    Some(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {full} {full}\" \
         shape-rendering=\"crispEdges\"><rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\
         <path d=\"{path}\" fill=\"#000\"/></svg>"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qr_svg_draws_the_code_with_its_quiet_zone() {
        let svg = qr_svg("hello").unwrap();
        // "hello" fits version 1 (21 modules) at level M: 21 + 8 on each side.
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("viewBox=\"0 0 29 29\""), "{svg}");
        // The top-left finder pattern starts at the quiet zone's edge.
        assert!(svg.contains("M4,4h1v1h-1z"), "{svg}");
        assert!(qr_svg(&"x".repeat(8000)).is_none());
    }
}
