//! Just enough ELF reading to tell a static binary from a dynamic one.

use std::path::Path;

/// `Ok(true)` when `bytes` is a 64-bit little-endian ELF with no program
/// interpreter (`PT_INTERP`), i.e. it runs without a dynamic loader.
pub fn is_static(bytes: &[u8]) -> Result<bool, String> {
    const PT_INTERP: u32 = 3;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u64_at = |o: usize| -> Option<usize> {
        let b: [u8; 8] = bytes.get(o..o + 8)?.try_into().ok()?;
        usize::try_from(u64::from_le_bytes(b)).ok()
    };
    let phoff = u64_at(0x20).ok_or("truncated ELF header")?;
    let phentsize = u16_at(0x36);
    let phnum = u16_at(0x38);
    for i in 0..phnum {
        let off = phoff + i * phentsize;
        let t = bytes
            .get(off..off + 4)
            .ok_or("truncated ELF program headers")?;
        if u32::from_le_bytes([t[0], t[1], t[2], t[3]]) == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Reads `path` and says whether it is a static ELF binary, with an error
/// that names the file.
pub fn check_static(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    match is_static(&bytes) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "{} is dynamically linked; it cannot run in a minimal image (build it with -C target-feature=+crt-static)",
            path.display()
        )),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_binaries() {
        // /bin/sh on Debian is dynamic; the test binary itself is too.
        let me = std::env::current_exe().unwrap();
        assert_eq!(is_static(&std::fs::read(me).unwrap()), Ok(false));
        assert!(is_static(b"#!/bin/sh\n").is_err());
        assert!(is_static(&[0x7f, b'E', b'L', b'F']).is_err());
    }
}
