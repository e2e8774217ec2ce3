//! Auth layer (core, sans-IO): HS256 JSON Web Tokens (RFC 7519 over RFC 7515 compact form), and
//! the two tokens built on them — glasses core tokens (PROTOCOL §1.2) and single app tokens.
//!
//! Owns nothing; the current time is an argument, never read from a clock. Invariants of
//! [`verify`]: the token length is checked against [`MAX_TOKEN_LEN`] before any other work; the
//! token has exactly three dot-separated parts, each strict base64url; the header's `alg` must
//! be exactly `"HS256"` (so `none`, other HMAC sizes and public-key algorithms are refused —
//! no algorithm confusion) and it may not carry `crit`; the header is read only to refuse it,
//! nothing in it selects how the token is checked; the signature is verified in constant time
//! (`hmac`'s `verify_slice`) *before* the claims are decoded, so nothing from an
//! unauthenticated payload is ever trusted; the claims are a JSON object; `exp` (if present)
//! must be a number greater than now, `nbf` (if present) a number not greater than now (each
//! with the caller's leeway, [`verify_with_leeway`]). Glasses tokens the box issues carry `exp`
//! (and a device's a `jti`); whether one without `exp` is taken is the [`TokenPolicy`]'s. No
//! input can make it panic.

use serde_json::{json, Map, Value};

use super::{base64, hash_api_key, hmac_sha256, verify_hmac_sha256};

/// Longest token [`verify`] looks at (8 KiB, well above any token this server issues).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The only header this module signs with: `{"alg":"HS256","typ":"JWT"}`, base64url.
const HEADER_B64: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// Hex characters of the key binding carried by app tokens.
const KEY_BINDING_LEN: usize = 16;

/// Why a token was refused; each variant has a stable code for clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtError {
    /// Not three parts, bad base64url, a header or claims that are not a JSON object, a
    /// non-numeric `exp`/`nbf`, or a header with `crit` extensions (none are understood).
    Malformed,
    /// The header's `alg` is missing or anything but `HS256`.
    UnsupportedAlgorithm,
    /// The signature does not match.
    BadSignature,
    /// `exp` is at or before now.
    Expired,
    /// `nbf` is after now.
    NotYetValid,
    /// Longer than [`MAX_TOKEN_LEN`].
    TooLong,
    /// Checked against a key set, and no key of it fits the header's `kid` and `alg`.
    UnknownKey,
}

impl JwtError {
    pub fn code(self) -> &'static str {
        match self {
            JwtError::Malformed => "MALFORMED_TOKEN",
            JwtError::UnsupportedAlgorithm => "UNSUPPORTED_ALGORITHM",
            JwtError::BadSignature => "INVALID_SIGNATURE",
            JwtError::Expired => "TOKEN_EXPIRED",
            JwtError::NotYetValid => "TOKEN_NOT_YET_VALID",
            JwtError::TooLong => "TOKEN_TOO_LONG",
            JwtError::UnknownKey => "UNKNOWN_KEY_ID",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            JwtError::Malformed => "the token is not a well-formed JWT",
            JwtError::UnsupportedAlgorithm => "only HS256 tokens are accepted",
            JwtError::BadSignature => "the token signature is invalid",
            JwtError::Expired => "the token has expired",
            JwtError::NotYetValid => "the token is not valid yet",
            JwtError::TooLong => "the token exceeds 8 KiB",
            JwtError::UnknownKey => "no configured key matches the token's kid and alg",
        }
    }
}

/// Sign `claims` as an HS256 JWT with header `{"alg":"HS256","typ":"JWT"}`.
///
/// The claims are serialised as given; [`verify`] accepts only a JSON object.
pub fn sign(claims: &Value, secret: &[u8]) -> String {
    let payload = claims.to_string();
    // Unpadded base64url of n bytes is at most 4 * ceil(n / 3) characters; the MAC is 43.
    let mut token =
        String::with_capacity(HEADER_B64.len() + payload.len().div_ceil(3) * 4 + 43 + 2);
    token.push_str(HEADER_B64);
    token.push('.');
    base64::encode_into(payload.as_bytes(), &mut token);
    let mac = hmac_sha256(secret, token.as_bytes());
    token.push('.');
    base64::encode_into(&mac, &mut token);
    token
}

