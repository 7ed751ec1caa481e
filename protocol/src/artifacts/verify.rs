//! What makes a downloaded artifact acceptable, decided without the
//! network: a pinned sha256, or metadata signed with minisign by one of the
//! configured keys, naming this resource, not expired, with a version
//! above every one seen before. Each refusal has a kind (`hash`,
//! `signature`, `unknown-key`, `rollback`, `expired`, …) that events and
//! health name.

use std::time::SystemTime;

use minisign_verify::{PublicKey, Signature};
use serde::{Deserialize, Serialize};

/// Why an artifact (or its metadata) was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("sha256 is {got}, expected {expected}")]
    Hash { expected: String, got: String },
    #[error("the metadata's signature does not verify with key {key}: {why}")]
    Signature { key: String, why: String },
    #[error(
        "the metadata is signed by a key that is not configured (fix: add its public key to the resource's keys, if it is yours)"
    )]
    UnknownKey,
    #[error("version {version} is not above {highest}, the highest seen: a rollback is refused")]
    Rollback { version: String, highest: String },
    #[error("the metadata expired at {expires}")]
    Expired { expires: String },
    #[error("more than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("{got} bytes, the metadata says {length}")]
    Length { length: u64, got: u64 },
    #[error("slower than {min_rate} bytes/s (got {rate:.0} bytes/s over {secs} s)")]
    TooSlow { min_rate: u64, rate: f64, secs: u64 },
    #[error("a redirect to {to}, another origin than {origin}")]
    Redirect { to: String, origin: String },
    #[error("the metadata is unusable: {0}")]
    Metadata(String),
}

impl Refusal {
    /// The short name of the reason, for events and health.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Hash { .. } => "hash",
            Refusal::Signature { .. } => "signature",
            Refusal::UnknownKey => "unknown-key",
            Refusal::Rollback { .. } => "rollback",
            Refusal::Expired { .. } => "expired",
            Refusal::TooLarge { .. } | Refusal::Length { .. } => "too-large",
            Refusal::TooSlow { .. } => "too-slow",
            Refusal::Redirect { .. } => "redirect",
            Refusal::Metadata(_) => "metadata",
        }
    }
}

/// The signed description of one release of an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    pub version: String,
    /// RFC 3339; after it the metadata is refused (a freeze attack would
    /// keep serving old metadata for ever).
    pub expires: String,
    pub sha256: String,
    pub length: u64,
    /// Where the artifact is, absolute or relative to the metadata's URL.
    pub url: String,
}

/// A configured signing key, as `minisign -G` writes it to `.pub` (the
/// base64 line).
#[derive(Clone)]
pub struct Key {
    pub text: String,
    key: PublicKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Key {
    pub fn parse(text: &str) -> Result<Key, String> {
        let line = text
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
            .unwrap_or_default();
        let key = PublicKey::from_base64(line)
            .map_err(|e| format!("{line:?} is not a minisign public key: {e}"))?;
        Ok(Key {
            text: line.to_string(),
            key,
        })
    }
}

/// Why `s` is not a lowercase hex sha256, or `None`.
pub fn sha256_problem(s: &str) -> Option<String> {
    (s.len() != 64
        || !s
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)))
    .then(|| format!("{s:?} is not 64 lowercase hex digits"))
}

