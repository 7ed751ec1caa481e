//! Byte sizes written back exactly. `bytesize` writes a size the way a
//! person reads it ("24.4 TiB", "95.4 MiB"), which does not parse back to
//! the same number; a manifest written by `to_toml` or a desired state
//! stored as JSON would then change. These write the largest binary unit
//! that divides the size ("64MiB", "3KiB", "100000000B").

use bytesize::ByteSize;
use serde::Serializer;

/// The exact text of a size.
pub fn exact(b: ByteSize) -> String {
    let n = b.as_u64();
    for (unit, div) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if n >= div && n % div == 0 {
            return format!("{}{unit}", n / div);
        }
    }
    format!("{n}B")
}

/// `serialize_with` for a `ByteSize` field.
pub fn serialize<S: Serializer>(b: &ByteSize, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&exact(*b))
}

/// `serialize_with` for an `Option<ByteSize>` field.
pub fn serialize_opt<S: Serializer>(b: &Option<ByteSize>, s: S) -> Result<S::Ok, S::Error> {
    match b {
        Some(b) => s.serialize_some(&exact(*b)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_written_exactly_and_parse_back() {
        for n in [
            0u64,
            1,
            1023,
            1024,
            64 << 20,
            100_000_000,
            25_555_556u64 << 20,
            (3 << 30) + 1,
        ] {
            let text = exact(ByteSize::b(n));
            let back: ByteSize = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(back.as_u64(), n, "{text}");
        }
        assert_eq!(exact(ByteSize::mib(64)), "64MiB");
        assert_eq!(exact(ByteSize::b(100_000_000)), "100000000B");
    }
}
