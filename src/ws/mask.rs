//! WebSocket layer: payload masking (RFC 6455 §5.3).
//!
//! Owns nothing; works on a caller's buffer in place. Invariant: [`apply_mask`] and
//! [`apply_mask_scalar`] give identical output for every length and alignment (a differential
//! test holds them to it); the fast path works eight bytes at a time with no `unsafe`.

/// XOR `buf` with the 4-byte `mask`, in place, starting at mask byte 0.
#[inline]
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so mask byte 0 again.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// The byte-at-a-time reference the fast path is tested against.
pub fn apply_mask_scalar(buf: &mut [u8], mask: [u8; 4]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_matches_scalar_over_lengths_and_alignments() {
        let mask = [0x6d, 0xb6, 0xb2, 0x80];
        let backing: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for align in 0..8 {
            for len in 0..200 {
                let mut fast = backing[align..align + len].to_vec();
                let mut slow = fast.clone();
                // Work on the slice at its original alignment within a larger buffer too.
                let mut in_place = backing.clone();
                apply_mask(&mut fast, mask);
                apply_mask_scalar(&mut slow, mask);
                apply_mask(&mut in_place[align..align + len], mask);
                assert_eq!(fast, slow, "len {len} align {align}");
                assert_eq!(
                    &in_place[align..align + len],
                    &slow[..],
                    "len {len} align {align}"
                );
            }
        }
    }

    #[test]
    fn mask_twice_is_identity() {
        let mut buf: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let orig = buf.clone();
        apply_mask(&mut buf, [1, 2, 3, 4]);
        assert_ne!(buf, orig);
        apply_mask(&mut buf, [1, 2, 3, 4]);
        assert_eq!(buf, orig);
    }
}
