//! Core layer (sans-IO), part of the hub: who may join with a glasses token — the one check
//! every glasses token goes through (signature, expiry policy, the device it names), and the
//! venue's provisioned devices: adding them (a token per device with `exp` and `jti`),
//! listing them, showing one's token again, and revoking them.
//!
//! Invariants: every glasses token (upgrade header, `connection_init`'s `coreToken`, REST
//! bearer) is checked by `Hub::check_glasses_token`; a revoked device's token, or any token
//! for a revoked device's user id, is refused (`DEVICE_REVOKED`) and a token naming a device
//! this box does not know is refused (`UNKNOWN_DEVICE`); a revoke takes effect inside the turn
//! that makes it — its glasses connections, bound or still waiting for `connection_init`, are
//! told `connection_error` `DEVICE_REVOKED` and closed, its session ended — and, the core being
//! single-threaded, a reconnect is checked either before (and then closed by the revoke) or
//! after (and refused): never let in. Devices live in the durable state (never the token:
//! the same claims sign to the same token), so revocations survive a restart.

use super::Hub;
use crate::auth::jwt::{self, GlassesTokenError};
use crate::net::{ConnId, Outbox};
use crate::state::Device;
use crate::time::Now;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// The longest a device name may be.
pub const MAX_DEVICE_NAME: usize = 64;

/// The longest lifetime a token may be given (ten years).
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 10 * 365 * 86_400;

/// Why a device call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceError {
    /// Empty, too long, or not `A-Z a-z 0-9 . _ -`.
    BadName(String),
    Exists(String),
    NotFound(String),
    /// Zero, or past [`MAX_TOKEN_LIFETIME_SECS`].
    BadLifetime,
}

impl DeviceError {
    pub fn status(&self) -> u16 {
        match self {
            DeviceError::BadName(_) | DeviceError::BadLifetime => 400,
            DeviceError::Exists(_) => 409,
            DeviceError::NotFound(_) => 404,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            DeviceError::BadName(_) => "INVALID_DEVICE_NAME",
            DeviceError::Exists(_) => "DEVICE_EXISTS",
            DeviceError::NotFound(_) => "DEVICE_NOT_FOUND",
            DeviceError::BadLifetime => "INVALID_LIFETIME",
        }
    }

    pub fn message(&self) -> String {
        match self {
            DeviceError::BadName(n) => {
                format!("device name {n:?}: 1 to {MAX_DEVICE_NAME} characters of A-Z a-z 0-9 . _ -")
            }
            DeviceError::Exists(n) => {
                format!("a device named {n:?} exists (names are never reused)")
            }
            DeviceError::NotFound(n) => format!("no device named {n:?}"),
            DeviceError::BadLifetime => {
                format!("the lifetime must be 1 to {MAX_TOKEN_LIFETIME_SECS} seconds")
            }
        }
    }
}

