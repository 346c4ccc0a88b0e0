//! The daemons' log: to stderr, `RUST_LOG` or `info`, text or JSON lines
//! (`--log-format`).
//!
//! Colour only for a person at a terminal: stderr is usually a file or
//! journald, where escape codes are noise in every line an operator greps.
//! A non-empty `NO_COLOR` turns it off there too (no-color.org).

/// Install the process's log subscriber; call once, first thing.
pub fn init(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    if json {
        fmt.json().init();
    } else {
        fmt.init();
    }
}
