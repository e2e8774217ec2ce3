//! Transport layer: the pluggable listeners the reactor serves on, behind one trait.
//!
//! Owns the OS objects (sockets) and nothing else: no protocol, no buffering. A [`Listener`]
//! is a `mio` source that yields [`Stream`]s; a stream is `Read + Write + mio::event::Source`.
//! Shipped: TCP (IPv4/IPv6), TLS over TCP (rustls), Unix domain sockets, and an in-process transport whose
//! connector hands out client ends inside the same process (for tests and embedding); and, for
//! tests and soaks, a seeded fault injector around any of them ([`FaultyListener`]).
//!
//! Invariants: every listener and stream is non-blocking; `accept` returns `WouldBlock` when
//! drained, as the reactor's drain-to-`WouldBlock` loop expects.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

mod faults;
pub use faults::{FaultRates, FaultyListener, FaultyStream};
mod inprocess;
pub use inprocess::{InProcessConnector, InProcessListener};
mod tls;
/// The TLS library the listeners use, for clients of them (the load generator) to match.
pub use rustls;
pub use tls::{server_config, TlsCerts, TlsListener, TlsStream};
mod tls_client;
pub use tls_client::{client_config, failure_reason, system_bundle, TlsClientStream};

/// Where a stream came from, as the transport knows it (the shell maps it to the core's own
/// peer type; the core never names this crate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Ip(SocketAddr),
    Unix,
    InProcess,
}

/// A connected, non-blocking byte stream.
pub trait Stream: Read + Write + mio::event::Source + Send {
    /// Stop sending; the peer reads EOF after the bytes already written.
    fn shutdown_write(&self) -> io::Result<()>;

    /// Bytes the transport itself still holds for the socket (TLS records it could not send
    /// yet): the reactor keeps WRITABLE interest and calls `flush` until this is false.
    fn wants_write(&self) -> bool {
        false
    }
}

/// A non-blocking source of new streams.
pub trait Listener: mio::event::Source + Send {
    fn accept(&self) -> io::Result<(Box<dyn Stream>, Remote)>;
    /// A human-readable address, for logs.
    fn describe(&self) -> String;
}

impl Stream for mio::net::TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

impl Stream for mio::net::UnixStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

/// TCP on an IPv4 or IPv6 address.
pub struct TcpListener {
    inner: mio::net::TcpListener,
}

impl TcpListener {
    pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        Ok(TcpListener {
            inner: mio::net::TcpListener::bind(addr)?,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl Listener for TcpListener {
    fn accept(&self) -> io::Result<(Box<dyn Stream>, Remote)> {
        let (s, addr) = self.inner.accept()?;
        // Small frames must leave at once; the reactor already coalesces per turn.
        s.set_nodelay(true)?;
        Ok((Box::new(s), Remote::Ip(addr)))
    }

    fn describe(&self) -> String {
        match self.inner.local_addr() {
            Ok(a) => format!("tcp://{a}"),
            Err(_) => "tcp://?".into(),
        }
    }
}

/// A Unix domain socket at a filesystem path. A stale socket file (no server answering) is
/// replaced; a live one is refused with `AddrInUse`. The file is removed on drop.
pub struct UnixListener {
    inner: mio::net::UnixListener,
    path: PathBuf,
}

impl UnixListener {
    pub fn bind(path: &Path) -> io::Result<UnixListener> {
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by a running server", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(UnixListener {
            inner: mio::net::UnixListener::bind(path)?,
            path: path.to_path_buf(),
        })
    }
}

impl Drop for UnixListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Listener for UnixListener {
    fn accept(&self) -> io::Result<(Box<dyn Stream>, Remote)> {
        let (s, _) = self.inner.accept()?;
        Ok((Box::new(s), Remote::Unix))
    }

    fn describe(&self) -> String {
        format!("unix:{}", self.path.display())
    }
}

macro_rules! delegate_source {
    ($ty:ty, $field:ident) => {
        impl mio::event::Source for $ty {
            fn register(
                &mut self,
                r: &mio::Registry,
                t: mio::Token,
                i: mio::Interest,
            ) -> io::Result<()> {
                self.$field.register(r, t, i)
            }
            fn reregister(
                &mut self,
                r: &mio::Registry,
                t: mio::Token,
                i: mio::Interest,
            ) -> io::Result<()> {
                self.$field.reregister(r, t, i)
            }
            fn deregister(&mut self, r: &mio::Registry) -> io::Result<()> {
                self.$field.deregister(r)
            }
        }
    };
}
delegate_source!(TcpListener, inner);
delegate_source!(UnixListener, inner);
pub(crate) use delegate_source;

/// Shared queue between an in-process connector and its listener.
type Queue = Arc<Mutex<std::collections::VecDeque<mio::net::UnixStream>>>;
