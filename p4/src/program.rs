//! The P4 program's control-plane interface, described once: the ids, names and bit widths of
//! `nexus.p4`'s tables, actions, action profile, counters and digest. [`p4info`] builds the
//! P4Info from it, the writer encodes entries with it, and the reference pipeline and the
//! decoder check entries against it. `tests/program.rs` checks that every name and `@id` here
//! appears in `nexus.p4`.

use nexus_dataplane::forward::DROP_REASON_COUNT;

use crate::proto::config::{
    self, ActionProfile, ActionRef, ActionRefScope, Counter, CounterSpec, CounterUnit, Digest,
    MatchField, MatchType, P4DataTypeSpec, P4Info, P4NamedType, PkgInfo, Preamble, Table,
    action_profile, p4_data_type_spec,
};

/// A match field (all of this program's are exact).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldInfo {
    /// Its id within the table (1-based, in key order).
    pub id: u32,
    /// Its P4 name.
    pub name: &'static str,
    /// Its width in bits.
    pub bitwidth: u32,
}

/// An action parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamInfo {
    /// Its id within the action (1-based, in declaration order).
    pub id: u32,
    /// Its P4 name.
    pub name: &'static str,
    /// Its width in bits.
    pub bitwidth: u32,
}

/// An action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActionInfo {
    /// Its `@id`.
    pub id: u32,
    /// Its fully qualified P4 name.
    pub name: &'static str,
    /// Its parameters.
    pub params: &'static [ParamInfo],
}

/// A table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableInfo {
    /// Its `@id`.
    pub id: u32,
    /// Its fully qualified P4 name.
    pub name: &'static str,
    /// Its key.
    pub fields: &'static [FieldInfo],
    /// The action entries may use (ids).
    pub action: u32,
    /// The constant default action (id), run on a miss.
    pub default_action: u32,
    /// The action profile implementing the table, or 0.
    pub implementation: u32,
    /// Most entries.
    pub size: u64,
}

/// The program's name in the P4Info.
pub const PROGRAM_NAME: &str = "nexus";
/// The architecture it is written for.
pub const ARCH: &str = "v1model";
/// The UDP port the parser reads NexLink on (`NEXLINK_UDP_PORT` in `nexus.p4`).
pub const NEXLINK_UDP_PORT: u16 = 4790;

/// Most routes the route table holds (the data plane's [`ROUTES_MAX`](nexus_dataplane::fib::ROUTES_MAX)).
pub const ROUTES_MAX: u64 = nexus_dataplane::fib::ROUTES_MAX as u64;
/// Most allowed sources.
pub const SOURCES_MAX: u64 = nexus_dataplane::fib::SOURCES_MAX as u64;
/// Most local endpoints.
pub const LOCAL_MAX: u64 = nexus_dataplane::forward::LOCAL_ENDPOINTS_MAX as u64;
/// Most next-hop groups (one group-table entry and one selector group each).
pub const GROUPS_MAX: u64 = 1 << 16;
/// Most action-profile members (distinct next hops).
pub const MEMBERS_MAX: u64 = 1 << 16;
/// Largest sum of weights in one group: the selector expands a group into this many slots
/// (`SumOfWeights`), so it bounds the target's memory per group.
pub const WEIGHT_TOTAL_MAX: u32 = 4096;

/// `NexusIngress.allow_source()`.
pub const ACTION_ALLOW_SOURCE: u32 = 0x0100_0001;
/// `NexusIngress.deliver_local(dst_addr, dst_port)`.
pub const ACTION_DELIVER_LOCAL: u32 = 0x0100_0002;
/// `NexusIngress.set_group(group_id, weight_total)`.
pub const ACTION_SET_GROUP: u32 = 0x0100_0003;
/// `NexusIngress.forward(dst_addr, dst_port, rewrite, new_key)`.
pub const ACTION_FORWARD: u32 = 0x0100_0004;
/// `NexusIngress.drop_source()`: the source table's default.
pub const ACTION_DROP_SOURCE: u32 = 0x0100_0005;
/// `NexusIngress.not_local()`: the local table's default.
pub const ACTION_NOT_LOCAL: u32 = 0x0100_0006;
/// `NexusIngress.route_miss()`: the route and group tables' default.
pub const ACTION_ROUTE_MISS: u32 = 0x0100_0007;

