//! Fuzzes envelope decoding: any bytes give an envelope or an error, never a
//! panic, and a decoded envelope encodes and decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_protocol::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = Envelope::decode(data) {
        let again = Envelope::decode(&e.encode()).expect("an encoded envelope decodes");
        assert_eq!(again, e);
    }
});