/// Verify an HS256 JWT at time `now_unix_secs` and return its claims.
pub fn verify(
    token: &str,
    secret: &[u8],
    now_unix_secs: u64,
) -> Result<Map<String, Value>, JwtError> {
    verify_with_leeway(token, secret, now_unix_secs, 0)
}

/// [`verify`], allowing `leeway_secs` of clock difference: a token is still taken until
/// `exp + leeway`, and from `nbf - leeway`.
pub fn verify_with_leeway(
    token: &str,
    secret: &[u8],
    now_unix_secs: u64,
    leeway_secs: u64,
) -> Result<Map<String, Value>, JwtError> {
    verify_signed_by(
        token,
        now_unix_secs,
        leeway_secs,
        |header, input, signature| {
            // The header is read only to refuse it: nothing in it selects how the token is checked.
            match header.get("alg") {
                Some(Value::String(alg)) if alg == "HS256" => {}
                _ => return Err(JwtError::UnsupportedAlgorithm),
            }
            if header.contains_key("crit") {
                return Err(JwtError::Malformed);
            }
            if verify_hmac_sha256(secret, input, signature) {
                Ok(())
            } else {
                Err(JwtError::BadSignature)
            }
        },
    )
}

/// The compact-form checks every token goes through, with the signature checked by `check`
/// (given the decoded header, the signing input and the decoded signature) *before* the claims
/// are decoded; then `exp` and `nbf` with `leeway_secs`. The length cap comes first.
pub fn verify_signed_by(
    token: &str,
    now_unix_secs: u64,
    leeway_secs: u64,
    check: impl FnOnce(&Map<String, Value>, &[u8], &[u8]) -> Result<(), JwtError>,
) -> Result<Map<String, Value>, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::TooLong);
    }
    let (signing_input, signature_b64) = token.rsplit_once('.').ok_or(JwtError::Malformed)?;
    let (header_b64, payload_b64) = signing_input.split_once('.').ok_or(JwtError::Malformed)?;
    if payload_b64.contains('.') {
        return Err(JwtError::Malformed);
    }
    let header = decode_object(header_b64)?;
    let signature = base64::decode(signature_b64.as_bytes()).map_err(|_| JwtError::Malformed)?;
    check(&header, signing_input.as_bytes(), &signature)?;

    // Authenticated from here on.
    let claims = decode_object(payload_b64)?;
    if let Some(exp) = claims.get("exp") {
        let now = now_unix_secs.saturating_sub(leeway_secs);
        if time_claim(exp, now)? != std::cmp::Ordering::Greater {
            return Err(JwtError::Expired);
        }
    }
    if let Some(nbf) = claims.get("nbf") {
        let now = now_unix_secs.saturating_add(leeway_secs);
        if time_claim(nbf, now)? == std::cmp::Ordering::Greater {
            return Err(JwtError::NotYetValid);
        }
    }
    Ok(claims)
}

/// Decode one base64url part holding a JSON object.
fn decode_object(part: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = base64::decode(part.as_bytes()).map_err(|_| JwtError::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(JwtError::Malformed),
    }
}

/// Compare a NumericDate claim with now; a non-number is malformed.
fn time_claim(value: &Value, now: u64) -> Result<std::cmp::Ordering, JwtError> {
    if let Some(t) = value.as_u64() {
        return Ok(t.cmp(&now));
    }
    if value.as_i64().is_some() {
        // Negative: before the epoch, so before any `now`.
        return Ok(std::cmp::Ordering::Less);
    }
    // Fractional seconds (RFC 7519 allows them). JSON has no NaN, so this always compares.
    let t = value.as_f64().ok_or(JwtError::Malformed)?;
    t.partial_cmp(&(now as f64)).ok_or(JwtError::Malformed)
}

// ---------------------------------------------------------------------------------------------
// Glasses core tokens (PROTOCOL §1.2).

