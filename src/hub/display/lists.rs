//! Core layer (sans-IO), part of the display manager ([`super`]): where a session's display
//! state lives when it is more than "nothing on screen" — one box of lists, made on the first
//! write and dropped again when all are empty.
//!
//! Owns [`Lists`] (the side views, the lock, the boot, the throttled displays, each app's
//! latest display, the output queue) and [`LazyLists`], the box
//! around them. It holds data and reports its memory; every rule about what goes in the lists
//! is the manager's ([`super::manager`]).
//!
//! Invariants: an unmade box reads as empty lists (reading never allocates; only a write
//! makes the box); [`LazyLists::release_spare`] drops the box only when every list is empty,
//! so nothing held is ever lost by it.

use std::collections::VecDeque;
use std::sync::Arc;

use super::boot::Booting;
use super::side::SideViews;
use super::timing::{Kept, Lock};
use super::types::{AppId, Display};

/// The manager's lists. Most sessions have them all empty most of the time (an app that
/// started and shows nothing), so they live in one box made on the first write and dropped
/// by [`LazyLists::release_spare`] once all are empty again.
#[derive(Debug, Default)]
pub(super) struct Lists {
    /// The dashboard and always-on views.
    pub(super) side: SideViews,
    /// The background app holding the main view.
    pub(super) lock: Option<Lock>,
    /// The apps booting and the displays held for them.
    pub(super) booting: Booting,
    /// Coalesced in the main-view throttle: one per app, oldest first.
    pub(super) pending: Vec<Arc<Display>>,
    /// Each app's latest main display, restorable while valid.
    pub(super) latest: Vec<(AppId, Kept)>,
    /// Displays to send, oldest first.
    pub(super) out: VecDeque<Arc<Display>>,
}

impl Lists {
    const EMPTY: Lists = Lists {
        side: SideViews::EMPTY,
        lock: None,
        booting: Booting::EMPTY,
        pending: Vec::new(),
        latest: Vec::new(),
        out: VecDeque::new(),
    };

    pub(super) fn is_empty(&self) -> bool {
        self.side.is_unused()
            && self.lock.is_none()
            && self.booting.is_unused()
            && self.pending.is_empty()
            && self.latest.is_empty()
            && self.out.is_empty()
    }

    fn shrink_to_fit(&mut self) {
        self.booting.shrink_to_fit();
        self.pending.shrink_to_fit();
        self.latest.shrink_to_fit();
        self.side.shrink_to_fit();
        self.out.shrink_to_fit();
    }

    /// Room held beyond what the lists hold, in entries.
    fn spare(&self) -> usize {
        self.booting.spare()
            + (self.pending.capacity() - self.pending.len())
            + (self.latest.capacity() - self.latest.len())
            + self.side.spare()
            + (self.out.capacity() - self.out.len())
    }
}

/// [`Lists`], made on the first write; read while unmade, they are empty.
#[derive(Debug, Default)]
pub(super) struct LazyLists(Option<Box<Lists>>);

impl std::ops::Deref for LazyLists {
    type Target = Lists;
    fn deref(&self) -> &Lists {
        static EMPTY: Lists = Lists::EMPTY;
        self.0.as_deref().unwrap_or(&EMPTY)
    }
}

impl std::ops::DerefMut for LazyLists {
    fn deref_mut(&mut self) -> &mut Lists {
        self.0.get_or_insert_with(Box::default)
    }
}

impl LazyLists {
    /// The next display to send, without making the box.
    pub(super) fn pop_out(&mut self) -> Option<Arc<Display>> {
        self.0.as_mut()?.out.pop_front()
    }

    /// Give back the room the lists grew to beyond what they hold, and the box itself when all
    /// are empty.
    pub(super) fn release_spare(&mut self) {
        match self.0.as_mut() {
            Some(l) if l.is_empty() => self.0 = None,
            Some(l) => l.shrink_to_fit(),
            None => {}
        }
    }

    /// Bytes held by the lists beyond the entries in them: the box of empty lists, and their
    /// spare capacity (in entries).
    pub(super) fn spare(&self) -> usize {
        match &self.0 {
            Some(l) if l.is_empty() => std::mem::size_of::<Lists>(),
            Some(l) => l.spare(),
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LazyLists;
    use crate::hub::display::types::Display;

    #[test]
    fn reading_makes_no_box_and_a_write_does() {
        let mut l = LazyLists::default();
        assert!(l.is_empty() && l.pending.is_empty());
        assert!(l.pop_out().is_none());
        assert_eq!(l.spare(), 0);
        assert!(l.0.is_none(), "read only: still unmade");
        l.out.push_back(Display::clear());
        assert!(l.0.is_some() && !l.is_empty());
    }

    #[test]
    fn the_box_goes_only_when_every_list_is_empty() {
        let mut l = LazyLists::default();
        l.out.push_back(Display::clear());
        l.pending.reserve(8);
        l.release_spare();
        assert!(l.0.is_some(), "a display waits: kept");
        assert_eq!(l.spare(), l.out.capacity() - 1);
        assert!(l.pop_out().is_some());
        assert_eq!(l.spare(), std::mem::size_of::<super::Lists>());
        l.release_spare();
        assert!(l.0.is_none());
        assert_eq!(l.spare(), 0);
    }
}
