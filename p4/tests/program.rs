//! `nexus.p4` against the program description the node builds its P4Info from
//! (`nexus_p4::program`): every table, action, parameter, match field, the selector and the
//! counters carry the same `@id`, name, bit width and size in both. Nothing here compiles P4
//! (no p4c on this machine); this keeps the two from drifting apart.

use nexus_dataplane::forward::DROP_REASONS;
use nexus_p4::program::{
    ACTIONS, COUNTER_DROPS, COUNTER_SENT, MEMBERS_MAX, NEXLINK_UDP_PORT, PROFILE_SELECTOR, TABLES,
    WEIGHT_TOTAL_MAX, p4info,
};

fn source() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/nexus.p4")).expect("nexus.p4")
}

/// The source from the `@id(..)` annotation for `id` to the end of the declaration it starts
/// (the next `;` or `{`, whichever ends the declaration's head).
fn declaration(src: &str, id: u32) -> String {
    let marker = format!("@id({id:#010x})");
    let at = src
        .find(&marker)
        .unwrap_or_else(|| panic!("nexus.p4 has no {marker}"));
    assert_eq!(src.matches(&marker).count(), 1, "{marker} twice");
    let rest = &src[at..];
    let end = rest.find(['{', ';']).expect("declaration ends");
    rest[..end].split_whitespace().collect::<Vec<_>>().join(" ")
}

fn alias(name: &str) -> &str {
    name.rsplit('.').next().expect("name")
}

#[test]
fn actions_and_parameters_match() {
    let src = source();
    for a in ACTIONS {
        let head = declaration(&src, a.id);
        let params: Vec<String> = a
            .params
            .iter()
            .map(|p| format!("bit<{}> {}", p.bitwidth, p.name))
            .collect();
        let expected = format!("action {}({})", alias(a.name), params.join(", "));
        assert!(
            head.ends_with(&expected),
            "{head:?} should end with {expected:?}"
        );
        assert!(a.name.starts_with("NexusIngress."), "{}", a.name);
    }
}

#[test]
fn tables_keys_actions_and_sizes_match() {
    let src = source();
    for t in TABLES {
        let head = declaration(&src, t.id);
        assert!(
            head.ends_with(&format!("table {}", alias(t.name))),
            "{head:?}"
        );
        let start = src
            .find(&format!("table {} {{", alias(t.name)))
            .expect("table body");
        let rest = &src[start..];
        let body = &rest[..rest.find("\n    }").expect("table end")];
        for f in t.fields {
            assert!(
                body.contains(&format!("{}: exact;", f.name)),
                "{}: {}",
                t.name,
                f.name
            );
        }
        let action = ACTIONS.iter().find(|a| a.id == t.action).expect("action");
        let default = ACTIONS
            .iter()
            .find(|a| a.id == t.default_action)
            .expect("default");
        assert!(
            body.contains(&format!("@tableonly {};", alias(action.name))),
            "{}",
            t.name
        );
        assert!(
            body.contains(&format!("@defaultonly {};", alias(default.name))),
            "{}",
            t.name
        );
        assert!(
            body.contains(&format!(
                "const default_action = {}();",
                alias(default.name)
            )),
            "{}",
            t.name
        );
        assert!(
            body.contains(&format!("size = {};", t.size)),
            "{}: size {}",
            t.name,
            t.size
        );
        if t.implementation != 0 {
            assert!(
                body.contains("implementation = nexus_selector;"),
                "{}",
                t.name
            );
        }
    }
}

#[test]
fn selector_counters_and_constants_match() {
    let src = source();
    let selector = declaration(&src, PROFILE_SELECTOR);
    assert!(
        selector.contains(&format!("@max_group_size({WEIGHT_TOTAL_MAX})"))
            && selector.contains("HashAlgorithm.identity")
            && selector.contains(&format!("32w{MEMBERS_MAX}"))
            && selector.ends_with("nexus_selector"),
        "{selector:?}"
    );
    let drops = declaration(&src, COUNTER_DROPS);
    assert!(drops.ends_with("counter(DROP_REASON_COUNT, CounterType.packets) nexus_drops"));
    assert!(src.contains(&format!("#define DROP_REASON_COUNT {}", DROP_REASONS.len())));
    for (i, reason) in DROP_REASONS.iter().enumerate() {
        let constant = format!("const bit<32> DROP_{} = {i};", reason.to_uppercase());
        assert!(src.contains(&constant), "{constant}");
    }
    assert!(
        declaration(&src, COUNTER_SENT).ends_with("counter(2, CounterType.packets) nexus_sent")
    );
    assert!(src.contains(&format!(
        "const bit<16> NEXLINK_UDP_PORT = {NEXLINK_UDP_PORT};"
    )));
    assert!(src.contains(&format!(
        "const bit<64> FLOW_MIX = {:#x};",
        nexus_dataplane::fib::FLOW_MIX
    )));
    // The P4Info lists exactly the described objects.
    let info = p4info();
    assert_eq!(info.tables.len(), TABLES.len());
    assert_eq!(info.actions.len(), ACTIONS.len());
    assert_eq!(info.counters.len(), 2);
}
