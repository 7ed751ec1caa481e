//! The downloader's configuration: the resources it keeps fetching, how
//! each one is verified, and how it reaches them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::verify::Key;

/// The whole config body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default)]
    pub resources: Vec<Resource>,
    /// An explicit proxy (`http://host:port`); the environment's proxy
    /// settings are never used.
    #[serde(default)]
    pub proxy: Option<String>,
    /// A CA certificate (PEM) trusted besides the system's roots.
    #[serde(default)]
    pub extra_ca: Option<String>,
}

/// One resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Resource {
    /// Its name: the artifact's name for its consumers, and a file name.
    pub name: String,
    /// `http://` or `https://`: the artifact itself (with `sha256`), or its
    /// signed metadata (with `keys`; the signature at `<url>.minisig`).
    pub url: String,
    /// How often to look for a new version.
    #[serde(with = "humantime_serde", default = "default_every")]
    pub every: Duration,
    pub verify: Verify,
    /// Largest artifact accepted.
    #[serde(default = "default_max_size")]
    pub max_size: bytesize::ByteSize,
    /// How many versions to keep (the newest first).
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// Redirects to another origin are refused unless it is listed here
    /// (`https://host[:port]`).
    #[serde(default)]
    pub allow_redirects_to: Vec<String>,
    /// Slower than this (bytes/s, over the whole transfer after its first
    /// 10 s) is refused.
    #[serde(default = "default_min_rate")]
    pub min_rate: u64,
    /// The whole fetch may take at most this long.
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
}

/// How a resource is verified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum Verify {
    /// The artifact's sha256, pinned.
    Sha256(String),
    /// Minisign-signed metadata; these public keys may sign it.
    Keys(Vec<String>),
}

fn default_every() -> Duration {
    Duration::from_secs(3600)
}
fn default_max_size() -> bytesize::ByteSize {
    bytesize::ByteSize::mib(256)
}
fn default_keep() -> usize {
    3
}
fn default_min_rate() -> u64 {
    1024
}
fn default_timeout() -> Duration {
    Duration::from_secs(600)
}

pub use crate::verify::sha256_problem;

/// Why `name` cannot name a resource (it becomes a file name and a
/// subject token), or `None`.
pub fn name_problem(name: &str) -> Option<String> {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    if name.is_empty() || name.len() > 64 {
        Some(format!("{name:?} must be 1 to 64 characters"))
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) || !name.chars().all(ok) {
        Some(format!(
            "{name:?} may hold only lowercase letters, digits, '-' and '_', starting with a letter"
        ))
    } else {
        None
    }
}

impl Config {
    /// Every problem, each naming its field and the fix.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for (i, r) in self.resources.iter().enumerate() {
            let at = format!("resources[{i}]");
            if let Some(p) = name_problem(&r.name) {
                out.push(format!(
                    "{at}.name: {p} (fix: a plain name, e.g. escape-probe)"
                ));
            } else if !names.insert(r.name.clone()) {
                out.push(format!(
                    "{at}.name: {:?} appears twice (fix: one entry per resource)",
                    r.name
                ));
            }
            match reqwest::Url::parse(&r.url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                Ok(u) => out.push(format!(
                    "{at}.url: {:?} is not http or https with a host (fix: e.g. https://updates.example.org/probe.json)",
                    u.as_str()
                )),
                Err(e) => out.push(format!("{at}.url: {:?}: {e}", r.url)),
            }
            match &r.verify {
                Verify::Sha256(h) => {
                    if let Some(p) = sha256_problem(h) {
                        out.push(format!("{at}.verify.sha256: {p} (fix: `sha256sum FILE`)"));
                    }
                }
                Verify::Keys(keys) => {
                    if keys.is_empty() {
                        out.push(format!(
                            "{at}.verify.keys: is empty (fix: the public key(s) releases are signed with, from minisign's .pub file)"
                        ));
                    }
                    for (k, text) in keys.iter().enumerate() {
                        if let Err(e) = Key::parse(text) {
                            out.push(format!("{at}.verify.keys[{k}]: {e}"));
                        }
                    }
                }
            }
            if r.keep == 0 {
                out.push(format!(
                    "{at}.keep: is 0 (fix: keep at least the version in use, 1)"
                ));
            }
            if r.every < Duration::from_secs(1) {
                out.push(format!("{at}.every: is under 1s (fix: e.g. \"1h\")"));
            }
            for (k, o) in r.allow_redirects_to.iter().enumerate() {
                if origin_of(o).is_none() {
                    out.push(format!(
                        "{at}.allow-redirects-to[{k}]: {o:?} is not an http(s) origin (fix: e.g. https://cdn.example.org)"
                    ));
                }
            }
        }
        if let Some(p) = &self.proxy
            && reqwest::Proxy::all(p).is_err()
        {
            out.push(format!(
                "proxy: {p:?} is not a proxy URL (fix: e.g. http://proxy:3128)"
            ));
        }
        out
    }

    /// The keys of `r`, parsed (the config was checked).
    pub fn keys(r: &Resource) -> Vec<Key> {
        match &r.verify {
            Verify::Keys(k) => k.iter().filter_map(|t| Key::parse(t).ok()).collect(),
            Verify::Sha256(_) => Vec::new(),
        }
    }
}

