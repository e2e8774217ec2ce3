//! Shell layer: a minimal `log` backend writing one line per record to stderr.
//! The level comes from `AUGMENTOS_LOG` (error, warn, info, debug, trace; default info).

use log::{Level, Log, Metadata, Record};

struct StderrLogger {
    level: Level,
}

impl Log for StderrLogger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= self.level
    }

    fn log(&self, r: &Record) {
        if self.enabled(r.metadata()) {
            eprintln!("{:5} {}: {}", r.level(), r.target(), r.args());
        }
    }

    fn flush(&self) {}
}

/// Install the logger; harmless if one is installed already.
pub fn init() {
    let level = std::env::var("AUGMENTOS_LOG")
        .ok()
        .and_then(|v| v.parse::<Level>().ok())
        .unwrap_or(Level::Info);
    let logger = Box::leak(Box::new(StderrLogger { level }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level.to_level_filter());
    }
}
