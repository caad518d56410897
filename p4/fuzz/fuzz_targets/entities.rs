//! The P4 target's decoder of what a switch sends back: arbitrary bytes as a `ReadResponse`
//! (prost), its entities applied as INSERTs (`entries_from`), and as single updates of any
//! type onto a small installed state. Nothing may panic; whatever is accepted must be
//! re-encodable by the diff and give the same state when applied again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_p4::client::entries_from;
use nexus_p4::entries::Entries;
use nexus_p4::proto::v1::{ReadResponse, Update};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(response) = ReadResponse::decode(data) {
        if let Ok(entries) = entries_from(response.entities) {
            let mut again = Entries::default();
            for u in entries.to_updates() {
                again.apply(&u).expect("a decoded state re-applies");
            }
            assert_eq!(again, entries);
        }
    }
    if let Ok(update) = Update::decode(data) {
        let mut state = Entries::default();
        let before = state.clone();
        if state.apply(&update).is_err() {
            assert_eq!(state, before);
        }
    }
});
