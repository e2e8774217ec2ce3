//! Shell layer, sans-IO part of the PostgreSQL store: the client side of SCRAM-SHA-256
//! (RFC 5802, RFC 7677) without channel binding, as PostgreSQL speaks it. The crypto
//! (PBKDF2, HMAC, SHA-256) is `ring`'s, already in the binary for TLS; this only builds and
//! checks the messages.
//!
//! Invariants: the server's nonce must extend ours, its iteration count must be at least
//! 4096 (RFC 7677's floor), and its final signature must verify — a server that cannot prove
//! it knows the password is refused.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::{digest, hmac, pbkdf2};
use std::num::NonZeroU32;

pub const MECHANISM: &str = "SCRAM-SHA-256";

/// A SCRAM exchange in progress.
pub struct Scram {
    password: String,
    client_first_bare: String,
    nonce: String,
    /// Set by [`Scram::client_final`]: the signature the server must send back.
    server_signature: Option<Vec<u8>>,
}

impl Scram {
    /// Start with `nonce` (printable, no comma; random in use) for `user` (PostgreSQL takes
    /// the user from the startup message and ignores this one: pass "").
    pub fn new(user: &str, password: &str, nonce: &str) -> Scram {
        Scram {
            password: password.to_string(),
            client_first_bare: format!("n={user},r={nonce}"),
            nonce: nonce.to_string(),
            server_signature: None,
        }
    }

    /// A fresh random nonce.
    pub fn random_nonce() -> Result<String, String> {
        use ring::rand::SecureRandom as _;
        let mut raw = [0u8; 18];
        ring::rand::SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| "no random numbers for the SCRAM nonce")?;
        Ok(B64.encode(raw))
    }

    /// The client's first message.
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// Given the server's first message, the client's final message (with the proof).
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<String, String> {
        let server_first =
            std::str::from_utf8(server_first).map_err(|_| "SCRAM: server-first is not UTF-8")?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for attr in server_first.split(',') {
            match attr.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(B64.decode(v).map_err(|_| "SCRAM: bad salt")?),
                Some(("i", v)) => iterations = v.parse::<u32>().ok(),
                _ => {}
            }
        }
        let nonce = nonce.ok_or("SCRAM: no nonce from the server")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err("SCRAM: the server's nonce does not extend ours".into());
        }
        let salt = salt.ok_or("SCRAM: no salt from the server")?;
        let iterations = iterations
            .filter(|&i| i >= 4096)
            .and_then(NonZeroU32::new)
            .ok_or("SCRAM: missing or too small iteration count")?;
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            &salt,
            self.password.as_bytes(),
            &mut salted,
        );
        let salted = hmac::Key::new(hmac::HMAC_SHA256, &salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(signature.as_ref())
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac::sign(&salted, b"Server Key");
        self.server_signature = Some(
            hmac::sign(
                &hmac::Key::new(hmac::HMAC_SHA256, server_key.as_ref()),
                auth_message.as_bytes(),
            )
            .as_ref()
            .to_vec(),
        );
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Check the server's final message.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), String> {
        let text =
            std::str::from_utf8(server_final).map_err(|_| "SCRAM: server-final is not UTF-8")?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(format!("SCRAM: the server refused: {e}"));
        }
        let v = text
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .ok_or("SCRAM: no server signature")?;
        let got = B64.decode(v).map_err(|_| "SCRAM: bad server signature")?;
        let want = self
            .server_signature
            .as_deref()
            .ok_or("SCRAM: server-final before server-first")?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(got.as_slice(), want)) {
            return Err("SCRAM: the server's signature is wrong".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3, the worked example.
    #[test]
    fn the_rfc_7677_exchange() {
        let mut s = Scram::new("user", "pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(s.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        assert_eq!(
            s.client_final(server_first).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        s.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert!(s
            .verify(b"v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .is_err());
    }

    #[test]
    fn a_server_nonce_not_extending_ours_or_few_iterations_is_refused() {
        let mut s = Scram::new("", "pw", "abc");
        assert!(s.client_final(b"r=xyz123,s=AAAA,i=4096").is_err());
        assert!(s.client_final(b"r=abc,s=AAAA,i=4096").is_err());
        assert!(s.client_final(b"r=abc1,s=AAAA,i=1").is_err());
        assert!(s.verify(b"v=AAAA").is_err());
    }
}
