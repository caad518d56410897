//! Any bytes as a forwarding-table image, and any bytes as a generation's allowed-source set:
//! `FibTable::load` returns a table or a `LoadError`, never panics; what loads is consistent
//! (every listed route is found by lookup, every listed source is allowed, the sources ascend);
//! and a malformed source set is refused with an error naming the bad entry, exactly when a
//! plain reference check says the set is malformed.
//!
//! The first input byte picks the mode:
//! - even: the rest is an image, with a valid magic, version, length and checksum written over
//!   its header (so rkyv's bytecheck and the table checks behind them are what is explored);
//! - odd: the rest, cut to whole 16-byte entries (at most 64), replaces the source set of a
//!   valid image compiled with that many placeholder sources, and the image is resealed.
#![no_main]

use std::net::{IpAddr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use nexus_dataplane::fib::{
    FibTable, HEADER_LEN, LoadError, NextHop, RouteSet, RoutingKey, SourceIp, SourceSet,
    TABLE_FORMAT_VERSION, TABLE_MAGIC, TableImage, compile,
};

/// Most source entries the odd mode writes.
const SOURCES_FUZZED_MAX: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        any_image(rest);
    } else {
        any_source_set(rest);
    }
});

/// Writes the header fields that the load checks first, so the archive checks are reached.
fn reseal(bytes: &mut [u8]) {
    let length = (bytes.len() - HEADER_LEN) as u64;
    bytes[0..8].copy_from_slice(&TABLE_MAGIC);
    bytes[8..12].copy_from_slice(&TABLE_FORMAT_VERSION.to_le_bytes());
    bytes[24..32].copy_from_slice(&length.to_le_bytes());
    let crc = crc32fast::hash(&bytes[16..]);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
}

fn any_image(bytes: &[u8]) {
    let _ = FibTable::load(TableImage::from_bytes(bytes));
    if bytes.len() >= HEADER_LEN {
        let mut sealed = bytes.to_vec();
        reseal(&mut sealed);
        if let Ok(table) = FibTable::load(TableImage::from_bytes(&sealed)) {
            check_loaded(&table);
        }
    }
}

fn check_loaded(table: &FibTable) {
    for entry in table.entries() {
        let found = table.lookup(entry.key).expect("a listed key is found");
        assert_eq!(found.id(), entry.group.id());
        assert!(!found.is_empty());
    }
    let sources: Vec<SourceIp> = table.sources().collect();
    assert_eq!(table.stats().sources, sources.len());
    for pair in sources.windows(2) {
        assert!(pair[0] < pair[1], "loaded sources ascend");
    }
    for source in sources {
        assert!(source.is_unicast());
        assert!(table.allows_source(source.ip()));
    }
}

/// The placeholder sources of the odd mode: 2001:db8::1:0:n, found nowhere else in the image.
fn placeholder(n: usize) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 1, 0, n as u16 + 1))
}

fn any_source_set(bytes: &[u8]) {
    let entries: Vec<[u8; 16]> = bytes
        .chunks_exact(16)
        .take(SOURCES_FUZZED_MAX)
        .map(|chunk| chunk.try_into().expect("16 bytes"))
        .collect();
    let mut set = RouteSet::new(7);
    set.insert(
        RoutingKey(1),
        vec![NextHop {
            node: [1; 32],
            addr: "127.0.0.1:9000".parse().expect("addr"),
            weight: 1,
            rewrite: None,
        }],
    )
    .expect("a valid route");
    let placeholders: Vec<IpAddr> = (0..entries.len()).map(placeholder).collect();
    set.set_sources(SourceSet::try_from(placeholders.clone()).expect("unicast placeholders"));
    let mut image = compile(&set).expect("compiles").as_bytes().to_vec();
    if !entries.is_empty() {
        // The placeholders ascend, so the image holds them back to back in this order.
        let stored: Vec<u8> = placeholders
            .iter()
            .flat_map(|ip| SourceIp::new(*ip).to_be_bytes())
            .collect();
        let at = image
            .windows(stored.len())
            .position(|window| window == stored)
            .expect("the source set is stored as consecutive 16-byte entries");
        for (index, entry) in entries.iter().enumerate() {
            image[at + 16 * index..at + 16 * (index + 1)].copy_from_slice(entry);
        }
        reseal(&mut image);
    }
    let expected = reference_check(&entries);
    match (FibTable::load(TableImage::from_bytes(&image)), expected) {
        (Ok(table), Ok(())) => {
            check_loaded(&table);
            let loaded: Vec<[u8; 16]> = table.sources().map(SourceIp::to_be_bytes).collect();
            assert_eq!(loaded, entries, "the loaded set is the one written");
        }
        (Err(LoadError::Inconsistent { detail, .. }), Err(index)) => {
            assert!(
                detail.starts_with(&format!("allowed source {index}: ")),
                "the error names entry {index}: {detail}"
            );
        }
        (got, expected) => panic!("load gave {got:?}, the reference check {expected:?}"),
    }
}

/// The set's rules, written out plainly: the index of the first entry that breaks one.
fn reference_check(entries: &[[u8; 16]]) -> Result<(), usize> {
    for (index, entry) in entries.iter().enumerate() {
        let ip = Ipv6Addr::from(*entry).to_canonical();
        let unicast = match ip {
            IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
            IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
        };
        let ascends = index == 0 || entries[index - 1] < *entry;
        if !unicast || !ascends {
            return Err(index);
        }
    }
    Ok(())
}
