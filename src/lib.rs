//! augmentos-edge: an edge WebSocket hub for AugmentOS smart glasses and their apps.
//!
//! Layers, bottom up, each importing only those below it (never one beside it): the order is
//! checked, as data, by `tests/layering.rs`, counting `cfg(test)` and `cfg(feature = "sim")`
//! code (only the unit tests' `mod tests` blocks may reach anywhere):
//! - [`time`] (with [`time::TimerHeap`], the deadline heap of the layers above), [`histogram`],
//!   [`logger`]: values;
//! - [`http`] (with `http::path`: percent-decoding, bearer tokens, `405` answers), [`auth`]
//!   (with the public development secrets): sans-IO codecs and checks;
//! - [`ws`]: the WebSocket codec (the upgrade is checked on an `http` request);
//! - [`net`]: the connection table, one slot per connection (ids, peers, output buffers,
//!   deadlines, read-side state, when it may be read: [`net::flow`]) and the [`net::Outbox`]
//!   trait the layers above act through;
//! - [`protocol`]: the wire types of glasses, apps and webhooks;
//! - [`state`]: durable state as values (what the core keeps and the changes it emits), and,
//!   shell-side, the SQLite store and its writer thread;
//! - [`hub`]: sessions, apps, routing — generic over an `Outbox`, never naming the table; in
//!   test and `sim` builds it records each session's display inputs as its own values, for
//!   whatever checks them (it never names `sim`);
//!   its state in parts that own it, composed by `Hub` (`hub/mod.rs`, which wires them): the
//!   session table (`hub/sessions.rs`), each connection's link (`hub/links.rs`), the webhooks
//!   (`hub/webhooks.rs`, per-server FIFOs in `hub/webhook_queue.rs`), what the timers are for
//!   (`hub/timers.rs`), the display rules (`hub/display/`), pending app requests
//!   (`hub/requests.rs`), subscriptions (`hub/routes.rs`), the app registry
//!   (`hub/registry.rs`); the rules by concern beside them (the app lifecycle in
//!   `hub/lifecycle.rs`); its config, errors and counters are values (`hub/config.rs`,
//!   `hub/errors.rs`, `hub/counters.rs`);
//! - [`server`]: the composition of table and hub (bytes and time in, bytes and deadlines out),
//!   with the one HTTP route table (`server::router`: every method and path to a typed route);
//! - [`reactor`]: the thin mio shell over pluggable transports, the only reader of clocks; it
//!   owns where to listen ([`reactor::ListenSpec`]);
//! - [`config`]: the config file, parsed into the layers' own config types (the command line
//!   is the binary's, `src/cli.rs`);
//! - [`sim`] (feature `sim`, and in unit tests): a deterministic world with virtual clocks, and
//!   the display rules' reference model fed from the hub's display trace; nothing imports it.

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
