//! Transport layer, for tests and soaks: a seeded fault injector around any listener, in the
//! manner of smoltcp's `FaultInjector`.
//!
//! Owns nothing but the wrapped transport and one deterministic random stream per stream (from
//! the listener's seed and the accept count). What it does to the bytes, each with its own
//! rate: reads and writes that move fewer bytes than offered (down to one); written bytes held
//! back in the wrapper and delivered on the next `flush` (delayed delivery, which the reactor
//! drives through [`Stream::wants_write`]); a reset (`ConnectionReset` from a read or a write,
//! and every call after it); a half-close (the read side reports end of stream early, and keeps
//! doing so, while writes still go through).
//!
//! Invariants: with only short reads and writes and delays enabled, the byte streams in both
//! directions are exactly those without the wrapper; every injected error is sticky, as a real
//! broken socket's is; the same seed and the same calls give the same faults.

use crate::{Listener, Remote, Stream};
use std::io::{self, ErrorKind, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

/// Rates out of 65 536 per read or write call.
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultRates {
    pub short: u16,
    pub delay: u16,
    pub reset: u16,
    pub half_close: u16,
}

/// A listener whose streams misbehave at the given rates.
pub struct FaultyListener {
    inner: Box<dyn Listener>,
    seed: u64,
    rates: FaultRates,
    accepted: AtomicU64,
}

impl FaultyListener {
    pub fn new(inner: Box<dyn Listener>, seed: u64, rates: FaultRates) -> FaultyListener {
        FaultyListener {
            inner,
            seed,
            rates,
            accepted: AtomicU64::new(0),
        }
    }
}

impl Listener for FaultyListener {
    fn accept(&self) -> io::Result<(Box<dyn Stream>, Remote)> {
        let (s, remote) = self.inner.accept()?;
        let n = self.accepted.fetch_add(1, Ordering::Relaxed) + 1;
        let rng = Rng(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        Ok((Box::new(FaultyStream::new(s, rng, self.rates)), remote))
    }

    fn describe(&self) -> String {
        format!("faulty {}", self.inner.describe())
    }
}

impl mio::event::Source for FaultyListener {
    fn register(&mut self, r: &mio::Registry, t: mio::Token, i: mio::Interest) -> io::Result<()> {
        self.inner.register(r, t, i)
    }
    fn reregister(&mut self, r: &mio::Registry, t: mio::Token, i: mio::Interest) -> io::Result<()> {
        self.inner.reregister(r, t, i)
    }
    fn deregister(&mut self, r: &mio::Registry) -> io::Result<()> {
        self.inner.deregister(r)
    }
}

/// splitmix64.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn hit(&mut self, rate: u16) -> bool {
        rate > 0 && (self.next() & 0xFFFF) < u64::from(rate)
    }

    /// Fewer than `len` bytes, at least one (`len > 1`).
    fn short(&mut self, len: usize) -> usize {
        1 + (self.next() % (len as u64 - 1)) as usize
    }
}

/// One stream with faults injected (see the module comment).
pub struct FaultyStream {
    inner: Box<dyn Stream>,
    rng: Rng,
    rates: FaultRates,
    /// Written bytes not yet handed to the socket (delayed delivery).
    held: Vec<u8>,
    reset: bool,
    read_closed: bool,
}

impl FaultyStream {
    fn new(inner: Box<dyn Stream>, rng: Rng, rates: FaultRates) -> FaultyStream {
        FaultyStream {
            inner,
            rng,
            rates,
            held: Vec::new(),
            reset: false,
            read_closed: false,
        }
    }

    fn broken(&mut self) -> io::Result<()> {
        if !self.reset && self.rng.hit(self.rates.reset) {
            self.reset = true;
        }
        if self.reset {
            return Err(io::Error::new(ErrorKind::ConnectionReset, "injected reset"));
        }
        Ok(())
    }

    /// Hand held bytes to the socket; `WouldBlock` if it takes none.
    fn drain_held(&mut self) -> io::Result<()> {
        while !self.held.is_empty() {
            match self.inner.write(&self.held) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.held.drain(..n);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Read for FaultyStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.broken()?;
        if !self.read_closed && self.rng.hit(self.rates.half_close) {
            self.read_closed = true;
        }
        if self.read_closed {
            return Ok(0);
        }
        let len = if buf.len() > 1 && self.rng.hit(self.rates.short) {
            self.rng.short(buf.len())
        } else {
            buf.len()
        };
        self.inner.read(&mut buf[..len])
    }
}

impl Write for FaultyStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.broken()?;
        // Held bytes go first, so the order is kept.
        match self.drain_held() {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        let len = if buf.len() > 1 && self.rng.hit(self.rates.short) {
            self.rng.short(buf.len())
        } else {
            buf.len()
        };
        if !self.held.is_empty() || self.rng.hit(self.rates.delay) {
            self.held.extend_from_slice(&buf[..len]);
            return Ok(len);
        }
        self.inner.write(&buf[..len])
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.reset {
            return Err(io::Error::new(ErrorKind::ConnectionReset, "injected reset"));
        }
        match self.drain_held() {
            Ok(()) => self.inner.flush(),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl mio::event::Source for FaultyStream {
    fn register(&mut self, r: &mio::Registry, t: mio::Token, i: mio::Interest) -> io::Result<()> {
        self.inner.register(r, t, i)
    }
    fn reregister(&mut self, r: &mio::Registry, t: mio::Token, i: mio::Interest) -> io::Result<()> {
        self.inner.reregister(r, t, i)
    }
    fn deregister(&mut self, r: &mio::Registry) -> io::Result<()> {
        self.inner.deregister(r)
    }
}

impl Stream for FaultyStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.inner.shutdown_write()
    }

    fn wants_write(&self) -> bool {
        !self.held.is_empty() || self.inner.wants_write()
    }
}
