//! augmentos-edge: an edge WebSocket hub for AugmentOS smart glasses and their apps.
//!
//! Layers, bottom up, each importing only those below it (never one beside it): the order is
//! checked, as data, by `tests/layering.rs`, counting `cfg(test)` and `cfg(feature = "sim")`
//! code (only the unit tests' `mod tests` blocks may reach anywhere); `tests/module_bars.rs`
//! keeps every file of `hub/` and `server/` under 800 lines and every function under 200.
//! - [`time`] (`Instant`, `Wall`, `Now`; [`time::TimerHeap`], the deadline heap of the layers
//!   above), [`histogram`], [`logger`]: values;
//! - [`http`] (request head parser, response writer, the outbound client's response parser;
//!   `http::path`: percent-decoding, bearer tokens, `405` answers), [`auth`] (HS256 tokens with
//!   expiry in `jwt.rs`, RS256/ES256 against a JWKS in `jwks.rs`, API key hashes, the public
//!   development secrets): sans-IO codecs and checks;
//! - [`ws`]: the WebSocket codec (the upgrade is checked on an `http` request);
//! - [`net`]: the one connection table, one slot per connection (`table.rs`, `conn.rs`: ids
//!   with generations, peers, output buffers and their total budget, deadlines, the read
//!   side's parser state and unread input, outbound requests and their bounded bodies), when a
//!   connection may be read (`flow.rs`: backpressure recorded once, polled by the core and the
//!   shell), the [`net::Outbox`] trait the layers above act through;
//! - [`protocol`]: the wire: each inbound message decoded once into a typed value
//!   (`message.rs`: `GlassesMsg`, `AppMsg`, `Stream`; the one place a `type` is compared as
//!   text), borrowed message bodies (`inbound.rs`), the one-pass `type` scanner (`scan.rs`),
//!   outbound messages written into output buffers (`outbound.rs`), glasses requests
//!   (`requests.rs`), the glasses models' capabilities (`capabilities.rs`);
//! - [`state`]: durable state as values (what the core keeps and the changes it emits), and,
//!   shell-side, the SQLite store, the shared PostgreSQL store (`postgres/`) and the writer
//!   thread;
//! - [`hub`]: the application core, generic over an `Outbox` (it never names the table). Its
//!   state lives in owned parts, composed and wired by `Hub` (`hub/mod.rs`, with the timer heap
//!   and the dispatch of connection events): the session table — sessions, their apps' runs
//!   and lifecycle states — (`hub/sessions.rs`), each connection's link (`links.rs`), the
//!   webhooks in flight and waiting (`webhooks.rs`, per app server `webhook_queue.rs`), what
//!   each timer is for (`timers.rs`), the display rules (`display/`, one manager per session
//!   behind `screen.rs`; the dashboard in `dashboard.rs`), a session's subscription index
//!   (`routes.rs`), app requests pending on the glasses (`requests.rs`), the venue feeds
//!   (`venue.rs`), the apps this box may start (`registry.rs`) and their own settings files
//!   (`app_config.rs`), provisioned devices and the token check (`devices.rs`). The rules act
//!   on those parts by concern: glasses messages (`glasses.rs`), app messages (`apps.rs`), the
//!   app lifecycle — start, restart, stop, webhooks — (`lifecycle.rs`), the relay, publishing
//!   and the microphone (`streams.rs`), REST on durable state (`rest.rs`), upgrades
//!   (`access.rs`), account logins (`accounts.rs`), capabilities, location tier, RTMP
//!   keep-alive, an app's goodbye (`capabilities.rs`, `location.rs`, `keepalive.rs`,
//!   `release.rs`). In test and `sim` builds it records each session's display inputs as its
//!   own values, for whatever checks them (it never names `sim`);
//! - [`server`]: the composition of table and hub (bytes and time in, bytes and deadlines out):
//!   the read side and WebSocket dispatch (`server/mod.rs`), the one HTTP route table
//!   (`router.rs`: every method and path to a typed route, the hub given typed requests),
//!   `/metrics` and `/health` rendering (`metrics.rs`, `health.rs`), the `/ui/` pages
//!   (`ui.rs`) and the operator's device calls (`devices.rs`), speech for `/api/tts`
//!   (`tts.rs`), shutdown and reload (`lifecycle.rs`);
//! - [`reactor`]: the thin mio shell over pluggable transports, the only reader of clocks; it
//!   owns where to listen ([`reactor::ListenSpec`]) and the speech worker threads;
//! - [`config`]: the config file, parsed into the layers' own config types (the command line
//!   is the binary's, `src/cli.rs` and `src/device_cli.rs`);
//! - `sim` (feature `sim`, and in unit tests): a deterministic world with virtual clocks, and
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
