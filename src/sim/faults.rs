//! Test layer: seeded transport faults for the in-memory world.
//!
//! Owns one deterministic random stream and turns it into the ways a transport misbehaves
//! without being broken: a read or write that moves fewer bytes than offered (down to one),
//! as a kernel does under memory pressure or a TLS record boundary. The world asks [`Faults::cut`]
//! at every read it hands the core and every write it takes from it; the other faults (stalls,
//! delayed delivery, resets, half-closes) are operations of the world itself
//! ([`super::World::set_reading`], [`super::World::hold`], [`super::World::reset`],
//! [`super::World::client_eof`]) that a scenario schedules from the same seed.
//!
//! Invariants: the same seed gives the same cuts; a cut of a non-empty buffer moves at least
//! one byte, so a world with faults still makes progress.

/// A seeded source of short reads and writes.
#[derive(Debug, Clone)]
pub struct Faults {
    state: u64,
    /// Out of 256: how often a read or write is cut short.
    pub short_per_256: u8,
}

impl Faults {
    pub fn new(seed: u64, short_per_256: u8) -> Faults {
        Faults {
            state: seed,
            short_per_256,
        }
    }

    /// The next number of the stream (splitmix64).
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// How many of `len` offered bytes this read or write moves: all of them, or, when cut
    /// short, anything from one byte up.
    pub fn cut(&mut self, len: usize) -> usize {
        if len <= 1 || self.below(256) >= usize::from(self.short_per_256) {
            return len;
        }
        match self.below(3) {
            0 => 1,
            1 => 1 + self.below(len.min(16)),
            _ => 1 + self.below(len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_are_seeded_and_never_zero() {
        let mut a = Faults::new(7, 200);
        let mut b = Faults::new(7, 200);
        let mut short = 0;
        for len in 1..2000 {
            let n = a.cut(len);
            assert_eq!(n, b.cut(len));
            assert!((1..=len).contains(&n));
            short += usize::from(n < len);
        }
        assert!(short > 1000, "{short} short of 1999");
        assert_eq!(Faults::new(7, 0).cut(100), 100);
    }
}
