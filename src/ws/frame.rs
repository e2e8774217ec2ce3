//! WebSocket layer: the frame header view and the frame encoder (RFC 6455 §5.2).
//!
//! Owns no buffers. [`parse_header`] reads a header from the front of a caller's buffer and
//! never consumes on short input (`Ok(None)` = need more bytes); every rule it checks is its
//! own [`FrameError`] variant, decided from the header alone, before any payload is touched or
//! any memory reserved. The encoder appends to a caller's `Vec`; server frames are unmasked.

/// Which end of the connection we are: servers require masked input, clients unmasked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// A checked frame header. After [`parse_header`] returns one, its fields obey RFC 6455.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub opcode: Opcode,
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes (already checked against the frame limit).
    pub payload_len: usize,
    /// Bytes taken by the header itself (2..=14).
    pub header_len: usize,
}

impl Header {
    pub fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// One variant per RFC 6455 rule a frame header can break. `Copy`, no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// RSV1-3 set with no extension negotiated (§5.2).
    ReservedBits,
    /// Opcode 0x3-0x7 or 0xB-0xF (§5.2).
    UnknownOpcode,
    /// A client frame without a mask (§5.1).
    UnmaskedClientFrame,
    /// A server frame with a mask (§5.1).
    MaskedServerFrame,
    /// A control frame with FIN clear (§5.5).
    FragmentedControl,
    /// A control frame with more than 125 bytes of payload (§5.5).
    ControlTooLong,
    /// A 64-bit length with the most significant bit set (§5.2).
    LengthOverflow,
    /// Payload larger than the configured frame limit.
    FrameTooBig,
}

impl FrameError {
    /// The close code this error is answered with (§7.4.1).
    pub fn close_code(self) -> u16 {
        match self {
            FrameError::FrameTooBig => 1009,
            _ => 1002,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            FrameError::ReservedBits => "reserved bits set",
            FrameError::UnknownOpcode => "unknown opcode",
            FrameError::UnmaskedClientFrame => "client frame not masked",
            FrameError::MaskedServerFrame => "server frame masked",
            FrameError::FragmentedControl => "fragmented control frame",
            FrameError::ControlTooLong => "control frame payload over 125 bytes",
            FrameError::LengthOverflow => "payload length has its top bit set",
            FrameError::FrameTooBig => "frame too big",
        }
    }
}

