//! Core layer (values), part of the hub: its view of each glasses and app connection — what
//! the connection is bound to (a session, or a session's app), what its upgrade proved, and
//! its init deadline. The hub keeps one per open connection (in a [`super::connmap::ConnMap`]).
//!
//! Invariants: a link is bound only after its session (for an app: its key, address and
//! start) was checked; its `init_deadline` is the slot of its `TimerKey::Conn` and is cleared
//! once it is bound.

use super::sessions::SessKey;
use crate::time::Instant;

/// The hub's view of a connection.
#[derive(Debug)]
pub(super) enum Link {
    Glasses {
        /// The user its bearer token named, until it is bound: the session holds it then.
        user: Option<String>,
        /// It came with a bearer token (a later `connection_init` needs none).
        bearer: bool,
        session: Option<SessKey>,
        init_deadline: Option<Instant>,
    },
    App {
        bound: Option<(SessKey, usize)>,
        init_deadline: Option<Instant>,
    },
    /// The publisher of venue feed `feed` (bound: its key, address and feed were checked).
    Venue { feed: usize },
}

impl Link {
    pub(super) fn init_deadline(&self) -> Option<Instant> {
        match self {
            Link::Glasses { init_deadline, .. } | Link::App { init_deadline, .. } => *init_deadline,
            Link::Venue { .. } => None,
        }
    }
}