/// `NexusIngress.nexus_source`: allowed source IPv4 addresses.
pub const TABLE_SOURCE: u32 = 0x0200_0001;
/// `NexusIngress.nexus_local`: routing key → local endpoint.
pub const TABLE_LOCAL: u32 = 0x0200_0002;
/// `NexusIngress.nexus_route`: routing key → next-hop group and its weight total.
pub const TABLE_ROUTE: u32 = 0x0200_0003;
/// `NexusIngress.nexus_group`: group id → the selector group (per-flow weighted choice).
pub const TABLE_GROUP: u32 = 0x0200_0004;
/// `NexusIngress.nexus_selector`: the action selector behind [`TABLE_GROUP`].
pub const PROFILE_SELECTOR: u32 = 0x1100_0001;
/// `NexusIngress.nexus_drops`: packets dropped, indexed like `DROP_REASONS`.
pub const COUNTER_DROPS: u32 = 0x1200_0001;
/// `NexusIngress.nexus_sent`: index 0 forwarded, 1 delivered locally.
pub const COUNTER_SENT: u32 = 0x1200_0002;
/// `nexus_miss_t`: the digest sent to the controller on a route miss.
pub const DIGEST_MISS: u32 = 0x1700_0001;

const ROUTING_KEY: &str = "hdr.nexlink.routing_key";

/// Every action.
pub const ACTIONS: &[ActionInfo] = &[
    ActionInfo {
        id: ACTION_ALLOW_SOURCE,
        name: "NexusIngress.allow_source",
        params: &[],
    },
    ActionInfo {
        id: ACTION_DELIVER_LOCAL,
        name: "NexusIngress.deliver_local",
        params: &[
            ParamInfo {
                id: 1,
                name: "dst_addr",
                bitwidth: 32,
            },
            ParamInfo {
                id: 2,
                name: "dst_port",
                bitwidth: 16,
            },
        ],
    },
    ActionInfo {
        id: ACTION_SET_GROUP,
        name: "NexusIngress.set_group",
        params: &[
            ParamInfo {
                id: 1,
                name: "group_id",
                bitwidth: 32,
            },
            ParamInfo {
                id: 2,
                name: "weight_total",
                bitwidth: 32,
            },
        ],
    },
    ActionInfo {
        id: ACTION_FORWARD,
        name: "NexusIngress.forward",
        params: &[
            ParamInfo {
                id: 1,
                name: "dst_addr",
                bitwidth: 32,
            },
            ParamInfo {
                id: 2,
                name: "dst_port",
                bitwidth: 16,
            },
            ParamInfo {
                id: 3,
                name: "rewrite",
                bitwidth: 1,
            },
            ParamInfo {
                id: 4,
                name: "new_key",
                bitwidth: 128,
            },
        ],
    },
    ActionInfo {
        id: ACTION_DROP_SOURCE,
        name: "NexusIngress.drop_source",
        params: &[],
    },
    ActionInfo {
        id: ACTION_NOT_LOCAL,
        name: "NexusIngress.not_local",
        params: &[],
    },
    ActionInfo {
        id: ACTION_ROUTE_MISS,
        name: "NexusIngress.route_miss",
        params: &[],
    },
];

