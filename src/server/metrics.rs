//! Core layer (sans-IO), part of the server composition: the Prometheus text exposition
//! (format 0.0.4) of the server's counters and gauges.
//!
//! A pure renderer over plain values gathered by the caller; it reads no state of its own.
//! Invariant: every label value is escaped as the text format requires (`\\`, `\"`, `\n`), so
//! no client-controlled string (a user id, a package name, a refusal code) can end a sample
//! early or forge another one.

use std::fmt::Write;

/// One labelled connection for the per-connection gauges.
pub struct ConnRow<'a> {
    pub kind: &'static str,
    pub user: &'a str,
    pub package: Option<&'a str>,
    pub rtt_us: Option<u32>,
    pub idle_seconds: f64,
}

/// Everything the exposition shows, gathered by the server.
pub struct Snapshot<'a> {
    pub counters: &'a [(&'static str, &'static str, &'static str, u64)],
    pub refusals: &'a [(&'a str, u64)],
    /// Lossy messages dropped for backed-up subscribers, by stream.
    pub dropped: &'a [(&'a str, u64)],
    pub connections: &'a [ConnRow<'a>],
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

fn header(m: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        m,
        "# HELP augmentos_{name} {help}\n# TYPE augmentos_{name} {kind}"
    );
}

fn conn_labels(m: &mut String, row: &ConnRow<'_>) {
    m.push_str("{kind=\"");
    m.push_str(row.kind);
    m.push_str("\",user=\"");
    escape_label(row.user, m);
    m.push('"');
    if let Some(p) = row.package {
        m.push_str(",package=\"");
        escape_label(p, m);
        m.push('"');
    }
    m.push('}');
}

/// Render the exposition. `counters` entries are `(name, kind, help, value)`; a name may carry
/// a fixed label set (`connections{kind="all"}`), and consecutive entries of one name share
/// one header.
pub fn render(s: &Snapshot<'_>) -> String {
    let mut m = String::with_capacity(4096);
    let mut last = "";
    for (name, kind, help, value) in s.counters {
        let base = name.split('{').next().unwrap_or(name);
        if base != last {
            header(&mut m, base, kind, help);
            last = base;
        }
        let _ = writeln!(m, "augmentos_{name} {value}");
    }
    header(
        &mut m,
        "refusals_total",
        "counter",
        "Refused requests and messages, by code.",
    );
    for (code, n) in s.refusals {
        m.push_str("augmentos_refusals_total{code=\"");
        escape_label(code, &mut m);
        let _ = writeln!(m, "\"}} {n}");
    }
    header(
        &mut m,
        "dropped_total",
        "counter",
        "Lossy messages not delivered to a backed-up subscriber, by stream and reason.",
    );
    for (stream, n) in s.dropped {
        m.push_str("augmentos_dropped_total{stream=\"");
        escape_label(stream, &mut m);
        let _ = writeln!(m, "\",reason=\"subscriber_backlog\"}} {n}");
    }
    header(
        &mut m,
        "connection_rtt_microseconds",
        "gauge",
        "Round trip of the last ping.",
    );
    for row in s.connections {
        if let Some(rtt) = row.rtt_us {
            m.push_str("augmentos_connection_rtt_microseconds");
            conn_labels(&mut m, row);
            let _ = writeln!(m, " {rtt}");
        }
    }
    header(
        &mut m,
        "connection_idle_seconds",
        "gauge",
        "Seconds since the last byte arrived.",
    );
    for row in s.connections {
        m.push_str("augmentos_connection_idle_seconds");
        conn_labels(&mut m, row);
        let _ = writeln!(m, " {:.3}", row.idle_seconds);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_label_values_stay_inside_their_quotes() {
        let rows = [ConnRow {
            kind: "glasses",
            user: "eve\"} 1\naugmentos_forged 9\n\\",
            package: Some("p\nq"),
            rtt_us: Some(7),
            idle_seconds: 0.5,
        }];
        let text = render(&Snapshot {
            counters: &[("sessions", "gauge", "User sessions.", 1)],
            refusals: &[],
            dropped: &[],
            connections: &rows,
        });
        assert!(!text.lines().any(|l| l.starts_with("augmentos_forged")));
        assert!(
            text.contains("user=\"eve\\\"} 1\\naugmentos_forged 9\\n\\\\\",package=\"p\\nq\"} 7")
        );
    }
}
