//! Core layer (sans-IO), part of the hub: publish demand — which translations somebody wants,
//! told to the apps that publish them, so an on-box transcriber translates only those (the
//! translation counterpart of the microphone rule: work is done only while an app wants it).
//!
//! The message, box → publisher (an app whose `publishes` holds `translation`, a venue feed's
//! publisher included; no other app ever gets it):
//!
//! ```json
//! {"type":"publish_demand","sessionId":"<the publisher's sessionId>",
//!  "translations":["all-to-pt-BR","en-US-to-es-ES"],"timestamp":"…"}
//! ```
//!
//! `translations` is the sorted set of the `<src>-to-<tgt>` qualifiers of the `translation:`
//! subscriptions of the session's apps (query strings dropped; `all` as the source means any
//! source) — for a venue feed, the union over every session that follows the feed (kept as
//! counts: per pair, how many following sessions want it, moved with each session's set and
//! with each follow switch, so a join rush of N followers costs N small updates, not N passes
//! over every session). A wildcard
//! subscription (`all`, `*`) names no target and demands nothing. It is sent once right after
//! the publisher's `tpa_connection_ack` (perhaps empty), then whenever the set changes, never
//! the same set twice in a row to one publisher. A publisher that never gets one (an older
//! box) should translate every target it was configured with. It answers with the demanded
//! pairs it cannot serve, `publish_unserved` ([`super::unserved`]), when that set changes.
//!
//! Invariants: a session's stored set ([`Streams::translations`]) is the set of its apps'
//! subscriptions as of the last [`Hub::subs_changed`]; a feed's `demand` counts, per pair, the
//! sessions following it whose stored set holds the pair (checked against a recount at every
//! use in test and `sim` builds); what a live feed publisher was last sent is its feed's
//! `demand_sent`, reset when the publisher goes.

#[cfg(doc)]
use super::streams::Streams;
use super::{AppState, Hub, SessKey, Session};
use crate::net::{ConnId, Outbox};
use crate::time::Now;
use std::collections::BTreeMap;

/// The publish demand message.
#[derive(serde::Serialize)]
struct PublishDemand<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "sessionId")]
    session_id: &'a str,
    translations: &'a [Box<str>],
    timestamp: &'a str,
}

