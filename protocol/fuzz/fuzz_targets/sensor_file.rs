//! Fuzzes sensor-file parsing and validation: never a panic, and a valid
//! spec survives the canonical JSON round trip used for storage.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_protocol::SensorSpec;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(s) = SensorSpec::parse_valid(text) {
        let again = SensorSpec::from_json(&s.to_canonical_json()).expect("stored form re-parses");
        assert_eq!(again, s);
    }
});
