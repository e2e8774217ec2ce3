//! Core layer (sans-IO), part of the hub: the app lifecycle. Start (webhook, connect deadline,
//! webhook retry), unexpected drops (reconnect grace, restart with doubling backoff, bounded),
//! and stops on purpose. Invariant: each start has its own id, so a late answer to an earlier
//! start never counts against a newer one; apps stopped on purpose are never restarted.

use super::*;

impl Hub {
    // ---- app lifecycle -------------------------------------------------------------------

    /// Start `app` in the session (no-op if it is already loading, active or reconnecting).
    pub(super) fn start_app(
        &mut self,
        net: &mut Net,
        sk: SessKey,
        app: usize,
        now: Instant,
        restart: bool,
    ) {
        let until = now + self.cfg.timings.app_connect_timeout;
        let start = self.next_start.wrapping_add(1);
        let Some(s) = self.session_mut(sk) else {
            return;
        };
        let run = s.apps.entry(app).or_insert(AppRun {
            state: AppState::Failed,
            conn: None,
            subs: Vec::new(),
            start,
            attempt: 0,
            restarts: 0,
            active_since: None,
            error: None,
        });
        match run.state {
            AppState::Loading { .. } | AppState::Active | AppState::Reconnecting { .. } => return,
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
        run.start = start;
        run.attempt = 1;
        self.next_start = start;
        self.timers.push(until, TimerKey::App(sk, app));
        self.send_session_request(net, sk, app, 1, now);
    }

    pub(super) fn send_session_request(
        &mut self,
        net: &mut Net,
        sk: SessKey,
        app: usize,
        attempt: u32,
        now: Instant,
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
        let session_id = format!("{}-{}", s.user, spec.package_name);
        let body = messages::session_request(&session_id, &s.user, &ws_url, &iso8601(now));
        self.post_webhook(
            net,
            sk,
            app,
            WebhookKind::Start { start, attempt },
            &body,
            now,
        );
    }

    pub(super) fn post_webhook(
        &mut self,
        net: &mut Net,
        sk: SessKey,
        app: usize,
        kind: WebhookKind,
        body: &Value,
        now: Instant,
    ) {
        let spec = &self.cfg.apps[app];
        let Target { host, port } = &spec.webhook_target;
        let request =
            messages::http_post(host, *port, &format!("{}/webhook", spec.webhook_path), body);
        let target = spec.webhook_target.clone();
        self.counters.webhooks_sent += 1;
        match net.open_client(target, &request, now + self.cfg.timings.webhook_timeout) {
            Some(conn) => {
                self.webhooks.insert(
                    conn,
                    Webhook {
                        sess: sk,
                        app,
                        kind,
                    },
                );
            }
            None => {
                // No slot for the request: the same as a failed attempt.
                self.webhook_failed(
                    net,
                    Webhook {
                        sess: sk,
                        app,
                        kind,
                    },
                    now,
                );
            }
        }
    }

    pub fn on_http_done(&mut self, net: &mut Net, id: ConnId, outcome: HttpOutcome, now: Instant) {
        let Some(w) = self.webhooks.remove(&id) else {
            return;
        };
        let ok = matches!(outcome, HttpOutcome::Status(s) if (200..300).contains(&s));
        if !ok {
            log::warn!(
                "webhook to {} failed: {outcome:?}",
                self.cfg.apps[w.app].package_name
            );
            self.webhook_failed(net, w, now);
        }
    }

    pub(super) fn webhook_failed(&mut self, net: &mut Net, w: Webhook, now: Instant) {
        self.counters.webhooks_failed += 1;
        let WebhookKind::Start { start, attempt } = w.kind else {
            return;
        };
        let max = self.cfg.timings.webhook_attempts;
        let retry_at = now + self.cfg.timings.webhook_backoff;
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
            self.timers.push(retry_at, TimerKey::App(w.sess, w.app));
        } else {
            self.start_failed(net, w.sess, w.app, "WEBHOOK_FAILED", now);
        }
    }

