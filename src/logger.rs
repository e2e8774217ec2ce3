//! Shell layer: a minimal `log` backend writing one line per record to stderr.
//! The level comes from `RUST_LOG` (or `AUGMENTOS_LOG`): error, warn, info, debug, trace;
//! default info. `RUST_LOG` directives in `env_logger`'s form are understood as far as one
//! level goes: `augmentos_edge=debug` (or a bare level) sets it, other targets are ignored.
//!
//! Lines are `LEVEL target: event=… key=value …` (session, package, connection, code);
//! events happen once per session, app or refusal, never once per routed message at info.
//!
//! Invariant: one record is one line. Client-controlled fields are written with `{:?}` where
//! they are logged; as a second line of defence, any control character that still reaches a
//! record (a line break above all) is written escaped, so no field can fake another line.

use log::{Level, Log, Metadata, Record};
use std::fmt::Write;

struct StderrLogger {
    level: Level,
}

impl Log for StderrLogger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= self.level
    }

    fn log(&self, r: &Record) {
        if self.enabled(r.metadata()) {
            eprintln!("{}", line(r.level(), r.target(), &r.args().to_string()));
        }
    }

    fn flush(&self) {}
}

/// One log line: level, target and message, control characters escaped.
fn line(level: Level, target: &str, message: &str) -> String {
    let mut out = format!("{level:5} {target}: ");
    for ch in message.chars() {
        if ch.is_control() {
            let _ = write!(out, "{}", ch.escape_default());
        } else {
            out.push(ch);
        }
    }
    out
}

/// Install the logger; harmless if one is installed already.
pub fn init() {
    let level = ["RUST_LOG", "AUGMENTOS_LOG"]
        .iter()
        .find_map(|k| std::env::var(k).ok().and_then(|v| level_of(&v)))
        .unwrap_or(Level::Info);
    let logger = Box::leak(Box::new(StderrLogger { level }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level.to_level_filter());
    }
}

/// The level a `RUST_LOG`-style value sets for this crate: the last bare level or
/// `augmentos_edge…=level` directive wins.
fn level_of(v: &str) -> Option<Level> {
    v.split(',')
        .rev()
        .find_map(|d| match d.trim().split_once('=') {
            None => d.trim().parse::<Level>().ok(),
            Some((target, l)) if target.trim().starts_with("augmentos_edge") => {
                l.trim().parse::<Level>().ok()
            }
            Some(_) => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_directives_set_the_level() {
        assert_eq!(level_of("debug"), Some(Level::Debug));
        assert_eq!(level_of("warn,augmentos_edge=trace"), Some(Level::Trace));
        assert_eq!(level_of("mio=trace"), None);
        assert_eq!(level_of("nonsense"), None);
    }

    #[test]
    fn a_record_is_always_one_line() {
        let forged = "session of eve\nINFO  augmentos_edge: session of admin created\r";
        let l = line(Level::Info, "augmentos_edge::hub", forged);
        assert!(!l.contains('\n') && !l.contains('\r'), "{l}");
        assert_eq!(
            l,
            "INFO  augmentos_edge::hub: session of eve\\nINFO  augmentos_edge: session of admin created\\r"
        );
    }
}