/// Compares two versions: dotted numbers compare as numbers (1.10 > 1.9),
/// anything else as text.
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |v: &str| -> Option<Vec<u64>> {
        v.trim_start_matches('v')
            .split('.')
            .map(|p| p.parse().ok())
            .collect()
    };
    match (parts(a), parts(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// Checks signed metadata for resource `name`: the signature by one of
/// `keys`, then the document itself, its expiry against `now` and its
/// version against `highest` (the highest version accepted before).
pub fn check_metadata(
    doc: &[u8],
    signature: &str,
    keys: &[Key],
    name: &str,
    highest: Option<&str>,
    now: SystemTime,
) -> Result<Metadata, Refusal> {
    let sig = Signature::decode(signature)
        .map_err(|e| Refusal::Metadata(format!("the signature file does not parse: {e}")))?;
    let mut verified = false;
    for k in keys {
        match k.key.verify(doc, &sig, false) {
            Ok(()) => {
                verified = true;
                break;
            }
            Err(minisign_verify::Error::UnexpectedKeyId) => continue,
            Err(e) => {
                return Err(Refusal::Signature {
                    key: k.text.clone(),
                    why: e.to_string(),
                });
            }
        }
    }
    if !verified {
        return Err(Refusal::UnknownKey);
    }
    let m: Metadata = serde_json::from_slice(doc)
        .map_err(|e| Refusal::Metadata(format!("it does not parse: {e}")))?;
    let version_ok = !m.version.is_empty()
        && m.version.len() <= 64
        && !m.version.starts_with('.')
        && m.version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'));
    if !version_ok {
        return Err(Refusal::Metadata(format!(
            "version {:?} is not a plain version (letters, digits, . - _ +)",
            m.version
        )));
    }
    if m.name != name {
        return Err(Refusal::Metadata(format!(
            "it describes {:?}, not {name:?}",
            m.name
        )));
    }
    if sha256_problem(&m.sha256).is_some() {
        return Err(Refusal::Metadata(format!(
            "sha256 {:?} is not 64 hex digits",
            m.sha256
        )));
    }
    let expires = humantime::parse_rfc3339_weak(&m.expires)
        .map_err(|e| Refusal::Metadata(format!("expires {:?}: {e}", m.expires)))?;
    if expires <= now {
        return Err(Refusal::Expired {
            expires: m.expires.clone(),
        });
    }
    if let Some(h) = highest
        && version_cmp(&m.version, h) != std::cmp::Ordering::Greater
    {
        return Err(Refusal::Rollback {
            version: m.version.clone(),
            highest: h.to_string(),
        });
    }
    Ok(m)
}

/// A signing key for tests (minisign's own format, unencrypted).
#[cfg(any(test, feature = "test-signer"))]
pub mod test_signer {
    use super::Key;

    pub struct Signer {
        kp: minisign::KeyPair,
    }

    impl Default for Signer {
        fn default() -> Self {
            Signer::new()
        }
    }

    impl Signer {
        pub fn new() -> Signer {
            Signer {
                kp: minisign::KeyPair::generate_unencrypted_keypair().expect("a key"),
            }
        }
        pub fn public(&self) -> Key {
            Key::parse(&self.kp.pk.to_base64()).expect("its own key parses")
        }
        pub fn sign(&self, doc: &[u8]) -> String {
            minisign::sign(
                Some(&self.kp.pk),
                &self.kp.sk,
                std::io::Cursor::new(doc),
                Some("trusted"),
                Some("untrusted"),
            )
            .expect("signs")
            .to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use super::test_signer::Signer;

    pub(crate) fn doc(name: &str, version: &str, expires_in: i64) -> Vec<u8> {
        let expires = if expires_in >= 0 {
            SystemTime::now() + Duration::from_secs(expires_in as u64)
        } else {
            SystemTime::now() - Duration::from_secs((-expires_in) as u64)
        };
        serde_json::to_vec(&Metadata {
            name: name.into(),
            version: version.into(),
            expires: humantime::format_rfc3339_seconds(expires).to_string(),
            sha256: "ab".repeat(32),
            length: 4,
            url: "probe".into(),
        })
        .unwrap()
    }

    #[test]
    fn good_metadata_is_taken_and_each_bad_one_refused_for_its_reason() {
        let s = Signer::new();
        let keys = [s.public()];
        let now = SystemTime::now();
        let d = doc("escape-probe", "1.2.0", 3600);
        let m = check_metadata(&d, &s.sign(&d), &keys, "escape-probe", Some("1.1.9"), now).unwrap();
        assert_eq!(m.version, "1.2.0");

        let kind = |r: Result<Metadata, Refusal>| r.unwrap_err().kind();
        // Tampered after signing.
        let mut t = d.clone();
        t[10] ^= 1;
        assert_eq!(
            kind(check_metadata(
                &t,
                &s.sign(&d),
                &keys,
                "escape-probe",
                None,
                now
            )),
            "signature"
        );
        // Signed by a key that is not configured.
        let other = Signer::new();
        assert_eq!(
            kind(check_metadata(
                &d,
                &other.sign(&d),
                &keys,
                "escape-probe",
                None,
                now
            )),
            "unknown-key"
        );
        // Older or equal version: rollback.
        assert_eq!(
            kind(check_metadata(
                &d,
                &s.sign(&d),
                &keys,
                "escape-probe",
                Some("1.2.0"),
                now
            )),
            "rollback"
        );
        assert_eq!(
            kind(check_metadata(
                &d,
                &s.sign(&d),
                &keys,
                "escape-probe",
                Some("1.10.0"),
                now
            )),
            "rollback"
        );
        // Expired.
        let old = doc("escape-probe", "2.0.0", -10);
        assert_eq!(
            kind(check_metadata(
                &old,
                &s.sign(&old),
                &keys,
                "escape-probe",
                None,
                now
            )),
            "expired"
        );
        // For another resource.
        assert_eq!(
            kind(check_metadata(&d, &s.sign(&d), &keys, "other", None, now)),
            "metadata"
        );
        // A second configured key works too.
        let both = [other.public(), s.public()];
        assert!(check_metadata(&d, &s.sign(&d), &both, "escape-probe", None, now).is_ok());
    }

    #[test]
    fn versions_compare_as_numbers() {
        use std::cmp::Ordering::*;
        assert_eq!(version_cmp("1.10.0", "1.9.9"), Greater);
        assert_eq!(version_cmp("2", "10"), Less);
        assert_eq!(version_cmp("v1.2", "1.2"), Equal);
    }
}
