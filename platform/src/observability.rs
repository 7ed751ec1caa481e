//! Logging: one `tracing` subscriber, text or JSON, filtered by
//! `OUTPOST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber, writing to stderr. `default` is the
/// filter when `OUTPOST_LOG` is not set (the daemon logs `info`; one-shot
/// commands only warnings, as they print their own results).
pub fn init(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_env("OUTPOST_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{default},async_nats=warn")));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => b.with_target(false).try_init(),
        LogFormat::Json => b.json().try_init(),
    };
}

/// Rate-limited logging for what a container or a remote peer can
/// trigger (shared with `beacon-home`).
pub use outpost_protocol::ratelimit::RateLimited;
