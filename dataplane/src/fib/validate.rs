//! The table's own invariants, checked once on load after rkyv's bytecheck.
//!
//! bytecheck proves the archive is memory-safe to read; these checks prove it is a table the
//! lookup code can trust: every index in range, every key reachable from its home slot within the
//! stored probe bound, weights consistent with the cumulative runs, an allowed-source set in
//! canonical form. After they pass, lookups index without further checks failing (a failure
//! there would be a bug, and panics).

use super::format::{
    ArchivedHopRecord, ArchivedSlotRecord, ArchivedTableRecord, REWRITE_KEY, REWRITE_NONE,
    home_slot,
};
use super::source::SourceIp;
use super::{NEXT_HOPS_MAX, NEXT_HOPS_TOTAL_MAX, ROUTES_MAX, SLOTS_MAX, SLOTS_MIN, SOURCES_MAX};

/// Checks a table archive; on failure says what is wrong (for `LoadError::Inconsistent`).
pub(crate) fn check_table(table: &ArchivedTableRecord) -> Result<(), String> {
    check_groups(table)?;
    check_slots(table)?;
    check_order(table)?;
    check_sources(table)
}

/// The allowed-source set: at most `SOURCES_MAX` unicast addresses in strictly ascending order
/// (one encoding per set, so equal sets give equal images, and no address twice).
fn check_sources(table: &ArchivedTableRecord) -> Result<(), String> {
    let sources = table.sources.as_slice();
    if sources.len() > SOURCES_MAX {
        return Err(format!(
            "{} allowed sources, more than SOURCES_MAX = {SOURCES_MAX}",
            sources.len()
        ));
    }
    let mut previous: Option<SourceIp> = None;
    for (index, bytes) in sources.iter().enumerate() {
        let source = SourceIp::from_be_bytes(*bytes);
        if !source.is_unicast() {
            return Err(format!(
                "allowed source {index}: {source} is not a unicast address"
            ));
        }
        if let Some(previous) = previous.filter(|previous| *previous >= source) {
            return Err(format!(
                "allowed source {index}: {source} does not ascend after {previous} (duplicate or misordered address)"
            ));
        }
        previous = Some(source);
    }
    Ok(())
}

fn check_groups(table: &ArchivedTableRecord) -> Result<(), String> {
    let hops = table.hops.as_slice();
    let cumulative = table.cumulative.as_slice();
    if hops.len() != cumulative.len() {
        return Err(format!(
            "{} next hops but {} cumulative weights",
            hops.len(),
            cumulative.len()
        ));
    }
    if hops.len() > NEXT_HOPS_TOTAL_MAX {
        return Err(format!(
            "{} next hops, more than NEXT_HOPS_TOTAL_MAX = {NEXT_HOPS_TOTAL_MAX}",
            hops.len()
        ));
    }
    for (index, hop) in hops.iter().enumerate() {
        check_rewrite(index, hop)?;
    }
    if table.groups.len() > ROUTES_MAX {
        return Err(format!(
            "{} groups, more than ROUTES_MAX = {ROUTES_MAX}",
            table.groups.len()
        ));
    }
    for (id, group) in table.groups.iter().enumerate() {
        let first = group.hop_first.to_native() as usize;
        let count = group.hop_count.to_native() as usize;
        if count == 0 || count > NEXT_HOPS_MAX {
            return Err(format!(
                "group {id}: {count} next hops, not in 1..={NEXT_HOPS_MAX}"
            ));
        }
        let Some(end) = first.checked_add(count).filter(|&end| end <= hops.len()) else {
            return Err(format!(
                "group {id}: next hops {first}..{first}+{count} exceed the {} next hops",
                hops.len()
            ));
        };
        let mut running: u64 = 0;
        for index in first..end {
            let weight = hops[index].weight.to_native();
            if weight == 0 {
                return Err(format!("group {id}: next hop {index} has weight 0"));
            }
            running += u64::from(weight);
            if running != u64::from(cumulative[index].to_native()) {
                return Err(format!(
                    "group {id}: cumulative weight at next hop {index} is {}, the weights sum to {running}",
                    cumulative[index].to_native()
                ));
            }
        }
        if running != u64::from(group.weight_total.to_native()) {
            return Err(format!(
                "group {id}: weight total {} but the weights sum to {running}",
                group.weight_total.to_native()
            ));
        }
    }
    Ok(())
}

