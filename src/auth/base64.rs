//! Auth layer (core, sans-IO): base64url without padding (RFC 4648 §5), as used by JWTs (RFC 7515).
//!
//! Owns nothing: [`encode`]/[`encode_into`] write into a caller's `String`, [`decode`] returns a
//! fresh `Vec` whose length is at most three quarters of the input's. Invariants: decoding is
//! strict, so every byte string has exactly one accepted encoding — characters outside
//! `A-Z a-z 0-9 - _` (including `=` padding and the standard alphabet's `+` `/`) are rejected,
//! a length that is 1 mod 4 is rejected, and the unused low bits of a final partial group must
//! be zero. No input can make it panic.

/// The base64url alphabet (RFC 4648 Table 2).
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Marks a byte that is not in the alphabet.
const INVALID: u8 = 0xFF;

/// Byte → sextet, [`INVALID`] for bytes outside the alphabet. Indexed by a `u8`, so it cannot be
/// indexed out of bounds (likewise `ALPHABET` is only indexed by a value masked to 6 bits).
const DECODE: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Why a base64url string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// A byte outside the base64url alphabet (padding `=` included).
    InvalidByte,
    /// A length of 1 mod 4, which no byte string encodes to.
    InvalidLength,
    /// The unused low bits of the last character are not zero.
    NonCanonical,
}

/// Encode `data` as base64url without padding.
pub fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(encoded_len(data.len()));
    encode_into(data, &mut out);
    out
}

/// Append the unpadded base64url encoding of `data` to `out`.
pub fn encode_into(data: &[u8], out: &mut String) {
    out.reserve(encoded_len(data.len()));
    let mut chunks = data.chunks_exact(3);
    for chunk in &mut chunks {
        if let [a, b, c] = *chunk {
            push_sextets(
                out,
                u32::from(a) << 16 | u32::from(b) << 8 | u32::from(c),
                4,
            );
        }
    }
    match *chunks.remainder() {
        [a] => push_sextets(out, u32::from(a) << 16, 2),
        [a, b] => push_sextets(out, u32::from(a) << 16 | u32::from(b) << 8, 3),
        _ => {}
    }
}

/// Push the top `count` sextets of a 24-bit group.
fn push_sextets(out: &mut String, group: u32, count: usize) {
    for i in 0..count {
        let sextet = (group >> (18 - 6 * i)) & 0x3F;
        out.push(char::from(ALPHABET[sextet as usize]));
    }
}

/// Length of the unpadded encoding of `n` bytes.
pub fn encoded_len(n: usize) -> usize {
    n / 3 * 4 + [0, 2, 3][n % 3]
}

/// Decode unpadded base64url, strictly (see the module invariants).
pub fn decode(input: &[u8]) -> Result<Vec<u8>, DecodeError> {
    if input.len() % 4 == 1 {
        return Err(DecodeError::InvalidLength);
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 2);
    let mut chunks = input.chunks_exact(4);
    for chunk in &mut chunks {
        let group = sextets(chunk)?;
        out.extend_from_slice(&[(group >> 16) as u8, (group >> 8) as u8, group as u8]);
    }
    let rest = chunks.remainder();
    match rest.len() {
        0 => {}
        2 => {
            // 12 bits: one byte and 4 unused bits.
            let group = sextets(rest)?;
            if group & 0x0F != 0 {
                return Err(DecodeError::NonCanonical);
            }
            out.push((group >> 4) as u8);
        }
        3 => {
            // 18 bits: two bytes and 2 unused bits.
            let group = sextets(rest)?;
            if group & 0x03 != 0 {
                return Err(DecodeError::NonCanonical);
            }
            out.extend_from_slice(&[(group >> 10) as u8, (group >> 2) as u8]);
        }
        _ => return Err(DecodeError::InvalidLength),
    }
    Ok(out)
}

