//! Auth layer (core, sans-IO): API-key hashing and checking, HMAC-SHA256, constant-time
//! comparison, base64url, and (in [`jwt`]) the HS256 tokens of glasses and apps.
//!
//! Owns no state and reads no clock: every check takes its inputs, including the current time,
//! as arguments. The crypto is RustCrypto's (`sha2`, `hmac`, `subtle`), never hand-written.
//! Invariants: secrets and digests are only ever compared in constant time — MACs with
//! [`Mac::verify_slice`] (see [`verify_hmac_sha256`]), everything else with `subtle`'s
//! `ConstantTimeEq` (see [`constant_time_eq`]), which looks at every byte without an early exit;
//! a stored API key hash is lowercase hex SHA-256 (the cloud's `hashedApiKey`), anything else
//! never matches; no input can make this module panic.
//!
//! Also holds the public development secrets ([`DEV_SECRET`], [`DEV_OPERATOR_TOKEN`]): the
//! config falls back to them, the `/ui/` pages check for them, the binary warns about them.

pub mod jwks;
pub mod jwt;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The glasses-token secret used when none is configured. It is public: say so aloud.
pub const DEV_SECRET: &str = "augmentos-edge-development-secret";

/// The operator token of the `/ui/` pages when none is configured (allowed only with the
/// development secret). It is public: say so aloud.
pub const DEV_OPERATOR_TOKEN: &str = "augmentos-edge-development-operator";

/// base64url without padding (RFC 4648 §5), as JWTs use it (RFC 7515 §2).
///
/// The `base64` crate's `URL_SAFE_NO_PAD` engine, whose decoding is strict, so every byte string
/// has exactly one accepted encoding: characters outside `A-Z a-z 0-9 - _` (including `=`
/// padding and the standard alphabet's `+` `/`) are refused, a length of 1 mod 4 is refused, and
/// the unused low bits of a final partial group must be zero.
pub mod base64 {
    use ::base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ::base64::Engine;

    pub use ::base64::DecodeError;

    /// Encode `data` as base64url without padding.
    pub fn encode(data: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(data)
    }

    /// Append the unpadded base64url encoding of `data` to `out`.
    pub fn encode_into(data: &[u8], out: &mut String) {
        URL_SAFE_NO_PAD.encode_string(data, out);
    }

    /// Decode unpadded base64url, strictly.
    pub fn decode(input: &[u8]) -> Result<Vec<u8>, DecodeError> {
        URL_SAFE_NO_PAD.decode(input)
    }
}

type HmacSha256 = Hmac<Sha256>;

/// The stored form of an API key: lowercase hex SHA-256 of its UTF-8 bytes (`hashedApiKey`).
pub fn hash_api_key(key: &str) -> String {
    format!("{:x}", Sha256::digest(key.as_bytes()))
}

/// Whether `key` hashes to `hashed_hex`, compared in constant time.
///
/// The comparison looks at all 64 hex characters whatever they hold; only the stored hash's
/// length (public: it comes from the config) can end it early. An uppercase or wrong-length
/// stored hash never matches.
pub fn verify_api_key(key: &str, hashed_hex: &str) -> bool {
    constant_time_eq(hash_api_key(key).as_bytes(), hashed_hex.as_bytes())
}

/// A MAC keyed with `key`. HMAC takes a key of any length (a key longer than the 64-byte block
/// is hashed first, RFC 2104), so this cannot fail.
fn hmac_sha256_mac(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC accepts a key of any length")
}

/// HMAC-SHA256 (RFC 2104) of `msg` under `key`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac = hmac_sha256_mac(key);
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// Whether `tag` is the HMAC-SHA256 of `msg` under `key`, compared in constant time
/// ([`Mac::verify_slice`]). A tag of the wrong length (a truncated MAC) never matches.
pub fn verify_hmac_sha256(key: &[u8], msg: &[u8], tag: &[u8]) -> bool {
    let mut mac = hmac_sha256_mac(key);
    mac.update(msg);
    mac.verify_slice(tag).is_ok()
}

