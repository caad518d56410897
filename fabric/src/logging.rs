//! Log setup: `tracing` to stderr, text or JSON, filter from `--log-level`, else `RUST_LOG`,
//! else the config file, else `info`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Call once, before the node starts.
pub fn init(
    level: Option<&str>,
    file_level: Option<&str>,
    format: LogFormat,
) -> Result<(), String> {
    let filter = match (level, std::env::var("RUST_LOG").ok(), file_level) {
        (Some(flag), _, _) => EnvFilter::try_new(flag),
        (None, Some(env), _) if !env.is_empty() => EnvFilter::try_new(env),
        (None, _, Some(file)) => EnvFilter::try_new(file),
        _ => EnvFilter::try_new("info"),
    }
    .map_err(|e| format!("log_level: {e}"))?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| format!("log setup: {e}"))
}
