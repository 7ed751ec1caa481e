//! Fuzzes the beacon's probe-line parser: any bytes give an attempt or an
//! error, never a panic, and an accepted attempt prints back to a line that
//! parses to the same attempt.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_protocol::beacon::parse_line;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(a) = parse_line(line) {
        let again = parse_line(&a.to_line()).expect("a printed attempt parses");
        assert_eq!(again, a);
    }
});
