//! Core layer (sans-IO, bottom): the pool of emptied output buffers.
//!
//! A subscriber fed flat out fills up to `read_pause` and a read's worth more per turn; handing
//! its grown buffer to the next turn saves growing it again (a copy of every byte written,
//! through `realloc`) and faulting fresh pages in: with 16 KiB buffers that was about a fifth
//! of the relay's instructions and a third of its CPU time (see BENCHMARKS.md). After the
//! burst the pool is handed back: a buffer not taken again within [`POOL_IDLE`] is freed.
//!
//! Invariants: at most [`POOL_MAX`] buffers, each empty with a capacity of at most
//! [`POOL_BUF_MAX`] bytes (4 MiB in all); buffers are taken newest first, so the oldest are the
//! ones nobody needed; no buffer stays longer than `POOL_IDLE` after the deadline
//! [`Pool::deadline`] reports has been handed to [`Pool::trim`]. Time comes in as values.

use crate::time::Instant;
use std::time::Duration;

pub const POOL_MAX: usize = 16;
pub const POOL_BUF_MAX: usize = 256 * 1024;
/// A pooled buffer not taken for this long is freed: long enough that a steady load (which
/// takes and gives back every turn) never notices, short enough that a burst's memory goes
/// back within seconds.
pub const POOL_IDLE: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Pool {
    /// Buffers with when they were given back, oldest first.
    bufs: Vec<(Vec<u8>, Instant)>,
}

impl Pool {
    /// The most recently given-back buffer, if any.
    pub fn take(&mut self) -> Option<Vec<u8>> {
        self.bufs.pop().map(|(b, _)| b)
    }

    /// Keep `buf` (emptied) for reuse if it is worth it and there is room; free it otherwise.
    pub fn give_back(&mut self, mut buf: Vec<u8>, now: Instant) {
        if buf.capacity() > 0 && buf.capacity() <= POOL_BUF_MAX && self.bufs.len() < POOL_MAX {
            buf.clear();
            self.bufs.push((buf, now));
        }
    }

    /// When the oldest buffer falls due to be freed.
    pub fn deadline(&self) -> Option<Instant> {
        self.bufs.first().map(|(_, at)| *at + POOL_IDLE)
    }

    /// Free every buffer not taken for `POOL_IDLE` at `now`.
    pub fn trim(&mut self, now: Instant) {
        if self.deadline().is_none_or(|at| at > now) {
            return;
        }
        let stale = self
            .bufs
            .iter()
            .take_while(|(_, at)| *at + POOL_IDLE <= now)
            .count();
        self.bufs.drain(..stale);
    }

    /// Buffers held, and their capacity in bytes.
    pub fn held(&self) -> (usize, usize) {
        let bytes = self.bufs.iter().map(|(b, _)| b.capacity()).sum();
        (self.bufs.len(), bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Instant = Instant::from_micros(1_000_000);

    #[test]
    fn the_pool_keeps_grown_buffers_within_its_bounds() {
        let mut pool = Pool::default();
        pool.give_back(Vec::with_capacity(64 * 1024), T0);
        assert_eq!(pool.held().0, 1, "a grown buffer is kept");
        pool.give_back(Vec::with_capacity(POOL_BUF_MAX + 1), T0);
        pool.give_back(Vec::new(), T0);
        assert_eq!(pool.held().0, 1, "too large or empty buffers are freed");
        for _ in 0..2 * POOL_MAX {
            pool.give_back(b"left over".to_vec(), T0);
        }
        assert_eq!(pool.held().0, POOL_MAX);
        assert!(pool.bufs.iter().all(|(b, _)| b.is_empty()));
    }

    #[test]
    fn buffers_nobody_takes_are_freed_deadline_by_deadline() {
        let mut pool = Pool::default();
        let later = T0 + Duration::from_secs(2);
        for _ in 0..3 {
            pool.give_back(Vec::with_capacity(100 * 1024), T0);
        }
        pool.give_back(Vec::with_capacity(100 * 1024), later);
        assert_eq!(pool.deadline(), Some(T0 + POOL_IDLE));
        // Woken early (another deadline): nothing is due yet.
        pool.trim(Instant::from_micros((T0 + POOL_IDLE).as_micros() - 1));
        assert_eq!(pool.held().0, 4);
        // At the first deadline the three old ones go; the later one has its own.
        pool.trim(T0 + POOL_IDLE);
        assert_eq!(pool.held().0, 1);
        assert_eq!(pool.deadline(), Some(later + POOL_IDLE));
        pool.trim(later + POOL_IDLE);
        assert_eq!(pool.held(), (0, 0));
        assert_eq!(pool.deadline(), None);
    }

    #[test]
    fn the_newest_buffer_is_taken_first_so_the_oldest_age_out() {
        let mut pool = Pool::default();
        pool.give_back(Vec::with_capacity(1024), T0);
        pool.give_back(Vec::with_capacity(2048), T0 + Duration::from_secs(1));
        assert_eq!(pool.take().map(|b| b.capacity()), Some(2048));
        assert_eq!(pool.deadline(), Some(T0 + POOL_IDLE));
    }
}