/// Concatenate the sextets of up to four characters, most significant first.
fn sextets(chars: &[u8]) -> Result<u32, DecodeError> {
    let mut group = 0u32;
    for &c in chars {
        let v = DECODE[usize::from(c)];
        if v == INVALID {
            return Err(DecodeError::InvalidByte);
        }
        group = group << 6 | u32::from(v);
    }
    Ok(group)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn rfc4648_vectors_encode() {
        for (plain, encoded) in RFC4648 {
            assert_eq!(encode(plain.as_bytes()), encoded, "encode {plain:?}");
        }
    }

    #[test]
    fn rfc4648_vectors_decode() {
        for (plain, encoded) in RFC4648 {
            assert_eq!(
                decode(encoded.as_bytes()).as_deref(),
                Ok(plain.as_bytes()),
                "decode {encoded:?}"
            );
        }
    }

    #[test]
    fn url_alphabet_replaces_plus_and_slash() {
        // Standard base64: "+/8=" / "++++" / "////".
        assert_eq!(encode(&[0xFB, 0xFF]), "-_8");
        assert_eq!(encode(&[0xFB, 0xEF, 0xBE]), "----");
        assert_eq!(encode(&[0xFF, 0xFF, 0xFF]), "____");
        assert_eq!(decode(b"-_8"), Ok(vec![0xFB, 0xFF]));
        assert_eq!(decode(b"____"), Ok(vec![0xFF, 0xFF, 0xFF]));
        assert_eq!(decode(b"+/8"), Err(DecodeError::InvalidByte));
    }

    #[test]
    fn rejects_padding_and_foreign_bytes() {
        assert_eq!(decode(b"Zg=="), Err(DecodeError::InvalidByte));
        assert_eq!(decode(b"Zm8="), Err(DecodeError::InvalidByte));
        assert_eq!(decode(b"Zm 9v"), Err(DecodeError::InvalidLength));
        assert_eq!(decode(b"Zm9 "), Err(DecodeError::InvalidByte));
        assert_eq!(decode(b"Zm9v\n"), Err(DecodeError::InvalidLength));
        assert_eq!(decode(b"Zm9v.Zg"), Err(DecodeError::InvalidByte));
        assert_eq!(decode("Zmé".as_bytes()), Err(DecodeError::InvalidByte));
        assert_eq!(
            decode(&[b'Z', b'g', 0x00, b'A']),
            Err(DecodeError::InvalidByte)
        );
    }

    #[test]
    fn rejects_impossible_lengths() {
        for bad in ["Z", "Zm9vY", "Zm9vYmFyZ"] {
            assert_eq!(
                decode(bad.as_bytes()),
                Err(DecodeError::InvalidLength),
                "{bad}"
            );
        }
    }

    #[test]
    fn rejects_non_canonical_trailing_bits() {
        // "Zg" is 'f'; "Zh" sets one of the 4 unused bits.
        assert_eq!(decode(b"Zh"), Err(DecodeError::NonCanonical));
        assert_eq!(decode(b"Zv"), Err(DecodeError::NonCanonical));
        // "Zm8" is "fo"; "Zm9" sets one of the 2 unused bits.
        assert_eq!(decode(b"Zm9"), Err(DecodeError::NonCanonical));
        assert_eq!(decode(b"Zm9vZm9"), Err(DecodeError::NonCanonical));
    }

    #[test]
    fn every_byte_decodes_per_alphabet() {
        for b in 0..=255u8 {
            let input = [b'A', b];
            let expected = match ALPHABET.iter().position(|&c| c == b) {
                None => Err(DecodeError::InvalidByte),
                Some(v) if v & 0x0F != 0 => Err(DecodeError::NonCanonical),
                Some(v) => Ok(vec![(v >> 4) as u8]),
            };
            assert_eq!(decode(&input), expected, "byte {b:#04x}");
        }
    }

    #[test]
    fn round_trips_all_lengths_and_bytes() {
        let data: Vec<u8> = (0..=255u8).rev().chain(0..=255).collect();
        for len in 0..data.len() {
            let slice = &data[..len];
            let encoded = encode(slice);
            assert_eq!(encoded.len(), encoded_len(len));
            assert_ne!(encoded.len() % 4, 1);
            assert_eq!(
                decode(encoded.as_bytes()).as_deref(),
                Ok(slice),
                "len {len}"
            );
        }
    }

    #[test]
    fn encode_into_appends() {
        let mut s = String::from("x.");
        encode_into(b"foo", &mut s);
        assert_eq!(s, "x.Zm9v");
    }
}
