//! Core layer (sans-IO), owned by the hub, one per session: the display manager — what the
//! glasses show on each view, and when.
//!
//! A pure state machine: the hub feeds [`DisplayManager`] display requests and app lifecycle
//! events with the monotonic `now`, sends what [`DisplayManager::poll_display`] hands out, and
//! arms its one timer slot with [`DisplayManager::poll_timeout`]. Nothing here reads a clock,
//! sends, or knows a connection; nothing here names another part of the hub.
//!
//! The files, by what they own:
//! - `types.rs`: the vocabulary — views, owners, layouts, displays, answers, counters;
//! - `timing.rs`: the clock rules — the timings, when a display stops being worth showing, when
//!   a lock ends;
//! - `boot.rs`: the apps starting, the displays held for them, the boot card;
//! - `side.rs`: the dashboard and always-on views and their per-app throttle;
//! - `lists.rs`: the box of lists a session's state lives in while it has any, and its memory;
//! - `manager.rs`: the manager itself and every rule of PROTOCOL §15 and §16.6 (throttle, boot,
//!   priority and lock, expiry, restore).
//!
//! Invariants: the parts only hold data and answer questions; the manager alone decides what
//! the main view shows, and the side views' own throttle is read in `side.rs`.

mod boot;
mod lists;
mod manager;
mod side;
mod timing;
mod types;

pub use manager::DisplayManager;
pub use timing::DisplayTimings;
pub use types::{
    Accepted, AppId, Display, DisplayStats, Layout, Owner, Refusal, ScreenInfo, View, LAYOUT_TYPES,
};
