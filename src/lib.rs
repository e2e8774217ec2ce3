//! augmentos-edge: an edge WebSocket hub for AugmentOS smart glasses and their apps.
//!
//! Layers, bottom up: [`ws`] and [`http`] (sans-IO protocol codecs), [`server`] (the sans-IO
//! connection core: bytes and time in, bytes and deadlines out), [`reactor`] (the thin mio
//! shell over pluggable transports), and [`sim`] (a deterministic in-memory world with a
//! virtual clock for tests).

pub mod auth;
pub mod config;
pub mod http;
pub mod hub;
pub mod logger;
pub mod reactor;
pub mod server;
pub mod sim;
pub mod time;
pub mod ws;