    pub(super) fn app_tick(&mut self, net: &mut Net, sk: SessKey, app: usize, now: Instant) {
        let t = self.cfg.timings.clone();
        let Some(run) = self.run_mut(sk, app) else {
            return;
        };
        match run.state {
            AppState::Loading {
                retry_at: Some(at), ..
            } if at <= now => {
                run.attempt += 1;
                let attempt = run.attempt;
                let until = now + t.app_connect_timeout;
                run.state = AppState::Loading {
                    until,
                    retry_at: None,
                };
                self.timers.push(until, TimerKey::App(sk, app));
                self.send_session_request(net, sk, app, attempt, now);
            }
            AppState::Loading {
                until,
                retry_at: None,
            } if until <= now => {
                self.start_failed(net, sk, app, "APP_CONNECT_TIMEOUT", now);
            }
            AppState::Reconnecting { until } if until <= now => {
                self.schedule_restart(net, sk, app, "APP_DISCONNECTED", now);
            }
            AppState::RestartWait { at } if at <= now => {
                self.counters.app_restarts += 1;
                log::info!(
                    "restarting {} through its webhook",
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
        net: &mut Net,
        sk: SessKey,
        app: usize,
        error: &'static str,
        now: Instant,
    ) {
        let restarting = self.run_mut(sk, app).is_some_and(|r| r.restarts > 0);
        if restarting {
            return self.schedule_restart(net, sk, app, error, now);
        }
        self.give_up(net, sk, app, error, now);
    }

    pub(super) fn schedule_restart(
        &mut self,
        net: &mut Net,
        sk: SessKey,
        app: usize,
        error: &'static str,
        now: Instant,
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
        let at = now + base * 2u32.saturating_pow(run.restarts - 1);
        run.state = AppState::RestartWait { at };
        self.timers.push(at, TimerKey::App(sk, app));
        self.send_app_state(net, sk, now);
    }

    pub(super) fn give_up(
        &mut self,
        net: &mut Net,
        sk: SessKey,
        app: usize,
        error: &'static str,
        now: Instant,
    ) {
        let Some(run) = self.run_mut(sk, app) else {
            return;
        };
        run.state = AppState::Failed;
        run.error = Some(error);
        run.subs.clear();
        log::warn!("{} gave up: {error}", self.cfg.apps[app].package_name);
        self.send_to_glasses(
            net,
            sk,
            &json!({
                "type": "app_stopped",
                "packageName": self.cfg.apps[app].package_name,
                "error": error,
                "timestamp": iso8601(now),
            }),
        );
        self.send_app_state(net, sk, now);
    }

    /// Stop `app` on purpose: the app is told, closed with 1000, sent `stop_request`, and the
    /// glasses are told.
    pub(super) fn stop_app(
        &mut self,
        net: &mut Net,
        sk: SessKey,
        app: usize,
        reason: &str,
        close_reason: &str,
        now: Instant,
    ) {
        let Some(s) = self.session_mut(sk) else {
            return;
        };
        let Some(run) = s.apps.remove(&app) else {
            return;
        };
        let user = s.user.clone();
        if let Some(conn) = run.conn {
            self.links.remove(&conn);
            let msg = json!({ "type": "app_stopped", "reason": reason, "timestamp": iso8601(now) });
            net.send_text(conn, &msg.to_string());
            net.close_websocket(conn, 1000, close_reason, now);
        }
        if run.state.is_live() {
            let session_id = format!("{user}-{}", self.cfg.apps[app].package_name);
            let body = messages::stop_request(&session_id, &user, reason, &iso8601(now));
            self.post_webhook(net, sk, app, WebhookKind::Stop, &body, now);
        }
        self.send_to_glasses(
            net,
            sk,
            &json!({
                "type": "app_stopped",
                "packageName": self.cfg.apps[app].package_name,
                "timestamp": iso8601(now),
            }),
        );
    }

    pub(super) fn app_dropped(
        &mut self,
        net: &mut Net,
        id: ConnId,
        sk: SessKey,
        app: usize,
        now: Instant,
    ) {
        let t = self.cfg.timings.clone();
        let Some(run) = self.run_mut(sk, app) else {
            return;
        };
        if run.conn != Some(id) {
            return; // a replaced connection: its successor is untouched
        }
        run.conn = None;
        run.subs.clear();
        if run
            .active_since
            .is_some_and(|a| now.saturating_since(a) >= t.restart_reset_after)
        {
            run.restarts = 0;
        }
        let until = now + t.app_reconnect_grace;
        run.state = AppState::Reconnecting { until };
        self.timers.push(until, TimerKey::App(sk, app));
        log::info!(
            "{} dropped unexpectedly; waiting for it to reconnect",
            self.cfg.apps[app].package_name
        );
        self.send_app_state(net, sk, now);
    }
}