/// Why a glasses core token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlassesTokenError {
    Jwt(JwtError),
    /// The token is valid but has no non-empty string `email` claim (the user id).
    MissingEmail,
    /// The token has no `exp` and the policy takes only tokens that expire.
    NoExpiry,
    /// The token names a device (`jti`) that was revoked.
    Revoked,
    /// The token names a device (`jti`) this box does not know (its store was lost, or the
    /// token was made for another box with the same secret).
    UnknownDevice,
}

impl From<JwtError> for GlassesTokenError {
    fn from(e: JwtError) -> Self {
        GlassesTokenError::Jwt(e)
    }
}

impl GlassesTokenError {
    pub fn code(self) -> &'static str {
        match self {
            GlassesTokenError::Jwt(e) => e.code(),
            GlassesTokenError::MissingEmail => "MISSING_EMAIL",
            GlassesTokenError::NoExpiry => "TOKEN_WITHOUT_EXPIRY",
            GlassesTokenError::Revoked => "DEVICE_REVOKED",
            GlassesTokenError::UnknownDevice => "UNKNOWN_DEVICE",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            GlassesTokenError::Jwt(e) => e.message(),
            GlassesTokenError::MissingEmail => "User ID is required",
            GlassesTokenError::NoExpiry => {
                "the token has no expiry (exp) and this box takes only tokens that expire"
            }
            GlassesTokenError::Revoked => "this device was revoked by the venue",
            GlassesTokenError::UnknownDevice => "the token names a device this box does not know",
        }
    }
}

/// How glasses core tokens are checked beyond their signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenPolicy {
    /// Clock difference allowed around `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Whether a token without `exp` (older tooling, the cloud's own) is taken.
    pub accept_without_expiry: bool,
}

impl Default for TokenPolicy {
    /// A minute of leeway; tokens without `exp` taken (compatibility: see the README).
    fn default() -> Self {
        TokenPolicy {
            leeway_secs: 60,
            accept_without_expiry: true,
        }
    }
}

/// What a verified glasses core token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlassesClaims {
    /// The user id (the `email` claim).
    pub user: String,
    /// The device id of a provisioned device's token.
    pub jti: Option<String>,
}

/// A core token for the glasses user `email`: claims `{"sub": email, "email": email}`, no `exp`
/// (as the cloud issues them).
pub fn glasses_token(email: &str, secret: &[u8]) -> String {
    sign(&json!({ "sub": email, "email": email }), secret)
}

/// A core token for `email` issued at `iat` that expires at `exp` (Unix seconds), naming the
/// device `jti` if given. The same inputs give the same token, so a device's token can be
/// shown again from what the store keeps without keeping the token.
pub fn glasses_token_expiring(
    email: &str,
    jti: Option<&str>,
    iat: u64,
    exp: u64,
    secret: &[u8],
) -> String {
    let mut claims = json!({ "sub": email, "email": email, "iat": iat, "exp": exp });
    if let Some(jti) = jti {
        claims["jti"] = json!(jti);
    }
    sign(&claims, secret)
}

/// Verify a glasses core token under `policy` and return what it says. Revocation is the
/// caller's (it holds the devices); a `jti` that is not a non-empty string is malformed.
pub fn verify_glasses(
    token: &str,
    secret: &[u8],
    now_unix_secs: u64,
    policy: TokenPolicy,
) -> Result<GlassesClaims, GlassesTokenError> {
    let mut claims = verify_with_leeway(token, secret, now_unix_secs, policy.leeway_secs)?;
    if !policy.accept_without_expiry && !claims.contains_key("exp") {
        return Err(GlassesTokenError::NoExpiry);
    }
    let jti = match claims.remove("jti") {
        None => None,
        Some(Value::String(j)) if !j.is_empty() => Some(j),
        Some(_) => return Err(GlassesTokenError::Jwt(JwtError::Malformed)),
    };
    match claims.remove("email") {
        Some(Value::String(user)) if !user.is_empty() => Ok(GlassesClaims { user, jti }),
        _ => Err(GlassesTokenError::MissingEmail),
    }
}