/// The rewrite flag is one of the two defined values, and a hop without a rewrite has zeroed key
/// bytes (one encoding per hop, so equal groups give equal images).
fn check_rewrite(index: usize, hop: &ArchivedHopRecord) -> Result<(), String> {
    match hop.rewrite_flag {
        REWRITE_KEY => Ok(()),
        REWRITE_NONE if hop.rewrite_key == [0u8; 16] => Ok(()),
        REWRITE_NONE => Err(format!(
            "next hop {index}: no rewrite (flag {REWRITE_NONE}) but a non-zero rewrite key"
        )),
        flag => Err(format!(
            "next hop {index}: rewrite flag {flag} is neither {REWRITE_NONE} (none) nor {REWRITE_KEY} (rewrite)"
        )),
    }
}

fn is_empty(slot: &ArchivedSlotRecord) -> bool {
    slot.hop_count.to_native() == 0
}

fn check_slots(table: &ArchivedTableRecord) -> Result<(), String> {
    let slots = table.slots.as_slice();
    let slot_count = slots.len();
    if !slot_count.is_power_of_two() || !(SLOTS_MIN..=SLOTS_MAX).contains(&slot_count) {
        return Err(format!(
            "{slot_count} slots, not a power of two in {SLOTS_MIN}..={SLOTS_MAX}"
        ));
    }
    let mask = slot_count - 1;
    let slot_bits = slot_count.trailing_zeros();
    let seed = table.hash_seed.to_native();
    let probe_len_max = table.probe_len_max.to_native() as usize;
    if probe_len_max >= slot_count {
        return Err(format!(
            "probe bound {probe_len_max} is not below the {slot_count} slots"
        ));
    }
    let Some(first_empty) = slots.iter().position(is_empty) else {
        return Err("no empty slot (a lookup miss could not end)".to_owned());
    };

    let groups = table.groups.as_slice();
    let mut occupied = 0usize;
    // Occupied slots immediately before the current one (cyclically), walking from an empty
    // slot: a key displaced by d from its home needs d occupied slots before it.
    let mut run = 0usize;
    for step in 0..slot_count {
        let position = (first_empty + step) & mask;
        let slot = &slots[position];
        if is_empty(slot) {
            let zeroed = slot.key_lo.to_native() == 0
                && slot.key_hi.to_native() == 0
                && slot.group.to_native() == 0
                && slot.hop_first.to_native() == 0
                && slot.weight_total.to_native() == 0;
            if !zeroed {
                return Err(format!("slot {position}: empty but not zeroed"));
            }
            run = 0;
            continue;
        }
        occupied += 1;
        let group_id = slot.group.to_native() as usize;
        let Some(group) = groups.get(group_id) else {
            return Err(format!(
                "slot {position}: group {group_id} out of the {} groups",
                groups.len()
            ));
        };
        if group.hop_first != slot.hop_first
            || group.hop_count != slot.hop_count
            || group.weight_total != slot.weight_total
        {
            return Err(format!(
                "slot {position}: next-hop range or weight total differs from group {group_id}"
            ));
        }
        let key = u128::from(slot.key_lo.to_native()) | (u128::from(slot.key_hi.to_native()) << 64);
        let home = home_slot(key, seed, slot_bits);
        let displacement = position.wrapping_sub(home) & mask;
        if displacement > probe_len_max {
            return Err(format!(
                "slot {position}: key {key:032x} is {displacement} slots from home, beyond the probe bound {probe_len_max}"
            ));
        }
        if displacement > run {
            return Err(format!(
                "slot {position}: key {key:032x} is unreachable (an empty slot lies between it and its home slot {home})"
            ));
        }
        run += 1;
    }
    let entry_count = table.entry_count.to_native() as usize;
    if occupied != entry_count {
        return Err(format!(
            "{occupied} occupied slots but the entry count says {entry_count}"
        ));
    }
    if occupied > ROUTES_MAX || occupied * 2 > slot_count {
        return Err(format!(
            "{occupied} entries in {slot_count} slots: over ROUTES_MAX = {ROUTES_MAX} or the 1/2 load factor"
        ));
    }
    Ok(())
}

