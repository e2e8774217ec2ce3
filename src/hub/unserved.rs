//! Core layer (sans-IO), part of the hub: unserved translations — the demanded pairs that no
//! engine of a translation publisher covers, told to the apps that subscribe to them, so an
//! app asking for `translation:en-US-to-xx-XX` learns why no data comes instead of waiting.
//!
//! The message, publisher → box (an app whose `publishes` holds `translation`, a venue feed's
//! publisher included), the answer to a [`super::demand`] `publish_demand`:
//!
//! ```json
//! {"type":"publish_unserved","translations":["en-US-to-xx-XX"]}
//! ```
//!
//! `translations` is the whole set of the demanded `<src>-to-<tgt>` qualifiers (as
//! `publish_demand` spelled them) the publisher will not translate; each message replaces the
//! last. A publisher sends it when that set changes (so not at all while it serves everything);
//! the box keeps, per publisher, only the entries that are demanded when it arrives, so what it
//! holds is bounded by the demand. A new connection of the publisher starts from the empty set.
//!
//! A pair is *unavailable* in a session when the session has at least one translation source
//! — its live venue feed (for a follower) and each active translation publisher of its own —
//! and every one of them lists it (a source that never sent the message serves everything).
//! An app subscribed to an unavailable pair gets the structured error of a bad subscription,
//! `tpa_connection_error` with code `TRANSLATION_UNAVAILABLE`, the pairs named in `message`
//! (SDK 2.1.29 surfaces only that, as an `Error` to `session.events.onError`) and its own
//! subscription strings in `details.unavailable`; counted in the refusals at `/metrics`. It is
//! told once per change: when a publisher's report makes a pair it subscribes to unavailable,
//! when it subscribes to a pair that already is, when its session is moved to a feed that
//! does not serve a pair the old one did, or when a source that served the pair goes (its
//! connection closes or it is stopped) and every remaining one lists it. The subscription stays: data flows if a
//! source later serves the pair.
//!
//! Refusals: from an app that may not publish translations, `PUBLISH_NOT_ALLOWED`; without a
//! `translations` array of strings, `MALFORMED_MESSAGE`; either way nothing else changes.
//!
//! Invariant: a session's reports ([`Streams::unserved`]) and a feed's
//! ([`super::venue::Feed`]) hold only pairs that were demanded of that source when reported.

use super::apps::AppCtx;
#[cfg(doc)]
use super::streams::Streams;
use super::{AppState, Hub, SessKey, Session};
use crate::net::{ConnId, Outbox};
use crate::protocol::{inbound, outbound as messages};
use crate::time::Now;
use serde_json::json;
use std::borrow::Cow;

/// The code an app subscribed to an unavailable pair is told.
const CODE: &str = "TRANSLATION_UNAVAILABLE";

#[derive(serde::Deserialize)]
struct PublishUnserved<'a> {
    #[serde(borrow)]
    translations: Vec<Cow<'a, str>>,
}

/// The `<src>-to-<tgt>` a subscription names, if it is a translation one (query dropped).
fn pair(sub: &str) -> Option<&str> {
    let q = sub.strip_prefix("translation:")?;
    Some(q.split('?').next().unwrap_or(q))
}

