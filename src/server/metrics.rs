//! Core layer (sans-IO), part of the server composition: the Prometheus text exposition
//! (format 0.0.4) of the server's counters, gauges and histograms.
//!
//! A pure renderer over plain values gathered by the caller ([`Family`] lists); it reads no
//! state of its own. Every name gets the `augmentos_edge_` prefix and one `# HELP`/`# TYPE`
//! header. Invariants: every label value is escaped as the text format requires (`\\`, `\"`,
//! `\n`), so no client-controlled string can end a sample early or forge another one; no
//! family has a series per connection, session or user, so the exposition's size is bounded
//! by the configuration (apps, codes, streams), not by the traffic.

use crate::histogram::Histogram;
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
