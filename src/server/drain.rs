//! Core layer (sans-IO), part of the server: caption finals lost in a drain. At an orderly
//! stop ([`Server::handle_shutdown`]) the output already queued for each app connection is
//! scanned once for caption finals (`data_stream` frames whose data says `"isFinal": true`);
//! where each one ends in the connection's written-byte count is kept. When the connection
//! goes, or the process stops, every final whose last byte was not written is counted lost:
//! `drain_finals_lost_total` in `/metrics`, and the log line at exit.
//!
//! Invariants: nothing is scanned before a stop (no cost on the relay path); a front frame
//! already partly written before the stop is skipped, not guessed (at most one per
//! connection); nothing can be queued to an app after the stop (the hub forgets its links
//! first), so the watch is complete.

use super::Server;
use crate::net::ConnId;
use std::collections::HashMap;

/// The kind index of app connections ([`crate::net::Conn::kind`]).
const APP_KIND: usize = 1;

/// Per watched connection, where each unwritten final ends (in its `consumed` count).
#[derive(Debug, Default)]
pub struct DrainWatch {
    ends: HashMap<ConnId, Vec<u32>>,
    /// Finals counted lost so far.
    pub lost: u64,
}

/// One server frame at the front of `b`: (header length, payload length).
fn frame(b: &[u8]) -> Option<(usize, usize)> {
    let (&b0, &b1) = (b.first()?, b.get(1)?);
    // Reserved bits clear, a known opcode, no mask (a server frame).
    if b0 & 0x70 != 0 || !matches!(b0 & 0x0f, 0 | 1 | 2 | 8 | 9 | 10) || b1 & 0x80 != 0 {
        return None;
    }
    let (head, len) = match b1 {
        126 => (4, u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize),
        127 => (
            10,
            u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize,
        ),
        n => (2, n as usize),
    };
    Some((head, len))
}

/// Whether a text payload is a caption final.
fn is_final(payload: &[u8]) -> bool {
    let key = b"\"isFinal\"";
    let Some(at) = payload.windows(key.len()).position(|w| w == key) else {
        return false;
    };
    let rest = &payload[at + key.len()..];
    let rest: Vec<u8> = rest
        .iter()
        .copied()
        .skip_while(|c| c.is_ascii_whitespace() || *c == b':')
        .take(4)
        .collect();
    rest == b"true" && payload.windows(13).any(|w| w == b"\"data_stream\"")
}

/// The frames of `b` from `start`, if they chain exactly to its end: each final's end.
fn chain(b: &[u8], start: usize) -> Option<Vec<usize>> {
    let mut at = start;
    let mut ends = Vec::new();
    while at < b.len() {
        let (head, len) = frame(&b[at..])?;
        let end = at.checked_add(head)?.checked_add(len)?;
        if end > b.len() {
            return None;
        }
        if b[at] & 0x0f == 1 && is_final(&b[at + head..end]) {
            ends.push(end);
        }
        at = end;
    }
    Some(ends)
}

/// Where the caption finals of unwritten output `b` end. `mid_frame`: `b` begins inside a
/// frame, whose end is found as the first place the rest chains from.
pub fn final_ends(b: &[u8], mid_frame: bool) -> Vec<usize> {
    if !mid_frame {
        return chain(b, 0).unwrap_or_default();
    }
    (1..b.len())
        .find_map(|p| chain(b, p).filter(|_| frame(&b[p..]).is_some()))
        .unwrap_or_default()
}

impl DrainWatch {
    /// The connection `id` goes, `consumed` bytes written in all: its unwritten finals count.
    pub fn gone(&mut self, id: ConnId, consumed: u32) {
        if let Some(ends) = self.ends.remove(&id) {
            self.lost += ends
                .iter()
                .filter(|&&e| (e.wrapping_sub(consumed) as i32) > 0)
                .count() as u64;
        }
    }
}

impl Server {
    /// At the stop, before the hub closes anything: note every app connection's queued finals.
    pub(super) fn watch_drain(&mut self) {
        let ids: Vec<ConnId> = self.net.ids().collect();
        for id in ids {
            let Some(c) = self.net.get(id) else { continue };
            if c.kind() != APP_KIND || !c.is_websocket() || c.pending() == 0 {
                continue;
            }
            let ends: Vec<u32> = final_ends(self.net.output(id), c.mid_frame)
                .into_iter()
                .map(|e| c.consumed.wrapping_add(e as u32))
                .collect();
            if !ends.is_empty() {
                self.drain.ends.insert(id, ends);
            }
        }
    }

    /// The process stops now: whatever is still unwritten is lost. Returns the total lost.
    pub fn finish_drain(&mut self) -> u64 {
        let ids: Vec<ConnId> = self.drain.ends.keys().copied().collect();
        for id in ids {
            let consumed = self.net.get(id).map_or(0, |c| c.consumed);
            match self.net.get(id) {
                Some(_) => self.drain.gone(id, consumed),
                None => {
                    self.drain.ends.remove(&id);
                }
            }
        }
        self.drain.lost
    }

    /// Caption finals lost in the drain so far (for `/metrics`).
    pub fn drain_finals_lost(&self) -> u64 {
        self.drain.lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(out: &mut Vec<u8>, s: &str) {
        out.push(0x81);
        if s.len() < 126 {
            out.push(s.len() as u8);
        } else {
            out.push(126);
            out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(s.as_bytes());
    }

    #[test]
    fn finals_are_found_in_queued_output_also_behind_a_partly_written_frame() {
        let mut b = Vec::new();
        let fin = r#"{"type":"data_stream","streamType":"transcription","data":{"text":"é","isFinal": true}}"#;
        let interim =
            r#"{"type":"data_stream","streamType":"transcription","data":{"isFinal":false}}"#;
        text(&mut b, fin);
        text(&mut b, interim);
        text(&mut b, &fin.repeat(3)); // one long frame, one final
        let first = 2 + fin.len();
        let second = first + 2 + interim.len();
        assert_eq!(final_ends(&b, false), vec![first, b.len()]);
        // Written up to the middle of the first frame: the rest is found from the next one.
        let cut = &b[7..];
        assert_eq!(final_ends(cut, true), vec![b.len() - 7]);
        assert_eq!(final_ends(&b[second..], false), vec![b.len() - second]);
        assert!(final_ends(b"\x81\x05ab", false).is_empty());
    }
}
