//! Structured logging with `tracing`: text or JSON lines, filtered by `log.level` (or
//! `RUST_LOG` when set). Spans carry ids, never header values or payloads.

use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

/// Installs the global subscriber; call once from `main`.
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&cfg.level)).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: journald, container logs and files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi);
    let result = if cfg.format == "json" { builder.json().with_current_span(true).try_init() } else { builder.try_init() };
    if result.is_err() {
        eprintln!("logging was already initialised");
    }
}
