//! The canary's proof: HMAC-SHA256 of the probe's fresh nonce under a key
//! the probe and `beacon-home` share.
//!
//! On every channel the probe sends `OUTPOST-CANARY <nonce>` and home
//! answers `OUTPOST-HOME <hmac>` (DNS: a TXT record `outpost=<hmac>`).
//! Something that answers in home's place (a captive portal, a
//! transparent proxy, a firewall) cannot make the HMAC without the key,
//! and a recorded answer does not fit the next nonce.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// What the probe sends first.
pub const HELLO: &str = "OUTPOST-CANARY";
/// What home answers with.
pub const REPLY: &str = "OUTPOST-HOME";
/// The DNS TXT attribute home answers with.
pub const TXT_KEY: &str = "outpost";
/// Shortest key taken, in bytes.
pub const MIN_KEY: usize = 16;
/// Nonce length in bytes (hex-encoded on the wire).
pub const NONCE_BYTES: usize = 16;

/// The shared key.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({} bytes)", self.0.len())
    }
}

impl Key {
    /// A key from its hex text (whitespace around it is ignored).
    pub fn from_hex(text: &str) -> Result<Key, String> {
        let bytes = hex::decode(text.trim()).map_err(|e| {
            format!("the key is not hex ({e}); make one with `openssl rand -hex 32`")
        })?;
        if bytes.len() < MIN_KEY {
            return Err(format!(
                "the key has {} bytes; it needs at least {MIN_KEY} (32 hex digits)",
                bytes.len()
            ));
        }
        Ok(Key(bytes))
    }

    /// The proof for `nonce`, hex-encoded.
    pub fn prove(&self, nonce: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(nonce.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `proof` (hex) is the proof for `nonce`, compared in
    /// constant time.
    pub fn verify(&self, nonce: &str, proof: &str) -> bool {
        let Ok(tag) = hex::decode(proof) else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(nonce.as_bytes());
        mac.verify_slice(&tag).is_ok()
    }
}

/// A fresh random nonce, hex-encoded (lower case, so DNS case folding
/// cannot change it).
pub fn nonce() -> String {
    hex::encode(rand::random::<[u8; NONCE_BYTES]>())
}

/// Whether `s` looks like a nonce the probe makes: 16 to 64 lower-case hex
/// digits. Home answers nothing else.
pub fn is_nonce(s: &str) -> bool {
    (16..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The hello line for `nonce`.
pub fn hello(nonce: &str) -> String {
    format!("{HELLO} {nonce}\n")
}

/// The nonce in a hello line, if it is one.
pub fn parse_hello(text: &str) -> Option<&str> {
    let rest = text.trim_end().strip_prefix(HELLO)?.strip_prefix(' ')?;
    is_nonce(rest).then_some(rest)
}

/// Home's answer for `nonce`.
pub fn reply(key: &Key, nonce: &str) -> String {
    format!("{REPLY} {}\n", key.prove(nonce))
}

/// The proof in an answer, if the answer has the reply's shape anywhere
/// in it (an HTTP body may wrap it).
pub fn find_reply(text: &str) -> Option<&str> {
    let at = text.find(REPLY)?;
    let rest = text[at + REPLY.len()..].strip_prefix(' ')?;
    let end = rest
        .find(|c: char| !c.is_ascii_hexdigit())
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// What an answer shows, for the evidence detail: at most 80 printable
/// characters of it.
pub fn excerpt(bytes: &[u8]) -> String {
    let s: String = String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(80)
        .collect();
    format!("{:?}", s.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::from_hex("00112233445566778899aabbccddeeff").unwrap()
    }

    #[test]
    fn a_reply_verifies_only_for_its_nonce_and_key() {
        let n = nonce();
        assert!(is_nonce(&n));
        let r = reply(&key(), &n);
        let proof = find_reply(&r).unwrap();
        assert!(key().verify(&n, proof));
        assert!(!key().verify(&nonce(), proof), "replayed for a new nonce");
        let other = Key::from_hex("ffeeddccbbaa99887766554433221100").unwrap();
        assert!(!other.verify(&n, proof), "verified under another key");
        assert!(!key().verify(&n, "zz"));
    }

    #[test]
    fn hello_lines_round_trip_and_junk_is_not_a_hello() {
        let n = nonce();
        assert_eq!(parse_hello(&hello(&n)), Some(n.as_str()));
        assert_eq!(parse_hello("GET / HTTP/1.1"), None);
        assert_eq!(parse_hello("OUTPOST-CANARY ../../etc/passwd"), None);
        assert_eq!(parse_hello("OUTPOST-CANARY ABCDEF0123456789"), None);
    }

    #[test]
    fn a_reply_is_found_inside_a_wrapping_body() {
        assert_eq!(
            find_reply("<html>OUTPOST-HOME abc123</html>"),
            Some("abc123")
        );
        assert_eq!(find_reply("<html>Welcome to the hotel wifi</html>"), None);
    }

    #[test]
    fn short_or_non_hex_keys_are_refused_with_the_fix() {
        let e = Key::from_hex("0011").unwrap_err();
        assert!(e.contains("at least 16"), "{e}");
        let e = Key::from_hex("not hex").unwrap_err();
        assert!(e.contains("openssl rand -hex 32"), "{e}");
    }
}
