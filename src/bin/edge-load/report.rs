//! Measurement layer: what one `edge-load route` run found, as the summary table it prints and
//! the `--json` report. No measuring here: the run fills a [`Report`], this module words it.
//! Invariant: the text and the JSON are made from the same fields, so they never disagree.

use crate::driver::Displays;
use crate::stats::Histogram;
use serde_json::{json, Value};
use std::fmt::Write;

/// The interim transcripts of a `--transcripts` run. The server may drop interims for an app
/// that is behind (a later one supersedes them), so they are counted apart from the finals,
/// which are the run's numbered messages and must all arrive in order.
#[derive(Default)]
pub struct Interims {
    pub sent: u64,
    /// Sent × apps.
    pub expected: u64,
    pub delivered: u64,
    /// Received after a later one (never allowed, unlike a drop).
    pub reordered: u64,
    pub latency: Histogram,
}

impl Interims {
    /// Interims the server dropped for apps that were behind (allowed).
    pub fn dropped(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }
}

/// A `--rush` setup: when the last app was active, the most webhooks the app server saw at
/// once, and the server's own account of the starts.
pub struct Rush {
    pub last_active_secs: f64,
    pub webhooks_peak: usize,
    pub server: String,
}

#[derive(Default)]
pub struct Report {
    pub sessions: usize,
    pub apps: usize,
    /// Messages per second per glasses when paced; flat out when `None`.
    pub rate: Option<f64>,
    pub batch: usize,
    pub window: u64,
    pub drive_secs: f64,
    /// From the first message sent until everything was delivered (or delivery stopped).
    pub window_secs: f64,
    pub setup_secs: f64,
    pub sent: u64,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub gaps: u64,
    pub reordered: u64,
    pub app_disconnects: Vec<String>,
    pub glasses_errors: Vec<String>,
    pub latency: Histogram,
    /// Server RSS in KiB: start, peak, VmHWM, end.
    pub rss: [u64; 4],
    pub server_pid: u32,
    pub server_note: String,
    pub server_alive: bool,
    pub server_cpu: f64,
    /// The part of `server_cpu` spent in the kernel (system time: mostly the socket writes).
    pub server_sys: f64,
    pub self_cpu: f64,
    /// CPU seconds of the whole machine over the window, and of everything else in it.
    pub busy: f64,
    pub others: f64,
    pub cpus: usize,
    pub counters: Vec<String>,
    pub ignored: usize,
    pub empty_webhooks: usize,
    /// The same, accepted after this run stopped the server it started.
    pub empty_after_stop: usize,
    pub other: u64,
    pub other_types: Vec<String>,
    pub errors: Vec<String>,
    /// With `--display-rate`: app `display_event` → glasses.
    pub displays: Option<Displays>,
    /// `--rush`: every start sent at once.
    pub rush: Option<Rush>,
    /// Binary audio chunks of this many bytes instead of `button_press` events.
    pub audio: Option<usize>,
    /// The Unix socket the glasses connected over (TCP when `None`).
    pub unix: Option<String>,
    /// Glasses and apps connected over TLS.
    pub tls: bool,
    /// With `--transcripts`: the numbered messages are final transcripts from a publishing
    /// system app; these are its interims.
    pub interims: Option<Interims>,
}

