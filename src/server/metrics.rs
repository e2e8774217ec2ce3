//! Core layer (sans-IO), part of the server composition: the Prometheus text exposition
//! (format 0.0.4) of the server's counters, gauges and histograms.
//!
//! [`exposition`] builds the families, section by section (connections, sessions, traffic,
//! webhooks, timing), from a [`View`] the server gathers: read-only references to the
//! connection table and the hub and the clock reading to render at; it reads no clock and
//! changes nothing. [`render`] is the pure text renderer over [`Family`] lists. Every name
//! gets the `augmentos_edge_` prefix and one `# HELP`/`# TYPE` header. Invariants: every
//! label value is escaped as the text format requires (`\\`, `\"`, `\n`), so no
//! client-controlled string can end a sample early or forge another one; no family has a
//! series per connection, session or user, so the exposition's size is bounded by the
//! configuration (apps, codes, streams), not by the traffic.

use crate::histogram::{self, Histogram};
use crate::hub::{Hub, ServerLoad};
use crate::net::{Net, KINDS, TRANSPORTS};
use crate::time::{Instant, Now};
use std::fmt::Write;

/// The prefix of every metric name.
pub const PREFIX: &str = "augmentos_edge_";

/// Label pairs of one sample: `(name, value)`; values are escaped when rendered.
pub type Labels<'a> = Vec<(&'static str, &'a str)>;

/// The samples of one family.
pub enum Series<'a> {
    /// Counters or gauges, one value per label set.
    Values(Vec<(Labels<'a>, f64)>),
    /// One histogram (unlabelled) with its bucket bounds in microseconds.
    Histogram(&'a Histogram, &'static [u64]),
}

/// One metric family: its name (without the prefix), type, help and samples.
pub struct Family<'a> {
    pub name: &'static str,
    pub kind: &'static str,
    pub help: &'static str,
    pub series: Series<'a>,
}

impl<'a> Family<'a> {
    pub fn one(name: &'static str, kind: &'static str, help: &'static str, v: f64) -> Self {
        Family {
            name,
            kind,
            help,
            series: Series::Values(vec![(Vec::new(), v)]),
        }
    }

