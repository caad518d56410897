//! Log setup: `tracing` to stderr, text or JSON, filter from `--log-level`, else `RUST_LOG`,
//! else the config file, else `info`.
//!
//! arkworks instruments constraint synthesis with INFO spans (targets `r1cs` and `gr1cs`) that
//! format their arguments, the whole constraint system among them: with spans enabled, one
//! Groth16 setup formats the growing system once per gadget call — seconds of CPU, and 28 s
//! under load in a debug build, long enough to stall the CA's bootstrap. Those two targets are
//! therefore off unless the filter names them itself (e.g. `RUST_LOG=info,gr1cs=trace`).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Directive;

use crate::config::LogFormat;
use crate::telemetry::{Telemetry, TelemetrySettings};

/// Targets switched off unless the filter names them.
const QUIET_TARGETS: [&str; 2] = ["r1cs", "gr1cs"];

/// The filter for `spec`, with [`QUIET_TARGETS`] off unless `spec` has a directive for them.
pub fn filter(spec: &str) -> Result<EnvFilter, String> {
    let mut filter = EnvFilter::try_new(spec).map_err(|e| format!("log_level: {e}"))?;
    for target in QUIET_TARGETS {
        let named = spec
            .split(',')
            .any(|d| d.trim().split(['=', '[']).next() == Some(target));
        if !named {
            let off: Directive = format!("{target}=off")
                .parse()
                .map_err(|e| format!("log_level: {e}"))?;
            filter = filter.add_directive(off);
        }
    }
    Ok(filter)
}

/// Installs the global subscriber: the log layer (stderr, text or JSON) and, when `telemetry`
/// holds export settings and the node's name, the trace export layer (fabric/src/telemetry.rs).
/// Call once, before the node starts and outside the async runtime; the [`Telemetry`] returned
/// must be shut down before the process exits.
pub fn init(
    level: Option<&str>,
    file_level: Option<&str>,
    format: LogFormat,
    telemetry: Option<(&TelemetrySettings, &str)>,
) -> Result<Option<Telemetry>, String> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let env = std::env::var("RUST_LOG").ok();
    let spec = match (level, env.as_deref(), file_level) {
        (Some(flag), _, _) => flag,
        (None, Some(env), _) if !env.is_empty() => env,
        (None, _, Some(file)) => file,
        _ => "info",
    };
    let filter = filter(spec)?;
    use std::io::IsTerminal;
    let log = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_writer(std::io::stderr);
    let log = match format {
        LogFormat::Text => log.with_filter(filter).boxed(),
        LogFormat::Json => log.json().flatten_event(true).with_filter(filter).boxed(),
    };
    let telemetry = match telemetry {
        Some((settings, instance)) => Some(Telemetry::start(settings, instance)?),
        None => None,
    };
    let export = telemetry.as_ref().map(Telemetry::layer);
    tracing_subscriber::registry()
        .with(log)
        .with(export)
        .try_init()
        .map_err(|e| format!("log setup: {e}"))?;
    Ok(telemetry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arkworks_spans_are_off_unless_named() {
        let f = filter("info").expect("filter").to_string();
        assert!(f.contains("r1cs=off") && f.contains("gr1cs=off"), "{f}");
        let f = filter("debug,gr1cs=trace").expect("filter").to_string();
        assert!(f.contains("r1cs=off"), "{f}");
        assert!(!f.contains("gr1cs=off"), "{f}");
        let f = filter("info,gr1cs[span]=debug")
            .expect("filter")
            .to_string();
        assert!(!f.contains("gr1cs=off"), "{f}");
        assert!(filter("info,=[").is_err());
    }
}