/// Verify a glasses core token (no leeway, tokens without `exp` taken) and return its user id
/// (the `email` claim).
pub fn glasses_user(
    token: &str,
    secret: &[u8],
    now_unix_secs: u64,
) -> Result<String, GlassesTokenError> {
    let policy = TokenPolicy {
        leeway_secs: 0,
        accept_without_expiry: true,
    };
    verify_glasses(token, secret, now_unix_secs, policy).map(|c| c.user)
}

// ---------------------------------------------------------------------------------------------
// App tokens: one secret standing in for package name + API key.

/// Why an app token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppTokenError {
    Jwt(JwtError),
    /// The token is valid but has no non-empty string `packageName` claim.
    MissingPackage,
    /// The token is valid but has no non-empty string `keyHash` claim.
    MissingKeyHash,
}

impl From<JwtError> for AppTokenError {
    fn from(e: JwtError) -> Self {
        AppTokenError::Jwt(e)
    }
}

impl AppTokenError {
    /// `TOKEN_EXPIRED` and `TOKEN_NOT_YET_VALID` pass through; every other JWT failure is
    /// `INVALID_APP_TOKEN` (see [`AppTokenError::message`] for the detail).
    pub fn code(self) -> &'static str {
        match self {
            AppTokenError::Jwt(e @ (JwtError::Expired | JwtError::NotYetValid)) => e.code(),
            AppTokenError::Jwt(_) => "INVALID_APP_TOKEN",
            AppTokenError::MissingPackage => "MISSING_PACKAGE",
            AppTokenError::MissingKeyHash => "MISSING_KEY_HASH",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            AppTokenError::Jwt(e) => e.message(),
            AppTokenError::MissingPackage => "the app token has no packageName",
            AppTokenError::MissingKeyHash => "the app token has no keyHash",
        }
    }
}

/// The key binding an app token carries: the first 16 hex characters of
/// SHA-256(`hashed_api_key`). Rotating the app's API key changes it, invalidating old tokens.
pub fn app_key_binding(hashed_api_key: &str) -> String {
    let mut binding = hash_api_key(hashed_api_key);
    binding.truncate(KEY_BINDING_LEN);
    binding
}

/// An app token: claims `{"packageName": package, "keyHash": app_key_binding(hashed_api_key)}`.
pub fn app_token(package: &str, hashed_api_key: &str, secret: &[u8]) -> String {
    sign(
        &json!({ "packageName": package, "keyHash": app_key_binding(hashed_api_key) }),
        secret,
    )
}