/// Whether `name` may name a device.
pub fn valid_device_name(name: &str) -> bool {
    (1..=MAX_DEVICE_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The user id a device's token carries.
pub fn device_user(name: &str) -> String {
    format!("device:{name}")
}

/// A device's token id: unique per (name, issue time), so a device re-added after its store
/// was lost does not bring its old tokens back.
fn device_jti(name: &str, created: u64) -> String {
    let digest = Sha256::digest(format!("{name}\0{created}").as_bytes());
    digest[..10].iter().map(|b| format!("{b:02x}")).collect()
}

impl Hub {
    /// Check a glasses token at `now`: signature and expiry under the configured policy, then
    /// the device it names. Returns the user id; a refusal is the caller's to count and answer.
    pub(super) fn check_glasses_token(
        &mut self,
        token: &str,
        now: Now,
    ) -> Result<String, GlassesTokenError> {
        let unix = now.wall.unix_secs();
        let claims = jwt::verify_glasses(token, &self.cfg.jwt_secret, unix, self.cfg.tokens)?;
        match &claims.jti {
            Some(jti) => {
                let dev = self
                    .durable
                    .device_by_jti(jti)
                    .filter(|d| d.user == claims.user)
                    .ok_or(GlassesTokenError::UnknownDevice)?;
                if dev.revoked.is_some() {
                    return Err(GlassesTokenError::Revoked);
                }
                self.durable.device_seen(jti, unix);
            }
            // A token made by hand for a device's user id is no way around its revocation.
            None if self.user_revoked(&claims.user) => return Err(GlassesTokenError::Revoked),
            None => {}
        }
        Ok(claims.user)
    }

    /// Whether `user` is a revoked device's user id (checked again at `connection_init` for a
    /// connection whose upgrade was authorised before a revoke).
    pub(super) fn user_revoked(&self, user: &str) -> bool {
        self.durable
            .device_by_user(user)
            .is_some_and(|d| d.revoked.is_some())
    }

    /// Add a device per name, each with a token living `lifetime` (the configured default
    /// without one). All names are checked before any is added.
    pub fn add_devices(
        &mut self,
        names: &[String],
        lifetime: Option<Duration>,
        now: Now,
    ) -> Result<Vec<Value>, DeviceError> {
        let secs = lifetime.unwrap_or(self.cfg.token_lifetime).as_secs();
        if !(1..=MAX_TOKEN_LIFETIME_SECS).contains(&secs) {
            return Err(DeviceError::BadLifetime);
        }
        for (i, name) in names.iter().enumerate() {
            if !valid_device_name(name) {
                return Err(DeviceError::BadName(name.clone()));
            }
            if self.durable.device(name).is_some() || names[..i].contains(name) {
                return Err(DeviceError::Exists(name.clone()));
            }
        }
        let created = now.wall.unix_secs();
        let mut added = Vec::with_capacity(names.len());
        for name in names {
            let dev = Device {
                name: name.clone(),
                user: device_user(name),
                jti: device_jti(name, created),
                created,
                expires: created.saturating_add(secs),
                last_seen: None,
                revoked: None,
            };
            log::info!("event=device_added device={name:?} expires={}", dev.expires);
            let mut view = device_view(&dev);
            view["token"] = json!(self.token_of(&dev));
            self.durable.put_device(dev);
            added.push(view);
        }
        Ok(added)
    }

    /// Every device, as the operator sees it (no tokens).
    pub fn devices_view(&self) -> Value {
        Value::Array(self.durable.devices().map(device_view).collect())
    }

    /// `name`'s token, shown again on the operator's explicit request.
    pub fn device_token(&self, name: &str) -> Result<String, DeviceError> {
        let dev = self
            .durable
            .device(name)
            .ok_or_else(|| DeviceError::NotFound(name.to_string()))?;
        Ok(self.token_of(dev))
    }

    fn token_of(&self, dev: &Device) -> String {
        let secret = &self.cfg.jwt_secret;
        jwt::glasses_token_expiring(&dev.user, Some(&dev.jti), dev.created, dev.expires, secret)
    }

    /// Revoke `name` now: durable at once (queued for the writer), its glasses connections
    /// told `DEVICE_REVOKED` and closed, its session ended. Revoking twice is no error.
    pub fn revoke_device(
        &mut self,
        net: &mut impl Outbox,
        name: &str,
        now: Now,
    ) -> Result<Value, DeviceError> {
        let dev = self
            .durable
            .revoke_device(name, now.wall.unix_secs())
            .ok_or_else(|| DeviceError::NotFound(name.to_string()))?;
        let view = device_view(dev);
        let user = dev.user.clone();
        log::info!("event=device_revoked device={name:?}");
        let conns: Vec<ConnId> = self
            .links
            .iter()
            .filter(|(_, l)| matches!(l, super::Link::Glasses { user: Some(u), .. } if *u == user))
            .map(|(id, _)| *id)
            .collect();
        let sk = self.sessions.by_user(&user);
        let bound = sk.and_then(|sk| self.session(sk)).and_then(|s| s.glasses);
        let why = GlassesTokenError::Revoked;
        for id in conns.into_iter().chain(bound) {
            if self.links.get(&id).is_some() {
                self.glasses_error(net, id, why.code(), why.message(), true, now);
            }
        }
        if let Some(sk) = sk {
            self.end_session(net, sk, now);
        }
        Ok(view)
    }
}

/// One device as the operator sees it.
fn device_view(d: &Device) -> Value {
    json!({
        "name": d.name,
        "userId": d.user,
        "jti": d.jti,
        "created": d.created,
        "expires": d.expires,
        "lastSeen": d.last_seen,
        "revoked": d.revoked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["desk-1", "A.b_c", &"x".repeat(MAX_DEVICE_NAME)] {
            assert!(valid_device_name(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a/b",
            "é",
            "a\n",
            &"x".repeat(MAX_DEVICE_NAME + 1),
        ] {
            assert!(!valid_device_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn jti_depends_on_name_and_time() {
        assert_eq!(device_jti("a", 1), device_jti("a", 1));
        assert_ne!(device_jti("a", 1), device_jti("a", 2));
        assert_ne!(device_jti("a", 1), device_jti("b", 1));
        assert_eq!(device_jti("a", 1).len(), 20);
    }
}
