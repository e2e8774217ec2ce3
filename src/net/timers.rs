//! Core layer: the one timer structure of the core.
//!
//! Owns a min-heap of `(deadline, key)` entries. Entries are never removed in place: the owner
//! keeps the authoritative deadline for each key and a fired entry is checked against it, so a
//! cancelled or moved deadline simply goes stale (idempotent on spurious wake-ups, as
//! quinn-proto does). Invariant: the heap holds at most `2 * live + 64` entries; past that the
//! owner's [`TimerHeap::rebuild`] drops the stale ones.

use crate::time::Instant;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

pub struct TimerHeap<K: Ord + Copy> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K: Ord + Copy> Default for TimerHeap<K> {
    fn default() -> Self {
        TimerHeap {
            heap: BinaryHeap::new(),
        }
    }
}

impl<K: Ord + Copy> TimerHeap<K> {
    pub fn push(&mut self, at: Instant, key: K) {
        self.heap.push(Reverse((at, key)));
    }

    /// The earliest entry still current according to `is_current`; stale ones are dropped.
    pub fn peek(&mut self, mut is_current: impl FnMut(Instant, K) -> bool) -> Option<Instant> {
        while let Some(Reverse((at, key))) = self.heap.peek().copied() {
            if is_current(at, key) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// Pop the next entry due at or before `now`, current or not (the caller checks).
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Whether `(at, key)` is in the heap (for audits).
    #[cfg(any(test, feature = "sim"))]
    pub fn contains(&self, at: Instant, key: K) -> bool {
        self.heap.iter().any(|Reverse(e)| *e == (at, key))
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Keep only the entries `is_current` accepts.
    pub fn rebuild(&mut self, mut is_current: impl FnMut(Instant, K) -> bool) {
        self.heap.retain(|Reverse((at, k))| is_current(*at, *k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_entries_are_skipped() {
        let mut t = TimerHeap::default();
        let at = |s| Instant::from_micros(s);
        t.push(at(5), 1u32);
        t.push(at(3), 2u32);
        t.push(at(9), 3u32);
        // Key 2's deadline was moved away: only 1 and 3 are current.
        assert_eq!(t.peek(|_, k| k != 2), Some(at(5)));
        assert_eq!(t.pop_due(at(4)), None);
        assert_eq!(t.pop_due(at(6)), Some((at(5), 1)));
        t.rebuild(|_, k| k != 3);
        assert!(t.is_empty());
    }
}