/// `scheme://host:port` of a URL, the port always written.
pub fn origin_of(url: &str) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    if !matches!(u.scheme(), "http" | "https") {
        return None;
    }
    Some(format!(
        "{}://{}:{}",
        u.scheme(),
        u.host_str()?,
        u.port_or_known_default()?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_names_every_problem_with_its_field() {
        let c: Config = serde_json::from_value(serde_json::json!({
            "resources": [
                {"name": "../etc", "url": "ftp://x/y", "verify": {"sha256": "abc"}, "keep": 0},
                {"name": "probe", "url": "https://u.example/p.json", "verify": {"keys": ["nope"]},
                 "allow-redirects-to": ["not a url"]},
                {"name": "probe", "url": "https://u.example/q", "verify": {"keys": []}, "every": "10ms"},
            ],
            "proxy": "::::"
        }))
        .unwrap();
        let p = c.problems().join("\n");
        for want in [
            "resources[0].name",
            "resources[0].url",
            "resources[0].verify.sha256",
            "resources[0].keep",
            "resources[1].verify.keys[0]",
            "resources[1].allow-redirects-to[0]",
            "resources[2].name: \"probe\" appears twice",
            "resources[2].verify.keys: is empty",
            "resources[2].every",
            "proxy:",
        ] {
            assert!(p.contains(want), "no {want} in:\n{p}");
        }
        assert!(serde_json::from_value::<Config>(serde_json::json!({"resources": [{"name": "a", "url": "https://x", "verify": {"sha256": "00"}, "color": 1}]})).is_err());
    }

    #[test]
    fn origins_always_carry_the_port() {
        assert_eq!(
            origin_of("https://a.example/x").as_deref(),
            Some("https://a.example:443")
        );
        assert_eq!(
            origin_of("http://127.0.0.1:8080/").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(origin_of("file:///etc/passwd"), None);
    }
}

#[cfg(test)]
mod image_schema {
    /// The image's schema and this crate's parser agree on a config.
    #[test]
    fn the_images_schema_takes_what_the_downloader_takes() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../images/downloader/manifest.toml");
        let m = outpost_protocol::Manifest::parse_valid(&std::fs::read_to_string(path).unwrap())
            .unwrap();
        let good = serde_json::json!({
            "resources": [{
                "name": "escape-probe", "url": "https://updates.example.org/probe.json",
                "every": "1h", "max-size": "64MiB", "keep": 3,
                "verify": {"keys": ["RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3"]},
            }, {
                "name": "rules", "url": "http://10.0.0.1/rules.tar",
                "verify": {"sha256": "ab".repeat(32)},
            }],
        });
        m.check_config(&good).unwrap();
        let parsed: super::Config = serde_json::from_value(good).unwrap();
        assert_eq!(parsed.problems(), Vec::<String>::new());
        let both = serde_json::json!({"resources": [{"name": "x", "url": "https://a/b",
            "verify": {"keys": ["k"], "sha256": "ab".repeat(32)}}]});
        assert!(m.check_config(&both).is_err());
        assert!(serde_json::from_value::<super::Config>(both).is_err());
    }
}
