//! Core layer (sans-IO), part of the display manager ([`super`]): the side views — the
//! dashboard and always-on views, apart from the main view.
//!
//! Owns [`SideViews`]: what each side view shows, when each app last had a display sent on
//! them, and the app displays coalesced in that per-app throttle. It answers whether a request
//! goes out now or waits, and hands out waiting displays when their app's interval ended; the
//! manager sends and counts.
//!
//! Rules (PROTOCOL §15): the side views are never throttled by the main view, never booted or
//! locked. The box's own displays (the composed dashboard) go out at once; an app's go out at
//! most one per `throttle` per app (so one app flooding cannot crowd out another), the newest
//! of each app and view when its interval ends; `forceDisplay` bypasses the interval.
//!
//! Invariants: at most one waiting display per app and view; a display sent drops its app's
//! older waiting one for that view; an app that stops leaves nothing here.

use std::sync::Arc;
use std::time::Duration;

use super::timing::Kept;
use super::types::{replace, AppId, Display, View};
use crate::time::Instant;

/// The dashboard and always-on views.
#[derive(Debug, Default)]
pub(super) struct SideViews {
    /// What the dashboard and the always-on view show.
    shown: [Option<Kept>; 2],
    /// Per app: when its last side-view display was sent.
    last: Vec<(AppId, Instant)>,
    /// Coalesced: one per app and view, oldest first.
    pending: Vec<Arc<Display>>,
}

/// What becomes of a side-view request.
#[derive(Debug)]
pub(super) enum SideTake {
    /// To send now.
    Now(Arc<Display>),
    /// Waits for the end of its app's interval; `replaced`: an older one of the app waited.
    Coalesced { replaced: bool },
}

/// The slot of a side view; the main view has none.
fn slot(view: View) -> Option<usize> {
    match view {
        View::Main => None,
        View::Dashboard => Some(0),
        View::AlwaysOn => Some(1),
    }
}

impl SideViews {
    pub(super) const EMPTY: SideViews = SideViews {
        shown: [None, None],
        last: Vec::new(),
        pending: Vec::new(),
    };

    /// Nothing shown, nothing waiting, no interval remembered.
    pub(super) fn is_unused(&self) -> bool {
        self.shown.iter().all(Option::is_none) && self.last.is_empty() && self.pending.is_empty()
    }

    /// What `view` shows (nothing for the main view: it is the manager's).
    pub(super) fn kept(&self, view: View) -> Option<&Kept> {
        self.shown[slot(view)?].as_ref()
    }

    /// A request for a side view: now, or coalesced while its app's interval runs.
    pub(super) fn request(
        &mut self,
        now: Instant,
        d: Arc<Display>,
        throttle: Duration,
    ) -> SideTake {
        let Some(app) = d.app() else {
            return SideTake::Now(d);
        };
        let recent = self.last_of(app).is_some_and(|t| now < t + throttle);
        if recent && !d.force {
            return SideTake::Coalesced {
                replaced: replace(&mut self.pending, d),
            };
        }
        SideTake::Now(d)
    }

    /// `d` is sent now: it shows on its view, and its app's interval starts.
    pub(super) fn show(&mut self, now: Instant, d: Arc<Display>) {
        if let Some(a) = d.app() {
            self.last.retain(|(x, _)| *x != a);
            self.last.push((a, now));
            self.pending
                .retain(|p| !(p.app() == Some(a) && p.view == d.view));
        }
        if let Some(i) = slot(d.view) {
            self.shown[i] = Some(Kept::new(d, now));
        }
    }

    /// The oldest waiting display whose app's interval ended by `now`, taken out.
    pub(super) fn pop_due(&mut self, now: Instant, throttle: Duration) -> Option<Arc<Display>> {
        let i = self.pending.iter().position(|d| {
            d.app()
                .and_then(|a| self.last_of(a))
                .is_none_or(|t| t + throttle <= now)
        })?;
        Some(self.pending.remove(i))
    }

