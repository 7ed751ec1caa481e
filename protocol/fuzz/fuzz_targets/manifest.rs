//! Fuzzes manifest parsing and validation: any input must give a manifest
//! or an error, never a panic; a valid manifest must survive a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_protocol::Manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = Manifest::parse(text) {
        if m.validate().is_ok() {
            let again = Manifest::parse(&m.to_toml()).expect("a valid manifest re-parses");
            assert_eq!(again, m, "round trip changed the manifest");
            let _ = m.check_config(&serde_json::Value::Null);
        }
    }
});
