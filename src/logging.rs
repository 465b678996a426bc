//! Log set-up shared by both binaries: one line per event of note, on stderr, level from
//! `CK_LOG_LEVEL` (error, warn, info, debug; default info).
//!
//! This module owns the log format: `2026-11-29T23:19:54.741Z INFO  [module] message`,
//! UTC. Our own lines at `CK_LOG_LEVEL`, the libraries' from warn up. Nothing logged
//! anywhere may contain a secret.
//!
//! A few lines of our own rather than a logging crate: the one used before brought a second
//! date library and its format parser into both binaries (the image must stay under 10 MB).

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLog {
    ours: LevelFilter,
}

/// Is `target` (a module path) one of this crate's, or a binary's?
fn is_ours(target: &str) -> bool {
    ["checksite", "checksite_producer", "checksite_consumer"]
        .iter()
        .any(|crate_name| {
            target == *crate_name
                || target
                    .strip_prefix(crate_name)
                    .is_some_and(|rest| rest.starts_with("::"))
        })
}

impl Log for StderrLog {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        let limit = if is_ours(m.target()) {
            self.ours
        } else {
            LevelFilter::Warn
        };
        m.level() <= limit
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = crate::event::format_time(&chrono::Utc::now());
        let level = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        // One write per line, so that lines of several threads never interleave.
        let line = format!("{now} {level} [{}] {}\n", record.target(), record.args());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Log to stderr, one line per event of note, at `CK_LOG_LEVEL` (default info).
pub fn init() {
    let ours = std::env::var("CK_LOG_LEVEL")
        .ok()
        .and_then(|l| l.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::Info);
    // Once per process, for its whole life: leaked on purpose.
    let logger: &'static StderrLog = Box::leak(Box::new(StderrLog { ours }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(ours.max(LevelFilter::Warn));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_modules_and_only_them_get_our_level() {
        assert!(is_ours("checksite"));
        assert!(is_ours("checksite::consumer::consume"));
        assert!(is_ours("checksite_producer"));
        assert!(!is_ours("checksitex::y"));
        assert!(!is_ours("rskafka::client"));
    }
}
