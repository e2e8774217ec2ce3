//! Core layer (sans-IO), part of the server composition: the `/health` document.
//!
//! A pure renderer over a [`View`] the server gathers (its own lifecycle flags, the store's
//! status, read-only references to the connection table and the hub, the clock reading); it
//! reads no clock and changes nothing. Invariants: `ready` is true only when the box takes
//! new connections and sessions now (listeners open or not yet known, not stopping, below its
//! connection and session limits); a failing store leaves it ready and makes it `degraded`.

use crate::hub::Hub;
use crate::net::Net;
use crate::state::StoreStatus;
use crate::time::{Instant, Now};

/// What the `/health` document reads, gathered by the server at one instant.
pub struct View<'a> {
    pub now: Now,
    /// When the server started (monotonic).
    pub started: Instant,
    /// Listening sockets open, as the shell last reported (`None`: not reported).
    pub listeners: Option<usize>,
    /// The server is shutting down.
    pub stopping: bool,
    pub store: &'a StoreStatus,
    pub net: &'a Net,
    pub hub: &'a Hub,
}

/// The `/health` document: per component (listeners, store, sessions, connections) a
/// `state`, and `ready`: whether the box takes new connections and sessions now (listeners
/// open, not stopping, below its connection and session limits). A failing store leaves it
/// ready (sessions run; what they change is not remembered) and makes it `degraded`.
pub fn document(v: &View<'_>) -> serde_json::Value {
    let listeners = match (v.stopping, v.listeners) {
        (true, _) => "stopped",
        (false, Some(0)) => "none",
        (false, Some(_)) => "ok",
        (false, None) => "unknown",
    };
    let store = if v.store.error.is_some() {
        "failing"
    } else {
        "ok"
    };
    let (sessions, max_sessions) = (v.hub.session_count(), v.hub.config().max_sessions);
    let sessions_state = if sessions >= max_sessions {
        "full"
    } else {
        "ok"
    };
    // Admitted connections: those held past a cap to read one request (this check, when
    // the box is full) are not among them.
    let (conns, max_conns) = (v.net.admitted_count(), v.net.cfg.max_connections);
    let conns_state = if conns >= max_conns { "full" } else { "ok" };
    let ready =
        matches!(listeners, "ok" | "unknown") && sessions_state == "ok" && conns_state == "ok";
    let status = match (v.stopping, ready && store == "ok") {
        (true, _) => "stopping",
        (false, true) => "ok",
        (false, false) => "degraded",
    };
    serde_json::json!({
        "status": status,
        "ready": ready,
        "version": env!("CARGO_PKG_VERSION"),
        "uptimeSeconds": v.now.mono.saturating_since(v.started).as_secs(),
        "components": {
            "listeners": {"state": listeners, "open": v.listeners},
            "store": {"state": store, "kind": v.store.kind},
            "sessions": {"state": sessions_state, "count": sessions, "limit": max_sessions},
            "connections": {"state": conns_state, "count": conns, "limit": max_conns,
                "overCap": v.net.over_cap_count()},
        },
        "connections": {
            "total": conns,
            "websocket": v.net.websocket_count(),
            "outbound": v.net.outbound_count(),
        },
        "sessions": sessions,
        "store": {
            "kind": v.store.kind,
            "path": v.store.path,
            "state": store,
            "error": v.store.error,
            "recovered": v.store.recovered,
            "batchesWritten": v.store.batches,
            "changesWritten": v.store.changes,
            "changesQueued": v.store.queued,
            "changesLost": v.store.lost,
        },
    })
}
