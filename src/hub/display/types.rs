//! Core layer (sans-IO), part of the display manager ([`super`]): the vocabulary — what a
//! display is, where it goes, and what a request to show one gets back.
//!
//! Owns the value types every user of the display manager names: [`View`], [`Owner`],
//! [`Layout`], [`Display`], the answers [`Accepted`] and [`Refusal`], the operator's
//! [`ScreenInfo`] and the counters [`DisplayStats`]. No state, no rules, no time beyond the
//! `since` an operator view reads.
//!
//! Invariants: a [`Display`] is immutable once made (the manager shares it as an `Arc`); the
//! main view's clear is one value shared by every session ([`Display::clear`]); the wire codes
//! of a [`Refusal`] are fixed (apps and tests match on them).

use serde_json::value::RawValue;
use std::sync::Arc;

use crate::time::Instant;
/// An app, as the hub numbers it (its index in the registry).
pub type AppId = usize;

/// The layout types of PROTOCOL §7.
pub const LAYOUT_TYPES: &[&str] = &[
    "text_wall",
    "double_text_wall",
    "dashboard_card",
    "reference_card",
    "bitmap_view",
    "bitmap_animation",
    "clear_view",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum View {
    Main,
    Dashboard,
    AlwaysOn,
}

impl View {
    pub const ALL: [View; 3] = [View::Main, View::Dashboard, View::AlwaysOn];

    pub fn as_str(self) -> &'static str {
        match self {
            View::Main => "main",
            View::Dashboard => "dashboard",
            View::AlwaysOn => "always_on",
        }
    }

    /// The view an app names; anything unknown is `main`, as the SDK coerces it.
    pub fn parse(s: &str) -> View {
        match s {
            "dashboard" => View::Dashboard,
            "always_on" => View::AlwaysOn,
            _ => View::Main,
        }
    }
}

/// Who a display is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    App(AppId),
    /// The box itself: boot cards, clears, the composed dashboard.
    System,
}

/// What a display shows.
#[derive(Debug, Clone)]
pub enum Layout {
    /// A layout object as JSON (an app's, passed through as it came, or the composed
    /// dashboard), with its `layoutType`.
    Raw {
        json: Box<RawValue>,
        kind: &'static str,
    },
    /// The boot card: `"Starting <names>"`.
    Boot { names: String, several: bool },
    /// An empty main view.
    Clear,
}

impl Layout {
    pub fn kind(&self) -> &'static str {
        match self {
            Layout::Raw { kind, .. } => kind,
            Layout::Boot { .. } => "reference_card",
            Layout::Clear => "text_wall",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Display {
    pub owner: Owner,
    pub view: View,
    pub layout: Layout,
    pub duration_ms: Option<u64>,
    pub force: bool,
}

impl Display {
    /// The app it is from; `None` for the box's own.
    pub(super) fn app(&self) -> Option<AppId> {
        match self.owner {
            Owner::App(a) => Some(a),
            Owner::System => None,
        }
    }

    /// The clear of the main view: one, shared by every session.
    pub(super) fn clear() -> Arc<Display> {
        static CLEAR: std::sync::OnceLock<Arc<Display>> = std::sync::OnceLock::new();
        CLEAR
            .get_or_init(|| {
                Arc::new(Display {
                    owner: Owner::System,
                    view: View::Main,
                    layout: Layout::Clear,
                    duration_ms: Some(0),
                    force: true,
                })
            })
            .clone()
    }
}

/// How an accepted request was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Sent now.
    Shown,
    /// Inside the throttle interval: sent when it ends unless a newer one from the same app
    /// replaces it.
    Coalesced,
    /// Held while apps boot; shown when the boot ends if it is still the app's newest.
    HeldForBoot,
}

/// Why a request may not show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Another background app holds the main-view lock.
    LockedByOther { holder: AppId },
    /// The foreground app's display while a background app shows under its lock; the display
    /// is kept and comes back when the lock ends, if still valid.
    ForegroundLocked { holder: AppId },
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::LockedByOther { .. } => "MAIN_VIEW_LOCKED",
            Refusal::ForegroundLocked { .. } => "BACKGROUND_LOCK_ACTIVE",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::LockedByOther { .. } => {
                "another background app holds the main view; try again when its lock ends"
            }
            Refusal::ForegroundLocked { .. } => {
                "a background app holds the main view for now; this display is kept and shown when its lock ends, if still valid"
            }
        }
    }

    pub fn holder(self) -> AppId {
        match self {
            Refusal::LockedByOther { holder } | Refusal::ForegroundLocked { holder } => holder,
        }
    }
}

/// What one view shows, for operator views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScreenInfo {
    pub owner: Owner,
    pub layout_type: &'static str,
    pub since: Instant,
}

/// What a display manager did, counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DisplayStats {
    /// Displays handed out to be sent.
    pub sent: u64,
    /// Requests replaced by a newer one from the same app before they were sent.
    pub coalesced: u64,
    pub refused: u64,
    pub expired: u64,
}

/// Put `d` in `list` as the only entry of its owner and view, at the end; true if it replaced
/// one (the lists of held and coalesced displays keep one per app, oldest first).
pub(super) fn replace(list: &mut Vec<Arc<Display>>, d: Arc<Display>) -> bool {
    let before = list.len();
    list.retain(|x| !(x.owner == d.owner && x.view == d.view));
    let replaced = list.len() != before;
    list.push(d);
    replaced
}

#[cfg(test)]
mod tests {
    use super::{replace, Display, Layout, Owner, Refusal, View};
    use std::sync::Arc;

    #[test]
    fn a_view_reads_back_what_it_writes_and_unknown_names_are_main() {
        for v in View::ALL {
            assert_eq!(View::parse(v.as_str()), v);
        }
        assert_eq!(View::parse("side"), View::Main);
    }

    #[test]
    fn the_clear_is_one_display_of_the_box_on_the_main_view() {
        let (a, b) = (Display::clear(), Display::clear());
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(
            (a.owner, a.view, a.app()),
            (Owner::System, View::Main, None)
        );
        assert!(matches!(a.layout, Layout::Clear));
        assert_eq!(a.layout.kind(), "text_wall");
    }

    #[test]
    fn refusals_carry_their_codes_and_holder() {
        let other = Refusal::LockedByOther { holder: 4 };
        let fg = Refusal::ForegroundLocked { holder: 5 };
        assert_eq!((other.reason(), other.holder()), ("MAIN_VIEW_LOCKED", 4));
        assert_eq!((fg.reason(), fg.holder()), ("BACKGROUND_LOCK_ACTIVE", 5));
    }

    #[test]
    fn replace_keeps_one_per_owner_and_view_newest_last() {
        let d = |owner, view| {
            Arc::new(Display {
                owner,
                view,
                layout: Layout::Clear,
                duration_ms: None,
                force: false,
            })
        };
        let mut list = Vec::new();
        assert!(!replace(&mut list, d(Owner::App(1), View::Main)));
        assert!(!replace(&mut list, d(Owner::App(2), View::Main)));
        assert!(!replace(&mut list, d(Owner::App(1), View::Dashboard)));
        assert!(replace(&mut list, d(Owner::App(1), View::Main)));
        let order: Vec<_> = list.iter().map(|x| (x.owner, x.view)).collect();
        assert_eq!(
            order,
            [
                (Owner::App(2), View::Main),
                (Owner::App(1), View::Dashboard),
                (Owner::App(1), View::Main)
            ]
        );
    }
}
