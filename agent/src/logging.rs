//! Log output through `tracing`: human-readable text by default (journald adds timestamps), or
//! one JSON object per line. `RUST_LOG` overrides the default filter (`info`) with a list of
//! `target=level` directives and an optional bare default level, e.g.
//! `warn,fleetnode_agent::workers::control=debug`; a value that does not parse is ignored.

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Installs the global subscriber, writing to stderr. A second call does nothing.
pub fn init(format: LogFormat) {
    let registry =
        tracing_subscriber::registry().with(filter(std::env::var("RUST_LOG").ok().as_deref()));
    let layer = fmt::layer().with_writer(std::io::stderr);
    // journald stamps every line itself; elsewhere a timestamp helps.
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let result = match (format, under_journald) {
        (LogFormat::Json, _) => registry.with(layer.json().flatten_event(true)).try_init(),
        (LogFormat::Text, true) => registry
            .with(layer.without_time().with_ansi(false))
            .try_init(),
        // Colour only for a person at a terminal; files and pipes get plain text.
        (LogFormat::Text, false) => registry
            .with(layer.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())))
            .try_init(),
    };
    // Already installed (tests, or a second call): keep the first.
    drop(result);
}

/// The filter `RUST_LOG` asks for, else `info` for everything.
fn filter(spec: Option<&str>) -> Targets {
    spec.and_then(|spec| spec.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO))
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::filter;

    #[test]
    fn rust_log_sets_levels_per_target_and_a_bad_value_means_info() {
        let chosen = filter(Some("warn,fleetnode_agent::workers::control=debug"));
        assert!(chosen.would_enable("fleetnode_agent::workers::control::drainer", &Level::DEBUG));
        assert!(!chosen.would_enable("fleetnode_agent::store", &Level::INFO));
        assert!(chosen.would_enable("hyper", &Level::WARN));
        for unusable in [None, Some("fleetnode_agent=loud")] {
            let default = filter(unusable);
            assert!(default.would_enable("fleetnode_agent::store", &Level::INFO));
            assert!(!default.would_enable("fleetnode_agent::store", &Level::DEBUG));
        }
    }
}
