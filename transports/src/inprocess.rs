//! Transport layer: the in-process transport.
//!
//! Owns a queue of server ends and a wake-up socket pair. [`InProcessConnector::connect`] makes
//! a connected socket pair inside the process, queues the server end and pokes the listener's
//! wake-up socket so the reactor sees the listener readable; it returns the client end. No
//! address, no port, nothing outside the process can reach it.
//!
//! Invariant: one wake-up byte per queued stream; `accept` pops one stream per call and returns
//! `WouldBlock` when the queue is empty.

use super::{delegate_source, Listener, Queue, Remote, Stream};
use std::io::{self, Read, Write};

pub struct InProcessListener {
    wake_rx: mio::net::UnixStream,
    queue: Queue,
}

#[derive(Clone)]
pub struct InProcessConnector {
    wake_tx: std::sync::Arc<std::os::unix::net::UnixStream>,
    queue: Queue,
}

impl InProcessListener {
    pub fn new() -> io::Result<(InProcessListener, InProcessConnector)> {
        let (rx, tx) = std::os::unix::net::UnixStream::pair()?;
        rx.set_nonblocking(true)?;
        let queue = Queue::default();
        Ok((
            InProcessListener {
                wake_rx: mio::net::UnixStream::from_std(rx),
                queue: queue.clone(),
            },
            InProcessConnector {
                wake_tx: std::sync::Arc::new(tx),
                queue,
            },
        ))
    }
}

impl InProcessConnector {
    /// Connect a new client; returns a blocking std stream for the client side.
    pub fn connect(&self) -> io::Result<std::os::unix::net::UnixStream> {
        let (server, client) = std::os::unix::net::UnixStream::pair()?;
        server.set_nonblocking(true)?;
        self.queue
            .lock()
            .map_err(|_| io::Error::other("in-process queue poisoned"))?
            .push_back(mio::net::UnixStream::from_std(server));
        (&*self.wake_tx).write_all(&[1])?;
        Ok(client)
    }
}

impl Listener for InProcessListener {
    fn accept(&self) -> io::Result<(Box<dyn Stream>, Remote)> {
        let mut byte = [0u8; 1];
        match (&self.wake_rx).read(&mut byte) {
            Ok(0) => return Err(io::ErrorKind::WouldBlock.into()),
            Ok(_) => {}
            Err(e) => return Err(e),
        }
        let s = self
            .queue
            .lock()
            .map_err(|_| io::Error::other("in-process queue poisoned"))?
            .pop_front()
            .ok_or(io::ErrorKind::WouldBlock)?;
        Ok((Box::new(s), Remote::InProcess))
    }

    fn describe(&self) -> String {
        "in-process".into()
    }
}

delegate_source!(InProcessListener, wake_rx);
