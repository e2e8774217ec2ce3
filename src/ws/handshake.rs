//! WebSocket layer: server side of the opening handshake (RFC 6455 §4.2).
//!
//! Owns nothing. [`validate_upgrade`] checks a parsed request against §4.2.1, one
//! [`UpgradeError`] per rule (each with its HTTP status and error code); [`write_accept`] writes
//! the 101 response. Invariant: a request that passes has method GET, HTTP/1.1 or later,
//! `Upgrade: websocket`, `Connection` containing `upgrade`, version 13 and a key that is
//! canonical padded base64 of exactly 16 bytes. The accept value is SHA-1 (`sha1` crate) and
//! base64 (`base64` crate), as §4.2.2 prescribes.

use crate::http::Request;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha1::{Digest, Sha1};

/// Appended to the client's key before hashing (RFC 6455 §1.3).
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeError {
    MethodNotGet,
    HttpVersion,
    MissingUpgrade,
    MissingConnectionUpgrade,
    UnsupportedVersion,
    BadKey,
}

impl UpgradeError {
    pub fn status(self) -> u16 {
        match self {
            UpgradeError::MethodNotGet => 405,
            UpgradeError::MissingUpgrade | UpgradeError::UnsupportedVersion => 426,
            _ => 400,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            UpgradeError::MethodNotGet => "METHOD_NOT_ALLOWED",
            UpgradeError::HttpVersion => "HTTP_VERSION",
            UpgradeError::MissingUpgrade => "UPGRADE_REQUIRED",
            UpgradeError::MissingConnectionUpgrade => "BAD_CONNECTION_HEADER",
            UpgradeError::UnsupportedVersion => "UNSUPPORTED_WEBSOCKET_VERSION",
            UpgradeError::BadKey => "BAD_WEBSOCKET_KEY",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            UpgradeError::MethodNotGet => "a WebSocket endpoint accepts only GET",
            UpgradeError::HttpVersion => "WebSocket upgrade needs HTTP/1.1",
            UpgradeError::MissingUpgrade => "this endpoint needs 'Upgrade: websocket'",
            UpgradeError::MissingConnectionUpgrade => {
                "the Connection header must contain 'Upgrade'"
            }
            UpgradeError::UnsupportedVersion => "Sec-WebSocket-Version must be 13",
            UpgradeError::BadKey => "Sec-WebSocket-Key must be 16 bytes in base64",
        }
    }

    /// Extra response headers the status requires.
    pub fn extra_headers(self) -> &'static [&'static str] {
        match self {
            UpgradeError::MethodNotGet => &["Allow: GET"],
            UpgradeError::UnsupportedVersion => &["Sec-WebSocket-Version: 13"],
            UpgradeError::MissingUpgrade => &["Upgrade: websocket"],
            _ => &[],
        }
    }
}

/// Check the request is a valid WebSocket upgrade; returns the client's key.
pub fn validate_upgrade<'a>(req: &Request<'a>) -> Result<&'a str, UpgradeError> {
    if req.method != "GET" {
        return Err(UpgradeError::MethodNotGet);
    }
    if req.version < 1 {
        return Err(UpgradeError::HttpVersion);
    }
    if !req.header_has_token("upgrade", "websocket") {
        return Err(UpgradeError::MissingUpgrade);
    }
    if !req.header_has_token("connection", "upgrade") {
        return Err(UpgradeError::MissingConnectionUpgrade);
    }
    if req.header_str("sec-websocket-version") != Some("13") {
        return Err(UpgradeError::UnsupportedVersion);
    }
    let key = req
        .header_str("sec-websocket-key")
        .ok_or(UpgradeError::BadKey)?;
    if !is_16_byte_base64(key) {
        return Err(UpgradeError::BadKey);
    }
    Ok(key)
}

/// A key that is canonical padded base64 (`STANDARD` refuses missing or extra padding and
/// non-zero trailing bits) of exactly 16 bytes, hence 24 characters ending in `==`. The output
/// buffer is the decoder's estimate for 24 characters; a longer key does not fit and fails.
fn is_16_byte_base64(key: &str) -> bool {
    key.len() == 24 && matches!(STANDARD.decode_slice(key, &mut [0u8; 18]), Ok(16))
}

/// `Sec-WebSocket-Accept` for `key`: base64 of SHA-1(key + GUID) (RFC 6455 §4.2.2).
fn accept_key(key: &str) -> String {
    let digest = Sha1::new()
        .chain_update(key.as_bytes())
        .chain_update(ACCEPT_GUID)
        .finalize();
    STANDARD.encode(digest)
}

/// Append the 101 response for `key`.
pub fn write_accept(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    out.extend_from_slice(accept_key(key).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_request, RequestLimits};

    fn check(raw: &str) -> Result<String, UpgradeError> {
        let mut s = 0;
        let req = parse_request(raw.as_bytes(), &mut s, &RequestLimits::default())
            .unwrap()
            .unwrap();
        validate_upgrade(&req).map(str::to_string)
    }

    const OK: &str = "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn rfc_example_is_accepted_with_the_rfc_accept_value() {
        let key = check(OK).unwrap();
        let mut out = Vec::new();
        write_accept(&mut out, &key);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.starts_with("HTTP/1.1 101 "));
    }

    #[test]
    fn accept_key_matches_the_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn each_rule_has_its_error() {
        let cases = [
            (OK.replace("GET", "POST"), UpgradeError::MethodNotGet, 405),
            (
                OK.replace("HTTP/1.1", "HTTP/1.0"),
                UpgradeError::HttpVersion,
                400,
            ),
            (
                OK.replace("Upgrade: WebSocket\r\n", ""),
                UpgradeError::MissingUpgrade,
                426,
            ),
            (
                OK.replace("Connection: Upgrade", "Connection: close"),
                UpgradeError::MissingConnectionUpgrade,
                400,
            ),
            (
                OK.replace("Version: 13", "Version: 8"),
                UpgradeError::UnsupportedVersion,
                426,
            ),
            (
                OK.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZ=="),
                UpgradeError::BadKey,
                400,
            ),
            (
                OK.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZR=="),
                UpgradeError::BadKey,
                400,
            ),
            (
                OK.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ"),
                UpgradeError::BadKey,
                400,
            ),
            (
                // 17 bytes, and 15 bytes: canonical base64, wrong length.
                OK.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQA="),
                UpgradeError::BadKey,
                400,
            ),
            (
                OK.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25j"),
                UpgradeError::BadKey,
                400,
            ),
            (
                // Base64url characters, padding in the middle, one key too long.
                OK.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25-ZQ=="),
                UpgradeError::BadKey,
                400,
            ),
            (
                OK.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub2=jZQ=="),
                UpgradeError::BadKey,
                400,
            ),
            (
                OK.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ==dGhl"),
                UpgradeError::BadKey,
                400,
            ),
            (
                OK.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
                UpgradeError::BadKey,
                400,
            ),
        ];
        for (raw, want, status) in cases {
            assert_eq!(check(&raw), Err(want), "{raw}");
            assert_eq!(want.status(), status);
        }
    }
}