    pub fn labelled(
        name: &'static str,
        kind: &'static str,
        help: &'static str,
        values: Vec<(Labels<'a>, f64)>,
    ) -> Self {
        Family {
            name,
            kind,
            help,
            series: Series::Values(values),
        }
    }

    pub fn histogram(
        name: &'static str,
        help: &'static str,
        h: &'a Histogram,
        bounds: &'static [u64],
    ) -> Self {
        Family {
            name,
            kind: "histogram",
            help,
            series: Series::Histogram(h, bounds),
        }
    }
}

/// Escape a label value per the Prometheus text format.
pub fn escape_label(value: &str, out: &mut String) {
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn labels(m: &mut String, labels: &[(&str, &str)], extra: Option<(&str, &str)>) {
    if labels.is_empty() && extra.is_none() {
        return;
    }
    m.push('{');
    for (i, (k, v)) in labels.iter().copied().chain(extra).enumerate() {
        if i > 0 {
            m.push(',');
        }
        m.push_str(k);
        m.push_str("=\"");
        escape_label(v, m);
        m.push('"');
    }
    m.push('}');
}

/// A sample value: integers without a fraction, others as Rust prints them (both are valid
/// Go `ParseFloat` input).
fn value(m: &mut String, v: f64) {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = writeln!(m, " {}", v as i64);
    } else {
        let _ = writeln!(m, " {v}");
    }
}

/// Render the exposition.
pub fn render(families: &[Family<'_>]) -> String {
    let mut m = String::with_capacity(8192);
    for f in families {
        let _ = writeln!(
            m,
            "# HELP {PREFIX}{name} {help}\n# TYPE {PREFIX}{name} {kind}",
            name = f.name,
            help = f.help,
            kind = f.kind
        );
        match &f.series {
            Series::Values(rows) => {
                for (l, v) in rows {
                    let _ = write!(m, "{PREFIX}{}", f.name);
                    labels(&mut m, l, None);
                    value(&mut m, *v);
                }
            }
            Series::Histogram(h, bounds) => {
                for (le, n) in h.cumulative(bounds) {
                    let le = le.map_or_else(|| "+Inf".to_string(), |s| format!("{s}"));
                    let _ = write!(m, "{PREFIX}{}_bucket", f.name);
                    labels(&mut m, &[], Some(("le", &le)));
                    value(&mut m, n as f64);
                }
                let _ = write!(m, "{PREFIX}{}_sum", f.name);
                value(&mut m, h.sum_seconds());
                let _ = write!(m, "{PREFIX}{}_count", f.name);
                value(&mut m, h.count() as f64);
            }
        }
    }
    m
}

/// What the exposition reads, gathered by the server at one instant: read-only views of the
/// connection table and the hub, the clock reading to render at, and the server's own figures.
/// Rendering from it reads no clock and changes nothing.
pub struct View<'a> {
    pub now: Now,
    /// When the server started (monotonic).
    pub started: Instant,
    pub net: &'a Net,
    pub hub: &'a Hub,
    /// Event-loop turn durations.
    pub turns: &'a Histogram,
    /// Refusals by code (the hub's and the connection layer's), sorted by code.
    pub refusals: Vec<(&'static str, u64)>,
    /// Webhook load per app server at `now`.
    pub servers: Vec<ServerLoad>,
    /// Caption finals queued for apps at an orderly stop and not written ([`super::drain`]).
    pub drain_finals_lost: u64,
}

/// Open connections by kind and transport, and the longest silence of a WebSocket per kind.
struct Census {
    conns: [[u64; 3]; 5],
    idle_max: [f64; 5],
}

fn census(v: &View<'_>) -> Census {
    let mut c = Census {
        conns: [[0u64; 3]; 5],
        idle_max: [0f64; 5],
    };
    for conn in v.net.iter() {
        c.conns[conn.kind()][conn.transport()] += 1;
        if conn.is_websocket() {
            let idle = v.now.mono.saturating_since(conn.last_rx).as_secs_f64();
            c.idle_max[conn.kind()] = c.idle_max[conn.kind()].max(idle);
        }
    }
    c
}

fn n(v: u64) -> f64 {
    v as f64
}

/// The Prometheus text exposition of the server's counters, gauges and histograms at
/// `v.now`. Aggregates only: no series per connection, session or user.
pub fn exposition(v: &View<'_>) -> String {
    let census = census(v);
    let mut families = connections(v, &census);
    families.extend(sessions(v));
    families.extend(traffic(v));
    families.extend(webhooks(v));
    families.extend(timing(v, &census));
    render(&families)
}

/// Uptime, connections, closes and refusals.
fn connections<'a>(v: &'a View<'_>, census: &Census) -> Vec<Family<'a>> {
    let st = &v.net.stats;
    let mut by_conn = Vec::new();
    for (k, row) in census.conns.iter().enumerate() {
        for (t, c) in row.iter().enumerate() {
            if *c > 0 || k < 3 && t == 0 {
                by_conn.push((
                    vec![("kind", KINDS[k]), ("transport", TRANSPORTS[t])],
                    n(*c),
                ));
            }
        }
    }
    let closed = [
        ("protocol_error", st.protocol_errors),
        ("handshake_timeout", st.handshake_timeouts),
        ("output_overflow", st.overflow_drops),
        ("stalled", st.stall_closes),
        ("idle", st.idle_closes),
    ]
    .into_iter()
    .map(|(r, c)| (vec![("reason", r)], n(c)))
    .collect();
    let refusals = v
        .refusals
        .iter()
        .map(|(code, c)| (vec![("code", *code)], n(*c)))
        .collect();
    vec![
        Family::one(
            "uptime_seconds",
            "gauge",
            "Seconds since the server started.",
            v.now.mono.saturating_since(v.started).as_secs_f64(),
        ),
        Family::labelled(
            "connections",
            "gauge",
            "Open connections by kind (glasses, app, http, echo, webhook) and transport.",
            by_conn,
        ),
        Family::one(
            "connection_addresses",
            "gauge",
            "Distinct IP addresses with open client connections.",
            n(v.net.address_total() as u64),
        ),
        Family::one(
            "connections_accepted_total",
            "counter",
            "Client connections accepted (refused ones included).",
            n(st.accepted),
        ),
        Family::one(
            "websocket_upgrades_total",
            "counter",
            "WebSocket upgrades completed.",
            n(st.upgrades),
        ),
        Family::labelled(
            "connections_closed_total",
            "counter",
            "Connections closed by the server, by reason.",
            closed,
        ),
        Family::labelled(
            "refusals_total",
            "counter",
            "Refused connections, requests and messages, by code.",
            refusals,
        ),
    ]
}

/// Sessions and the apps in them.
fn sessions<'a>(v: &'a View<'_>) -> Vec<Family<'a>> {
    let hc = &v.hub.counters;
    let apps = v
        .hub
        .app_state_counts()
        .into_iter()
        .map(|(state, c)| (vec![("state", state)], n(c)))
        .collect();
    vec![
        Family::one(
            "sessions",
            "gauge",
            "User sessions held (glasses connected or in their grace period).",
            n(v.hub.session_count() as u64),
        ),
        Family::one(
            "sessions_ended_total",
            "counter",
            "Sessions ended after the grace period.",
            n(hc.sessions_ended),
        ),
        Family::one(
            "sessions_fenced_total",
            "counter",
            "Sessions ended because another process holds the user (shared store's lease).",
            n(hc.sessions_fenced),
        ),
        Family::one(
            "drain_finals_lost_total",
            "counter",
            "Caption finals queued for apps when an orderly stop began and not written before their connection or the process went.",
            n(v.drain_finals_lost),
        ),
        Family::labelled(
            "apps",
            "gauge",
            "Apps in sessions by lifecycle state.",
            apps,
        ),
        Family::one(
            "app_restarts_total",
            "counter",
            "Apps restarted through their webhook after a drop.",
            n(hc.app_restarts),
        ),
    ]
}

/// Messages and bytes by direction and kind, drops, read pauses and the output buffers.
fn traffic<'a>(v: &'a View<'_>) -> Vec<Family<'a>> {
    let (st, hc) = (&v.net.stats, &v.hub.counters);
    let by_direction = |a: &[u64; 5], b: &[u64; 5]| {
        let mut rows = Vec::new();
        for (dir, vals) in [("in", a), ("out", b)] {
            for (k, c) in vals.iter().enumerate() {
                rows.push((vec![("direction", dir), ("kind", KINDS[k])], n(*c)));
            }
        }
        rows
    };
    let dropped = hc
        .dropped
        .iter()
        .map(|(stream, c)| {
            (
                vec![("stream", *stream), ("reason", "subscriber_backlog")],
                n(*c),
            )
        })
        .collect();
    vec![
        Family::labelled(
            "messages_total",
            "counter",
            "WebSocket data messages by direction and connection kind.",
            by_direction(&st.messages_in, &st.messages_out),
        ),
        Family::labelled(
            "bytes_total",
            "counter",
            "Bytes read from and written to sockets by direction and connection kind.",
            by_direction(&st.bytes_in, &st.bytes_out),
        ),
        Family::labelled(
            "dropped_messages_total",
            "counter",
            "Lossy messages not delivered to a backed-up subscriber, by stream and reason.",
            dropped,
        ),
        Family::labelled(
            "read_pauses_total",
            "counter",
            "Feeders (glasses, publishers) not read for a while, by reason.",
            vec![
                (vec![("reason", "subscriber_backlog")], n(hc.feeder_pauses)),
                (vec![("reason", "total_output_budget")], n(st.budget_pauses)),
            ],
        ),
        Family::one(
            "output_buffer_bytes",
            "gauge",
            "Bytes waiting in connections' output buffers.",
            n(v.net.total_output() as u64),
        ),
        Family::one(
            "output_budget_bytes",
            "gauge",
            "The budget of output waiting in all connections together (maxTotalOutputBytes).",
            n(v.net.cfg.max_total_output as u64),
        ),
        Family::one(
            "output_budget_exceeded_total",
            "counter",
            "Times the output waiting in all connections together passed its budget.",
            n(st.budget_exceeded),
        ),
        Family::one(
            "output_buffer_pool_bytes",
            "gauge",
            "Capacity of emptied output buffers kept for reuse.",
            n(v.net.pooled().1 as u64),
        ),
    ]
}

/// Webhooks: outcomes, load and queue per app server, outbound refusals, latency.
fn webhooks<'a>(v: &'a View<'_>) -> Vec<Family<'a>> {
    let (st, hc) = (&v.net.stats, &v.hub.counters);
    let mut outcomes: Vec<(Labels<'_>, f64)> = [
        "ok",
        "http_error",
        "failed",
        "tls",
        "not_sent",
        "queue_timeout",
    ]
    .into_iter()
    .map(|o| {
        let c = hc.webhook_outcomes.get(o).copied().unwrap_or(0);
        (vec![("outcome", o)], n(c))
    })
    .collect();
    outcomes.push((vec![("outcome", "coalesced")], n(hc.webhooks_coalesced)));
    // Per app server (bounded by the config's apps): in flight, waiting, oldest wait.
    let per_server = |f: &dyn Fn(&ServerLoad) -> f64| {
        v.servers
            .iter()
            .map(|l| (vec![("server", l.server.as_str())], f(l)))
            .collect::<Vec<_>>()
    };
    let app_configs = crate::hub::app_config::OUTCOMES
        .into_iter()
        .map(|o| {
            let c = hc.app_config_outcomes.get(o).copied().unwrap_or(0);
            (vec![("outcome", o)], n(c))
        })
        .collect();
    vec![
        Family::labelled(
            "app_config_fetches_total",
            "counter",
            "Fetches of apps' tpa_config.json by outcome.",
            app_configs,
        ),
        Family::labelled(
            "webhooks_total",
            "counter",
            "Webhook requests by outcome.",
            outcomes,
        ),
        Family::labelled(
            "webhooks_in_flight",
            "gauge",
            "Webhooks in flight, by app server (host:port).",
            per_server(&|l| l.in_flight as f64),
        ),
        Family::labelled(
            "webhook_queue_length",
            "gauge",
            "Webhooks waiting for a slot at their app server (maxWebhooksPerServer), by app server.",
            per_server(&|l| l.waiting as f64),
        ),
        Family::labelled(
            "webhook_queue_age_seconds",
            "gauge",
            "How long the oldest webhook waiting for its app server has waited, by app server.",
            per_server(&|l| l.oldest.as_secs_f64()),
        ),
        Family::one(
            "webhooks_queued_total",
            "counter",
            "Webhooks that waited for a slot at their app server.",
            n(hc.webhooks_queued),
        ),
        Family::one(
            "outbound_refused_total",
            "counter",
            "Outbound requests not opened: too many in flight.",
            n(st.outbound_refused),
        ),
        Family::histogram(
            "webhook_duration_seconds",
            "Time from sending a webhook to its response (or failure).",
            &hc.webhook_latency,
            histogram::WEBHOOK_US,
        ),
    ]
}

/// Display outcomes, heartbeat round trips, WebSocket silence and event-loop turns.
fn timing<'a>(v: &'a View<'_>, census: &Census) -> Vec<Family<'a>> {
    let d = v.hub.display_stats();
    let display = [
        ("sent", d.sent),
        ("coalesced", d.coalesced),
        ("refused", d.refused),
        ("expired", d.expired),
    ]
    .into_iter()
    .map(|(o, c)| (vec![("outcome", o)], n(c)))
    .collect();
    let idle = census
        .idle_max
        .iter()
        .enumerate()
        .filter(|(k, _)| *k != 2 && *k != 4)
        .map(|(k, s)| (vec![("kind", KINDS[k])], *s))
        .collect();
    vec![
        Family::labelled(
            "display_events_total",
            "counter",
            "Display requests by outcome (sent to the glasses, coalesced, refused, expired).",
            display,
        ),
        Family::histogram(
            "heartbeat_rtt_seconds",
            "Round trip of heartbeat pings to WebSockets.",
            &v.net.stats.rtt,
            histogram::RTT_US,
        ),
        Family::labelled(
            "websocket_idle_max_seconds",
            "gauge",
            "The longest time since bytes last arrived on an open WebSocket, by kind.",
            idle,
        ),
        Family::histogram(
            "event_loop_turn_seconds",
            "Time the event loop spent on one turn (reading, processing, flushing).",
            v.turns,
            histogram::TURN_US,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_label_values_stay_inside_their_quotes() {
        let evil = "eve\"} 1\naugmentos_edge_forged 9\n\\";
        let text = render(&[Family::labelled(
            "refusals_total",
            "counter",
            "Refusals.",
            vec![(vec![("code", evil), ("package", "p\nq")], 7.0)],
        )]);
        assert!(!text.lines().any(|l| l.starts_with("augmentos_edge_forged")));
        assert!(text.contains(
            "augmentos_edge_refusals_total{code=\"eve\\\"} 1\\naugmentos_edge_forged 9\\n\\\\\",package=\"p\\nq\"} 7"
        ));
    }

    #[test]
    fn histograms_render_cumulative_buckets_sum_and_count() {
        let mut h = Histogram::default();
        h.observe(&[1_000, 10_000], 500);
        h.observe(&[1_000, 10_000], 20_000);
        let text = render(&[Family::histogram("x_seconds", "X.", &h, &[1_000, 10_000])]);
        let want =
            "# HELP augmentos_edge_x_seconds X.\n# TYPE augmentos_edge_x_seconds histogram\n\
            augmentos_edge_x_seconds_bucket{le=\"0.001\"} 1\n\
            augmentos_edge_x_seconds_bucket{le=\"0.01\"} 1\n\
            augmentos_edge_x_seconds_bucket{le=\"+Inf\"} 2\n\
            augmentos_edge_x_seconds_sum 0.0205\n\
            augmentos_edge_x_seconds_count 2\n";
        assert_eq!(text, want);
    }
}
