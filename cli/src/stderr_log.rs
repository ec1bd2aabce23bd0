//! The CLI's one logger: what the libraries log (a pull's retries, an
//! install's warnings) as `PREFIX: LEVEL: message` lines on stderr, printed
//! above any progress bar being drawn so the bar is not torn.

use log::{LevelFilter, Log, Metadata, Record};

struct StderrLogger {
    prefix: &'static str,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    // The log macros check the level before calling this.
    fn log(&self, record: &Record<'_>) {
        crate::progress::eprint_above_bars(&line(self.prefix, record));
    }

    fn flush(&self) {}
}

fn line(prefix: &str, record: &Record<'_>) -> String {
    format!(
        "{prefix}: {}: {}",
        record.level().as_str().to_lowercase(),
        record.args()
    )
}

/// Installs the logger for this process; a second call keeps the first.
/// Services (netconf) run under berthd, which keeps their stderr in their
/// log, so no timestamps.
pub fn install(prefix: &'static str, level: LevelFilter) {
    let logger: &'static StderrLogger = Box::leak(Box::new(StderrLogger { prefix }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

/// A user command's level: warnings, or what `BERTH_LOG` names
/// (`error`, `warn`, `info`, `debug`, `trace`, `off`).
pub fn level_from_env() -> LevelFilter {
    std::env::var("BERTH_LOG")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(LevelFilter::Warn)
}

#[cfg(test)]
mod tests {
    use super::line;

    #[test]
    fn a_line_names_who_and_how_bad() {
        let text = line(
            "berth",
            &log::Record::builder()
                .level(log::Level::Warn)
                .args(format_args!(
                    "the layer: connection reset; asking again in 1s"
                ))
                .build(),
        );
        assert_eq!(
            text,
            "berth: warn: the layer: connection reset; asking again in 1s"
        );
    }
}
