//! Core layer (sans-IO), part of the hub: a venue feed's delivery list — the fan-out of one
//! publication to thousands of sessions made a walk down one flat array.
//!
//! Delivering through each session's own parts (its slot, its subscription index, its app
//! runs, each app's prefix) costs a handful of cache misses per delivery, paid again for every
//! message; at 5 000 followers that was a fifth of the box's CPU per delivery (0.6-0.9 µs of
//! about 3), the rest being the kernel's `write` (see README, "What the floor is"). So each feed keeps, per distinct event (stream and languages), the list
//! of its deliveries: each target's connection and its head — the app's `data_stream` prefix
//! (its own `sessionId`) and the `streamType` it is delivered under (its own subscription
//! string, or the base stream for a wildcard) — the heads laid end to end in one buffer. A
//! publication then builds its tail (`data`, timestamp) once and, per target, writes head and
//! tail into the target's output: no session or route lookup, no allocation, no JSON per
//! delivery.
//!
//! Invariants: a list is used only while the routing is unchanged since it was built (the
//! [`super::sessions::Sessions::epoch`], moved by a session made or forgotten, an app run
//! changed, a session's set of runs or subscription index changed — not by its screen,
//! requests or caches, which change with every caption) and while no user's feed choice
//! changed (the lists are then dropped); in test and `sim` builds (unoptimised) every list used
//! is checked against a fresh one; it holds exactly the deliveries [`super::routes::Routes::each`]
//! makes in every follower, in the same order (sessions in slot order); a feed keeps at most
//! [`MAX_LISTS`] lists. Everything else a delivery decides — a lossy event skips a backed-up
//! connection, a closed connection takes nothing — is decided at the delivery, as before.

use super::routes::Event;
use super::streams::Published;
use super::{AppRun, AppState, Hub};
use crate::net::{ConnId, Outbox};
use crate::protocol::message::Stream;
use crate::protocol::outbound::data_stream_tail;
use crate::time::Now;
use crate::ws::frame::Opcode;

/// Distinct events (stream and languages) a feed keeps a list for: one language and its
/// translations, with room to spare (each list holds only that event's subscribers, so the
/// lists together hold one entry per subscription); more clear the lists.
const MAX_LISTS: usize = 32;

/// A feed's delivery lists, valid for one state of the session table.
#[derive(Debug, Default)]
pub(super) struct FanOut {
    /// The session table's epoch the lists were built at.
    epoch: u64,
    lists: Vec<List>,
    /// Lists built so far (the operator's `listsBuilt`): one per routing change that a
    /// publication followed, not one per publication.
    pub(super) built: u64,
}

/// The deliveries of one event: its key, each target's connection and the end of its head in
/// `heads`.
#[derive(Debug)]
struct List {
    translation: bool,
    from: Box<str>,
    to: Box<str>,
    heads: Vec<u8>,
    targets: Vec<(ConnId, u32)>,
}

impl FanOut {
    /// Drop every list (a user's feed changed).
    pub(super) fn clear(&mut self) {
        self.lists.clear();
    }
}

impl Hub {
    /// Write a checked publication of `feed` to every subscriber in every session following
    /// it; a lossy (interim) message skips backed-up connections. Returns how many deliveries
    /// were made and how many were skipped (counted as drops of the stream).
    pub(super) fn venue_fan_out(
        &mut self,
        net: &mut impl Outbox,
        feed: usize,
        p: &Published<'_>,
        now: Now,
    ) -> (u64, u64) {
        let from = p.from.as_deref().unwrap_or("en-US");
        let to = if p.translation {
            p.to.as_deref().unwrap_or("")
        } else {
            ""
        };
        let at = self.fan_out_list(feed, p.translation, from, to);
        let Hub {
            venue,
            delivery_tail: tail,
            ..
        } = self;
        let list = &venue.feeds[feed].fanout.lists[at];
        data_stream_tail(tail, p.data.as_bytes(), now.iso_bytes());
        let lossy = !p.is_final;
        let (mut delivered, mut dropped, mut start) = (0, 0, 0);
        for &(conn, end) in &list.targets {
            let head = &list.heads[start..end as usize];
            start = end as usize;
            if lossy && net.backed_up(conn) {
                dropped += 1;
                continue;
            }
            delivered += 1;
            net.send_frame(conn, Opcode::Text, &[head, tail]);
        }
        if tail.capacity() > super::streams::MAX_KEPT_TAIL {
            *tail = Vec::new();
        }
        let stream = if p.translation {
            Stream::Translation
        } else {
            Stream::Transcription
        };
        if lossy {
            self.count_drops(Some(stream.name()), dropped);
        }
        (delivered, dropped)
    }

    /// The index of `feed`'s list for this event, built if the session table changed since
    /// the lists were or no list holds it.
    fn fan_out_list(&mut self, feed: usize, translation: bool, from: &str, to: &str) -> usize {
        let epoch = self.sessions.epoch();
        let fan = &mut self.venue.feeds[feed].fanout;
        if fan.epoch != epoch || fan.lists.len() >= MAX_LISTS {
            fan.lists.clear();
            fan.epoch = epoch;
        }
        let found = fan
            .lists
            .iter()
            .position(|l| l.translation == translation && &*l.from == from && &*l.to == to);
        if let Some(at) = found {
            // Tests and the simulated world check every list they use against a fresh one: a
            // change to the routing that did not move the epoch fails there, not in a venue.
            // (Not in optimised builds: a benchmark measures the list, not the check.)
            #[cfg(all(debug_assertions, any(test, feature = "sim")))]
            {
                let fresh = self.build_list(feed, translation, from, to);
                let kept = &self.venue.feeds[feed].fanout.lists[at];
                assert!(
                    kept.heads == fresh.heads && kept.targets == fresh.targets,
                    "a venue delivery list outlived a routing change (epoch {epoch}): kept {} targets, {} now",
                    kept.targets.len(),
                    fresh.targets.len()
                );
            }
            return at;
        }
        let list = self.build_list(feed, translation, from, to);
        let fan = &mut self.venue.feeds[feed].fanout;
        fan.built += 1;
        fan.lists.push(list);
        fan.lists.len() - 1
    }

    /// Every delivery of the event in every session following `feed`, as
    /// [`super::routes::Routes::each`] makes them, sessions in slot order.
    fn build_list(&self, feed: usize, translation: bool, from: &str, to: &str) -> List {
        let event = if translation {
            Event::Translation { from, to }
        } else {
            Event::Transcription { language: from }
        };
        let name: &[u8] = if translation {
            b"\"translation\""
        } else {
            b"\"transcription\""
        };
        let (mut heads, mut targets) = (Vec::new(), Vec::new());
        for (_, s) in self.sessions.iter() {
            if self.venue.feed_of(&s.user) != feed {
                continue;
            }
            let Some(streams) = s.streams.as_deref() else {
                continue;
            };
            streams.routes.each(event, |app, own| {
                let Some(AppRun {
                    state: AppState::Active,
                    conn: Some(conn),
                    prefix,
                    ..
                }) = s.apps.get(&app)
                else {
                    return;
                };
                heads.extend_from_slice(prefix);
                heads.extend_from_slice(own.unwrap_or(name));
                targets.push((*conn, heads.len() as u32));
            });
        }
        heads.shrink_to_fit();
        targets.shrink_to_fit();
        List {
            translation,
            from: from.into(),
            to: to.into(),
            heads,
            targets,
        }
    }
}
