//! Core layer (values), part of the hub: the counters it keeps for `/metrics` (refusals,
//! webhooks and their outcomes and latency, restarts, ended sessions, drops, pauses, the
//! display counters of ended sessions). Plain numbers the hub's parts add to; the server
//! renders them.
//!
//! Invariant: `refusals_total` is the sum of `refusals` (both change only in
//! [`HubCounters::refused`]).

use super::display;
use std::collections::BTreeMap;

/// Counters the hub keeps for `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct HubCounters {
    /// Refusals by code (app and glasses).
    pub refusals: BTreeMap<&'static str, u64>,
    pub webhooks_sent: u64,
    pub webhooks_failed: u64,
    pub app_restarts: u64,
    pub sessions_ended: u64,
    /// Sessions ended here because another process holds the user (a lease lost or wanted).
    pub sessions_fenced: u64,
    /// Webhooks replaced by a newer one for the same app before they were sent.
    pub webhooks_coalesced: u64,
    /// Webhooks that waited for a free slot at their app server.
    pub webhooks_queued: u64,
    /// Lossy messages not delivered to a backed-up subscriber, by stream.
    pub dropped: BTreeMap<&'static str, u64>,
    /// Times a feeder (glasses, publisher) was not read because a subscriber was backed up.
    pub feeder_pauses: u64,
    /// Webhooks by outcome: `ok` (2xx), `http_error` (another status), `failed` (no usable
    /// response: refused, reset, timed out), `not_sent` (no outbound connection free),
    /// `queue_timeout` (a start that waited for its app server past `webhook_queue_timeout`).
    pub webhook_outcomes: BTreeMap<&'static str, u64>,
    /// Fetches of apps' `tpa_config.json` by outcome ([`super::app_config::OUTCOMES`]).
    pub app_config_outcomes: BTreeMap<&'static str, u64>,
    /// How long sent webhooks took until their outcome ([`crate::histogram::WEBHOOK_US`]).
    pub webhook_latency: crate::histogram::Histogram,
    /// Display counters of sessions that ended (live ones are in their display managers).
    pub display_retired: display::DisplayStats,
    /// The sum of `refusals` (a cheap test for "something was refused").
    pub refusals_total: u64,
}

impl HubCounters {
    /// Count a refusal by its code.
    pub fn refused(&mut self, code: &'static str) {
        *self.refusals.entry(code).or_default() += 1;
        self.refusals_total += 1;
    }
}
