//! Auth layer (core, sans-IO): API-key hashing and checking, HMAC-SHA256, constant-time
//! comparison, and (in [`jwt`]) the HS256 tokens of glasses and apps.
//!
//! Owns no state and reads no clock: every check takes its inputs, including the current time,
//! as arguments. Invariants: secrets and digests are only ever compared with
//! [`constant_time_eq`] (or the fixed-length loop in [`verify_api_key`]), which looks at every
//! byte without an early exit; a stored API key hash is lowercase hex SHA-256 (the cloud's
//! `hashedApiKey`), anything else never matches; no input can make this module panic.

pub mod base64;
pub mod jwt;

use sha2::{Digest, Sha256};

/// SHA-256 block size in bytes (the HMAC `B` of RFC 2104).
const BLOCK: usize = 64;

/// Length of a SHA-256 digest in lowercase hex.
const HEX_LEN: usize = 64;

/// The stored form of an API key: lowercase hex SHA-256 of its UTF-8 bytes (`hashedApiKey`).
pub fn hash_api_key(key: &str) -> String {
    hex_lower(&sha256(key.as_bytes()))
}

/// Whether `key` hashes to `hashed_hex`, compared in constant time.
///
/// The loop always runs over the 64 hex characters of the computed hash, whatever the stored
/// hash's length, so a wrong-length or uppercase stored hash costs the same and returns false.
pub fn verify_api_key(key: &str, hashed_hex: &str) -> bool {
    let mut computed = [0u8; HEX_LEN];
    hex_lower_into(&sha256(key.as_bytes()), &mut computed);
    let stored = hashed_hex.as_bytes();
    let mut diff = stored.len() ^ HEX_LEN;
    for (i, &c) in computed.iter().enumerate() {
        let s = stored.get(i).copied().unwrap_or(0);
        diff |= usize::from(c ^ s);
    }
    std::hint::black_box(diff) == 0
}

/// HMAC-SHA256 (RFC 2104, block size 64; a key longer than a block is hashed first).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        let digest = sha256(key);
        for (dst, src) in block.iter_mut().zip(digest.iter()) {
            *dst = *src;
        }
    } else {
        for (dst, src) in block.iter_mut().zip(key.iter()) {
            *dst = *src;
        }
    }

    let mut ipad = [0u8; BLOCK];
    let mut opad = [0u8; BLOCK];
    for ((k, i), o) in block.iter().zip(ipad.iter_mut()).zip(opad.iter_mut()) {
        *i = k ^ 0x36;
        *o = k ^ 0x5C;
    }

    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// Whether `a == b`, looking at every byte without an early exit. Lengths are not secret: a
/// length mismatch returns false at once.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

fn hex_lower(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(HEX_DIGITS[usize::from(b >> 4)]));
        s.push(char::from(HEX_DIGITS[usize::from(b & 0x0F)]));
    }
    s
}

/// Write the lowercase hex of `bytes` into `out` (as far as `out` reaches).
fn hex_lower_into(bytes: &[u8], out: &mut [u8]) {
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        if let [hi, lo] = pair {
            *hi = HEX_DIGITS[usize::from(b >> 4)];
            *lo = HEX_DIGITS[usize::from(b & 0x0F)];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        hex_lower(bytes)
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
}
