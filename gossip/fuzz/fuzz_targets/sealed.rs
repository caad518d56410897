//! Any bytes as a received gossip datagram through a `DatagramGuard` holding two keys: it is
//! dropped with a reason or let through, never panics; what is let through sealed is exactly
//! what was sealed (the input is also sealed under the primary key and must open to itself);
//! keyring messages decode cleanly or round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_gossip::{
    DatagramGuard, GuardConfig, Incoming, Keyring, KeyringOp, KeyringRequest, KeyringResponse,
    SEALED_BYTES_MAX, SEAL_OVERHEAD, SecretKey,
};

fuzz_target!(|data: &[u8]| {
    let mut ring = Keyring::new(SecretKey::from_bytes([1; 32]));
    let _ = ring.apply(&KeyringOp::Install(SecretKey::from_bytes([2; 32])));
    let mut strict = DatagramGuard::new(GuardConfig::encrypted(ring.clone()), [3; 32]);
    let mut lenient = DatagramGuard::new(
        GuardConfig {
            keyring: Some(ring),
            verify_incoming: false,
            verify_outgoing: true,
        },
        [4; 32],
    );
    for guard in [&mut strict, &mut lenient] {
        match guard.incoming(data) {
            Ok(Incoming::Opened(plain)) => assert!(plain.len() + SEAL_OVERHEAD == data.len()),
            Ok(Incoming::Plain(plain)) => assert_eq!(plain, data),
            Err(_) => {}
        }
    }
    if data.len() + SEAL_OVERHEAD <= SEALED_BYTES_MAX {
        let sealed = lenient.outgoing(data);
        match strict.incoming(&sealed) {
            Ok(Incoming::Opened(plain)) => assert_eq!(plain, data),
            // Only a sealed datagram sealed again is refused after opening.
            other => assert!(data.first().is_some_and(|b| b & 0xf0 == 0xe0), "{other:?}"),
        }
    }
    if let Ok(request) = KeyringRequest::decode(data) {
        assert_eq!(request.encode(), data);
    }
    if let Ok(response) = KeyringResponse::decode(data) {
        assert_eq!(response.encode(), data);
    }
});
