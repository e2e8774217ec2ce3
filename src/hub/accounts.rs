//! Core layer (sans-IO), part of the hub: visitor accounts — `POST /api/auth/exchange-token`
//! (`{"supabaseToken": …}` → `{"coreToken": …}`, PROTOCOL §1.2), the phone app's upstream login
//! exchanged for a core token of this box, when the operator configured how to verify it.
//!
//! Invariants: without `accountLogin` in the config the answer is 501
//! `ACCOUNT_LOGIN_NOT_CONFIGURED` and nothing is verified; an upstream token is verified
//! offline, by exactly one of the configured secret (HS256 only, `auth::jwt`) or the configured
//! key set (RS256/ES256 only, `auth::jwks`), so a public key is never an HMAC secret; the
//! signature is checked before any claim is read; the token must carry `exp` (with the configured
//! leeway), the configured `iss` and `aud` when given, and a non-empty string user claim that is
//! not a device's (`device:` ids belong to provisioned devices); each refusal has its own code
//! and is counted; the core token issued expires (`tokens.lifetimeSeconds`) and is never logged.

use super::Hub;
use crate::auth::jwks::Jwks;
use crate::auth::jwt::{self, JwtError};
use crate::net::{ConnId, Outbox};
use crate::time::Now;
use serde_json::{json, Map, Value};

/// What upstream account tokens are signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamKeys {
    /// The HS256 secret the account service signs with (Supabase's JWT secret).
    Hs256(Vec<u8>),
    /// Public keys (RS256, ES256) from a JWKS file: its path, and the keys the shell read from
    /// it at start (empty until then).
    Jwks {
        path: std::path::PathBuf,
        keys: Jwks,
    },
}

/// How upstream account tokens are verified (`accountLogin` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountLogin {
    pub keys: UpstreamKeys,
    /// `iss` must equal this, when given.
    pub issuer: Option<String>,
    /// `aud` (a string, or an array of them) must hold this, when given.
    pub audience: Option<String>,
    /// The claim holding the user id (default `email`, as the cloud's exchange takes it).
    pub user_claim: String,
}

/// Why an upstream token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoginError {
    Jwt(JwtError),
    NoExpiry,
    WrongIssuer,
    WrongAudience,
    MissingUser,
    ReservedUser,
}

impl LoginError {
    fn code(self) -> &'static str {
        match self {
            LoginError::Jwt(e) => e.code(),
            LoginError::NoExpiry => "TOKEN_WITHOUT_EXPIRY",
            LoginError::WrongIssuer => "WRONG_ISSUER",
            LoginError::WrongAudience => "WRONG_AUDIENCE",
            LoginError::MissingUser => "MISSING_USER_ID",
            LoginError::ReservedUser => "RESERVED_USER_ID",
        }
    }

    fn message(self) -> &'static str {
        match self {
            LoginError::Jwt(e) => e.message(),
            LoginError::NoExpiry => "the account token has no expiry (exp)",
            LoginError::WrongIssuer => "the account token was issued by another service",
            LoginError::WrongAudience => "the account token is meant for another audience",
            LoginError::MissingUser => "the account token has no user id in the configured claim",
            LoginError::ReservedUser => "device: user ids belong to the venue's devices",
        }
    }
}

/// The user id of an upstream token at `now`, or why not.
fn verify_login(
    login: &AccountLogin,
    token: &str,
    now: u64,
    leeway: u64,
) -> Result<String, LoginError> {
    let claims = match &login.keys {
        UpstreamKeys::Hs256(secret) => jwt::verify_with_leeway(token, secret, now, leeway),
        UpstreamKeys::Jwks { keys, .. } => keys.verify(token, now, leeway),
    }
    .map_err(LoginError::Jwt)?;
    if !claims.contains_key("exp") {
        return Err(LoginError::NoExpiry);
    }
    if let Some(iss) = &login.issuer {
        if claims.get("iss").and_then(Value::as_str) != Some(iss.as_str()) {
            return Err(LoginError::WrongIssuer);
        }
    }
    if let Some(aud) = &login.audience {
        if !audience_holds(&claims, aud) {
            return Err(LoginError::WrongAudience);
        }
    }
    let user = claims
        .get(&login.user_claim)
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty() && u.len() <= 256 && !u.chars().any(char::is_control))
        .ok_or(LoginError::MissingUser)?;
    if user.starts_with("device:") {
        return Err(LoginError::ReservedUser);
    }
    Ok(user.to_string())
}

/// Whether `aud` (RFC 7519 §4.1.3: a string or an array of strings) names `audience`.
fn audience_holds(claims: &Map<String, Value>, audience: &str) -> bool {
    match claims.get("aud") {
        Some(Value::String(a)) => a == audience,
        Some(Value::Array(all)) => all.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    }
}

