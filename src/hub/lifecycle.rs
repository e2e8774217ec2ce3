//! Core layer (sans-IO), part of the hub: the rules of the app lifecycle, over the state of
//! the session table (`AppRun`s in [`super::sessions`]) and the webhooks
//! ([`super::webhooks`]). Start (webhook, connect deadline, webhook retry), unexpected drops
//! (reconnect grace, restart with doubling backoff, bounded), and stops on purpose; and the
//! sending of webhooks: one at a time per (session, app), at most `max_webhooks_per_server` in
//! flight to one app server, the rest waiting their turn in that server's FIFO.
//!
//! Invariants: each start has its own id, so a late answer to an earlier start never counts
//! against a newer one; apps stopped on purpose are never restarted; a start waiting in a FIFO
//! is there only while its app is loading for that very start (`AppRun::waiting`), and its
//! connect deadline runs from its send.

use super::errors::LifecycleError;
use super::sessions::{AppRun, AppState, SessKey};
use super::timers::TimerKey;
use super::webhook_queue::{ServerLoad, Waiting};
use super::webhooks::{Queued, Webhook, WebhookKind};
use super::Hub;
use crate::net::{ConnId, HttpOutcome, Outbox, Target};
use crate::protocol::inbound::ReleaseReason;
use crate::protocol::outbound as messages;
use crate::time::{Instant, Now};

impl Hub {
    // ---- app lifecycle -------------------------------------------------------------------

    /// Start `app` in the session (no-op if it is already loading, active or reconnecting).
    /// False, with the refusal counted, when the session runs `max_apps_per_session` other
    /// apps already.
    pub(super) fn start_app(
        &mut self,
        net: &mut impl Outbox,
        sk: SessKey,
        app: usize,
        now: Now,
        restart: bool,
    ) -> bool {
        let until = now.mono + self.cfg.timings.app_connect_timeout;
        let max_apps = self.cfg.max_apps_per_session;
        let Some(s) = self.sessions.routing_mut(sk) else {
            return false;
        };
        let live = |r: &AppRun| r.state.is_live();
        let others = s.apps.iter().filter(|(&a, r)| a != app && live(r)).count();
        if others >= max_apps && !s.apps.get(&app).is_some_and(live) {
            let user = s.user.clone();
            self.refused(LifecycleError::TooManyApps.code());
            log::warn!(
                "event=app_refused code=TOO_MANY_APPS session={user:?} package={:?}",
                self.cfg.apps[app].package_name
            );
            return false;
        }
        let run = s.apps.get_or_insert(
            app,
            AppRun {
                state: AppState::Failed,
                conn: None,
                subs: Vec::new(),
                start: 0,
                attempt: 0,
                restarts: 0,
                active_since: None,
                error: None,
                prefix: Box::default(),
                waiting: false,
                released: None,
                location_rate: None,
            },
        );
        match run.state {
            AppState::Loading { .. } | AppState::Active | AppState::Reconnecting { .. } => {
                return true
            }
            AppState::RestartWait { .. } if restart => {}
            AppState::RestartWait { .. } | AppState::Failed => {
                if !restart {
                    run.restarts = 0;
                }
            }
        }
        run.state = AppState::Loading {
            until,
            retry_at: None,
        };
        run.error = None;
        run.released = None;
        run.start = self.webhooks.new_start();
        run.attempt = 1;
        self.arm(until, TimerKey::App(sk, app));
        // The boot screen first: a start refused at once (queue full) then takes it down.
        self.screen_app_starting(net, sk, app, now);
        self.send_session_request(net, sk, app, 1, now);
        true
    }

