//! Auth layer (core, sans-IO): tokens signed with public keys — a JSON Web Key Set (RFC 7517)
//! of RSA and P-256 keys, and the RS256 / ES256 check of a token against it (RFC 7518 §3.3,
//! §3.4). The signature math is `ring`'s; the compact form, the claims and their times go
//! through [`jwt::verify_signed_by`], the same path as HS256 tokens.
//!
//! Invariants: the set is parsed once (at start, from a file the shell read) and never fetched;
//! a key is chosen by the header's `kid` and must fit the header's `alg` (RS256 → an RSA key,
//! ES256 → a P-256 key), and a key's own `alg`, when it has one, must equal it; a token whose
//! `alg` is anything else — `HS256` included, so a public key is never taken as an HMAC secret
//! (algorithm confusion) — is refused `UNSUPPORTED_ALGORITHM`; no fitting key is
//! `UNKNOWN_KEY_ID`; a key of an unknown type or curve in the file is skipped (and counted by
//! the caller) rather than refused, as key sets carry keys for other uses.

use super::base64;
use super::jwt::{self, JwtError};
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    /// Modulus and exponent, big-endian.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// The uncompressed point `04 || x || y`.
    P256(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Jwk {
    kid: Option<String>,
    alg: Option<String>,
    key: Key,
}

/// The public keys upstream tokens may be signed with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Jwks {
    keys: Vec<Jwk>,
}

impl Jwks {
    /// Parse a JWKS document (`{"keys": [...]}`). Keys that are not RSA or EC P-256 signing
    /// keys are skipped; a set left with none is an error.
    pub fn parse(text: &str) -> Result<Jwks, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let keys = v["keys"].as_array().ok_or("expected {\"keys\": [...]}")?;
        let mut out = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let Some(k) = k.as_object() else {
                return Err(format!("keys[{i}]: expected an object"));
            };
            if k.get("use")
                .and_then(Value::as_str)
                .is_some_and(|u| u != "sig")
            {
                continue;
            }
            let field = |name: &str| -> Result<Vec<u8>, String> {
                let text = k
                    .get(name)
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("keys[{i}].{name}: expected a base64url string"))?;
                base64::decode(text.as_bytes())
                    .map_err(|_| format!("keys[{i}].{name}: not base64url"))
            };
            let key = match (str_of(k, "kty"), str_of(k, "crv")) {
                (Some("RSA"), _) => Key::Rsa {
                    n: field("n")?,
                    e: field("e")?,
                },
                (Some("EC"), Some("P-256")) => {
                    let (x, y) = (field("x")?, field("y")?);
                    if x.len() != 32 || y.len() != 32 {
                        return Err(format!("keys[{i}]: a P-256 key has 32-byte x and y"));
                    }
                    let mut point = vec![4u8];
                    point.extend_from_slice(&x);
                    point.extend_from_slice(&y);
                    Key::P256(point)
                }
                _ => continue,
            };
            out.push(Jwk {
                kid: str_of(k, "kid").map(str::to_string),
                alg: str_of(k, "alg").map(str::to_string),
                key,
            });
        }
        if out.is_empty() {
            return Err("no RSA or P-256 signing key in the set".into());
        }
        Ok(Jwks { keys: out })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verify an RS256 or ES256 token against the set at `now` (Unix seconds, with `leeway`)
    /// and return its claims.
    pub fn verify(
        &self,
        token: &str,
        now: u64,
        leeway: u64,
    ) -> Result<Map<String, Value>, JwtError> {
        jwt::verify_signed_by(token, now, leeway, |header, input, sig| {
            let alg = match header.get("alg").and_then(Value::as_str) {
                Some(a @ ("RS256" | "ES256")) => a,
                _ => return Err(JwtError::UnsupportedAlgorithm),
            };
            if header.contains_key("crit") {
                return Err(JwtError::Malformed);
            }
            let kid = header.get("kid").and_then(Value::as_str);
            let key = self
                .keys
                .iter()
                .find(|k| {
                    k.kid.as_deref() == kid
                        && k.alg.as_deref().is_none_or(|a| a == alg)
                        && matches!(
                            (&k.key, alg),
                            (Key::Rsa { .. }, "RS256") | (Key::P256(_), "ES256")
                        )
                })
                .ok_or(JwtError::UnknownKey)?;
            let ok = match &key.key {
                Key::Rsa { n, e } => RsaPublicKeyComponents { n, e }
                    .verify(&signature::RSA_PKCS1_2048_8192_SHA256, input, sig)
                    .is_ok(),
                Key::P256(point) => {
                    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                        .verify(input, sig)
                        .is_ok()
                }
            };
            if ok {
                Ok(())
            } else {
                Err(JwtError::BadSignature)
            }
        })
    }
}