impl Report {
    /// Nothing lost, out of order, disconnected or failed.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.gaps == 0
            && self.reordered == 0
            && self.app_disconnects.is_empty()
            && self.glasses_errors.is_empty()
            && self.server_alive
            && self.errors.is_empty()
            && self.interims.as_ref().is_none_or(|i| i.reordered == 0)
    }

    fn per_delivery_us(&self, cpu: f64) -> f64 {
        if self.delivered > 0 {
            cpu * 1e6 / self.delivered as f64
        } else {
            0.0
        }
    }

    /// Server CPU per transcript delivered, final or interim.
    fn per_transcript_us(&self, i: &Interims, cpu: f64) -> f64 {
        cpu * 1e6 / (self.delivered + i.delivered).max(1) as f64
    }

    /// The interims' line and the per-transcript CPU line (user and system time apart).
    fn interims_text(&self, s: &mut String, i: &Interims) {
        let h = &i.latency;
        let _ = writeln!(
            s,
            "  interims          {} sent, {} of {} delivered ({} dropped for apps behind: allowed), reordered {}; latency µs p50 {}  p99 {}  max {}\n  all transcripts   {:.0} delivered/s; server CPU {:.3} µs per delivered transcript (user {:.3} + sys {:.3})",
            i.sent,
            i.delivered,
            i.expected,
            i.dropped(),
            i.reordered,
            h.quantile(0.5),
            h.quantile(0.99),
            h.max,
            self.rate_of(self.delivered + i.delivered),
            self.per_transcript_us(i, self.server_cpu),
            self.per_transcript_us(i, self.server_cpu - self.server_sys),
            self.per_transcript_us(i, self.server_sys)
        );
    }

    fn rate_of(&self, n: u64) -> f64 {
        n as f64 / self.window_secs.max(1e-9)
    }

    /// The summary table.
    pub fn text(&self) -> String {
        let q = |x: f64| self.latency.quantile(x);
        let w = self.window_secs.max(1e-9);
        let mut mode = match self.rate {
            Some(r) => format!("paced at {r} msgs/s per glasses"),
            None if self.window == 0 => format!(
                "flat out, {} frames per write, no window (unlimited in flight)",
                self.batch
            ),
            None => format!(
                "flat out, {} frames per write, at most {} in flight per glasses",
                self.batch, self.window
            ),
        };
        if let Some(size) = self.audio {
            let _ = write!(mode, ", audio chunks of {size} bytes");
        }
        if let Some(path) = &self.unix {
            let _ = write!(mode, ", glasses over unix:{path}");
        }
        if self.tls {
            let _ = write!(mode, ", glasses and apps over TLS");
        }
        if self.interims.is_some() {
            let _ = write!(
                mode,
                ", transcripts from a publishing system app ({} interims per final)",
                crate::wsc::INTERIMS_PER_FINAL
            );
        }
        let mut s = String::new();
        let _ = writeln!(
            s,
            "edge-load route: {} sessions × {} apps, {mode}, {:.1} s (+{:.2} s drain)",
            self.sessions,
            self.apps,
            self.drive_secs,
            (self.window_secs - self.drive_secs).max(0.0)
        );
        let _ = writeln!(
            s,
            "  server            pid {} ({})",
            self.server_pid, self.server_note
        );
        if !self.server_alive {
            let _ = writeln!(
                s,
                "  server            EXITED during the run: its CPU and RSS figures are incomplete"
            );
        }
        let _ = writeln!(
            s,
            "  sent              {} {} ({:.0}/s)",
            self.sent,
            match self.interims {
                Some(_) => "final transcripts",
                None => "glasses messages",
            },
            self.sent as f64 / self.drive_secs.max(1e-9)
        );
        let _ = writeln!(
            s,
            "  delivered         {} of {}: lost {}, gaps {}, reordered {}, apps disconnected {}, glasses disconnected {}",
            self.delivered,
            self.expected,
            self.lost,
            self.gaps,
            self.reordered,
            self.app_disconnects.len(),
            self.glasses_errors.len()
        );
        if let Some(i) = &self.interims {
            self.interims_text(&mut s, i);
        }
        let _ = writeln!(
            s,
            "  delivered msgs/s  {:.0} (over the {:.2} s window)",
            self.rate_of(self.delivered),
            self.window_secs
        );
        let _ = writeln!(
            s,
            "  latency µs        p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (glasses → app, {} samples)",
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            self.latency.max,
            self.latency.n
        );
        if let Some(d) = &self.displays {
            let h = &d.latency;
            let _ = writeln!(
                s,
                "  display µs        p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (app display_event → glasses, {} of {} sent)",
                h.quantile(0.5),
                h.quantile(0.9),
                h.quantile(0.99),
                h.quantile(0.999),
                h.max,
                h.n,
                d.sent
            );
        }
        let [start, peak, hwm, end] = self.rss;
        let _ = writeln!(
            s,
            "  server RSS KiB    start {start}  peak {peak} (VmHWM {hwm})  end {end}"
        );
        for (who, cpu) in [
            ("server CPU     ", self.server_cpu),
            ("generator CPU  ", self.self_cpu),
        ] {
            let _ = writeln!(
                s,
                "  {who}   {cpu:.2} s = {:.1} % of one core; {:.3} µs per delivered message",
                cpu / w * 100.0,
                self.per_delivery_us(cpu)
            );
        }
        let _ = writeln!(
            s,
            "  machine           {} CPUs busy {:.1} % over the window; other processes {:.2} s = {:.1} % of one core{}",
            self.cpus,
            self.busy / w / self.cpus.max(1) as f64 * 100.0,
            self.others,
            self.others / w * 100.0,
            if self.others / w > 0.1 {
                " (not idle: numbers are disturbed)"
            } else {
                ""
            }
        );
        if let Some(r) = &self.rush {
            let _ = writeln!(
                s,
                "  rush              {} starts at once: last app active {:.2} s after the first start; at most {} webhooks in flight at the app server; server: {}",
                self.sessions * self.apps,
                r.last_active_secs,
                r.webhooks_peak,
                r.server
            );
        }
        if !self.counters.is_empty() {
            let _ = writeln!(s, "  server counters   {}", self.counters.join("  "));
        }
        if self.ignored > 0 {
            let _ = writeln!(
                s,
                "  ignored           {} session_requests for sessions of an earlier run",
                self.ignored
            );
        }
        if self.empty_webhooks > 0 {
            let _ = writeln!(
                s,
                "  webhooks          {} connections closed by the server before sending a request",
                self.empty_webhooks
            );
        }
        if self.empty_after_stop > 0 {
            let _ = writeln!(
                s,
                "  webhooks          {} connections the server had opened, not yet written, when this run stopped it",
                self.empty_after_stop
            );
        }
        if self.other > 0 {
            let _ = writeln!(
                s,
                "  other messages    {} text messages to apps without a seq: {}",
                self.other,
                self.other_types.join(", ")
            );
        }
        for (label, list) in [
            ("app disconnected", &self.app_disconnects),
            ("glasses ended   ", &self.glasses_errors),
            ("error           ", &self.errors),
        ] {
            for line in list {
                let _ = writeln!(s, "  {label}  {line}");
            }
        }
        s
    }

    /// The `--json` report.
    pub fn json(&self) -> Value {
        let q = |x: f64| self.latency.quantile(x);
        let w = self.window_secs.max(1e-9);
        let display = self.displays.as_ref().map(|d| {
            let h = &d.latency;
            json!({
                "sent": d.sent, "received": h.n,
                "p50": h.quantile(0.5), "p90": h.quantile(0.9), "p99": h.quantile(0.99),
                "p999": h.quantile(0.999), "max": h.max,
            })
        });
        let transcripts = self.interims.as_ref().map(|i| {
            let h = &i.latency;
            json!({
                "finalsSent": self.sent,
                "interimsSent": i.sent,
                "interimsExpected": i.expected,
                "interimsDelivered": i.delivered,
                "interimsDropped": i.dropped(),
                "interimsReordered": i.reordered,
                "transcriptsDeliveredPerSecond": self.rate_of(self.delivered + i.delivered),
                "serverCpuUsPerDeliveredTranscript": self.per_transcript_us(i, self.server_cpu),
                "interimLatencyUs": {
                    "p50": h.quantile(0.5), "p90": h.quantile(0.9), "p99": h.quantile(0.99),
                    "p999": h.quantile(0.999), "max": h.max, "samples": h.n,
                },
            })
        });
        let mut v = json!({
            "sessions": self.sessions,
            "apps": self.apps,
            "mode": if self.rate.is_some() { "paced" } else { "flat" },
            "ratePerGlasses": self.rate,
            "batch": self.batch,
            "window": self.window,
            "audioChunkBytes": self.audio,
            "glassesTransport": match (&self.unix, self.tls) {
                (Some(p), _) => format!("unix:{p}"),
                (None, true) => "tls".to_string(),
                (None, false) => "tcp".to_string(),
            },
            "appsTransport": if self.tls { "tls" } else { "tcp" },
            "seconds": self.drive_secs,
            "windowSeconds": self.window_secs,
            "setupSeconds": self.setup_secs,
            "sent": self.sent,
            "expected": self.expected,
            "delivered": self.delivered,
            "lost": self.lost,
            "gaps": self.gaps,
            "reordered": self.reordered,
            "appsDisconnected": self.app_disconnects.len(),
            "appDisconnects": self.app_disconnects,
            "glassesDisconnected": self.glasses_errors.len(),
            "glassesErrors": self.glasses_errors,
            "errors": self.errors,
            "clean": self.clean(),
            "deliveredPerSecond": self.rate_of(self.delivered),
            "latencyUs": {
                "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999),
                "max": self.latency.max, "samples": self.latency.n,
            },
            "displayLatencyUs": display,
            "transcripts": transcripts,
            "serverRssKiB": {
                "start": self.rss[0], "peak": self.rss[1], "hwm": self.rss[2], "end": self.rss[3],
            },
            "serverCpuSeconds": self.server_cpu,
            "serverCpuUsPerDelivered": self.per_delivery_us(self.server_cpu),
            "generatorCpuSeconds": self.self_cpu,
            "generatorCpuUsPerDelivered": self.per_delivery_us(self.self_cpu),
            "serverCounters": self.counters,
            "emptyWebhookConnections": self.empty_webhooks,
            "emptyWebhookConnectionsAfterStop": self.empty_after_stop,
            "serverExited": !self.server_alive,
            "machine": {
                "cpus": self.cpus,
                "busyPercent": self.busy / w / self.cpus.max(1) as f64 * 100.0,
                "otherProcessesCpuSeconds": self.others,
            },
        });
        v["serverSysSeconds"] = json!(self.server_sys);
        v["rush"] = json!(self.rush.as_ref().map(|r| json!({
            "lastActiveSeconds": r.last_active_secs,
            "webhooksInFlightPeak": r.webhooks_peak,
            "server": r.server,
        })));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut latency = Histogram::default();
        for v in 1..=1000 {
            latency.record(v);
        }
        Report {
            sessions: 2,
            apps: 3,
            batch: 256,
            window: 4096,
            drive_secs: 2.0,
            window_secs: 2.5,
            sent: 1000,
            expected: 3000,
            delivered: 2990,
            lost: 10,
            latency,
            rss: [100, 300, 310, 200],
            server_pid: 42,
            server_alive: true,
            server_cpu: 0.5,
            server_sys: 0.3,
            self_cpu: 0.25,
            busy: 1.0,
            cpus: 2,
            app_disconnects: vec!["com.a of u: closed".into()],
            ..Report::default()
        }
    }

    #[test]
    fn json_carries_the_counts_rates_and_quantiles() {
        let j = sample().json();
        assert_eq!(j["delivered"], 2990);
        assert_eq!(j["lost"], 10);
        assert_eq!(j["clean"], false);
        assert_eq!(j["mode"], "flat");
        assert_eq!(j["deliveredPerSecond"], 2990.0 / 2.5);
        assert_eq!(j["latencyUs"]["p50"], 500);
        assert_eq!(j["latencyUs"]["p99"], 990);
        assert_eq!(j["latencyUs"]["max"], 1000);
        assert_eq!(j["serverRssKiB"]["peak"], 300);
        let per = j["serverCpuUsPerDelivered"].as_f64().unwrap();
        assert!((per - 0.5e6 / 2990.0).abs() < 1e-9, "{per}");
        assert_eq!(j["appsDisconnected"], 1);
        // The JSON round-trips through text.
        let back: Value = serde_json::from_str(&j.to_string()).unwrap();
        assert_eq!(back, j);
    }

    #[test]
    fn dropped_interims_are_counted_apart_and_only_reordering_makes_a_run_unclean() {
        let with = |reordered| Report {
            interims: Some(Interims {
                sent: 3000,
                expected: 9000,
                delivered: 8000,
                reordered,
                latency: Histogram::default(),
            }),
            lost: 0,
            app_disconnects: Vec::new(),
            ..sample()
        };
        let r = with(0);
        assert!(r.clean());
        let t = r.text();
        assert!(
            t.contains("sent              1000 final transcripts"),
            "{t}"
        );
        assert!(
            t.contains("3000 sent, 8000 of 9000 delivered (1000 dropped for apps behind: allowed), reordered 0"),
            "{t}"
        );
        let j = r.json();
        assert_eq!(j["lost"], 0);
        assert_eq!(j["transcripts"]["interimsDropped"], 1000);
        assert_eq!(j["transcripts"]["finalsSent"], 1000);
        // (2990 finals + 8000 interims) delivered over 2.5 s, 0.5 s of server CPU.
        assert_eq!(j["transcripts"]["transcriptsDeliveredPerSecond"], 4396.0);
        let per = j["transcripts"]["serverCpuUsPerDeliveredTranscript"]
            .as_f64()
            .unwrap();
        assert!((per - 0.5e6 / 10_990.0).abs() < 1e-9, "{per}");
        assert!(!with(1).clean());
        assert_eq!(sample().json()["transcripts"], Value::Null);
    }

    #[test]
    fn text_and_clean_agree_with_the_fields() {
        let r = sample();
        let t = r.text();
        assert!(
            t.contains("delivered         2990 of 3000: lost 10,"),
            "{t}"
        );
        assert!(
            t.contains("p50 500  p90 900  p99 990  p99.9 999  max 1000"),
            "{t}"
        );
        assert!(t.contains("app disconnected  com.a of u: closed"), "{t}");
        assert!(t.contains("167.224 µs per delivered message"), "{t}");
        assert!(!r.clean());
        let ok = Report {
            lost: 0,
            app_disconnects: Vec::new(),
            ..sample()
        };
        assert!(ok.clean());
        assert_eq!(ok.json()["clean"], true);
        let paced = Report {
            rate: Some(100.0),
            ..sample()
        };
        assert!(paced.text().contains("paced at 100 msgs/s per glasses"));
        let audio = Report {
            audio: Some(3200),
            ..sample()
        };
        assert!(audio
            .text()
            .contains("in flight per glasses, audio chunks of 3200 bytes"));
        assert_eq!(audio.json()["audioChunkBytes"], 3200);
        assert!(paced.json()["audioChunkBytes"].is_null());
        assert_eq!(paced.json()["glassesTransport"], "tcp");
        let unix = Report {
            unix: Some("/run/e.sock".into()),
            ..sample()
        };
        assert!(unix.text().contains(", glasses over unix:/run/e.sock,"));
        assert_eq!(unix.json()["glassesTransport"], "unix:/run/e.sock");
        assert_eq!(paced.json()["mode"], "paced");
        assert!(paced.json()["displayLatencyUs"].is_null());
        let mut latency = Histogram::default();
        latency.record(70);
        latency.record(90);
        let shown = Report {
            displays: Some(Displays { sent: 3, latency }),
            ..sample()
        };
        assert!(shown.text().contains("p50 70  p90 90"), "{}", shown.text());
        assert!(shown.text().contains("2 of 3 sent"), "{}", shown.text());
        let j = shown.json();
        assert_eq!(j["displayLatencyUs"]["received"], 2);
        assert_eq!(j["displayLatencyUs"]["sent"], 3);
        assert_eq!(j["displayLatencyUs"]["max"], 90);
    }
}