    pub(super) fn send_session_request(
        &mut self,
        net: &mut impl Outbox,
        sk: SessKey,
        app: usize,
        attempt: u32,
        now: Now,
    ) {
        let Some(s) = self.session(sk) else { return };
        let Some(start) = s.apps.get(&app).map(|r| r.start) else {
            return;
        };
        let spec = &self.cfg.apps[app];
        let base = if spec.is_system_app {
            &self.cfg.internal_ws_url
        } else {
            &self.cfg.public_ws_url
        };
        let ws_url = format!("{}/app-ws", base.trim_end_matches('/'));
        let user = s.user.clone();
        let session_id = format!("{user}-{}", spec.package_name);
        let body = messages::session_request(&session_id, &user, &ws_url, now.iso());
        self.post_webhook(
            net,
            sk,
            app,
            WebhookKind::Start { start, attempt },
            &body,
            now,
        );
    }

    /// Send a webhook for `app` in the session. While one that still matters is in flight for
    /// the same (session, app) — a stop, or the start attempt still loading — a later one waits
    /// for it, replacing any that already waits: the app server hears them in order, and a
    /// burst of start/stop toggles reaches it as its latest wish only. At most
    /// `max_webhooks_per_server` are in flight to one app server; the others wait their turn
    /// in that server's FIFO (see [`Hub::send_webhook`]).
    pub(super) fn post_webhook<T: serde::Serialize>(
        &mut self,
        net: &mut impl Outbox,
        sk: SessKey,
        app: usize,
        kind: WebhookKind,
        body: &T,
        now: Now,
    ) {
        if let WebhookKind::Start { .. } = kind {
            self.fetch_app_config(net, app, now);
        }
        let spec = &self.cfg.apps[app];
        let Target { host, port, .. } = &spec.webhook_target;
        let request =
            messages::http_post(host, *port, &format!("{}/webhook", spec.webhook_path), body);
        let busy = self
            .webhooks
            .in_flight_for(sk, app)
            .any(|kind| self.webhook_wanted(sk, app, kind));
        if busy {
            if self.webhooks.wait_behind(sk, app, Queued { kind, request }) {
                self.counters.webhooks_coalesced += 1;
            }
            return;
        }
        self.send_webhook(net, sk, app, kind, request, now);
    }

    /// Send it now if its app server has a free slot and no one waits before it; otherwise
    /// queue it at the back of that server's FIFO. A waiting start keeps the app loading (its
    /// boot screen shows) for at most `webhook_queue_timeout`; its connect deadline starts
    /// when it is sent. Past `max_queued_webhooks` waiting in all, it is refused
    /// (`WEBHOOK_QUEUE_FULL`, counted): a start fails with that code, a stop is dropped.
    fn send_webhook(
        &mut self,
        net: &mut impl Outbox,
        sk: SessKey,
        app: usize,
        kind: WebhookKind,
        request: Vec<u8>,
        now: Now,
    ) {
        let target = self.cfg.apps[app].webhook_target.clone();
        if self
            .webhooks
            .can_send(&target, self.cfg.max_webhooks_per_server)
        {
            return self.open_webhook(net, target, sk, app, kind, &request, now);
        }
        let waiting = Waiting {
            sess: sk,
            app,
            kind,
            request,
            since: now.mono,
        };
        if self
            .webhooks
            .push(&target, waiting, self.cfg.max_queued_webhooks)
            .is_err()
        {
            self.refused("WEBHOOK_QUEUE_FULL");
            log::warn!(
                "event=webhook_refused code=WEBHOOK_QUEUE_FULL package={:?} waiting={}",
                self.cfg.apps[app].package_name,
                self.webhooks.waiting()
            );
            if self.webhook_wanted(sk, app, kind) && matches!(kind, WebhookKind::Start { .. }) {
                self.start_failed(net, sk, app, "WEBHOOK_QUEUE_FULL", now);
            }
            return;
        }
        self.counters.webhooks_queued += 1;
        if matches!(kind, WebhookKind::Start { .. }) && self.webhook_wanted(sk, app, kind) {
            if let Some(run) = self.run_mut(sk, app) {
                run.waiting = true;
            }
            self.set_loading_until(sk, app, now.mono + self.cfg.timings.webhook_queue_timeout);
        }
    }