/// Every table.
pub const TABLES: &[TableInfo] = &[
    TableInfo {
        id: TABLE_SOURCE,
        name: "NexusIngress.nexus_source",
        fields: &[FieldInfo {
            id: 1,
            name: "hdr.ipv4.src_addr",
            bitwidth: 32,
        }],
        action: ACTION_ALLOW_SOURCE,
        default_action: ACTION_DROP_SOURCE,
        implementation: 0,
        size: SOURCES_MAX,
    },
    TableInfo {
        id: TABLE_LOCAL,
        name: "NexusIngress.nexus_local",
        fields: &[FieldInfo {
            id: 1,
            name: ROUTING_KEY,
            bitwidth: 128,
        }],
        action: ACTION_DELIVER_LOCAL,
        default_action: ACTION_NOT_LOCAL,
        implementation: 0,
        size: LOCAL_MAX,
    },
    TableInfo {
        id: TABLE_ROUTE,
        name: "NexusIngress.nexus_route",
        fields: &[FieldInfo {
            id: 1,
            name: ROUTING_KEY,
            bitwidth: 128,
        }],
        action: ACTION_SET_GROUP,
        default_action: ACTION_ROUTE_MISS,
        implementation: 0,
        size: ROUTES_MAX,
    },
    TableInfo {
        id: TABLE_GROUP,
        name: "NexusIngress.nexus_group",
        fields: &[FieldInfo {
            id: 1,
            name: "meta.group_id",
            bitwidth: 32,
        }],
        action: ACTION_FORWARD,
        default_action: ACTION_ROUTE_MISS,
        implementation: PROFILE_SELECTOR,
        size: GROUPS_MAX,
    },
];

/// The action with this id.
pub fn action(id: u32) -> Option<&'static ActionInfo> {
    ACTIONS.iter().find(|a| a.id == id)
}

/// The table with this id.
pub fn table(id: u32) -> Option<&'static TableInfo> {
    TABLES.iter().find(|t| t.id == id)
}

fn preamble(id: u32, name: &str) -> Option<Preamble> {
    Some(Preamble {
        id,
        name: name.to_owned(),
        alias: name.rsplit('.').next().unwrap_or(name).to_owned(),
    })
}

/// The program's P4Info (what `p4c --p4runtime-files` emits for `nexus.p4`, limited to the
/// fields a controller reads).
pub fn p4info() -> P4Info {
    P4Info {
        pkg_info: Some(PkgInfo {
            name: PROGRAM_NAME.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            arch: ARCH.to_owned(),
        }),
        tables: TABLES
            .iter()
            .map(|t| Table {
                preamble: preamble(t.id, t.name),
                match_fields: t
                    .fields
                    .iter()
                    .map(|f| MatchField {
                        id: f.id,
                        name: f.name.to_owned(),
                        bitwidth: f.bitwidth as i32,
                        match_type: MatchType::Exact as i32,
                    })
                    .collect(),
                action_refs: vec![
                    ActionRef {
                        id: t.action,
                        scope: ActionRefScope::TableOnly as i32,
                    },
                    ActionRef {
                        id: t.default_action,
                        scope: ActionRefScope::DefaultOnly as i32,
                    },
                ],
                const_default_action_id: t.default_action,
                implementation_id: t.implementation,
                size: t.size as i64,
            })
            .collect(),
        actions: ACTIONS
            .iter()
            .map(|a| config::Action {
                preamble: preamble(a.id, a.name),
                params: a
                    .params
                    .iter()
                    .map(|p| config::action::Param {
                        id: p.id,
                        name: p.name.to_owned(),
                        bitwidth: p.bitwidth as i32,
                    })
                    .collect(),
            })
            .collect(),
        action_profiles: vec![ActionProfile {
            preamble: preamble(PROFILE_SELECTOR, "NexusIngress.nexus_selector"),
            table_ids: vec![TABLE_GROUP],
            with_selector: true,
            size: MEMBERS_MAX as i64,
            max_group_size: WEIGHT_TOTAL_MAX as i32,
            selector_size_semantics: Some(action_profile::SelectorSizeSemantics::SumOfWeights(
                action_profile::SumOfWeights {},
            )),
        }],
        counters: vec![
            Counter {
                preamble: preamble(COUNTER_DROPS, "NexusIngress.nexus_drops"),
                spec: Some(CounterSpec {
                    unit: CounterUnit::Packets as i32,
                }),
                size: DROP_REASON_COUNT as i64,
            },
            Counter {
                preamble: preamble(COUNTER_SENT, "NexusIngress.nexus_sent"),
                spec: Some(CounterSpec {
                    unit: CounterUnit::Packets as i32,
                }),
                size: 2,
            },
        ],
        digests: vec![Digest {
            preamble: preamble(DIGEST_MISS, "nexus_miss_t"),
            type_spec: Some(P4DataTypeSpec {
                type_spec: Some(p4_data_type_spec::TypeSpec::Struct(P4NamedType {
                    name: "nexus_miss_t".to_owned(),
                })),
            }),
        }],
    }
}

