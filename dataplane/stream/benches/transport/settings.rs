//! Benchmark settings from environment variables, the same parsing for every bench that
//! includes this module (the transport bench and the pipeline bench).

use std::time::Duration;

use anyhow::{Context, anyhow, ensure};

/// The variable `name`, or `default` when it is unset.
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The number in variable `name`, or `default` when it is unset; an error when it is set to
/// something else than a number.
pub fn env_num<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow!("{name}={v}: not a number")),
        Err(_) => Ok(default),
    }
}

/// The comma-separated items of variable `name` (or of `default`), trimmed, empty ones left
/// out.
pub fn list(name: &str, default: &str) -> Vec<String> {
    env_or(name, default)
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The durations in milliseconds listed in variable `name` (or in `default`), each between 0
/// and `max_ms`.
pub fn millis(name: &str, default: &str, max_ms: f64) -> anyhow::Result<Vec<Duration>> {
    list(name, default)
        .iter()
        .map(|s| {
            let ms: f64 = s.parse().with_context(|| format!("{name}: {s:?}"))?;
            ensure!((0.0..=max_ms).contains(&ms), "{name}: {s:?} out of range");
            Ok(Duration::from_secs_f64(ms / 1e3))
        })
        .collect()
}

/// A size in bytes, or with a K / M suffix (binary units), between 1 and `max` bytes.
pub fn parse_size(s: &str, max: usize) -> anyhow::Result<usize> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        _ => (s, 1),
    };
    let n: usize = digits.parse().with_context(|| format!("size {s:?}"))?;
    let bytes = n
        .checked_mul(unit)
        .with_context(|| format!("size {s:?} out of range"))?;
    ensure!(
        bytes > 0 && bytes <= max,
        "size {s:?} out of range (1 B to {max} B)"
    );
    Ok(bytes)
}