/// Verify an app token; returns `(packageName, keyHash)`. The caller must still check that
/// `keyHash` equals [`app_key_binding`] of the package's current `hashedApiKey`.
pub fn verify_app_token(
    token: &str,
    secret: &[u8],
    now_unix_secs: u64,
) -> Result<(String, String), AppTokenError> {
    let mut claims = verify(token, secret, now_unix_secs)?;
    let package = match claims.remove("packageName") {
        Some(Value::String(p)) if !p.is_empty() => p,
        _ => return Err(AppTokenError::MissingPackage),
    };
    let key_hash = match claims.remove("keyHash") {
        Some(Value::String(k)) if !k.is_empty() => k,
        _ => return Err(AppTokenError::MissingKeyHash),
    };
    Ok((package, key_hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"edge-test-secret";
    const NOW: u64 = 1_750_000_000;

    fn b64(s: &str) -> String {
        base64::encode(s.as_bytes())
    }

    /// A token with an arbitrary header and payload, HMAC-SHA256-signed over them with `secret`.
    fn forge(header: &str, payload: &str, secret: &[u8]) -> String {
        let input = format!("{}.{}", b64(header), b64(payload));
        let mac = hmac_sha256(secret, input.as_bytes());
        format!("{input}.{}", base64::encode(&mac))
    }

    const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

    #[test]
    fn header_constant_is_the_encoded_header() {
        assert_eq!(HEADER_B64, b64(HS256));
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let claims = json!({ "sub": "a", "n": 3, "nested": { "x": [1, 2] } });
        let token = sign(&claims, SECRET);
        assert_eq!(token.split('.').count(), 3);
        let got = verify(&token, SECRET, NOW).unwrap();
        assert_eq!(Value::Object(got), claims);
    }

    #[test]
    fn jwt_io_example_token_verifies() {
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
                     eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.\
                     SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        let claims = verify(token, b"your-256-bit-secret", NOW).unwrap();
        assert_eq!(claims.get("sub"), Some(&json!("1234567890")));
        assert_eq!(claims.get("name"), Some(&json!("John Doe")));
        assert_eq!(claims.get("iat"), Some(&json!(1_516_239_022)));
        assert_eq!(
            verify(token, b"not-the-secret", NOW),
            Err(JwtError::BadSignature)
        );
        // The last signature character carries 2 unused bits; setting one is not a second
        // valid spelling of the same signature.
        let mut malleated = token.to_string();
        malleated.pop();
        malleated.push('d');
        assert_eq!(
            verify(&malleated, b"your-256-bit-secret", NOW),
            Err(JwtError::Malformed)
        );
    }

    #[test]
    fn different_secret_is_bad_signature() {
        let token = sign(&json!({ "sub": "a" }), b"other-secret");
        assert_eq!(verify(&token, SECRET, NOW), Err(JwtError::BadSignature));
        assert_eq!(verify(&token, b"", NOW), Err(JwtError::BadSignature));
    }

    #[test]
    fn alg_none_is_refused() {
        let token = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(r#"{"sub":"a"}"#));
        assert_eq!(
            verify(&token, SECRET, NOW),
            Err(JwtError::UnsupportedAlgorithm)
        );
        let token = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(r#"{"sub":"a"}"#)
        );
        assert_eq!(
            verify(&token, SECRET, NOW),
            Err(JwtError::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn other_algorithms_are_refused_even_with_a_valid_hs256_mac() {
        for header in [
            r#"{"alg":"HS384","typ":"JWT"}"#,
            r#"{"alg":"HS512"}"#,
            r#"{"alg":"RS256","typ":"JWT"}"#,
            r#"{"alg":"hs256"}"#,
            r#"{"alg":"HS256 "}"#,
            r#"{"alg":null}"#,
            r#"{"alg":["HS256"]}"#,
            r#"{"typ":"JWT"}"#,
        ] {
            let token = forge(header, r#"{"sub":"a"}"#, SECRET);
            assert_eq!(
                verify(&token, SECRET, NOW),
                Err(JwtError::UnsupportedAlgorithm),
                "{header}"
            );
        }
    }

    #[test]
    fn crit_header_is_refused() {
        let token = forge(
            r#"{"alg":"HS256","crit":["b64"],"b64":false}"#,
            r#"{"sub":"a"}"#,
            SECRET,
        );
        assert_eq!(verify(&token, SECRET, NOW), Err(JwtError::Malformed));
    }

    #[test]
    fn tampered_payload_is_bad_signature() {
        let token = sign(&json!({ "sub": "alice", "admin": false }), SECRET);
        let parts: Vec<&str> = token.split('.').collect();
        let evil = b64(r#"{"sub":"alice","admin":true}"#);
        let tampered = format!("{}.{}.{}", parts[0], evil, parts[2]);
        assert_eq!(verify(&tampered, SECRET, NOW), Err(JwtError::BadSignature));
        // Swapping in another token's header is caught too.
        let tampered = format!(
            "{}.{}.{}",
            b64(r#"{"typ":"JWT","alg":"HS256"}"#),
            parts[1],
            parts[2]
        );
        assert_eq!(verify(&tampered, SECRET, NOW), Err(JwtError::BadSignature));
        // So is a truncated signature.
        let tampered = format!("{}.{}.{}", parts[0], parts[1], &parts[2][..40]);
        assert_eq!(verify(&tampered, SECRET, NOW), Err(JwtError::BadSignature));
    }

    #[test]
    fn bad_signature_wins_over_bad_claims() {
        // Claims are not looked at until the signature checks out.
        let token = forge(HS256, "not json", b"other-secret");
        assert_eq!(verify(&token, SECRET, NOW), Err(JwtError::BadSignature));
        let token = forge(HS256, r#"{"exp":1}"#, b"other-secret");
        assert_eq!(verify(&token, SECRET, NOW), Err(JwtError::BadSignature));
    }

    #[test]
    fn expiry_and_not_before() {
        let at = |claims: Value| verify(&sign(&claims, SECRET), SECRET, NOW);
        assert_eq!(at(json!({ "exp": NOW - 1 })), Err(JwtError::Expired));
        assert_eq!(at(json!({ "exp": NOW })), Err(JwtError::Expired));
        assert!(at(json!({ "exp": NOW + 1 })).is_ok());
        assert_eq!(at(json!({ "exp": -5 })), Err(JwtError::Expired));
        assert_eq!(
            at(json!({ "exp": NOW as f64 - 0.5 })),
            Err(JwtError::Expired)
        );
        assert!(at(json!({ "exp": NOW as f64 + 0.5 })).is_ok());
        assert_eq!(at(json!({ "exp": "9999999999" })), Err(JwtError::Malformed));
        assert_eq!(at(json!({ "exp": null })), Err(JwtError::Malformed));

        assert_eq!(at(json!({ "nbf": NOW + 1 })), Err(JwtError::NotYetValid));
        assert!(at(json!({ "nbf": NOW })).is_ok());
        assert!(at(json!({ "nbf": NOW - 1 })).is_ok());
        assert_eq!(at(json!({ "nbf": true })), Err(JwtError::Malformed));
        assert!(at(json!({ "nbf": NOW - 10, "exp": NOW + 10 })).is_ok());
    }

    #[test]
    fn malformed_tokens() {
        let good = sign(&json!({ "sub": "a" }), SECRET);
        let parts: Vec<&str> = good.split('.').collect();
        let cases = [
            String::new(),
            "garbage".to_string(),
            "...".to_string(),
            "a.b".to_string(),
            format!("{}.{}", parts[0], parts[1]),
            format!("{}.{}.{}.{}", parts[0], parts[1], parts[2], parts[2]),
            format!("{good}."),
            format!(".{good}"),
            format!("{}={}", parts[0], &good[parts[0].len()..]),
            format!("{} ", good),
            format!("{}.{}.{}=", parts[0], parts[1], parts[2]),
            format!("{}.{}.{}", b64("not json"), parts[1], parts[2]),
            format!("{}.{}.{}", b64("[]"), parts[1], parts[2]),
            good.replacen('e', "+", 1),
        ];
        for token in &cases {
            assert_eq!(
                verify(token, SECRET, NOW),
                Err(JwtError::Malformed),
                "{token:?}"
            );
        }
    }

    #[test]
    fn claims_must_be_an_object() {
        for payload in ["[]", "1", "\"s\"", "null", "{", ""] {
            let token = forge(HS256, payload, SECRET);
            assert_eq!(
                verify(&token, SECRET, NOW),
                Err(JwtError::Malformed),
                "{payload:?}"
            );
        }
        let token = sign(&json!(["sub"]), SECRET);
        assert_eq!(verify(&token, SECRET, NOW), Err(JwtError::Malformed));
    }

    #[test]
    fn length_is_capped_before_parsing() {
        let padding = "a".repeat(MAX_TOKEN_LEN);
        let big = sign(&json!({ "pad": padding }), SECRET);
        assert_eq!(verify(&big, SECRET, NOW), Err(JwtError::TooLong));
        assert_eq!(
            verify(&".".repeat(MAX_TOKEN_LEN + 1), SECRET, NOW),
            Err(JwtError::TooLong)
        );
        // Just under the cap still verifies.
        let claims = json!({ "pad": "a".repeat(MAX_TOKEN_LEN / 2) });
        assert!(verify(&sign(&claims, SECRET), SECRET, NOW).is_ok());
    }

    #[test]
    fn error_codes_are_stable() {
        let codes = [
            (JwtError::Malformed, "MALFORMED_TOKEN"),
            (JwtError::UnsupportedAlgorithm, "UNSUPPORTED_ALGORITHM"),
            (JwtError::BadSignature, "INVALID_SIGNATURE"),
            (JwtError::Expired, "TOKEN_EXPIRED"),
            (JwtError::NotYetValid, "TOKEN_NOT_YET_VALID"),
            (JwtError::TooLong, "TOKEN_TOO_LONG"),
        ];
        for (e, code) in codes {
            assert_eq!(e.code(), code);
            assert!(!e.message().is_empty());
            assert_eq!(GlassesTokenError::Jwt(e).code(), code);
        }
        assert_eq!(GlassesTokenError::MissingEmail.code(), "MISSING_EMAIL");
        assert_eq!(
            AppTokenError::Jwt(JwtError::BadSignature).code(),
            "INVALID_APP_TOKEN"
        );
        assert_eq!(
            AppTokenError::Jwt(JwtError::Malformed).code(),
            "INVALID_APP_TOKEN"
        );
        assert_eq!(
            AppTokenError::Jwt(JwtError::Expired).code(),
            "TOKEN_EXPIRED"
        );
        assert_eq!(AppTokenError::MissingPackage.code(), "MISSING_PACKAGE");
    }

    #[test]
    fn glasses_token_round_trips_to_email() {
        let token = glasses_token("user@example.com", SECRET);
        let claims = verify(&token, SECRET, NOW).unwrap();
        assert_eq!(claims.get("sub"), Some(&json!("user@example.com")));
        assert!(!claims.contains_key("exp"));
        assert_eq!(
            glasses_user(&token, SECRET, NOW),
            Ok("user@example.com".to_string())
        );
        assert_eq!(
            glasses_user(&token, b"wrong", NOW),
            Err(GlassesTokenError::Jwt(JwtError::BadSignature))
        );
    }

    #[test]
    fn glasses_token_without_email_is_refused() {
        for claims in [
            json!({ "sub": "user@example.com" }),
            json!({ "sub": "u", "email": "" }),
            json!({ "sub": "u", "email": 42 }),
            json!({ "sub": "u", "email": null }),
        ] {
            let token = sign(&claims, SECRET);
            let err = glasses_user(&token, SECRET, NOW).unwrap_err();
            assert_eq!(err, GlassesTokenError::MissingEmail, "{claims}");
            assert_eq!(err.code(), "MISSING_EMAIL");
        }
    }

    #[test]
    fn glasses_user_passes_jwt_errors_through() {
        let token = sign(&json!({ "email": "u@x", "exp": NOW }), SECRET);
        let err = glasses_user(&token, SECRET, NOW).unwrap_err();
        assert_eq!(err, GlassesTokenError::Jwt(JwtError::Expired));
        assert_eq!(err.code(), "TOKEN_EXPIRED");
    }

    #[test]
    fn expiring_glasses_tokens_carry_exp_and_jti_and_honour_the_leeway() {
        let p = TokenPolicy {
            leeway_secs: 30,
            accept_without_expiry: false,
        };
        let token = glasses_token_expiring("d@x", Some("dev-1"), NOW - 10, NOW + 100, SECRET);
        let claims = verify(&token, SECRET, NOW).unwrap();
        assert_eq!(claims.get("exp"), Some(&json!(NOW + 100)));
        assert_eq!(claims.get("iat"), Some(&json!(NOW - 10)));
        let got = verify_glasses(&token, SECRET, NOW, p).unwrap();
        assert_eq!(got.user, "d@x");
        assert_eq!(got.jti.as_deref(), Some("dev-1"));
        // Within the leeway after exp: still taken; past it: expired.
        assert!(verify_glasses(&token, SECRET, NOW + 129, p).is_ok());
        let err = verify_glasses(&token, SECRET, NOW + 130, p).unwrap_err();
        assert_eq!(err.code(), "TOKEN_EXPIRED");
        // No leeway: expired at exp.
        let strict = TokenPolicy {
            leeway_secs: 0,
            ..p
        };
        assert_eq!(
            verify_glasses(&token, SECRET, NOW + 100, strict),
            Err(GlassesTokenError::Jwt(JwtError::Expired))
        );
        // nbf gets the same leeway the other way.
        let early = sign(
            &json!({ "email": "d@x", "exp": NOW + 999, "nbf": NOW + 20 }),
            SECRET,
        );
        assert!(verify_glasses(&early, SECRET, NOW, p).is_ok());
        assert_eq!(
            verify_glasses(&early, SECRET, NOW, strict),
            Err(GlassesTokenError::Jwt(JwtError::NotYetValid))
        );
    }

    #[test]
    fn tokens_without_exp_only_when_the_policy_says_so() {
        let legacy = glasses_token("old@x", SECRET);
        let lenient = TokenPolicy::default();
        assert!(lenient.accept_without_expiry);
        assert_eq!(
            verify_glasses(&legacy, SECRET, NOW, lenient).unwrap().user,
            "old@x"
        );
        let strict = TokenPolicy {
            accept_without_expiry: false,
            ..lenient
        };
        let err = verify_glasses(&legacy, SECRET, NOW, strict).unwrap_err();
        assert_eq!(err, GlassesTokenError::NoExpiry);
        assert_eq!(err.code(), "TOKEN_WITHOUT_EXPIRY");
        // A jti that is not a non-empty string is malformed, not ignored.
        for jti in [json!(""), json!(7), json!(null)] {
            let t = sign(
                &json!({ "email": "u@x", "exp": NOW + 9, "jti": jti }),
                SECRET,
            );
            assert_eq!(
                verify_glasses(&t, SECRET, NOW, lenient),
                Err(GlassesTokenError::Jwt(JwtError::Malformed)),
                "{jti}"
            );
        }
        for (e, code) in [
            (GlassesTokenError::Revoked, "DEVICE_REVOKED"),
            (GlassesTokenError::UnknownDevice, "UNKNOWN_DEVICE"),
        ] {
            assert_eq!(e.code(), code);
            assert!(!e.message().is_empty());
        }
    }

    #[test]
    fn app_token_round_trips_and_binds_the_key() {
        let hashed = hash_api_key("app-api-key");
        let token = app_token("com.example.app", &hashed, SECRET);
        let (package, key_hash) = verify_app_token(&token, SECRET, NOW).unwrap();
        assert_eq!(package, "com.example.app");
        assert_eq!(key_hash, app_key_binding(&hashed));
        assert_eq!(key_hash.len(), 16);
        assert_eq!(key_hash, &hash_api_key(&hashed)[..16]);
        // After a key rotation the binding no longer matches.
        let rotated = hash_api_key("new-api-key");
        assert_ne!(key_hash, app_key_binding(&rotated));
    }

    #[test]
    fn app_token_errors() {
        let hashed = hash_api_key("k");
        let token = app_token("com.example.app", &hashed, b"other");
        let err = verify_app_token(&token, SECRET, NOW).unwrap_err();
        assert_eq!(err, AppTokenError::Jwt(JwtError::BadSignature));
        assert_eq!(err.code(), "INVALID_APP_TOKEN");

        let err = verify_app_token("x.y", SECRET, NOW).unwrap_err();
        assert_eq!(err.code(), "INVALID_APP_TOKEN");

        // A glasses token is not an app token, even under the same secret.
        let glasses = glasses_token("u@x", SECRET);
        let err = verify_app_token(&glasses, SECRET, NOW).unwrap_err();
        assert_eq!(err, AppTokenError::MissingPackage);
        assert_eq!(err.code(), "MISSING_PACKAGE");
        // And the other way round.
        let app = app_token("com.example.app", &hashed, SECRET);
        assert_eq!(
            glasses_user(&app, SECRET, NOW),
            Err(GlassesTokenError::MissingEmail)
        );

        let token = sign(&json!({ "packageName": "", "keyHash": "abc" }), SECRET);
        assert_eq!(
            verify_app_token(&token, SECRET, NOW),
            Err(AppTokenError::MissingPackage)
        );
        let token = sign(&json!({ "packageName": "p" }), SECRET);
        assert_eq!(
            verify_app_token(&token, SECRET, NOW),
            Err(AppTokenError::MissingKeyHash)
        );
    }
}
