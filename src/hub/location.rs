//! Core layer (sans-IO), part of the hub: the location tier of a session. Each app's
//! location subscription may carry a `rate` (`{"stream": "location_stream", "rate": "high"}`,
//! kept in its run as `location_rate`); the glasses are asked with `set_location_tier` for the
//! most demanding tier any app of the session subscribed to location wants, and asked again
//! when that changes — lowered when the app that wanted most leaves or unsubscribes.
//!
//! Rules (README, "Location tier"): a location subscription without a rate (what SDK 2.1.29's
//! `location.subscribeToStream` sends: it keys its handler as `location_update`, so the rate
//! never leaves the app) wants `standard`; when no app wants location any more the glasses are
//! asked for `reduced` (there is no "off" tier); nothing is sent before some app wanted one; a
//! reconnecting glasses connection is told the current tier. A rate the box does not know is
//! answered `INVALID_LOCATION_RATE` (`tpa_connection_error`, counted) and taken as `standard`;
//! the subscription itself stands.
//!
//! Invariant: `Session::location_tier` is what the glasses were last asked for (`reduced`
//! after every app let go), `None` only while they were never asked.

use super::{Hub, SessKey};
use crate::net::{ConnId, Outbox};
use crate::protocol::inbound::{LocationTier, SubscriptionUpdate};
use crate::protocol::message::Stream;
use crate::protocol::outbound::{tpa_error, SetLocationTier};
use crate::time::Now;
use serde_json::{json, Value};

/// Whether a subscription (as kept) is one to the location stream.
fn is_location(sub: &str) -> bool {
    let base = sub.split(['?', ':']).next().unwrap_or(sub);
    Stream::from_name(base) == Some(Stream::LocationUpdate)
}

impl Hub {
    /// The rate the location entry of a `subscription_update` asks for (`None`: no entry with
    /// a rate). A rate the box does not know is refused to the app and taken as `standard`.
    pub(super) fn location_rate(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        list: &[Value],
        now: Now,
    ) -> Option<LocationTier> {
        let mut want = None;
        for entry in list {
            let Some(rate) = entry.get("rate") else {
                continue;
            };
            if !is_location(SubscriptionUpdate::stream(entry)) {
                continue;
            }
            let tier = match rate.as_str().and_then(LocationTier::parse) {
                Some(t) => t,
                None => {
                    self.refused("INVALID_LOCATION_RATE");
                    let msg = tpa_error(
                        "INVALID_LOCATION_RATE",
                        "unknown location rate; the subscription stands at \"standard\"",
                        json!({ "rate": rate }),
                        now.iso(),
                    );
                    net.send_json(id, &msg);
                    LocationTier::Standard
                }
            };
            want = want.max(Some(tier));
        }
        want
    }

    /// The tier the session's apps want now (`None`: no app is subscribed to location).
    fn wanted_tier(&self, sk: SessKey) -> Option<LocationTier> {
        let s = self.session(sk)?;
        s.apps
            .values()
            .filter(|r| r.subs.iter().any(|x| is_location(x)))
            .map(|r| r.location_rate.unwrap_or(LocationTier::Standard))
            .max()
    }

    /// Subscriptions changed: ask the glasses for the tier wanted now, if it changed.
    pub(super) fn location_tier_changed(&mut self, net: &mut impl Outbox, sk: SessKey, now: Now) {
        let want = self.wanted_tier(sk);
        let Some(s) = self.session_mut(sk) else {
            return;
        };
        // No app wants location any more: the lowest tier (there is no "off").
        let next = match (want, s.location_tier) {
            (None, None) => None,
            (None, Some(_)) => Some(LocationTier::Reduced),
            (Some(t), _) => Some(t),
        };
        if s.location_tier == next {
            return;
        }
        s.location_tier = next;
        self.send_location_tier(net, sk, now);
    }

    /// Tell the glasses the tier last asked for (a reconnecting glasses connection hears it
    /// again); nothing if none was ever asked for.
    pub(super) fn send_location_tier(&mut self, net: &mut impl Outbox, sk: SessKey, now: Now) {
        let Some(s) = self.session(sk) else { return };
        let Some(g) = s.glasses else { return };
        let Some(tier) = s.location_tier else { return };
        let msg = SetLocationTier {
            kind: "set_location_tier",
            tier: tier.name(),
            timestamp: now.iso(),
        };
        net.send_json(g, &msg);
    }
}
