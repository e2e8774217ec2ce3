//! Core layer (sans-IO), part of the hub: what its deadlines are for. Each [`TimerKey`] names
//! one authoritative slot in the state, and [`is_current`] says whether a heap entry still
//! matches it; the hub keeps the heap ([`crate::time::TimerHeap`]), arms an entry after
//! writing its slot, and dispatches the keys that fire (`Hub::handle_timeout`).
//!
//! Owns no state. Invariant: a slot changed or emptied since its entry was armed makes that
//! entry stale — it is dropped when it comes up, never dispatched (spurious fires are no-ops).

use super::connmap::ConnMap;
use super::links::Link;
use super::sessions::{SessKey, Sessions};
use crate::net::ConnId;
use crate::time::Instant;

/// What a hub deadline is for. Each key has one authoritative slot in the state (a session's
/// `grace_until`, an app run's [`super::sessions::AppState::deadline`], a link's `init_deadline`); a heap entry
/// that no longer matches its slot is stale and is dropped without waking anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerKey {
    Session(SessKey),
    App(SessKey, usize),
    Conn(ConnId),
    Mic(SessKey),
    /// The sweep of expired TPA server registrations.
    Sweep,
    /// The session's display manager ([`super::screen::Screen::deadline`]).
    Display(SessKey),
    /// The session's earliest pending app request (`Requests::deadline`).
    Requests(SessKey),
    /// The next keep-alive of the session's live stream (`KeepAlive::next_at`).
    KeepAlive(SessKey),
}

/// Whether a heap entry still matches the slot it was armed for.
pub(super) fn is_current(
    sessions: &Sessions,
    links: &ConnMap<Link>,
    sweep_at: Option<Instant>,
    at: Instant,
    key: TimerKey,
) -> bool {
    let session = |sk: SessKey| sessions.get(sk);
    match key {
        TimerKey::Session(sk) => session(sk).is_some_and(|s| s.grace_until == Some(at)),
        TimerKey::App(sk, app) => session(sk)
            .and_then(|s| s.apps.get(&app))
            .is_some_and(|r| r.state.deadline() == Some(at)),
        TimerKey::Conn(id) => links
            .get(&id)
            .is_some_and(|l| l.init_deadline() == Some(at)),
        TimerKey::Mic(sk) => session(sk).is_some_and(|s| s.mic.pending_until == Some(at)),
        TimerKey::Sweep => sweep_at == Some(at),
        TimerKey::Display(sk) => session(sk).is_some_and(|s| s.screen.deadline() == Some(at)),
        TimerKey::Requests(sk) => session(sk).is_some_and(|s| s.requests.deadline() == Some(at)),
        TimerKey::KeepAlive(sk) => {
            session(sk).is_some_and(|s| s.keepalive.as_ref().map(|k| k.next_at) == Some(at))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::sessions::Session;
    use std::time::Duration;

    #[test]
    fn an_entry_is_current_only_while_its_slot_holds_its_time() {
        let t0 = Instant::from_micros(0);
        let (at, later) = (t0 + Duration::from_secs(1), t0 + Duration::from_secs(2));
        let mut sessions = Sessions::default();
        let mut links = ConnMap::default();
        let sk = sessions.insert(Session::for_test("a"));
        let id = ConnId { index: 3, gen: 1 };
        assert!(!is_current(
            &sessions,
            &links,
            None,
            at,
            TimerKey::Session(sk)
        ));
        if let Some(s) = sessions.get_mut(sk) {
            s.grace_until = Some(at);
        }
        assert!(is_current(
            &sessions,
            &links,
            None,
            at,
            TimerKey::Session(sk)
        ));
        assert!(
            !is_current(&sessions, &links, None, later, TimerKey::Session(sk)),
            "armed for another time"
        );
        sessions.remove(sk);
        let mut next = Session::for_test("b");
        next.grace_until = Some(at);
        let reused = sessions.insert(next);
        assert_eq!(reused.slot, sk.slot);
        assert!(
            !is_current(&sessions, &links, None, at, TimerKey::Session(sk)),
            "the slot's new session is not the one it was armed for"
        );
        assert!(is_current(
            &sessions,
            &links,
            None,
            at,
            TimerKey::Session(reused)
        ));
        let link = Link::App {
            bound: None,
            init_deadline: Some(at),
        };
        links.insert(id, link);
        assert!(is_current(&sessions, &links, None, at, TimerKey::Conn(id)));
        let other = ConnId { index: 3, gen: 2 };
        assert!(!is_current(
            &sessions,
            &links,
            None,
            at,
            TimerKey::Conn(other)
        ));
        assert!(is_current(&sessions, &links, Some(at), at, TimerKey::Sweep));
        assert!(!is_current(
            &sessions,
            &links,
            Some(later),
            at,
            TimerKey::Sweep
        ));
        assert!(!is_current(&sessions, &links, None, at, TimerKey::Sweep));
    }
}