/// The translation qualifiers the apps of `s` subscribe to, sorted, each once.
fn session_translations(s: &Session) -> Vec<Box<str>> {
    let mut out: Vec<Box<str>> = s
        .apps
        .values()
        .flat_map(|run| run.subs.iter())
        .filter_map(|x| x.strip_prefix("translation:"))
        .map(|q| q.split('?').next().unwrap_or(q).into())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// One session's `set` comes into (`add`) or leaves a feed's `counts`.
fn count(counts: &mut BTreeMap<Box<str>, u32>, set: &[Box<str>], add: bool) {
    for pair in set {
        if add {
            *counts.entry(pair.clone()).or_insert(0) += 1;
        } else if let Some(n) = counts.get_mut(pair) {
            *n -= 1;
            if *n == 0 {
                counts.remove(pair);
            }
        }
    }
}

fn send(net: &mut impl Outbox, conn: ConnId, session_id: &str, set: &[Box<str>], now: Now) {
    let msg = PublishDemand {
        kind: "publish_demand",
        session_id,
        translations: set,
        timestamp: now.iso(),
    };
    net.send_json(conn, &msg);
}

impl Hub {
    pub(super) fn publishes_translation(&self, app: usize) -> bool {
        self.cfg.apps[app]
            .publishes
            .iter()
            .any(|p| p == "translation")
    }

    /// The apps of `sk` subscribed afresh: if its set of wanted translations changed, tell its
    /// translation publishers, and its venue feed's if the feed's union changed with it.
    pub(super) fn demand_changed(&mut self, net: &mut impl Outbox, sk: SessKey, now: Now) {
        let Some(s) = self.session(sk) else { return };
        let set = session_translations(s);
        let stored = s
            .streams
            .as_deref()
            .map_or(&[][..], |st| &st.translations[..]);
        if stored == &set[..] {
            return;
        }
        let user = s.user.clone();
        let feed = self.venue.feed_of(&user);
        let Some(s) = self.sessions.get_mut(sk) else {
            return;
        };
        let old = std::mem::replace(&mut s.streams_mut().translations, set);
        if let Some(f) = self.venue.feeds.get_mut(feed) {
            count(&mut f.demand, &old, false);
            count(&mut f.demand, &s.streams_mut().translations, true);
        }
        let Some(s) = self.session(sk) else { return };
        let set = s
            .streams
            .as_deref()
            .map_or(&[][..], |st| &st.translations[..]);
        for (&app, run) in s.apps.iter() {
            if let (AppState::Active, Some(conn), true) =
                (&run.state, run.conn, self.publishes_translation(app))
            {
                let sid = format!("{user}-{}", self.cfg.apps[app].package_name);
                send(net, conn, &sid, set, now);
            }
        }
        if !self.venue.feeds.is_empty() {
            self.venue_demand_changed(net, feed, now);
        }
    }

    /// A translation publisher of `sk` was just acknowledged on `conn`: what is wanted now.
    pub(super) fn demand_after_ack(
        &self,
        net: &mut impl Outbox,
        conn: ConnId,
        sk: SessKey,
        app: usize,
        now: Now,
    ) {
        if !self.publishes_translation(app) {
            return;
        }
        let Some(s) = self.session(sk) else { return };
        let set = s
            .streams
            .as_deref()
            .map_or(&[][..], |st| &st.translations[..]);
        let sid = format!("{}-{}", s.user, self.cfg.apps[app].package_name);
        send(net, conn, &sid, set, now);
    }

    /// Session `sk` now follows feed `to`, no longer `from`: its wanted translations move
    /// with it.
    pub(super) fn venue_demand_moved(&mut self, sk: SessKey, from: usize, to: usize) {
        let Some(set) = self.sessions.get(sk).and_then(|s| s.streams.as_deref()) else {
            return;
        };
        let feeds = &mut self.venue.feeds;
        for (feed, add) in [(from, false), (to, true)] {
            if let Some(f) = feeds.get_mut(feed) {
                count(&mut f.demand, &set.translations, add);
            }
        }
    }

    /// What the followers of `feed` want translated, together: its counts' pairs, sorted.
    fn venue_demand(&self, feed: usize) -> Vec<&str> {
        let counts = &self.venue.feeds[feed].demand;
        // Tests and the simulated world check the counts against a recount over every session:
        // a change to a set or to who follows which feed that did not move them fails there.
        #[cfg(all(debug_assertions, any(test, feature = "sim")))]
        if let Err(e) = self.venue_demand_audit() {
            panic!("{e}");
        }
        counts.keys().map(|k| &**k).collect()
    }

    /// Every feed's demand counts against a recount over every session (a check for tests
    /// and the simulated world, after any change: one pass over all sessions per feed).
    pub fn venue_demand_audit(&self) -> Result<(), String> {
        for (feed, f) in self.venue.feeds.iter().enumerate() {
            let mut fresh = BTreeMap::new();
            for (_, s) in self.sessions.iter() {
                if let (true, Some(st)) = (self.venue.feed_of(&s.user) == feed, &s.streams) {
                    count(&mut fresh, &st.translations, true);
                }
            }
            if f.demand != fresh {
                return Err(format!(
                    "feed {}'s translation demand counts {:?} differ from a recount over the sessions {fresh:?}",
                    f.name, f.demand
                ));
            }
        }
        Ok(())
    }

    /// Tell `feed`'s live publisher what its followers want translated, if that changed since
    /// it was last told (or it never was, since it connected).
    pub(super) fn venue_demand_changed(&mut self, net: &mut impl Outbox, feed: usize, now: Now) {
        let Some(f) = self.venue.feeds.get(feed) else {
            return;
        };
        let (Some(conn), true) = (f.conn, self.publishes_translation(f.app)) else {
            return;
        };
        let set = self.venue_demand(feed);
        let f = &self.venue.feeds[feed];
        if f.demand_sent
            .as_ref()
            .is_some_and(|sent| sent.iter().map(|t| &**t).eq(set.iter().copied()))
        {
            return;
        }
        let set: Vec<Box<str>> = set.into_iter().map(Box::from).collect();
        send(net, conn, &format!("venue:{}", f.name), &set, now);
        self.venue.feeds[feed].demand_sent = Some(set);
    }
}