    /// A loading app (not between webhook attempts) now waits until `until`.
    fn set_loading_until(&mut self, sk: SessKey, app: usize, until: Instant) {
        if let Some(run) = self.run_mut(sk, app) {
            if let AppState::Loading { retry_at: None, .. } = run.state {
                run.state = AppState::Loading {
                    until,
                    retry_at: None,
                };
                self.arm(until, TimerKey::App(sk, app));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn open_webhook(
        &mut self,
        net: &mut impl Outbox,
        target: Target,
        sk: SessKey,
        app: usize,
        kind: WebhookKind,
        request: &[u8],
        now: Now,
    ) {
        let deadline = now.mono + self.cfg.timings.webhook_timeout;
        let conn = net.open_client(target.clone(), request, deadline);
        let w = Webhook {
            sess: sk,
            app,
            kind,
            sent: now.mono,
            target,
        };
        match conn {
            Some(conn) => {
                self.counters.webhooks_sent += 1;
                self.webhooks.sent(conn, w);
            }
            None => {
                log::warn!(
                    "event=webhook_not_sent package={:?} reason=outbound_full",
                    self.cfg.apps[app].package_name
                );
                self.webhook_outcome("not_sent");
                self.webhook_failed(net, w, now)
            }
        }
    }

    /// Hand `target`'s free slots to the webhooks waiting longest for them. A start sent from
    /// the queue gets its full connect time from now.
    fn pump_webhooks(&mut self, net: &mut impl Outbox, target: &Target, now: Now) {
        let cap = self.cfg.max_webhooks_per_server;
        while let Some(w) = self.webhooks.next(target, cap) {
            if !self.webhook_wanted(w.sess, w.app, w.kind) {
                continue;
            }
            if let WebhookKind::Start { .. } = w.kind {
                if let Some(run) = self.run_mut(w.sess, w.app) {
                    run.waiting = false;
                }
                let until = now.mono + self.cfg.timings.app_connect_timeout;
                self.set_loading_until(w.sess, w.app, until);
            }
            self.open_webhook(net, target.clone(), w.sess, w.app, w.kind, &w.request, now);
        }
    }

    /// The start of (`sk`, `app`) will not be sent after all (the app stopped, failed, or
    /// connected by itself): it leaves its server's FIFO. True if it was waiting there.
    pub(super) fn cancel_waiting_start(&mut self, sk: SessKey, app: usize) -> bool {
        let Some(run) = self.run_mut(sk, app).filter(|r| r.waiting) else {
            return false;
        };
        run.waiting = false;
        self.webhooks.cancel_start(sk, app).is_some()
    }

    /// Every app server's webhooks in flight and waiting (with the oldest one's wait), one
    /// entry per distinct server of the registered apps, for `/metrics` and the operator page.
    pub fn webhook_servers(&self, now: Now) -> Vec<ServerLoad> {
        let mut seen: Vec<&Target> = Vec::new();
        for a in &self.cfg.apps {
            if !a.package_name.is_empty() && !seen.contains(&&a.webhook_target) {
                seen.push(&a.webhook_target);
            }
        }
        seen.into_iter()
            .map(|t| self.webhooks.load(t, now.mono))
            .collect()
    }

    pub fn on_http_done(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        outcome: HttpOutcome,
        now: Now,
    ) {
        if self.on_app_config_done(id, &outcome) {
            return;
        }
        let Some(w) = self.webhooks.finished(id) else {
            return;
        };
        let target = w.target.clone();
        let (sk, app) = (w.sess, w.app);
        let took = now.mono.saturating_since(w.sent).as_micros();
        let took = u64::try_from(took).unwrap_or(u64::MAX);
        self.counters
            .webhook_latency
            .observe(crate::histogram::WEBHOOK_US, took);
        let ok = matches!(outcome, HttpOutcome::Status(s) | HttpOutcome::Body { status: s, .. } if (200..300).contains(&s));
        self.webhook_outcome(match outcome {
            HttpOutcome::Status(_) | HttpOutcome::Body { .. } if ok => "ok",
            HttpOutcome::Status(_) | HttpOutcome::Body { .. } => "http_error",
            HttpOutcome::Failed(_) => "failed",
            HttpOutcome::Tls(_) => "tls",
        });
        if let HttpOutcome::Tls(_) = outcome {
            // On the operator page's refusals feed: the app server's certificate was refused.
            self.counters.refused("WEBHOOK_TLS");
        }
        if !ok {
            log::warn!(
                "event=webhook_failed package={:?} outcome={outcome:?}",
                self.cfg.apps[w.app].package_name
            );
            self.webhook_failed(net, w, now);
        }
        // The slot goes to the server's longest waiting first; the same app's next webhook
        // then takes its turn like any other.
        self.pump_webhooks(net, &target, now);
        if let Some(q) = self.webhooks.take_behind(sk, app) {
            if self.webhook_wanted(sk, app, q.kind) {
                // A start that waited gets its full connect time from now.
                let until = now.mono + self.cfg.timings.app_connect_timeout;
                self.set_loading_until(sk, app, until);
                self.send_webhook(net, sk, app, q.kind, q.request, now);
            }
        }
    }

    fn webhook_outcome(&mut self, outcome: &'static str) {
        *self.counters.webhook_outcomes.entry(outcome).or_default() += 1;
    }

    /// Apps in every session by lifecycle state, for `/metrics`: loading, active,
    /// reconnecting, restarting, failed.
    pub fn app_state_counts(&self) -> [(&'static str, u64); 5] {
        let mut out = [
            ("loading", 0),
            ("active", 0),
            ("reconnecting", 0),
            ("restarting", 0),
            ("failed", 0),
        ];
        for (_, s) in &self.sessions {
            for run in s.apps.values() {
                let name = run.state.name();
                if let Some(slot) = out.iter_mut().find(|(n, _)| *n == name) {
                    slot.1 += 1;
                }
            }
        }
        out
    }

    /// A waiting webhook is still worth sending: a stop always is, a start only while that
    /// very start attempt is still loading.
    fn webhook_wanted(&self, sk: SessKey, app: usize, kind: WebhookKind) -> bool {
        match kind {
            WebhookKind::Stop => true,
            WebhookKind::Start { start, attempt } => self.sessions.run(sk, app).is_some_and(|r| {
                matches!(r.state, AppState::Loading { .. })
                    && r.start == start
                    && r.attempt == attempt
            }),
        }
    }

    /// A start or stop asked for by the user (glasses or REST), within the session's rate.
    pub(super) fn lifecycle_request(
        &mut self,
        net: &mut impl Outbox,
        sk: SessKey,
        app: usize,
        start: bool,
        now: Now,
    ) -> Result<(), LifecycleError> {
        let (burst, refill) = (self.cfg.lifecycle_burst, self.cfg.lifecycle_refill);
        let Some(s) = self.session_mut(sk) else {
            return Ok(());
        };
        if !s.lifecycle.take(burst, refill, now.mono) {
            self.refused(LifecycleError::RateLimited.code());
            return Err(LifecycleError::RateLimited);
        }
        if start {
            if !self.start_app(net, sk, app, now, false) {
                return Err(LifecycleError::TooManyApps);
            }
        } else {
            self.stop_app(net, sk, app, "user_disabled", "App stopped", now);
        }
        self.running_changed(sk, app, start);
        self.send_app_state(net, sk, now);
        Ok(())
    }

    pub(super) fn webhook_failed(&mut self, net: &mut impl Outbox, w: Webhook, now: Now) {
        self.counters.webhooks_failed += 1;
        let WebhookKind::Start { start, attempt } = w.kind else {
            return;
        };
        let max = self.cfg.timings.webhook_attempts;
        let retry_at = now.mono + self.cfg.timings.webhook_backoff;
        let Some(run) = self.run_mut(w.sess, w.app) else {
            return;
        };
        let AppState::Loading { until, .. } = run.state else {
            return;
        };
        if run.start != start || run.attempt != attempt {
            return;
        }
        if attempt < max {
            run.state = AppState::Loading {
                until,
                retry_at: Some(retry_at),
            };
            self.arm(retry_at, TimerKey::App(w.sess, w.app));
        } else {
            self.start_failed(net, w.sess, w.app, "WEBHOOK_FAILED", now);
        }
    }

    pub(super) fn app_tick(&mut self, net: &mut impl Outbox, sk: SessKey, app: usize, now: Now) {
        let t = self.cfg.timings.clone();
        let Some(run) = self.run_mut(sk, app) else {
            return;
        };
        let waiting = run.waiting;
        match run.state {
            AppState::Loading {
                retry_at: Some(at), ..
            } if at <= now.mono => {
                run.attempt += 1;
                let attempt = run.attempt;
                let until = now.mono + t.app_connect_timeout;
                run.state = AppState::Loading {
                    until,
                    retry_at: None,
                };
                self.arm(until, TimerKey::App(sk, app));
                self.send_session_request(net, sk, app, attempt, now);
            }
            AppState::Loading {
                until,
                retry_at: None,
            } if until <= now.mono => {
                if waiting {
                    log::warn!(
                        "event=webhook_queue_timeout package={:?}",
                        self.cfg.apps[app].package_name
                    );
                    self.webhook_outcome("queue_timeout");
                    self.start_failed(net, sk, app, "WEBHOOK_QUEUE_TIMEOUT", now);
                } else {
                    self.start_failed(net, sk, app, "APP_CONNECT_TIMEOUT", now);
                }
            }
            AppState::Reconnecting { until } if until <= now.mono => {
                match run.released {
                    // Handed over, and the new connection never came: gone, not crashed.
                    Some(reason) => self.app_left(net, sk, app, reason, now),
                    None => self.schedule_restart(net, sk, app, "APP_DISCONNECTED", now),
                }
            }
            AppState::RestartWait { at } if at <= now.mono => {
                self.counters.app_restarts += 1;
                log::info!(
                    "event=app_restarting session={:?} package={:?}",
                    self.session(sk).map_or("", |s| &*s.user),
                    self.cfg.apps[app].package_name
                );
                self.start_app(net, sk, app, now, true);
                self.send_app_state(net, sk, now);
            }
            _ => {}
        }
    }

    /// A start or restart attempt failed. A restart in progress tries again (backed off) while
    /// attempts remain; otherwise the app is marked failed and the glasses are told.
    pub(super) fn start_failed(
        &mut self,
        net: &mut impl Outbox,
        sk: SessKey,
        app: usize,
        error: &'static str,
        now: Now,
    ) {
        self.cancel_waiting_start(sk, app);
        let restarting = self.run_mut(sk, app).is_some_and(|r| r.restarts > 0);
        if restarting {
            return self.schedule_restart(net, sk, app, error, now);
        }
        self.give_up(net, sk, app, error, now);
    }

    pub(super) fn schedule_restart(
        &mut self,
        net: &mut impl Outbox,
        sk: SessKey,
        app: usize,
        error: &'static str,
        now: Now,
    ) {
        let t = &self.cfg.timings;
        let (max, base) = (t.restart_attempts, t.restart_backoff);
        let Some(run) = self.run_mut(sk, app) else {
            return;
        };
        if run.restarts >= max {
            return self.give_up(net, sk, app, "RESTART_LIMIT_REACHED", now);
        }
        run.restarts += 1;
        run.error = Some(error);
        let at = now.mono + base * 2u32.saturating_pow(run.restarts - 1);
        run.state = AppState::RestartWait { at };
        self.arm(at, TimerKey::App(sk, app));
        self.send_app_state(net, sk, now);
    }

    pub(super) fn give_up(
        &mut self,
        net: &mut impl Outbox,
        sk: SessKey,
        app: usize,
        error: &'static str,
        now: Now,
    ) {
        self.cancel_waiting_start(sk, app);
        let Some(run) = self.run_mut(sk, app) else {
            return;
        };
        run.state = AppState::Failed;
        run.error = Some(error);
        run.subs.clear();
        log::warn!(
            "event=app_failed session={:?} package={:?} code={error}",
            self.session(sk).map_or("", |s| &*s.user),
            self.cfg.apps[app].package_name
        );
        self.subs_changed(net, sk, None, now);
        self.screen_app_gone(net, sk, app, now);
        self.send_to_glasses(
            net,
            sk,
            &messages::AppEvent {
                kind: "app_stopped",
                package_name: Some(&self.cfg.apps[app].package_name),
                reason: None,
                error: Some(error),
                timestamp: now.iso(),
            },
        );
        self.send_app_state(net, sk, now);
    }

    /// Stop `app` on purpose: the app is told, closed with 1000, sent `stop_request`, and the
    /// glasses are told.
    pub(super) fn stop_app(
        &mut self,
        net: &mut impl Outbox,
        sk: SessKey,
        app: usize,
        reason: &str,
        close_reason: &str,
        now: Now,
    ) {
        // A start still waiting for its app server leaves the queue; the server never heard of
        // it, so it hears no stop either.
        let unsent = self.cancel_waiting_start(sk, app);
        let Some(s) = self.sessions.routing_mut(sk) else {
            return;
        };
        let Some(run) = s.apps.remove(&app) else {
            return;
        };
        let unsent = unsent && run.attempt == 1 && run.restarts == 0;
        let user = s.user.clone();
        let was_source = run.conn.is_some();
        if let Some(conn) = run.conn {
            self.links.remove(&conn);
            let msg = messages::AppEvent {
                kind: "app_stopped",
                package_name: None,
                reason: Some(reason),
                error: None,
                timestamp: now.iso(),
            };
            net.send_json(conn, &msg);
            net.close_websocket(conn, 1000, close_reason, now.mono);
        }
        // An app that said goodbye (`ownership_release`) is not told what it told us.
        if run.state.is_live() && !unsent && run.released.is_none() {
            let session_id = format!("{user}-{}", self.cfg.apps[app].package_name);
            let body = messages::stop_request(&session_id, &user, reason, now.iso());
            self.post_webhook(net, sk, app, WebhookKind::Stop, &body, now);
        }
        self.send_to_glasses(
            net,
            sk,
            &messages::AppEvent {
                kind: "app_stopped",
                package_name: Some(&self.cfg.apps[app].package_name),
                reason: None,
                error: None,
                timestamp: now.iso(),
            },
        );
        self.subs_changed(net, sk, None, now);
        if was_source {
            self.unserved_publisher_gone(net, sk, app, now);
        }
        self.screen_app_gone(net, sk, app, now);
        self.requests_app_stopped(net, sk, app, now);
    }

    pub(super) fn app_dropped(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        sk: SessKey,
        app: usize,
        now: Now,
    ) {
        let t = self.cfg.timings.clone();
        let Some(run) = self.run_mut(sk, app) else {
            return;
        };
        if run.conn != Some(id) {
            return; // a replaced connection: its successor is untouched
        }
        run.conn = None;
        let released = run.released;
        self.unserved_publisher_gone(net, sk, app, now);
        match released {
            None | Some(ReleaseReason::SwitchingClouds) => {}
            Some(reason) => return self.app_left(net, sk, app, reason, now),
        }
        let Some(run) = self.run_mut(sk, app) else {
            return;
        };
        run.subs.clear();
        if run
            .active_since
            .is_some_and(|a| now.mono.saturating_since(a) >= t.restart_reset_after)
        {
            run.restarts = 0;
        }
        let until = now.mono + t.app_reconnect_grace;
        run.state = AppState::Reconnecting { until };
        self.arm(until, TimerKey::App(sk, app));
        log::info!(
            "event=app_dropped session={:?} package={:?} connection={id}",
            self.session(sk).map_or("", |s| &*s.user),
            self.cfg.apps[app].package_name
        );
        self.subs_changed(net, sk, None, now);
        self.send_app_state(net, sk, now);
        self.screen_app_gone(net, sk, app, now);
    }
}