/// `value` as a P4Runtime canonical bytestring for a `bitwidth`-bit field: big-endian, no
/// leading zero bytes, zero as one `0x00` byte. `value` must fit in `bitwidth` bits.
pub fn canonical(value: u128, bitwidth: u32) -> Vec<u8> {
    debug_assert!(
        bitwidth >= 128 || value >> bitwidth == 0,
        "{value} wider than {bitwidth}"
    );
    let bytes = value.to_be_bytes();
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(15);
    bytes[first..].to_vec()
}

/// Why a P4Runtime value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Not in canonical form (empty, or a leading zero byte).
    #[error("not a canonical bytestring: {0:02x?}")]
    NotCanonical(Vec<u8>),
    /// Does not fit the field's width.
    #[error("value {value:#x} does not fit in {bitwidth} bits")]
    TooWide {
        /// The value.
        value: u128,
        /// The field's width.
        bitwidth: u32,
    },
}

/// Reads a canonical bytestring for a `bitwidth`-bit field, refusing non-canonical encodings
/// and values wider than the field (checked as a value, not only by byte count).
pub fn parse_value(bytes: &[u8], bitwidth: u32) -> Result<u128, ValueError> {
    let canonical_form = !bytes.is_empty() && (bytes.len() == 1 || bytes[0] != 0);
    if !canonical_form || bytes.len() > 16 {
        return Err(ValueError::NotCanonical(bytes.to_vec()));
    }
    let value = bytes.iter().fold(0u128, |v, b| (v << 8) | u128::from(*b));
    if bitwidth < 128 && value >> bitwidth != 0 {
        return Err(ValueError::TooWide { value, bitwidth });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_values_round_trip_and_bad_ones_are_refused() {
        assert_eq!(canonical(0, 32), vec![0]);
        assert_eq!(canonical(0x1234, 32), vec![0x12, 0x34]);
        assert_eq!(canonical(u128::MAX, 128), vec![0xff; 16]);
        for (v, w) in [
            (0u128, 1),
            (1, 1),
            (0xffff, 16),
            (u128::MAX, 128),
            (7 << 100, 128),
        ] {
            assert_eq!(parse_value(&canonical(v, w), w), Ok(v));
        }
        assert!(matches!(
            parse_value(&[], 8),
            Err(ValueError::NotCanonical(_))
        ));
        assert!(matches!(
            parse_value(&[0, 1], 16),
            Err(ValueError::NotCanonical(_))
        ));
        assert!(matches!(
            parse_value(&[1; 17], 128),
            Err(ValueError::NotCanonical(_))
        ));
        // Two bytes for a 9-bit field is fine by length; 0x200 is still too wide as a value.
        assert_eq!(parse_value(&[0x01, 0xff], 9), Ok(0x1ff));
        assert!(matches!(
            parse_value(&[0x02, 0x00], 9),
            Err(ValueError::TooWide { .. })
        ));
        assert!(matches!(
            parse_value(&[2], 1),
            Err(ValueError::TooWide { .. })
        ));
    }

    #[test]
    fn ids_are_unique_and_prefixed_by_kind() {
        let mut ids: Vec<u32> = ACTIONS.iter().map(|a| a.id).collect();
        ids.extend(TABLES.iter().map(|t| t.id));
        ids.extend([PROFILE_SELECTOR, COUNTER_DROPS, COUNTER_SENT, DIGEST_MISS]);
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n);
        assert!(ACTIONS.iter().all(|a| a.id >> 24 == 0x01));
        assert!(TABLES.iter().all(|t| t.id >> 24 == 0x02));
        assert_eq!(PROFILE_SELECTOR >> 24, 0x11);
        assert_eq!(COUNTER_DROPS >> 24, 0x12);
        assert_eq!(DIGEST_MISS >> 24, 0x17);
        for t in TABLES {
            assert!(action(t.action).is_some() && action(t.default_action).is_some());
        }
    }
}
