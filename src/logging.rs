//! Log set-up shared by both binaries: one line per event of note, on stderr, level from
//! `CK_LOG_LEVEL` (error, warn, info, debug; default info).
//!
//! This module owns the log format. Nothing logged anywhere may contain a secret.

/// Log to stderr, one line per event of note, at `CK_LOG_LEVEL` (default info).
pub fn init() {
    let level = std::env::var("CK_LOG_LEVEL")
        .ok()
        .and_then(|l| l.parse::<log::LevelFilter>().ok())
        .unwrap_or(log::LevelFilter::Info);
    let _ = simple_logger::SimpleLogger::new()
        .with_level(log::LevelFilter::Warn)
        .with_module_level("checksite", level)
        .with_module_level("checksite_producer", level)
        .with_module_level("checksite_consumer", level)
        .with_utc_timestamps()
        .init();
}
