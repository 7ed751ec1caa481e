//! The container spec's identity: an explicit, versioned, canonical
//! encoding of every field that needs a new container when it changes,
//! and its hash (kept in the LXC config; a container whose hash differs
//! is recreated).
//!
//! The encoding is written out field by field instead of derived from
//! `Debug`, so that a new Rust version, a renamed field or a reordered
//! struct does not change it: only a deliberate change, with
//! [`ENCODING`] bumped, recreates containers after an upgrade.

use sha2::{Digest, Sha256};

use super::ContainerSpec;

/// Names the encoding; bump it when what an encoded field means changes.
pub const ENCODING: &str = "outpost-container-spec/1";

/// One `key=value` line; `\` and newlines in the value are escaped.
fn line(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    out.push('=');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('\n');
}

impl ContainerSpec {
    /// The canonical encoding: one `key=value` line per field, in a fixed
    /// order, lists with an index, the capability set sorted.
    pub fn canonical(&self) -> String {
        let mut o = String::with_capacity(1024);
        let p = |p: &std::path::Path| p.display().to_string();
        line(&mut o, "encoding", ENCODING);
        line(&mut o, "name", &self.name);
        line(&mut o, "lower", &p(&self.lower));
        line(&mut o, "instance", &p(&self.instance));
        for (i, s) in self.search.iter().enumerate() {
            line(&mut o, &format!("search.{i}"), &p(s));
        }
        line(&mut o, "persist.image", &p(&self.persist.image));
        line(&mut o, "persist.bytes", &self.persist.bytes.to_string());
        line(&mut o, "persist.legacy", &p(&self.persist.legacy));
        let ids = match self.ids {
            Some(r) => format!("{}+{}", r.base, r.count),
            None => "host".into(),
        };
        line(&mut o, "ids", &ids);
        line(&mut o, "init", &p(&self.init));
        line(&mut o, "nkey", &p(&self.nkey));
        line(&mut o, "console_log", &p(&self.console_log));
        line(
            &mut o,
            "console_log_size",
            &self.console_log_size.to_string(),
        );
        line(&mut o, "lxc_log", &p(&self.lxc_log));
        for (i, a) in self.entrypoint.iter().enumerate() {
            line(&mut o, &format!("entrypoint.{i}"), a);
        }
        for (k, v) in &self.env {
            line(&mut o, &format!("env.{k}"), v);
        }
        let mut caps = self.capabilities.clone();
        caps.sort();
        caps.dedup();
        line(&mut o, "capabilities", &caps.join(","));
        line(&mut o, "memory_bytes", &self.memory_bytes.to_string());
        // Millicores: a float's text form is not something to hash.
        line(
            &mut o,
            "cpu_millis",
            &((self.cpu * 1000.0).round() as i64).to_string(),
        );
        line(&mut o, "pids", &self.pids.to_string());
        line(&mut o, "transient_bytes", &self.transient_bytes.to_string());
        line(&mut o, "bindings", &self.bindings);
        // Only when there are any, so that the containers of instruments
        // that consume no artifacts keep their hash.
        if let Some(a) = &self.artifacts {
            line(&mut o, "artifacts", &p(a));
        }
        o
    }

    /// A short hash of [`ContainerSpec::canonical`]. Config bodies are not
    /// in it: they are delivered live.
    pub fn hash(&self) -> String {
        hex::encode(&Sha256::digest(self.canonical().as_bytes())[..12])
    }

    /// The hash outpostd 0.1 wrote (of the `Debug` text): a container
    /// defined with it and otherwise unchanged is adopted, not recreated,
    /// on the upgrade to the canonical encoding.
    pub fn legacy_hash(&self) -> String {
        hex::encode(&Sha256::digest(format!("{self:?}").as_bytes())[..12])
    }
}

#[cfg(test)]
mod tests {
    use super::super::PersistSpec;
    use super::*;
    use crate::db::IdRange;
    use std::path::PathBuf;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            name: "beacon".into(),
            lower: PathBuf::from("/var/lib/outpost/images/beacon/0.1.0/rootfs"),
            instance: PathBuf::from("/var/lib/outpost/instances/beacon"),
            search: vec![PathBuf::from("/var/lib/outpost")],
            persist: PersistSpec {
                image: PathBuf::from("/var/lib/outpost/persist/beacon.ext4"),
                bytes: 64 << 20,
                legacy: PathBuf::from("/var/lib/outpost/persist/beacon"),
            },
            ids: Some(IdRange {
                base: 1_500_000_000,
                count: 65536,
            }),
            init: PathBuf::from("/usr/lib/outpost/outpost-init"),
            nkey: PathBuf::from("/var/lib/outpost/secrets/beacon.nkey"),
            console_log: PathBuf::from("/var/lib/outpost/logs/beacon/console.log"),
            console_log_size: 1 << 20,
            lxc_log: PathBuf::from("/var/lib/outpost/logs/beacon/lxc.log"),
            entrypoint: vec!["/usr/bin/beacon".into(), "--verbose".into()],
            env: vec![("OUTPOST_INSTRUMENT".into(), "beacon".into())],
            capabilities: vec!["net_raw".into()],
            memory_bytes: 128 << 20,
            cpu: 0.5,
            pids: 64,
            transient_bytes: 16 << 20,
            bindings: String::new(),
            artifacts: None,
        }
    }

    /// The encoding is a contract: if this changes, every container is
    /// recreated after the upgrade. Change it only with ENCODING bumped.
    #[test]
    fn the_canonical_encoding_is_stable() {
        assert_eq!(
            spec().canonical(),
            "encoding=outpost-container-spec/1\n\
             name=beacon\n\
             lower=/var/lib/outpost/images/beacon/0.1.0/rootfs\n\
             instance=/var/lib/outpost/instances/beacon\n\
             search.0=/var/lib/outpost\n\
             persist.image=/var/lib/outpost/persist/beacon.ext4\n\
             persist.bytes=67108864\n\
             persist.legacy=/var/lib/outpost/persist/beacon\n\
             ids=1500000000+65536\n\
             init=/usr/lib/outpost/outpost-init\n\
             nkey=/var/lib/outpost/secrets/beacon.nkey\n\
             console_log=/var/lib/outpost/logs/beacon/console.log\n\
             console_log_size=1048576\n\
             lxc_log=/var/lib/outpost/logs/beacon/lxc.log\n\
             entrypoint.0=/usr/bin/beacon\n\
             entrypoint.1=--verbose\n\
             env.OUTPOST_INSTRUMENT=beacon\n\
             capabilities=net_raw\n\
             memory_bytes=134217728\n\
             cpu_millis=500\n\
             pids=64\n\
             transient_bytes=16777216\n\
             bindings=\n"
        );
        assert_eq!(spec().hash().len(), 24);
    }

    #[test]
    fn what_changes_a_container_changes_the_hash_and_order_of_capabilities_does_not() {
        let base = spec().hash();
        let mut s = spec();
        s.memory_bytes += 1;
        assert_ne!(s.hash(), base);
        let mut s = spec();
        s.entrypoint.push("--x".into());
        assert_ne!(s.hash(), base);
        let mut s = spec();
        s.capabilities = vec!["net_raw".into(), "net_admin".into()];
        let mut t = spec();
        t.capabilities = vec!["net_admin".into(), "net_raw".into()];
        assert_eq!(s.hash(), t.hash());
        // A value cannot fake a line of its own.
        let mut s = spec();
        s.bindings = "x\npids=1".into();
        assert!(s.canonical().contains("bindings=x\\npids=1\n"));
    }
}
