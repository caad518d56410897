//! [`MembershipSettings`]: the `[gossip]` table as operators write it (node config files and
//! simulator scenarios share it), turned into a checked [`MembershipConfig`].

use std::time::Duration;

use serde::Deserialize;

use crate::membership::{ConfigError, MembershipConfig};

/// Longest timing accepted, in milliseconds (one day).
pub const TIMING_MS_MAX: u64 = 86_400_000;

/// The `[gossip]` keys; any left out take [`MembershipConfig::default`]'s value. Unknown keys are
/// rejected.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipSettings {
    /// `probe_period_ms`.
    pub probe_period_ms: Option<u64>,
    /// `probe_rtt_ms`.
    pub probe_rtt_ms: Option<u64>,
    /// `suspect_to_down_ms`.
    pub suspect_to_down_ms: Option<u64>,
    /// `remove_down_after_s`.
    pub remove_down_after_s: Option<u64>,
    /// `join_retry_min_ms`.
    pub join_retry_min_ms: Option<u64>,
    /// `join_retry_max_ms`.
    pub join_retry_max_ms: Option<u64>,
    /// `cluster_size_hint`.
    pub cluster_size_hint: Option<u32>,
    /// `encrypt_key`: the fabric key, base64 of 32 bytes (a node reads it; [`Self::resolve`]
    /// does not, it only gives the timings).
    pub encrypt_key: Option<String>,
    /// `keyring_file`: where the node keeps its keyring (a node reads it).
    pub keyring_file: Option<std::path::PathBuf>,
    /// `verify_incoming`: refuse plaintext datagrams (a node reads it).
    pub verify_incoming: Option<bool>,
    /// `verify_outgoing`: seal every datagram sent (a node reads it).
    pub verify_outgoing: Option<bool>,
}

fn ms(field: &'static str, value: Option<u64>, default: Duration) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(0) => Err(ConfigError {
            field,
            reason: "must be greater than 0",
        }),
        Some(v) if v > TIMING_MS_MAX => Err(ConfigError {
            field,
            reason: "must be at most 86400000 (one day)",
        }),
        Some(v) => Ok(Duration::from_millis(v)),
    }
}

impl MembershipSettings {
    /// The timings these settings give, checked against each other; errors name the key as
    /// `gossip.<key>`.
    pub fn resolve(&self) -> Result<MembershipConfig, ConfigError> {
        let d = MembershipConfig::default();
        let config = MembershipConfig {
            probe_period: ms(
                "gossip.probe_period_ms",
                self.probe_period_ms,
                d.probe_period,
            )?,
            probe_rtt: ms("gossip.probe_rtt_ms", self.probe_rtt_ms, d.probe_rtt)?,
            suspect_to_down: ms(
                "gossip.suspect_to_down_ms",
                self.suspect_to_down_ms,
                d.suspect_to_down,
            )?,
            remove_down_after: match self.remove_down_after_s {
                None => d.remove_down_after,
                Some(0) => {
                    return Err(ConfigError {
                        field: "gossip.remove_down_after_s",
                        reason: "must be at least 1",
                    });
                }
                Some(s) => Duration::from_secs(s),
            },
            join_retry_min: ms(
                "gossip.join_retry_min_ms",
                self.join_retry_min_ms,
                d.join_retry_min,
            )?,
            join_retry_max: ms(
                "gossip.join_retry_max_ms",
                self.join_retry_max_ms,
                d.join_retry_max,
            )?,
            cluster_size_hint: match self.cluster_size_hint {
                Some(0) => {
                    return Err(ConfigError {
                        field: "gossip.cluster_size_hint",
                        reason: "must be at least 1",
                    });
                }
                Some(n) => n,
                None => d.cluster_size_hint,
            },
        };
        config.check()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        assert_eq!(
            MembershipSettings::default().resolve(),
            Ok(MembershipConfig::default())
        );
        let field = |s: MembershipSettings| s.resolve().expect_err("invalid").field;
        assert_eq!(
            field(MembershipSettings {
                probe_period_ms: Some(0),
                ..Default::default()
            }),
            "gossip.probe_period_ms"
        );
        assert_eq!(
            field(MembershipSettings {
                join_retry_max_ms: Some(TIMING_MS_MAX + 1),
                ..Default::default()
            }),
            "gossip.join_retry_max_ms"
        );
        assert_eq!(
            field(MembershipSettings {
                remove_down_after_s: Some(0),
                ..Default::default()
            }),
            "gossip.remove_down_after_s"
        );
        assert_eq!(
            field(MembershipSettings {
                probe_period_ms: Some(100),
                probe_rtt_ms: Some(200),
                ..Default::default()
            }),
            "gossip.probe_rtt_ms"
        );
    }
}
