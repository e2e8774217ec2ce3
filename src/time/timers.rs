//! Core layer, beside the time values: the one timer structure of the core (the connection
//! table's deadlines in `net` and the hub's in `hub` each keep one).
//!
//! Owns a min-heap of `(deadline, key)` entries. Entries are never removed in place: the owner
//! keeps the authoritative deadline for each key and a fired entry is checked against it, so a
//! cancelled or moved deadline simply goes stale (idempotent on spurious wake-ups, as
//! quinn-proto does). Invariants: the heap holds at most `2 * live + 64` entries; past that the
//! owner's [`TimerHeap::rebuild`] drops the stale ones. Its room follows its entries down: once
//! fewer than a quarter of it is used, half is given back, so a burst (thousands of sessions
//! set up at once, each arming deadlines) leaves no room behind when its deadlines are gone.

use super::Instant;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

pub struct TimerHeap<K: Ord + Copy> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

/// Room (entries) a heap keeps however few entries it holds.
const MIN_ROOM: usize = 64;

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
            self.give_back_room();
        }
        None
    }

    /// Pop the next entry due at or before `now`, current or not (the caller checks).
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => {
                let e = self.heap.pop().map(|Reverse(e)| e);
                self.give_back_room();
                e
            }
            _ => None,
        }
    }

    /// After a pop: halve the room once less than a quarter of it is used (amortised O(1):
    /// a halving follows at least a quarter of the room's worth of pops).
    fn give_back_room(&mut self) {
        let room = self.heap.capacity();
        if room > MIN_ROOM && self.heap.len() < room / 4 {
            self.heap.shrink_to((room / 2).max(MIN_ROOM));
        }
    }

    /// Entries the heap has room for.
    pub fn capacity(&self) -> usize {
        self.heap.capacity()
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
        self.give_back_room();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_of_a_burst_goes_back_once_its_deadlines_fired() {
        let mut t = TimerHeap::default();
        for i in 0..10_000u64 {
            t.push(Instant::from_micros(i), i);
        }
        assert!(t.capacity() >= 10_000);
        // The burst's deadlines fire, one wake-up each; one late deadline stays.
        t.push(Instant::from_micros(1_000_000), u64::MAX);
        let mut fired = 0;
        while t.pop_due(Instant::from_micros(9_999)).is_some() {
            fired += 1;
        }
        assert_eq!((fired, t.len()), (10_000, 1));
        assert!(
            t.capacity() <= MIN_ROOM,
            "room {} kept for 1 entry",
            t.capacity()
        );
        // Stale entries dropped by `peek` give room back too.
        for i in 0..10_000u64 {
            t.push(Instant::from_micros(i), i);
        }
        assert_eq!(
            t.peek(|_, k| k == u64::MAX),
            Some(Instant::from_micros(1_000_000))
        );
        assert!(
            t.capacity() <= MIN_ROOM,
            "room {} kept for 1 entry",
            t.capacity()
        );
    }

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