impl Hub {
    /// The pairs of a `publish_unserved` from `app` on `id`, or `None` after refusing it.
    fn checked_unserved<'t>(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        app: usize,
        text: &'t str,
        now: Now,
    ) -> Option<Vec<Cow<'t, str>>> {
        if !self.publishes_translation(app) {
            let msg = "only an app that publishes translation may send publish_unserved";
            self.app_error(net, id, "PUBLISH_NOT_ALLOWED", msg, now);
            return None;
        }
        let Some(m) = inbound::decode::<PublishUnserved<'_>>(text) else {
            let msg = "publish_unserved needs 'translations', an array of strings";
            self.app_error(net, id, "MALFORMED_MESSAGE", msg, now);
            return None;
        };
        Some(m.translations)
    }

    /// A `publish_unserved` from a translation publisher of a session.
    pub(super) fn publish_unserved(&mut self, net: &mut impl Outbox, cx: AppCtx, text: &str) {
        let AppCtx { id, sk, app, now } = cx;
        let Some(pairs) = self.checked_unserved(net, id, app, text, now) else {
            return;
        };
        let Some(s) = self.session_mut(sk) else {
            return;
        };
        let st = s.streams_mut();
        let new = kept(&pairs, &st.translations);
        let old = match st.unserved.iter().position(|(a, _)| *a == app) {
            Some(i) if new.is_empty() => st.unserved.swap_remove(i).1,
            Some(i) => std::mem::replace(&mut st.unserved[i].1, new.clone()),
            None if new.is_empty() => Box::default(),
            None => {
                st.unserved.push((app, new.clone()));
                Box::default()
            }
        };
        log::info!(
            "event=publish_unserved package={:?} translations={new:?}",
            self.cfg.apps[app].package_name
        );
        self.tell_unavailable(net, sk, None, &added(&new, &old), now);
    }

    /// A `publish_unserved` from the publisher of `feed`: it applies to every follower.
    pub(super) fn venue_unserved(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        feed: usize,
        text: &str,
        now: Now,
    ) {
        let app = self.venue.feeds[feed].app;
        let Some(pairs) = self.checked_unserved(net, id, app, text, now) else {
            return;
        };
        let f = &mut self.venue.feeds[feed];
        let new = kept(&pairs, f.demand_sent.as_deref().unwrap_or(&[]));
        let old = std::mem::replace(&mut f.unserved, new);
        let added = added(&f.unserved, &old);
        log::info!(
            "event=publish_unserved feed={:?} translations={:?}",
            f.name,
            f.unserved
        );
        if added.is_empty() {
            return;
        }
        let venue = &self.venue;
        let keys: Vec<SessKey> = self
            .sessions
            .iter()
            .filter(|(_, s)| venue.feed_of(&s.user) == feed)
            .map(|(sk, _)| sk)
            .collect();
        for sk in keys {
            self.tell_unavailable(net, sk, None, &added, now);
        }
    }

    /// `app` of `cx` subscribed afresh (`before`: its subscriptions until now): tell it of the
    /// pairs it newly subscribes to that are unavailable.
    pub(super) fn unavailable_subscribed(
        &mut self,
        net: &mut impl Outbox,
        cx: AppCtx,
        before: &[String],
    ) {
        let Some(run) = self.session(cx.sk).and_then(|s| s.apps.get(&cx.app)) else {
            return;
        };
        let fresh: Vec<Box<str>> = run
            .subs
            .iter()
            .filter(|x| !before.contains(x))
            .filter_map(|x| pair(x))
            .map(Box::from)
            .collect();
        if !fresh.is_empty() {
            self.tell_unavailable(net, cx.sk, Some(cx.app), &fresh, cx.now);
        }
    }

    /// `sk` moved from following feed `from` to `to`: the pairs `to` does not serve and `from`
    /// served are news to its subscribers.
    pub(super) fn unserved_moved(
        &mut self,
        net: &mut impl Outbox,
        sk: SessKey,
        from: usize,
        to: usize,
        now: Now,
    ) {
        let (Some(f), Some(t)) = (self.venue.feeds.get(from), self.venue.feeds.get(to)) else {
            return;
        };
        let pairs = added(&t.unserved, &f.unserved);
        if !pairs.is_empty() {
            self.tell_unavailable(net, sk, None, &pairs, now);
        }
    }

    /// Publisher `app` of `sk` stopped being a source of its session (its connection closed,
    /// or it was stopped): the pairs it served (did not list) that every remaining source lists
    /// are news to their subscribers. Its report goes with it. A source that comes serves
    /// everything until it reports, so a connect never makes a pair unavailable.
    pub(super) fn unserved_publisher_gone(
        &mut self,
        net: &mut impl Outbox,
        sk: SessKey,
        app: usize,
        now: Now,
    ) {
        let Some(st) = self.session_mut(sk).and_then(|s| s.streams.as_deref_mut()) else {
            return;
        };
        let listed = match st.unserved.iter().position(|(a, _)| *a == app) {
            Some(i) => st.unserved.swap_remove(i).1,
            None => Box::default(),
        };
        if self.publishes_translation(app) {
            self.tell_unlisted(net, sk, &listed, now);
        }
    }

    /// The publisher of `feed` closed (`listed`: what it had reported): the same news as
    /// [`Self::unserved_publisher_gone`], for each follower.
    pub(super) fn unserved_feed_gone(
        &mut self,
        net: &mut impl Outbox,
        feed: usize,
        listed: &[Box<str>],
        now: Now,
    ) {
        if !self.publishes_translation(self.venue.feeds[feed].app) {
            return;
        }
        let venue = &self.venue;
        let keys: Vec<SessKey> = self
            .sessions
            .iter()
            .filter(|(_, s)| venue.feed_of(&s.user) == feed)
            .map(|(sk, _)| sk)
            .collect();
        for sk in keys {
            self.tell_unlisted(net, sk, listed, now);
        }
    }

    /// A source that did not list them is gone from `sk`: tell the subscribers of the pairs
    /// outside `listed` that are unavailable now (they were not while it served them).
    fn tell_unlisted(&mut self, net: &mut impl Outbox, sk: SessKey, listed: &[Box<str>], now: Now) {
        let Some(s) = self.session(sk) else { return };
        let mut pairs: Vec<Box<str>> = s
            .apps
            .iter()
            .filter(|(_, run)| matches!((&run.state, run.conn), (AppState::Active, Some(_))))
            .flat_map(|(_, run)| run.subs.iter().filter_map(|x| pair(x)))
            .filter(|p| !listed.iter().any(|l| **l == **p))
            .map(Box::from)
            .collect();
        pairs.sort_unstable();
        pairs.dedup();
        if !pairs.is_empty() {
            self.tell_unavailable(net, sk, None, &pairs, now);
        }
    }

    /// A (re)connected translation publisher of `sk` starts from serving everything.
    pub(super) fn unserved_forget(&mut self, sk: SessKey, app: usize) {
        if let Some(st) = self.session_mut(sk).and_then(|s| s.streams.as_deref_mut()) {
            st.unserved.retain(|(a, _)| *a != app);
        }
    }

    /// Tell each active app of `sk` (or only `only`) subscribed to one of `pairs` that is
    /// unavailable now: one error per app, naming those pairs.
    fn tell_unavailable(
        &mut self,
        net: &mut impl Outbox,
        sk: SessKey,
        only: Option<usize>,
        pairs: &[Box<str>],
        now: Now,
    ) {
        let Some(s) = self.session(sk) else { return };
        let pairs: Vec<&str> = pairs
            .iter()
            .map(|p| &**p)
            .filter(|p| self.unavailable(s, p))
            .collect();
        if pairs.is_empty() {
            return;
        }
        let mut told = 0;
        for (&app, run) in s.apps.iter() {
            let (AppState::Active, Some(conn)) = (&run.state, run.conn) else {
                continue;
            };
            if only.is_some_and(|o| o != app) {
                continue;
            }
            let subs: Vec<&str> = run
                .subs
                .iter()
                .map(|x| x.as_str())
                .filter(|x| pair(x).is_some_and(|p| pairs.contains(&p)))
                .collect();
            if subs.is_empty() {
                continue;
            }
            let mut named: Vec<&str> = subs.iter().filter_map(|x| pair(x)).collect();
            named.sort_unstable();
            named.dedup();
            let message = format!(
                "no translation engine on this box serves {}; the subscription stays, \
                 with no data until one does",
                named.join(", ")
            );
            log::info!("event=translation_unavailable connection={conn} translations={named:?}");
            let details = json!({ "unavailable": subs });
            net.send_json(
                conn,
                &messages::tpa_error(CODE, &message, details, now.iso()),
            );
            told += 1;
        }
        for _ in 0..told {
            self.refused(CODE);
        }
    }

    /// Whether `pair` is unavailable in `s`: it has a translation source and every one of them
    /// said it does not serve it.
    fn unavailable(&self, s: &Session, pair: &str) -> bool {
        let lists = |set: &[Box<str>]| set.iter().any(|p| &**p == pair);
        let mut sources = 0;
        if let Some(f) = self.venue.feeds.get(self.venue.feed_of(&s.user)) {
            if f.conn.is_some() && self.publishes_translation(f.app) {
                if !lists(&f.unserved) {
                    return false;
                }
                sources += 1;
            }
        }
        let reports = s.streams.as_deref().map_or(&[][..], |st| &st.unserved[..]);
        for (&app, run) in s.apps.iter() {
            if !matches!((&run.state, run.conn), (AppState::Active, Some(_)))
                || !self.publishes_translation(app)
            {
                continue;
            }
            let listed = reports.iter().any(|(a, set)| *a == app && lists(set));
            if !listed {
                return false;
            }
            sources += 1;
        }
        sources > 0
    }
}

/// The reported pairs that were demanded, each once.
fn kept(pairs: &[Cow<'_, str>], demanded: &[Box<str>]) -> Box<[Box<str>]> {
    let mut out: Vec<Box<str>> = pairs
        .iter()
        .filter(|p| demanded.iter().any(|d| **d == ***p))
        .map(|p| Box::from(&**p))
        .collect();
    out.sort_unstable();
    out.dedup();
    out.into_boxed_slice()
}

/// The pairs in `new` and not in `old`.
fn added(new: &[Box<str>], old: &[Box<str>]) -> Vec<Box<str>> {
    new.iter().filter(|p| !old.contains(p)).cloned().collect()
}