    /// When waiting displays become due.
    pub(super) fn deadlines(&self, throttle: Duration) -> impl Iterator<Item = Instant> + '_ {
        self.pending.iter().filter_map(move |d| {
            let a = d.app()?;
            Some(self.last_of(a).map_or(Instant::ZERO, |t| t + throttle))
        })
    }

    /// `app` stopped: its waiting displays, its interval and what it showed go.
    pub(super) fn stop(&mut self, app: AppId) {
        self.pending.retain(|d| d.app() != Some(app));
        self.last.retain(|(a, _)| *a != app);
        for s in &mut self.shown {
            if s.as_ref().is_some_and(|k| k.disp.app() == Some(app)) {
                *s = None;
            }
        }
    }

    pub(super) fn shrink_to_fit(&mut self) {
        self.last.shrink_to_fit();
        self.pending.shrink_to_fit();
    }

    /// Room held beyond what the lists hold, in entries.
    pub(super) fn spare(&self) -> usize {
        (self.last.capacity() - self.last.len()) + (self.pending.capacity() - self.pending.len())
    }

    fn last_of(&self, app: AppId) -> Option<Instant> {
        self.last.iter().find(|(a, _)| *a == app).map(|(_, t)| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::{SideTake, SideViews};
    use crate::hub::display::types::{Display, Layout, Owner, View};
    use crate::time::Instant;
    use std::sync::Arc;
    use std::time::Duration;

    const THROTTLE: Duration = Duration::from_millis(300);

    fn ms(n: u64) -> Instant {
        Instant::from_micros(n * 1000)
    }

    fn disp(owner: Owner, view: View, force: bool) -> Arc<Display> {
        Arc::new(Display {
            owner,
            view,
            layout: Layout::Clear,
            duration_ms: None,
            force,
        })
    }

    /// Request and, if it goes now, show: as the manager does.
    fn offer(s: &mut SideViews, now: u64, d: Arc<Display>) -> Option<bool> {
        match s.request(ms(now), d, THROTTLE) {
            SideTake::Now(d) => {
                s.show(ms(now), d);
                None
            }
            SideTake::Coalesced { replaced } => Some(replaced),
        }
    }

    #[test]
    fn an_app_gets_one_display_per_interval_and_its_newest_waits() {
        let mut s = SideViews::default();
        let first = disp(Owner::App(1), View::Dashboard, false);
        assert_eq!(offer(&mut s, 0, first.clone()), None);
        assert!(Arc::ptr_eq(&s.kept(View::Dashboard).unwrap().disp, &first));
        assert_eq!(
            offer(&mut s, 10, disp(Owner::App(1), View::Dashboard, false)),
            Some(false)
        );
        let newest = disp(Owner::App(1), View::Dashboard, false);
        assert_eq!(offer(&mut s, 20, newest.clone()), Some(true));
        assert_eq!(s.deadlines(THROTTLE).collect::<Vec<_>>(), [ms(300)]);
        assert!(s.pop_due(ms(299), THROTTLE).is_none());
        assert!(Arc::ptr_eq(&s.pop_due(ms(300), THROTTLE).unwrap(), &newest));
        assert!(s.pop_due(ms(300), THROTTLE).is_none());
    }

    #[test]
    fn another_app_the_box_and_a_forced_display_are_not_held_back() {
        let mut s = SideViews::default();
        offer(&mut s, 0, disp(Owner::App(1), View::Dashboard, false));
        assert_eq!(
            offer(&mut s, 10, disp(Owner::App(2), View::Dashboard, false)),
            None
        );
        assert_eq!(
            offer(&mut s, 20, disp(Owner::System, View::Dashboard, false)),
            None
        );
        assert_eq!(
            offer(&mut s, 30, disp(Owner::App(1), View::AlwaysOn, true)),
            None
        );
        assert_eq!(
            s.kept(View::AlwaysOn).map(|k| k.disp.owner),
            Some(Owner::App(1))
        );
        assert!(s.kept(View::Main).is_none());
    }

    #[test]
    fn a_stopped_app_leaves_nothing_behind() {
        let mut s = SideViews::default();
        offer(&mut s, 0, disp(Owner::App(1), View::Dashboard, false));
        offer(&mut s, 0, disp(Owner::App(2), View::AlwaysOn, false));
        offer(&mut s, 10, disp(Owner::App(1), View::AlwaysOn, false));
        s.stop(1);
        assert!(s.kept(View::Dashboard).is_none());
        assert_eq!(
            s.kept(View::AlwaysOn).map(|k| k.disp.owner),
            Some(Owner::App(2))
        );
        assert_eq!(s.deadlines(THROTTLE).count(), 0);
        s.stop(2);
        assert!(s.is_unused());
    }
}