fn str_of<'a>(k: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    k.get(name).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use serde_json::json;

    const NOW: u64 = 1_750_000_000;

    fn es256_pair() -> EcdsaKeyPair {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap()
    }

    fn jwk_of(pair: &EcdsaKeyPair, kid: &str) -> Value {
        let point = pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
               "x": base64::encode(&point[1..33]), "y": base64::encode(&point[33..65])})
    }

    fn es256(pair: &EcdsaKeyPair, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            base64::encode(header.to_string().as_bytes()),
            base64::encode(claims.to_string().as_bytes())
        );
        let sig = pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", base64::encode(sig.as_ref()))
    }

    #[test]
    fn es256_tokens_verify_by_kid_and_bad_ones_get_their_codes() {
        let (a, b) = (es256_pair(), es256_pair());
        let set = json!({"keys": [jwk_of(&a, "a"), jwk_of(&b, "b"),
            {"kty": "oct", "k": "c2VjcmV0"}, {"kty": "EC", "crv": "P-521", "x": "", "y": ""}]});
        let jwks = Jwks::parse(&set.to_string()).unwrap();
        assert_eq!(jwks.len(), 2, "the oct and P-521 keys are skipped");
        let claims = json!({"sub": "u", "exp": NOW + 60});
        let hdr = |kid: &str| json!({"alg": "ES256", "kid": kid});
        let got = jwks.verify(&es256(&b, &hdr("b"), &claims), NOW, 0).unwrap();
        assert_eq!(got["sub"], "u");
        // Signed by a, claiming b's kid; no kid; an unknown kid.
        let code = |t: &str| jwks.verify(t, NOW, 0).unwrap_err().code();
        assert_eq!(code(&es256(&a, &hdr("b"), &claims)), "INVALID_SIGNATURE");
        assert_eq!(
            code(&es256(&a, &json!({"alg": "ES256"}), &claims)),
            "UNKNOWN_KEY_ID"
        );
        assert_eq!(code(&es256(&a, &hdr("z"), &claims)), "UNKNOWN_KEY_ID");
        // An ES256 key asked for RS256.
        assert_eq!(
            code(&es256(&a, &json!({"alg": "RS256", "kid": "a"}), &claims)),
            "UNKNOWN_KEY_ID"
        );
        // Algorithm confusion: HS256 with the public key's bytes as the secret.
        let point = a.public_key().as_ref().to_vec();
        let confused = jwt::sign(&claims, &point);
        assert_eq!(code(&confused), "UNSUPPORTED_ALGORITHM");
        let none = format!(
            "{}.{}.",
            base64::encode(br#"{"alg":"none","kid":"a"}"#),
            base64::encode(claims.to_string().as_bytes())
        );
        assert_eq!(code(&none), "UNSUPPORTED_ALGORITHM");
        let expired = es256(&a, &hdr("a"), &json!({"exp": NOW - 1}));
        assert_eq!(code(&expired), "TOKEN_EXPIRED");
        assert!(jwks.verify(&expired, NOW, 5).is_ok());
    }

    #[test]
    fn bad_sets_are_refused() {
        for bad in [
            "",
            "[]",
            r#"{"keys": {}}"#,
            r#"{"keys": []}"#,
            r#"{"keys": [1]}"#,
            r#"{"keys": [{"kty": "RSA", "n": "AQAB"}]}"#,
            r#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "AQAB", "y": "AQAB"}]}"#,
            r#"{"keys": [{"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"}]}"#,
        ] {
            assert!(Jwks::parse(bad).is_err(), "{bad}");
        }
    }
}
