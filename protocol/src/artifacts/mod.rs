//! Artifacts: files one instrument fetches for others (new probe binaries,
//! rules). Three parties must agree before any file moves:
//!
//! - the provider's manifest says it provides artifacts
//!   (`[artifacts] provides = true`; only such an instrument's
//!   announcements are heard);
//! - each consumer's manifest names what it consumes
//!   (`[artifacts] consumes = ["escape-probe"]`; it finds them read-only
//!   at `/run/artifacts/<name>/`);
//! - the sensor file routes one to the other and says how the platform
//!   verifies what the provider hands over (`[[artifact]]`): a pinned
//!   sha256, or the minisign keys its signed metadata must verify with.

pub mod verify;

use serde::{Deserialize, Serialize};

use crate::names::{self, NAME_FIX};
use crate::validate::Collector;

/// Where a consumer finds its artifacts.
pub const MOUNT: &str = "/run/artifacts";

/// What an image's manifest says about artifacts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ArtifactsSpec {
    /// The instrument fetches artifacts for others (a downloader).
    #[serde(default)]
    pub provides: bool,
    /// Artifact names it takes, found at `/run/artifacts/<name>/`.
    #[serde(default)]
    pub consumes: Vec<String>,
}

/// One route in the sensor file (`[[artifact]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ArtifactRoute {
    /// The artifact's name, as consumers know it.
    pub name: String,
    /// The providing instrument.
    pub from: String,
    /// Its resource name there (default: `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The consuming instruments.
    pub to: Vec<String>,
    /// How the platform verifies it: a pinned sha256 …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// … or the minisign public keys its signed metadata must verify with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
}

impl ArtifactRoute {
    pub fn resource(&self) -> &str {
        self.resource.as_deref().unwrap_or(&self.name)
    }
}

/// Checks the routes alone (names, one way to verify, instruments that
/// exist in the same sensor file).
pub(crate) fn validate(routes: &[ArtifactRoute], instruments: &[&str], c: &mut Collector) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, r) in routes.iter().enumerate() {
        let at = |f: &str| format!("artifact[{i}].{f}");
        for (field, v) in [("name", &r.name), ("from", &r.from)] {
            if let Some(p) = names::name_problem(v) {
                c.push(at(field), p, NAME_FIX);
            }
        }
        if let Some(res) = &r.resource
            && let Some(p) = names::name_problem(res)
        {
            c.push(at("resource"), p, NAME_FIX);
        }
        if !seen.insert(&r.name) {
            c.push(
                at("name"),
                format!("artifact {:?} is routed twice", r.name),
                "route each artifact once, with every consumer in `to`",
            );
        }
        if !instruments.contains(&r.from.as_str()) {
            c.push(
                at("from"),
                format!("no instrument {:?} in this sensor file", r.from),
                "name the downloader instrument that fetches it",
            );
        }
        if r.to.is_empty() {
            c.push(at("to"), "is empty", "name the instruments that consume it");
        }
        for (k, t) in r.to.iter().enumerate() {
            if !instruments.contains(&t.as_str()) {
                c.push(
                    format!("artifact[{i}].to[{k}]"),
                    format!("no instrument {t:?} in this sensor file"),
                    "name an instrument of this sensor file",
                );
            } else if t == &r.from {
                c.push(
                    format!("artifact[{i}].to[{k}]"),
                    "is the provider itself",
                    "route it to other instruments",
                );
            }
        }
        match (&r.sha256, r.keys.is_empty()) {
            (Some(_), false) | (None, true) => c.push(
                at("sha256"),
                "give exactly one of sha256 and keys",
                "pin the file's sha256, or list the minisign public keys releases are signed with",
            ),
            (Some(h), true) => {
                if h.len() != 64
                    || !h
                        .chars()
                        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
                {
                    c.push(
                        at("sha256"),
                        format!("{h:?} is not 64 lowercase hex digits"),
                        "use `sha256sum FILE`",
                    );
                }
            }
            (None, false) => {
                for (k, key) in r.keys.iter().enumerate() {
                    if minisign_key_problem(key) {
                        c.push(
                            format!("artifact[{i}].keys[{k}]"),
                            format!("{key:?} is not a minisign public key"),
                            "copy the base64 line of the .pub file minisign -G wrote",
                        );
                    }
                }
            }
        }
    }
}

/// Whether `key` is not a minisign public key's base64 line (42 bytes:
/// the algorithm `Ed`, an 8-byte key id and a 32-byte key).
fn minisign_key_problem(key: &str) -> bool {
    use base64::Engine;
    match base64::engine::general_purpose::STANDARD.decode(key.trim()) {
        Ok(b) => b.len() != 42 || &b[..2] != b"Ed",
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use crate::SensorSpec;

    const KEY: &str = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3";

    fn spec(routes: &str) -> Result<(), String> {
        let text = format!(
            "[sensor]\nname = \"s\"\n\n[[instrument]]\nname = \"dl\"\nimage = \"downloader\"\nversion = \"0.1.0\"\n\n\
             [[instrument]]\nname = \"b1\"\nimage = \"beacon\"\nversion = \"0.1.0\"\n\n{routes}"
        );
        SensorSpec::parse(&text)
            .map_err(|e| e.to_string())?
            .validate()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_route_names_real_instruments_and_one_way_to_verify() {
        spec(&format!("[[artifact]]\nname = \"escape-probe\"\nfrom = \"dl\"\nto = [\"b1\"]\nkeys = [\"{KEY}\"]\n")).unwrap();
        spec(&format!("[[artifact]]\nname = \"escape-probe\"\nfrom = \"dl\"\nto = [\"b1\"]\nsha256 = \"{}\"\n", "ab".repeat(32))).unwrap();
        let e = spec(&format!(
            "[[artifact]]\nname = \"escape-probe\"\nfrom = \"dl\"\nto = [\"b1\", \"dl\", \"ghost\"]\nkeys = [\"{KEY}\"]\nsha256 = \"{}\"\n\n\
             [[artifact]]\nname = \"escape-probe\"\nfrom = \"nobody\"\nto = [\"b1\"]\nkeys = [\"not a key\"]\n",
            "ab".repeat(32)
        ))
        .unwrap_err();
        for want in [
            "artifact[0].to[1]",
            "artifact[0].to[2]",
            "artifact[0].sha256",
            "artifact[1].name",
            "artifact[1].from",
            "artifact[1].keys[0]",
        ] {
            assert!(e.contains(want), "no {want} in: {e}");
        }
        let e = spec("[[artifact]]\nname = \"../x\"\nfrom = \"dl\"\nto = []\n").unwrap_err();
        for want in ["artifact[0].name", "artifact[0].to", "artifact[0].sha256"] {
            assert!(e.contains(want), "no {want} in: {e}");
        }
    }
}