/// Whether `a == b`, looking at every byte without an early exit. Lengths are not secret: a
/// length mismatch returns false at once.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn sha256(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }

    #[test]
    fn hash_api_key_is_lowercase_hex_sha256() {
        // FIPS 180-2 "abc" and empty-string digests.
        assert_eq!(
            hash_api_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hash_api_key(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn verify_api_key_accepts_only_the_exact_stored_form() {
        let stored = hash_api_key("secret-key");
        assert!(verify_api_key("secret-key", &stored));
        assert!(!verify_api_key("secret-kez", &stored));
        assert!(!verify_api_key("", &stored));
        assert!(!verify_api_key("secret-key", &stored.to_uppercase()));
        assert!(!verify_api_key("secret-key", &stored[..63]));
        assert!(!verify_api_key("secret-key", &format!("{stored}0")));
        assert!(!verify_api_key("secret-key", ""));
        // A stored hash that is a prefix padded with NULs must not match either.
        let mut padded = stored[..63].to_string();
        padded.push('\0');
        assert!(!verify_api_key("secret-key", &padded));
    }

    #[test]
    fn constant_time_eq_basics() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"Abc"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    // RFC 4231 §4.2: test case 1.
    #[test]
    fn hmac_rfc4231_case_1() {
        let mac = hmac_sha256(&[0x0B; 20], b"Hi There");
        assert_eq!(
            hex(&mac),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }

    // RFC 4231 §4.3: test case 2 (a key shorter than the output).
    #[test]
    fn hmac_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    // RFC 4231 §4.7: test case 6 (a key larger than the block size).
    #[test]
    fn hmac_rfc4231_case_6() {
        let mac = hmac_sha256(
            &[0xAA; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex(&mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    // RFC 4231 §4.8: test case 7 (key and data both larger than the block size).
    #[test]
    fn hmac_rfc4231_case_7() {
        let mac = hmac_sha256(
            &[0xAA; 131],
            b"This is a test using a larger than block-size key and a larger than block-size \
              data. The key needs to be hashed before being used by the HMAC algorithm.",
        );
        assert_eq!(
            hex(&mac),
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"
        );
    }

    #[test]
    fn hmac_key_of_exactly_one_block_is_not_hashed() {
        // A 64-byte key is used as is; hashing it would give a different MAC.
        let key = [0x42u8; 64];
        let hashed = sha256(&key);
        assert_ne!(hmac_sha256(&key, b"m"), hmac_sha256(&hashed, b"m"));
        // A 65-byte key is hashed first, so it equals HMAC under its digest.
        let long = [0x42u8; 65];
        assert_eq!(hmac_sha256(&long, b"m"), hmac_sha256(&sha256(&long), b"m"));
    }

    #[test]
    fn verify_hmac_accepts_only_the_exact_tag() {
        let tag = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert!(verify_hmac_sha256(
            b"Jefe",
            b"what do ya want for nothing?",
            &tag
        ));
        assert!(!verify_hmac_sha256(
            b"Jeff",
            b"what do ya want for nothing?",
            &tag
        ));
        assert!(!verify_hmac_sha256(
            b"Jefe",
            b"what do ya want for nothing!",
            &tag
        ));
        assert!(!verify_hmac_sha256(
            b"Jefe",
            b"what do ya want for nothing?",
            &tag[..31]
        ));
        assert!(!verify_hmac_sha256(
            b"Jefe",
            b"what do ya want for nothing?",
            &[]
        ));
        let mut longer = tag.to_vec();
        longer.push(0);
        assert!(!verify_hmac_sha256(
            b"Jefe",
            b"what do ya want for nothing?",
            &longer
        ));
        let mut flipped = tag;
        flipped[31] ^= 1;
        assert!(!verify_hmac_sha256(
            b"Jefe",
            b"what do ya want for nothing?",
            &flipped
        ));
    }

    // base64url: the engine's strictness is our policy (one accepted spelling per byte string),
    // so it is pinned here.

    /// RFC 4648 §10 vectors, without padding (none of them contain `+` or `/`).
    const RFC4648: [(&str, &str); 7] = [
        ("", ""),
        ("f", "Zg"),
        ("fo", "Zm8"),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg"),
        ("fooba", "Zm9vYmE"),
        ("foobar", "Zm9vYmFy"),
    ];

    #[test]
    fn base64url_rfc4648_vectors() {
        for (plain, encoded) in RFC4648 {
            assert_eq!(
                base64::encode(plain.as_bytes()),
                encoded,
                "encode {plain:?}"
            );
            assert_eq!(
                base64::decode(encoded.as_bytes()).as_deref(),
                Ok(plain.as_bytes()),
                "decode {encoded:?}"
            );
        }
        let mut s = String::from("x.");
        base64::encode_into(b"foo", &mut s);
        assert_eq!(s, "x.Zm9v");
    }

    #[test]
    fn base64url_alphabet_replaces_plus_and_slash() {
        // Standard base64: "+/8=" / "++++" / "////".
        assert_eq!(base64::encode(&[0xFB, 0xFF]), "-_8");
        assert_eq!(base64::encode(&[0xFB, 0xEF, 0xBE]), "----");
        assert_eq!(base64::encode(&[0xFF, 0xFF, 0xFF]), "____");
        assert_eq!(base64::decode(b"-_8"), Ok(vec![0xFB, 0xFF]));
        assert_eq!(base64::decode(b"____"), Ok(vec![0xFF, 0xFF, 0xFF]));
        assert!(base64::decode(b"+/8").is_err());
    }

    #[test]
    fn base64url_refuses_padding_foreign_bytes_and_impossible_lengths() {
        for bad in [
            &b"Zg=="[..],
            b"Zm8=",
            b"Zm 9v",
            b"Zm9 ",
            b"Zm9v\n",
            b"Zm9v.Zg",
            "Zmé".as_bytes(),
            &[b'Z', b'g', 0x00, b'A'],
            b"Z",
            b"Zm9vY",
            b"Zm9vYmFyZ",
        ] {
            assert!(base64::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn base64url_refuses_non_canonical_trailing_bits() {
        // "Zg" is 'f'; "Zh" sets one of the 4 unused bits.
        for bad in ["Zh", "Zv", "Zm9", "Zm9vZm9"] {
            assert!(base64::decode(bad.as_bytes()).is_err(), "{bad}");
        }
        // Every second character after 'A': only those with the 4 unused bits clear decode.
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for b in 0..=255u8 {
            let expected = match ALPHABET.iter().position(|&c| c == b) {
                Some(v) if v & 0x0F == 0 => Some(vec![(v >> 4) as u8]),
                _ => None,
            };
            assert_eq!(base64::decode(&[b'A', b]).ok(), expected, "byte {b:#04x}");
        }
    }

    #[test]
    fn base64url_round_trips_all_lengths_and_bytes() {
        let data: Vec<u8> = (0..=255u8).rev().chain(0..=255).collect();
        for len in 0..data.len() {
            let slice = &data[..len];
            let encoded = base64::encode(slice);
            assert_eq!(encoded.len(), len / 3 * 4 + [0, 2, 3][len % 3]);
            assert_eq!(
                base64::decode(encoded.as_bytes()).as_deref(),
                Ok(slice),
                "len {len}"
            );
        }
    }
}
