//! Core layer (sans-IO), part of the display manager ([`super`]): the boot — the apps starting,
//! the displays held for them, and the `"Starting <names>"` card.
//!
//! Owns [`Booting`]: the apps between `app_starting` and the end of their boot (connected and
//! at least `boot` after the start), oldest first, and the app displays held meanwhile. It
//! decides nothing about the screen: the manager asks it whether a boot runs, what the card
//! says, which deadlines it has, and takes the held displays when the last boot ends.
//!
//! Invariants: at most one entry per app (a restart replaces it) and one held display per app
//! and view (latest wins, oldest first); only a connected app has a deadline; an app that
//! stops leaves the boot and takes its held displays with it.

use std::sync::Arc;

use super::types::{replace, AppId, Display, Layout, Owner, View};
use crate::time::Instant;

/// One app starting.
#[derive(Debug)]
struct Boot {
    app: AppId,
    name: Box<str>,
    until: Instant,
    connected: bool,
}

/// The apps booting and the displays held for them.
#[derive(Debug, Default)]
pub(super) struct Booting {
    apps: Vec<Boot>,
    /// Held during boot: one per app, oldest first.
    held: Vec<Arc<Display>>,
}

impl Booting {
    pub(super) const EMPTY: Booting = Booting {
        apps: Vec::new(),
        held: Vec::new(),
    };

    /// No app is booting (displays may still be held until the manager takes them).
    pub(super) fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    /// Nothing booting and nothing held.
    pub(super) fn is_unused(&self) -> bool {
        self.apps.is_empty() && self.held.is_empty()
    }

    /// `app` starts (again): its boot ends once it connected and `until` passed.
    pub(super) fn start(&mut self, app: AppId, name: &str, until: Instant) {
        self.apps.retain(|b| b.app != app);
        self.apps.push(Boot {
            app,
            name: name.into(),
            until,
            connected: false,
        });
    }

    pub(super) fn connected(&mut self, app: AppId) {
        if let Some(b) = self.apps.iter_mut().find(|b| b.app == app) {
            b.connected = true;
        }
    }

    /// `app` stopped: it leaves the boot and its held displays go. True if it was booting.
    pub(super) fn stop(&mut self, app: AppId) -> bool {
        let before = self.apps.len();
        self.apps.retain(|b| b.app != app);
        self.held.retain(|d| d.app() != Some(app));
        self.apps.len() != before
    }

    /// End the boots due at `now`; true if any ended.
    pub(super) fn retire(&mut self, now: Instant) -> bool {
        let before = self.apps.len();
        self.apps.retain(|b| !(b.connected && b.until <= now));
        self.apps.len() != before
    }

    /// When boots end (only connected apps' boots can).
    pub(super) fn deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        self.apps.iter().filter(|b| b.connected).map(|b| b.until)
    }

    /// Hold `d` until the boot ends, as its app's only held display.
    pub(super) fn hold(&mut self, d: Arc<Display>) {
        replace(&mut self.held, d);
    }

    /// The held displays, oldest first; none are held after.
    pub(super) fn take_held(&mut self) -> Vec<Arc<Display>> {
        std::mem::take(&mut self.held)
    }

    /// The boot card: the names of the apps booting, oldest first.
    pub(super) fn card(&self) -> Display {
        let names: Vec<&str> = self.apps.iter().map(|b| &*b.name).collect();
        Display {
            owner: Owner::System,
            view: View::Main,
            layout: Layout::Boot {
                names: names.join(", "),
                several: names.len() > 1,
            },
            duration_ms: None,
            force: true,
        }
    }

    pub(super) fn shrink_to_fit(&mut self) {
        self.apps.shrink_to_fit();
        self.held.shrink_to_fit();
    }

    /// Room held beyond what the lists hold, in entries.
    pub(super) fn spare(&self) -> usize {
        (self.apps.capacity() - self.apps.len()) + (self.held.capacity() - self.held.len())
    }
}

#[cfg(test)]
mod tests {
    use super::Booting;
    use crate::hub::display::types::{Display, Layout, Owner, View};
    use crate::time::Instant;
    use std::sync::Arc;

    fn ms(n: u64) -> Instant {
        Instant::from_micros(n * 1000)
    }

    fn card(b: &Booting) -> (String, bool) {
        match b.card().layout {
            Layout::Boot { names, several } => (names, several),
            other => panic!("not a boot card: {other:?}"),
        }
    }

    fn held(app: usize) -> Arc<Display> {
        Arc::new(Display {
            owner: Owner::App(app),
            view: View::Main,
            layout: Layout::Clear,
            duration_ms: None,
            force: false,
        })
    }

    #[test]
    fn a_boot_ends_only_once_connected_and_due() {
        let mut b = Booting::default();
        b.start(7, "Notes", ms(1_500));
        assert_eq!(b.deadlines().count(), 0, "not connected: no deadline");
        assert!(!b.retire(ms(5_000)) && !b.is_empty());
        b.connected(7);
        assert_eq!(b.deadlines().collect::<Vec<_>>(), [ms(1_500)]);
        assert!(!b.retire(ms(1_499)));
        assert!(b.retire(ms(1_500)) && b.is_empty());
    }

    #[test]
    fn the_card_names_the_apps_booting_oldest_first_and_a_restart_moves_to_the_end() {
        let mut b = Booting::default();
        b.start(1, "Notes", ms(0));
        assert_eq!(card(&b), ("Notes".into(), false));
        b.start(2, "Maps", ms(0));
        b.start(1, "Notes", ms(10));
        assert_eq!(card(&b), ("Maps, Notes".into(), true));
        let d = b.card();
        assert_eq!(
            (d.owner, d.view, d.force),
            (Owner::System, View::Main, true)
        );
    }

    #[test]
    fn a_stopped_app_leaves_the_boot_with_its_held_displays() {
        let mut b = Booting::default();
        b.start(1, "Notes", ms(0));
        b.hold(held(1));
        b.hold(held(2));
        b.hold(held(1));
        assert!(!b.stop(3), "not booting");
        assert!(b.stop(1));
        assert!(b.is_empty() && !b.is_unused());
        let rest: Vec<_> = b.take_held().iter().map(|d| d.owner).collect();
        assert_eq!(rest, [Owner::App(2)]);
        assert!(b.is_unused());
    }
}