impl Hub {
    /// `POST /api/auth/exchange-token` with its `body`.
    pub fn on_exchange_token(&mut self, net: &mut impl Outbox, id: ConnId, body: &[u8], now: Now) {
        let Some(login) = &self.cfg.account_login else {
            self.refused("ACCOUNT_LOGIN_NOT_CONFIGURED");
            return net.respond_error(
                id,
                501,
                "ACCOUNT_LOGIN_NOT_CONFIGURED",
                "this box does not accept account logins; ask the venue for a device token",
                &[],
            );
        };
        let token = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v["supabaseToken"].as_str().map(str::to_string));
        let Some(token) = token else {
            self.refused("MALFORMED_BODY");
            return net.respond_error(
                id,
                400,
                "MALFORMED_BODY",
                "expected {\"supabaseToken\": \"<the account service's token>\"}",
                &[],
            );
        };
        let unix = now.wall.unix_secs();
        match verify_login(login, &token, unix, self.cfg.tokens.leeway_secs) {
            Ok(user) => {
                let exp = unix.saturating_add(self.cfg.token_lifetime.as_secs());
                let core =
                    jwt::glasses_token_expiring(&user, None, unix, exp, &self.cfg.jwt_secret);
                log::info!("event=account_login session={user:?}");
                net.respond_json(
                    id,
                    200,
                    &json!({ "coreToken": core, "expiresAt": exp }),
                    &["Cache-Control: no-store"],
                );
            }
            Err(e) => {
                self.refused(e.code());
                net.respond_error(id, 401, e.code(), e.message(), &[]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_750_000_000;

    fn login() -> AccountLogin {
        AccountLogin {
            keys: UpstreamKeys::Hs256(b"upstream-secret-0123456789".to_vec()),
            issuer: Some("https://accounts.example/auth/v1".into()),
            audience: Some("authenticated".into()),
            user_claim: "email".into(),
        }
    }

    fn token(claims: Value) -> String {
        jwt::sign(&claims, b"upstream-secret-0123456789")
    }

    fn good() -> Value {
        json!({"iss": "https://accounts.example/auth/v1", "aud": "authenticated",
               "email": "v@example.com", "sub": "u-1", "exp": NOW + 60})
    }

    #[test]
    fn a_good_token_gives_its_user() {
        let l = login();
        assert_eq!(
            verify_login(&l, &token(good()), NOW, 0),
            Ok("v@example.com".into())
        );
        let mut many = good();
        many["aud"] = json!(["other", "authenticated"]);
        assert!(verify_login(&l, &token(many), NOW, 0).is_ok());
        let open = AccountLogin {
            issuer: None,
            audience: None,
            user_claim: "sub".into(),
            ..l
        };
        let bare = token(json!({"sub": "u-1", "exp": NOW + 1}));
        assert_eq!(verify_login(&open, &bare, NOW, 0), Ok("u-1".into()));
    }

    #[test]
    fn each_bad_token_has_its_code() {
        let l = login();
        let with = |k: &str, v: Value| {
            let mut c = good();
            c[k] = v;
            token(c)
        };
        let without = |k: &str| {
            let mut c = good();
            c.as_object_mut().unwrap().remove(k);
            token(c)
        };
        let forged = jwt::sign(&good(), b"not-the-upstream-secret");
        for (t, code) in [
            (forged, "INVALID_SIGNATURE"),
            (with("exp", json!(NOW - 1)), "TOKEN_EXPIRED"),
            (without("exp"), "TOKEN_WITHOUT_EXPIRY"),
            (with("iss", json!("https://evil.example")), "WRONG_ISSUER"),
            (without("iss"), "WRONG_ISSUER"),
            (with("aud", json!("anon")), "WRONG_AUDIENCE"),
            (with("aud", json!(["anon"])), "WRONG_AUDIENCE"),
            (without("email"), "MISSING_USER_ID"),
            (with("email", json!("")), "MISSING_USER_ID"),
            (with("email", json!(7)), "MISSING_USER_ID"),
            (with("email", json!("device:desk-1")), "RESERVED_USER_ID"),
            ("x.y.z".to_string(), "MALFORMED_TOKEN"),
        ] {
            let got = verify_login(&l, &t, NOW, 0).unwrap_err();
            assert_eq!(got.code(), code, "{t}");
            assert!(!got.message().is_empty());
        }
        // The leeway applies to the upstream exp too.
        assert!(verify_login(&l, &with("exp", json!(NOW - 5)), NOW, 10).is_ok());
    }
}
