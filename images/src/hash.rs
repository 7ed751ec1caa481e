//! sha256 helpers.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

/// Hex sha256 of everything `r` yields, reporting progress in bytes.
pub fn sha256_reader(mut r: impl Read, mut progress: impl FnMut(u64)) -> io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
        progress(total);
    }
    Ok(hex::encode(h.finalize()))
}

/// Hex sha256 of a byte slice.
pub fn sha256_bytes(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Checks that `s` looks like a hex sha256 and returns it lowercased.
pub fn parse_sha256(s: &str) -> Result<String, String> {
    let s = s.trim();
    // Accept `sha256sum` output ("<hex>  <file>") as well as a bare hash.
    let hex_part = s.split_whitespace().next().unwrap_or("");
    let hex_part = hex_part.strip_prefix("sha256:").unwrap_or(hex_part);
    if hex_part.len() == 64 && hex_part.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(hex_part.to_ascii_lowercase())
    } else {
        Err(format!(
            "{s:?} is not a sha256: expected 64 hex digits (as printed by sha256sum)"
        ))
    }
}

/// A reader that hashes what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    pub bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Reads what is left (so the hash covers the whole input) and returns
    /// the hex digest.
    pub fn finish(mut self) -> io::Result<String> {
        io::copy(
            &mut self.inner.by_ref().take(u64::MAX),
            &mut HashSink(&mut self.hasher),
        )?;
        Ok(hex::encode(self.hasher.finalize()))
    }
}

struct HashSink<'a>(&'a mut Sha256);

impl io::Write for HashSink<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(
            sha256_bytes(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut r = HashingReader::new(&b"abc"[..]);
        let mut first = [0u8; 1];
        r.read_exact(&mut first).unwrap();
        assert_eq!(r.finish().unwrap(), sha256_bytes(b"abc"));
    }

    #[test]
    fn parses_hash_forms() {
        let h = "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD";
        assert_eq!(parse_sha256(h).unwrap(), h.to_lowercase());
        assert_eq!(
            parse_sha256(&format!("{h}  image.tar.gz\n")).unwrap(),
            h.to_lowercase()
        );
        assert_eq!(
            parse_sha256(&format!("sha256:{h}")).unwrap(),
            h.to_lowercase()
        );
        assert!(parse_sha256("abc").unwrap_err().contains("64 hex digits"));
    }
}