/// Parse the frame header at the front of `buf`. `Ok(None)` means more bytes are needed; nothing
/// is consumed either way. Errors are reported as soon as the bytes that prove them are present.
pub fn parse_header(
    buf: &[u8],
    role: Role,
    max_payload: usize,
) -> Result<Option<Header>, FrameError> {
    let (b0, b1) = match buf {
        [b0, b1, ..] => (*b0, *b1),
        _ => return Ok(None),
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(FrameError::UnknownOpcode)?;
    let fin = b0 & 0x80 != 0;
    let masked = b1 & 0x80 != 0;
    match (role, masked) {
        (Role::Server, false) => return Err(FrameError::UnmaskedClientFrame),
        (Role::Client, true) => return Err(FrameError::MaskedServerFrame),
        _ => {}
    }
    let len7 = b1 & 0x7F;
    if opcode.is_control() {
        if !fin {
            return Err(FrameError::FragmentedControl);
        }
        if len7 > 125 {
            return Err(FrameError::ControlTooLong);
        }
    }
    let (len, mut at) = match len7 {
        126 => match buf.get(2..4) {
            Some(b) => (u16::from_be_bytes([b[0], b[1]]) as u64, 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut w = [0u8; 8];
                w.copy_from_slice(b);
                let len = u64::from_be_bytes(w);
                if len >> 63 != 0 {
                    return Err(FrameError::LengthOverflow);
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        n => (n as u64, 2),
    };
    if len > max_payload as u64 {
        return Err(FrameError::FrameTooBig);
    }
    let mask = if masked {
        match buf.get(at..at + 4) {
            Some(m) => {
                at += 4;
                Some([m[0], m[1], m[2], m[3]])
            }
            None => return Ok(None),
        }
    } else {
        None
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask,
        payload_len: len as usize,
        header_len: at,
    }))
}

/// Append a frame header to `out`. With a mask, the caller masks the payload it appends.
#[inline]
pub fn write_header(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: Opcode,
    len: usize,
    mask: Option<[u8; 4]>,
) {
    let b0 = (if fin { 0x80 } else { 0 }) | opcode as u8;
    let mbit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(b0);
        out.push(mbit | len as u8);
    } else if len <= u16::MAX as usize {
        out.extend_from_slice(&[b0, mbit | 126]);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.extend_from_slice(&[b0, mbit | 127]);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(m) = mask {
        out.extend_from_slice(&m);
    }
}

/// Append one unmasked (server) frame whose payload is the concatenation of `parts`, written
/// straight from the parts with no intermediate copy.
pub fn write_frame(out: &mut Vec<u8>, opcode: Opcode, parts: &[&[u8]]) {
    let len = parts.iter().map(|p| p.len()).sum();
    out.reserve(len + 10);
    write_header(out, true, opcode, len, None);
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// Append one masked (client) frame; used by clients (test harness, load generator).
pub fn write_masked_frame(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: Opcode,
    payload: &[u8],
    mask: [u8; 4],
) {
    write_header(out, fin, opcode, payload.len(), Some(mask));
    let start = out.len();
    out.extend_from_slice(payload);
    super::mask::apply_mask(&mut out[start..], mask);
}

/// Append a close frame with `code` and `reason` (the reason is cut to fit 123 bytes on a
/// character boundary).
pub fn write_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    write_frame(
        out,
        Opcode::Close,
        &[&code.to_be_bytes(), &reason.as_bytes()[..end]],
    );
}

/// Whether a close code may appear in a Close frame on the wire (§7.4.1, §7.4.2).
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 1012..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(len_bytes: &[u8]) -> Vec<u8> {
        let mut v = vec![0x81];
        v.extend_from_slice(len_bytes);
        v.extend_from_slice(&[1, 2, 3, 4]);
        v
    }

    /// Every strict prefix of a complete header is `Partial`, and the whole is complete.
    fn check_prefixes(bytes: &[u8], payload_len: usize) {
        for cut in 0..bytes.len() {
            assert_eq!(
                parse_header(&bytes[..cut], Role::Server, 1 << 20),
                Ok(None),
                "prefix {cut} of {bytes:?}"
            );
        }
        let h = parse_header(bytes, Role::Server, 1 << 20).unwrap().unwrap();
        assert_eq!(h.payload_len, payload_len);
        assert_eq!(h.header_len, bytes.len());
        assert_eq!(h.mask, Some([1, 2, 3, 4]));
        assert!(h.fin);
        assert_eq!(h.opcode, Opcode::Text);
    }

    #[test]
    fn partial_prefixes_7_16_64_bit_lengths() {
        check_prefixes(&masked(&[0x80 | 5]), 5);
        check_prefixes(&masked(&[0x80 | 126, 0x01, 0x00]), 256);
        check_prefixes(&masked(&[0x80 | 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]), 70_000);
    }

    #[test]
    fn each_rule_is_its_own_error() {
        let p = |b: &[u8]| parse_header(b, Role::Server, 1000);
        assert_eq!(p(&[0xC1, 0x80]), Err(FrameError::ReservedBits));
        assert_eq!(p(&[0x83, 0x80]), Err(FrameError::UnknownOpcode));
        assert_eq!(p(&[0x8B, 0x80]), Err(FrameError::UnknownOpcode));
        assert_eq!(p(&[0x81, 0x00]), Err(FrameError::UnmaskedClientFrame));
        assert_eq!(p(&[0x09, 0x80]), Err(FrameError::FragmentedControl));
        assert_eq!(p(&[0x89, 0xFE]), Err(FrameError::ControlTooLong));
        assert_eq!(
            p(&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(FrameError::LengthOverflow)
        );
        assert_eq!(p(&[0x82, 0xFE, 0x03, 0xE9]), Err(FrameError::FrameTooBig));
        assert_eq!(
            parse_header(&[0x81, 0x80], Role::Client, 10),
            Err(FrameError::MaskedServerFrame)
        );
        assert_eq!(FrameError::FrameTooBig.close_code(), 1009);
        assert_eq!(FrameError::ReservedBits.close_code(), 1002);
    }

    #[test]
    fn encoder_round_trips_all_length_forms() {
        for len in [0usize, 1, 125, 126, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = Vec::new();
            write_frame(
                &mut out,
                Opcode::Binary,
                &[&payload[..len / 2], &payload[len / 2..]],
            );
            let h = parse_header(&out, Role::Client, 1 << 20).unwrap().unwrap();
            assert_eq!(h.payload_len, len);
            assert_eq!(&out[h.header_len..], &payload[..]);

            let mut out = Vec::new();
            write_masked_frame(&mut out, false, Opcode::Text, &payload, [9, 8, 7, 6]);
            let h = parse_header(&out, Role::Server, 1 << 20).unwrap().unwrap();
            assert!(!h.fin);
            let mut body = out[h.header_len..].to_vec();
            crate::ws::mask::apply_mask(&mut body, [9, 8, 7, 6]);
            assert_eq!(body, payload);
        }
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let mut out = Vec::new();
        let reason = "é".repeat(100);
        write_close(&mut out, 1000, &reason);
        let h = parse_header(&out, Role::Client, 200).unwrap().unwrap();
        assert!(h.payload_len <= 125);
        assert!(std::str::from_utf8(&out[h.header_len + 2..]).is_ok());
    }

    #[test]
    fn close_code_table() {
        for ok in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999,
        ] {
            assert!(is_valid_close_code(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert!(!is_valid_close_code(bad), "{bad}");
        }
    }
}