fn check_order(table: &ArchivedTableRecord) -> Result<(), String> {
    let slots = table.slots.as_slice();
    let order = table.order.as_slice();
    let entry_count = table.entry_count.to_native() as usize;
    if order.len() != entry_count {
        return Err(format!(
            "key order lists {} slots for {entry_count} entries",
            order.len()
        ));
    }
    // Strictly ascending keys over `entry_count` occupied slots means every occupied slot is
    // listed exactly once and no key appears twice in the table.
    let mut previous: Option<u128> = None;
    for (rank, position) in order.iter().enumerate() {
        let position = position.to_native() as usize;
        let Some(slot) = slots.get(position).filter(|slot| !is_empty(slot)) else {
            return Err(format!(
                "key order entry {rank} names slot {position}, which is not an occupied slot"
            ));
        };
        let key = u128::from(slot.key_lo.to_native()) | (u128::from(slot.key_hi.to_native()) << 64);
        if previous.is_some_and(|previous| previous >= key) {
            return Err(format!(
                "key order entry {rank}: key {key:032x} does not ascend (duplicate or misordered key)"
            ));
        }
        previous = Some(key);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::super::SOURCES_MAX;
    use super::super::compile::{build_record, serialize};
    use super::super::format::{SlotRecord, TableRecord};
    use super::super::route::{NextHop, RouteSet, RoutingKey};
    use super::super::source::SourceIp;
    use super::super::table::{FibTable, LoadError};

    fn record(keys: u128) -> TableRecord {
        let mut set = RouteSet::new(4);
        for key in 0..keys {
            let hops = (1..=(key % 3 + 1) as u8)
                .map(|node| NextHop {
                    node: [node; 32],
                    addr: SocketAddr::from(([127, 0, 0, 1], 9000 + u16::from(node))),
                    weight: u32::from(node),
                    rewrite: None,
                })
                .collect();
            set.insert(RoutingKey(key * 0x1_0000_0001), hops)
                .expect("valid");
        }
        build_record(&set)
    }

    /// Serializes a (possibly broken) record with a valid header and checksum and loads it.
    fn load_detail(record: &TableRecord) -> String {
        let image = serialize(record).expect("serializes");
        match FibTable::load(image) {
            Err(LoadError::Inconsistent { generation, detail }) => {
                assert_eq!(generation, 4);
                detail
            }
            other => panic!("expected an inconsistent table, got {other:?}"),
        }
    }

    fn first_occupied(record: &TableRecord) -> usize {
        record.order[0] as usize
    }

    #[test]
    fn an_untouched_record_loads() {
        let table = FibTable::load(serialize(&record(300)).expect("serializes")).expect("loads");
        assert_eq!(table.len(), 300);
    }

    #[test]
    fn next_hop_range_out_of_bounds() {
        let mut bad = record(40);
        let hops = bad.hops.len() as u32;
        bad.groups[0].hop_first = hops;
        let detail = load_detail(&bad);
        assert!(detail.starts_with("group 0: next hops"), "{detail}");
        assert!(detail.contains("exceed"), "{detail}");
    }

    #[test]
    fn cumulative_weight_disagrees() {
        let mut bad = record(40);
        bad.cumulative[0] += 1;
        let detail = load_detail(&bad);
        assert!(
            detail.contains("cumulative weight at next hop 0"),
            "{detail}"
        );
    }

    #[test]
    fn slot_disagrees_with_its_group() {
        let mut bad = record(40);
        let position = first_occupied(&bad);
        bad.slots[position].weight_total += 1;
        let detail = load_detail(&bad);
        assert!(detail.contains("differs from group"), "{detail}");
    }

    #[test]
    fn probe_bound_too_short() {
        let mut bad = record(3000);
        assert!(
            bad.probe_len_max > 0,
            "3000 keys in 8192 slots collide somewhere"
        );
        bad.probe_len_max -= 1;
        let detail = load_detail(&bad);
        assert!(detail.contains("beyond the probe bound"), "{detail}");
    }

    #[test]
    fn key_moved_out_of_reach() {
        let mut bad = record(40);
        // Move one key to a slot before its home with an empty slot in between: find an empty
        // slot and put the key right after it, where its home is unlikely to be.
        let from = first_occupied(&bad);
        let mask = bad.slots.len() - 1;
        let empty = (0..bad.slots.len())
            .map(|step| (from + bad.slots.len() / 2 + step) & mask)
            .find(|&p| bad.slots[p].hop_count == 0 && bad.slots[(p + 1) & mask].hop_count == 0)
            .expect("a sparse table has two empty slots in a row");
        let target = (empty + 1) & mask;
        bad.slots[target] = bad.slots[from];
        bad.slots[from] = SlotRecord::default();
        let rank = bad
            .order
            .iter()
            .position(|&p| p as usize == from)
            .expect("listed");
        bad.order[rank] = target as u32;
        let detail = load_detail(&bad);
        assert!(
            detail.contains("is unreachable") || detail.contains("beyond the probe bound"),
            "{detail}"
        );
        // With the probe bound lifted, the empty slot between home and key is what fails.
        bad.probe_len_max = (bad.slots.len() - 1) as u32;
        let detail = load_detail(&bad);
        assert!(detail.contains("is unreachable"), "{detail}");
    }

    #[test]
    fn duplicate_key() {
        let mut bad = record(40);
        // Copy a key into the empty slot right after it, where a probe from the same home reaches
        // it, and list the copy in the key order: only the order check can catch this.
        let mask = bad.slots.len() - 1;
        let position = (0..bad.slots.len())
            .find(|&p| bad.slots[p].hop_count != 0 && bad.slots[(p + 1) & mask].hop_count == 0)
            .expect("a sparse table has an occupied slot before an empty one");
        let copy = (position + 1) & mask;
        bad.slots[copy] = bad.slots[position];
        bad.probe_len_max = (bad.slots.len() - 1) as u32;
        bad.entry_count += 1;
        let rank = bad
            .order
            .iter()
            .position(|&p| p as usize == position)
            .expect("listed");
        bad.order.insert(rank + 1, copy as u32);
        let detail = load_detail(&bad);
        assert!(
            detail.contains("does not ascend (duplicate or misordered key)"),
            "{detail}"
        );
    }

    #[test]
    fn misordered_keys() {
        let mut bad = record(40);
        bad.order.swap(3, 4);
        let detail = load_detail(&bad);
        assert!(detail.starts_with("key order entry 4: key"), "{detail}");
        assert!(detail.contains("does not ascend"), "{detail}");
    }

    #[test]
    fn order_misses_a_slot() {
        let mut bad = record(40);
        bad.order.pop();
        let detail = load_detail(&bad);
        assert!(
            detail.starts_with("key order lists 39 slots for 40 entries"),
            "{detail}"
        );
    }

    #[test]
    fn order_names_an_empty_slot() {
        let mut bad = record(40);
        let empty = bad
            .slots
            .iter()
            .position(|slot| slot.hop_count == 0)
            .expect("sparse");
        bad.order[5] = empty as u32;
        let detail = load_detail(&bad);
        assert!(detail.contains("not an occupied slot"), "{detail}");
    }

    #[test]
    fn entry_count_wrong() {
        let mut bad = record(40);
        bad.entry_count = 41;
        let detail = load_detail(&bad);
        assert!(detail.contains("entry count says 41"), "{detail}");
    }

    #[test]
    fn slot_count_not_a_power_of_two() {
        let mut bad = record(40);
        bad.slots.push(SlotRecord::default());
        let detail = load_detail(&bad);
        assert!(detail.contains("not a power of two"), "{detail}");
    }

    #[test]
    fn garbage_in_an_empty_slot() {
        let mut bad = record(40);
        let empty = bad
            .slots
            .iter()
            .position(|slot| slot.hop_count == 0)
            .expect("sparse");
        bad.slots[empty].key_lo = 1;
        let detail = load_detail(&bad);
        assert_eq!(detail, format!("slot {empty}: empty but not zeroed"));
    }

    #[test]
    fn rewrite_flag_out_of_range() {
        let mut bad = record(40);
        bad.hops[3].rewrite_flag = 2;
        let detail = load_detail(&bad);
        assert_eq!(
            detail,
            "next hop 3: rewrite flag 2 is neither 0 (none) nor 1 (rewrite)"
        );
    }

    #[test]
    fn rewrite_key_without_the_flag() {
        let mut bad = record(40);
        bad.hops[1].rewrite_key[15] = 7;
        let detail = load_detail(&bad);
        assert_eq!(
            detail,
            "next hop 1: no rewrite (flag 0) but a non-zero rewrite key"
        );
        // With the flag set, the same bytes are a valid rewrite to key 7.
        bad.hops[1].rewrite_flag = 1;
        let table = FibTable::load(serialize(&bad).expect("serializes")).expect("loads");
        let rewrites: Vec<_> = table
            .entries()
            .flat_map(|entry| {
                entry
                    .group
                    .iter()
                    .map(|hop| hop.rewrite())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(rewrites.contains(&Some(RoutingKey(7))), "{rewrites:?}");
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> [u8; 16] {
        SourceIp::new(std::net::IpAddr::from([a, b, c, d])).to_be_bytes()
    }

    #[test]
    fn allowed_sources_load_and_are_looked_up_by_ip() {
        let mut good = record(10);
        good.sources = vec![v4(10, 0, 0, 1), v4(127, 0, 0, 1)];
        good.sources
            .push(SourceIp::new("2001:db8::7".parse().expect("ip")).to_be_bytes());
        let table = FibTable::load(serialize(&good).expect("serializes")).expect("loads");
        assert_eq!(table.stats().sources, 3);
        assert!(table.allows_source("127.0.0.1".parse().expect("ip")));
        assert!(table.allows_source("::ffff:10.0.0.1".parse().expect("ip")));
        assert!(table.allows_source("2001:db8::7".parse().expect("ip")));
        assert!(!table.allows_source("127.0.0.2".parse().expect("ip")));
        assert!(!table.allows_source("::1".parse().expect("ip")));
        let listed: Vec<String> = table.sources().map(|s| s.to_string()).collect();
        assert_eq!(listed, ["10.0.0.1", "127.0.0.1", "2001:db8::7"]);
    }

    #[test]
    fn allowed_sources_misordered() {
        let mut bad = record(10);
        bad.sources = vec![v4(10, 0, 0, 2), v4(10, 0, 0, 1)];
        assert_eq!(
            load_detail(&bad),
            "allowed source 1: 10.0.0.1 does not ascend after 10.0.0.2 (duplicate or misordered address)"
        );
    }

    #[test]
    fn allowed_source_twice() {
        let mut bad = record(10);
        bad.sources = vec![v4(10, 0, 0, 1), v4(10, 0, 0, 3), v4(10, 0, 0, 3)];
        assert_eq!(
            load_detail(&bad),
            "allowed source 2: 10.0.0.3 does not ascend after 10.0.0.3 (duplicate or misordered address)"
        );
    }

    #[test]
    fn allowed_source_not_unicast() {
        for (bytes, shown) in [
            ([0u8; 16], "::"),
            (v4(0, 0, 0, 0), "0.0.0.0"),
            (v4(224, 0, 0, 251), "224.0.0.251"),
            (v4(255, 255, 255, 255), "255.255.255.255"),
            (
                SourceIp::new("ff02::1".parse().expect("ip")).to_be_bytes(),
                "ff02::1",
            ),
        ] {
            let mut bad = record(10);
            bad.sources = vec![bytes];
            assert_eq!(
                load_detail(&bad),
                format!("allowed source 0: {shown} is not a unicast address")
            );
        }
    }

    #[test]
    fn too_many_allowed_sources() {
        let mut bad = record(10);
        bad.sources = (1..=SOURCES_MAX as u32 + 1)
            .map(|n| {
                SourceIp::new(std::net::Ipv4Addr::from(0x0a00_0000u32 + n).into()).to_be_bytes()
            })
            .collect();
        assert_eq!(
            load_detail(&bad),
            format!(
                "{} allowed sources, more than SOURCES_MAX = {SOURCES_MAX}",
                SOURCES_MAX + 1
            )
        );
        // At the limit the same set loads.
        bad.sources.pop();
        FibTable::load(serialize(&bad).expect("serializes")).expect("loads at SOURCES_MAX");
    }

    #[test]
    fn no_empty_slot() {
        let mut bad = record(4);
        let filler = bad.slots[first_occupied(&bad)];
        for slot in bad.slots.iter_mut().filter(|slot| slot.hop_count == 0) {
            *slot = filler;
        }
        let detail = load_detail(&bad);
        assert_eq!(detail, "no empty slot (a lookup miss could not end)");
    }
}
