//! Core layer (sans-IO), part of the hub: an app's goodbye. SDK 2.1.29 sends
//! `ownership_release` before it closes its connection on purpose (`session.disconnect({
//! releaseOwnership: true, reason })`, and on a second `session_request` for a session it
//! holds, with `switching_clouds`); without it, the close looks like a crash and the app would
//! be restarted through its webhook.
//!
//! The rules (README, "An app's goodbye"):
//! - `clean_shutdown` and `user_logout`: the close that follows is a stop — the app leaves
//!   the session, leaves the user's durable running apps, the glasses get `app_stopped` and
//!   `app_state_change`; no `stop_request` webhook (the app said it first) and no restart;
//! - `switching_clouds`: the close is a handover — the app keeps its place for its reconnect
//!   grace (the SDK reconnects at once, to the URL of the `session_request` that caused it,
//!   which is this box); if no new connection comes, it leaves as above, never restarted;
//! - an unknown reason, or another package's name: refused with `tpa_connection_error`
//!   (`INVALID_RELEASE_REASON`, `RELEASE_PACKAGE_MISMATCH`), counted, and nothing changes:
//!   a close after it is still a drop.
//!
//! Invariant: a release belongs to the connection it came on ([`super::sessions::AppRun`]'s
//! `released` is cleared when another connection binds), so a late close of an old
//! connection never stops its successor.

use super::apps::AppCtx;
use super::{Hub, SessKey};
use crate::net::Outbox;
use crate::protocol::inbound::{self, OwnershipRelease, ReleaseReason};
use crate::time::Now;

impl Hub {
    /// `ownership_release` from a bound app: remembered for the close that follows.
    pub(super) fn ownership_release(&mut self, net: &mut impl Outbox, cx: AppCtx, text: &str) {
        let AppCtx { id, sk, app, now } = cx;
        let Some(msg) = inbound::decode::<OwnershipRelease<'_>>(text) else {
            let why = "packageName and reason must be strings";
            return self.app_error(net, id, "MALFORMED_MESSAGE", why, now);
        };
        let own = &self.cfg.apps[app].package_name;
        if msg.package_name.as_deref().is_some_and(|p| p != own) {
            let why = "ownership_release names another app than this connection's";
            return self.app_error(net, id, "RELEASE_PACKAGE_MISMATCH", why, now);
        }
        let Some(reason) = msg.reason.as_deref().and_then(ReleaseReason::parse) else {
            let why = "reason must be switching_clouds, clean_shutdown or user_logout";
            return self.app_error(net, id, "INVALID_RELEASE_REASON", why, now);
        };
        log::info!(
            "event=app_released session={:?} package={own:?} reason={}",
            self.session(sk).map_or("", |s| &*s.user),
            reason.name()
        );
        if let Some(run) = self.run_mut(sk, app).filter(|r| r.conn == Some(id)) {
            run.released = Some(reason);
        }
    }

    /// The app left for good after its goodbye (its connection closed, or a handover's new
    /// connection never came): stopped as the user would stop it, without a webhook.
    pub(super) fn app_left(
        &mut self,
        net: &mut impl Outbox,
        sk: SessKey,
        app: usize,
        reason: ReleaseReason,
        now: Now,
    ) {
        log::info!(
            "event=app_left session={:?} package={:?} reason={}",
            self.session(sk).map_or("", |s| &*s.user),
            self.cfg.apps[app].package_name,
            reason.name()
        );
        self.stop_app(net, sk, app, reason.name(), "", now);
        self.running_changed(sk, app, false);
        self.send_app_state(net, sk, now);
    }
}
