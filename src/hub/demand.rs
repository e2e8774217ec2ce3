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
//! source) — for a venue feed, the union over every session that follows the feed. A wildcard
//! subscription (`all`, `*`) names no target and demands nothing. It is sent once right after
//! the publisher's `tpa_connection_ack` (perhaps empty), then whenever the set changes, never
//! the same set twice in a row to one publisher. A publisher that never gets one (an older
//! box) should translate every target it was configured with. It answers with the demanded
//! pairs it cannot serve, `publish_unserved` ([`super::unserved`]), when that set changes.
//!
//! Invariants: a session's stored set ([`Streams::translations`]) is the set of its apps'
//! subscriptions as of the last [`Hub::subs_changed`]; what a live feed publisher was last
//! sent is its feed's `demand_sent`, reset when the publisher goes.

#[cfg(doc)]
use super::streams::Streams;
use super::{AppState, Hub, SessKey, Session};
use crate::net::{ConnId, Outbox};
use crate::time::Now;

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
        let Some(s) = self.session_mut(sk) else {
            return;
        };
        s.streams_mut().translations = set;
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
            let feed = self.venue.feed_of(&user);
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

    /// What the followers of `feed` want translated, together. One pass over the sessions,
    /// borrowing their sets (nothing allocated per session): it runs only when a follower's own
    /// set changed, a follower moved, or the feed's publisher connected.
    fn venue_demand(&self, feed: usize) -> Vec<&str> {
        let venue = &self.venue;
        let mut out: Vec<&str> = self
            .sessions
            .iter()
            .filter(|(_, s)| venue.feed_of(&s.user) == feed)
            .filter_map(|(_, s)| s.streams.as_deref())
            .flat_map(|st| st.translations.iter().map(|t| &**t))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
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
