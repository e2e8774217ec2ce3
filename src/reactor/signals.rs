//! Shell layer: OS signals as one more `mio` source, through `signal-hook-mio` (a self-pipe the
//! handler writes to), so a signal wakes the loop like a readable socket — no polling, no
//! thread, no work in the handler itself.
//!
//! SIGTERM and SIGINT mean [`Signal::Stop`] (an orderly stop), SIGHUP [`Signal::Reload`]. The
//! handlers are installed only when the binary asks ([`Signals::new`]); a reactor embedded in a
//! test or another program leaves the process's signals alone.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::io;

/// What a signal asks of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Stop,
    Reload,
}

pub struct Signals {
    inner: signal_hook_mio::v1_0::Signals,
}

impl Signals {
    /// Install the handlers for SIGTERM, SIGINT and SIGHUP.
    pub fn new() -> io::Result<Signals> {
        Ok(Signals {
            inner: signal_hook_mio::v1_0::Signals::new([SIGTERM, SIGINT, SIGHUP])?,
        })
    }

    /// The signals that arrived since the last call (each kind at most once per call).
    pub fn pending(&mut self) -> Vec<Signal> {
        let mut out = Vec::new();
        for s in self.inner.pending() {
            let sig = if s == SIGHUP {
                Signal::Reload
            } else {
                Signal::Stop
            };
            if !out.contains(&sig) {
                out.push(sig);
            }
        }
        out
    }
}

impl mio::event::Source for Signals {
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
