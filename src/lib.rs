//! augmentos-edge: an edge WebSocket hub for AugmentOS smart glasses and their apps.
//!
//! Layers, bottom up, each importing only those below it:
//! - [`time`], [`histogram`], [`ws`], [`http`], [`auth`]: values and sans-IO codecs;
//! - [`net`]: the connection table (ids, peers, output buffers, deadlines) and the
//!   [`net::Outbox`] trait the layers above act through;
//! - [`protocol`]: the wire types of glasses, apps and webhooks;
//! - [`state`]: durable state as values (what the core keeps and the changes it emits), and,
//!   shell-side, the SQLite store and its writer thread;
//! - [`hub`]: sessions, apps, routing — generic over an `Outbox`, never naming the table;
//! - [`server`]: the composition of table and hub (bytes and time in, bytes and deadlines out);
//! - [`reactor`]: the thin mio shell over pluggable transports, the only reader of clocks;
//! - [`config`]: the config file (the command line is the binary's, `src/cli.rs`);
//! - [`sim`] (feature `sim`, and in unit tests): a deterministic world with virtual clocks.

pub mod auth;
pub mod config;
pub mod histogram;
pub mod http;
pub mod hub;
pub mod logger;
pub mod net;
pub mod protocol;
pub mod reactor;
pub mod server;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod state;
pub mod time;
pub mod ws;
