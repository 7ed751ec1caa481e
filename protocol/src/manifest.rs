//! The instrument manifest: `manifest.toml` at the top of every image.
//!
//! Parsing ([`Manifest::parse`]) refuses unknown fields and wrong types;
//! validation ([`Manifest::validate`]) then checks what types cannot say
//! (names, ranges, combinations) and reports every problem at once, each with
//! the field and the fix.
//!
//! ```
//! use outpost_protocol::Manifest;
//! let m = Manifest::parse(r#"
//!     name = "example"
//!     version = "0.1.0"
//!     entrypoint = ["/usr/bin/example-instrument"]
//! "#).unwrap();
//! m.validate().unwrap();
//! assert_eq!(m.limits.pids, 128);
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::names::{self, NAME_FIX, ROLE_FIX};
use crate::validate::{Collector, Invalid};

/// An instrument manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    /// Image and instrument kind name, e.g. `beacon`.
    pub name: String,
    /// Semantic version of the image, e.g. `1.2.0`.
    pub version: String,
    /// Program and arguments run inside the container; the program is an
    /// absolute path inside the image.
    pub entrypoint: Vec<String>,
    /// Linux capabilities the instrument keeps (lowercase, without `cap_`);
    /// every other capability is dropped.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Whether the instrument may send on its interfaces (`active`) or only
    /// listen (`passive`).
    #[serde(default)]
    pub network: NetworkAccess,
    /// Interfaces the instrument needs, by role.
    #[serde(default)]
    pub interfaces: Vec<InterfaceRequirement>,
    #[serde(default)]
    pub storage: Storage,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub retention: Retention,
    #[serde(default)]
    pub config: ConfigSpec,
    #[serde(default)]
    pub permissions: Permissions,
    /// What the payload of each event kind the instrument publishes looks
    /// like (`[events.<kind>] schema = …`): the fleet checks every event
    /// against it and marks the ones that do not match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub events: BTreeMap<String, EventSpec>,
    /// Whether it provides artifacts for others, and which it consumes.
    #[serde(default, skip_serializing_if = "is_default")]
    pub artifacts: crate::artifacts::ArtifactsSpec,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// One event kind's contract.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EventSpec {
    /// JSON Schema of the event's payload.
    #[serde(default)]
    pub schema: Option<serde_json::Value>,
}

/// Whether an instrument may transmit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkAccess {
    /// May send and receive on its interfaces.
    Active,
    /// Only receives; no interface of it may carry `tx`.
    #[default]
    Passive,
}

/// One interface role the instrument needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct InterfaceRequirement {
    /// Name of the interface inside the container, e.g. `seg0`.
    pub role: String,
    /// What kind of binding the role expects.
    #[serde(rename = "type")]
    pub kind: InterfaceType,
    /// `rx`, `tx` or both.
    pub capabilities: Vec<InterfaceCapability>,
    /// Shown to the operator who binds the role.
    #[serde(default)]
    pub description: String,
}

/// Interface binding types (see DESIGN.md, network interfaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InterfaceType {
    Phy,
    Bridge,
    Macvlan,
    Mirror,
}

impl InterfaceType {
    /// The name used in manifests and sensor files.
    pub fn as_str(self) -> &'static str {
        match self {
            InterfaceType::Phy => "phy",
            InterfaceType::Bridge => "bridge",
            InterfaceType::Macvlan => "macvlan",
            InterfaceType::Mirror => "mirror",
        }
    }
}

impl std::fmt::Display for InterfaceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an instrument may do on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InterfaceCapability {
    Rx,
    Tx,
}

/// Storage sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Storage {
    /// Budget for `/var/lib/instrument` (kept across restarts and upgrades).
    #[serde(serialize_with = "crate::size::serialize")]
    pub persistent: ByteSize,
    /// Size of the tmpfs at `/run/instrument` (empty at every start).
    #[serde(serialize_with = "crate::size::serialize")]
    pub transient: ByteSize,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            persistent: ByteSize::mib(64),
            transient: ByteSize::mib(16),
        }
    }
}

/// Resource limits applied through cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Limits {
    /// Memory limit.
    #[serde(serialize_with = "crate::size::serialize")]
    pub memory: ByteSize,
    /// CPU limit in cores (0.5 = half a core).
    pub cpu: f64,
    /// Maximum number of processes and threads.
    pub pids: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: ByteSize::mib(128),
            cpu: 1.0,
            pids: 128,
        }
    }
}

/// Health-check timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Health {
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
        }
    }
}

/// Time-based retention of persistent data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Retention {
    /// Whether the instrument answers retention requests.
    #[serde(default)]
    pub supported: bool,
    /// How long data is kept unless the operator says otherwise.
    #[serde(default, with = "humantime_serde")]
    pub default_period: Option<Duration>,
    /// Whether the operator may turn retention off (`retention = "off"`):
    /// an image that holds personal data says `required = true`.
    #[serde(default)]
    pub required: bool,
    /// How long one retention run may take before it counts as failed.
    #[serde(default = "Retention::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl Retention {
    fn default_timeout() -> Duration {
        Duration::from_secs(60)
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            supported: false,
            default_period: None,
            required: false,
            timeout: Self::default_timeout(),
        }
    }
}

/// The instrument's configuration contract.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigSpec {
    /// JSON Schema every config body must satisfy. Without one, the
    /// instrument takes no configuration.
    #[serde(default)]
    pub schema: Option<serde_json::Value>,
}

/// Which peers the instrument may hear and call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Permissions {
    /// Instruments whose events this one may subscribe to.
    #[serde(default)]
    pub read_events: Vec<String>,
    /// Instruments whose RPC methods this one may call.
    #[serde(default)]
    pub call: Vec<String>,
}

/// Manifest parse failure.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not TOML, or a field is unknown, missing or of the wrong type.
    #[error(
        "manifest.toml cannot be read: {0}\n(fix: compare it with the manifest reference in the README)"
    )]
    Parse(String),
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

/// Capability names Linux knows, without `cap_`.
pub const KNOWN_CAPABILITIES: &[&str] = &[
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

/// Capabilities an instrument may never keep, with the reason: each one
/// lets a process reach past its container into the host.
pub const FORBIDDEN_CAPABILITIES: &[(&str, &str)] = &[
    (
        "sys_admin",
        "it allows mounts, namespaces and most host escapes",
    ),
    ("sys_module", "it loads kernel modules"),
    ("sys_rawio", "it gives raw access to devices and I/O ports"),
    ("sys_boot", "it reboots the host"),
    ("sys_time", "it sets the host clock"),
    (
        "mac_admin",
        "it reconfigures the host's mandatory access control",
    ),
    (
        "mac_override",
        "it bypasses the host's mandatory access control",
    ),
    ("dac_read_search", "it opens host files by handle"),
    ("bpf", "it loads BPF programs into the host kernel"),
    ("perfmon", "it observes host-wide performance events"),
    ("syslog", "it reads and clears the host kernel log"),
    ("audit_control", "it reconfigures host auditing"),
    ("sys_pacct", "it switches host process accounting"),
];

/// Storage and limit bounds the platform enforces.
pub const MIN_MEMORY: ByteSize = ByteSize::mib(4);
pub const MAX_TRANSIENT: ByteSize = ByteSize::gib(4);
pub const MAX_CPU: f64 = 256.0;
pub const MIN_HEALTH_INTERVAL: Duration = Duration::from_secs(1);

impl Manifest {
    /// Parses `manifest.toml` text. Unknown fields are an error.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        toml::from_str(text).map_err(|e| ManifestError::Parse(e.to_string()))
    }

    /// Parses and validates in one step.
    pub fn parse_valid(text: &str) -> Result<Manifest, ManifestError> {
        let m = Self::parse(text)?;
        m.validate()?;
        Ok(m)
    }

    /// Serializes back to TOML (used by the image builder).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a manifest always serializes")
    }

    /// Whether the instrument has the given capability on role `role`.
    pub fn interface(&self, role: &str) -> Option<&InterfaceRequirement> {
        self.interfaces.iter().find(|i| i.role == role)
    }

    /// Checks everything the types cannot, reporting every problem.
    pub fn validate(&self) -> Result<(), Invalid> {
        let mut c = Collector::default();

        if let Some(p) = names::name_problem(&self.name) {
            c.push("name", p, NAME_FIX);
        }
        if let Err(e) = semver::Version::parse(&self.version) {
            c.push(
                "version",
                format!("{:?} is not a semantic version: {e}", self.version),
                "use MAJOR.MINOR.PATCH, e.g. \"1.0.0\"",
            );
        }
        self.validate_entrypoint(&mut c);
        self.validate_capabilities(&mut c);
        self.validate_interfaces(&mut c);
        self.validate_resources(&mut c);
        self.validate_config_schema(&mut c);
        self.validate_permissions(&mut c);
        for (i, a) in self.artifacts.consumes.iter().enumerate() {
            if let Some(p) = names::name_problem(a) {
                c.push(format!("artifacts.consumes[{i}]"), p, NAME_FIX);
            }
        }

        c.finish(format!("manifest of image {:?}", self.name))
    }

    fn validate_entrypoint(&self, c: &mut Collector) {
        match self.entrypoint.first() {
            None => c.push(
                "entrypoint",
                "is empty",
                "name the program to run, e.g. [\"/usr/bin/my-instrument\"]",
            ),
            Some(prog) if !prog.starts_with('/') => c.push(
                "entrypoint[0]",
                format!("{prog:?} is not an absolute path"),
                "give the program's absolute path inside the image, e.g. \"/usr/bin/my-instrument\"",
            ),
            Some(prog) if prog.split('/').any(|part| part == "..") => c.push(
                "entrypoint[0]",
                format!("{prog:?} contains '..'"),
                "give a plain absolute path inside the image",
            ),
            Some(_) => {}
        }
        if self.entrypoint.iter().any(|a| a.contains('\0')) {
            c.push(
                "entrypoint",
                "an argument contains a NUL byte",
                "remove the NUL byte",
            );
        }
    }

    fn validate_capabilities(&self, c: &mut Collector) {
        let mut seen = BTreeSet::new();
        for (i, cap) in self.capabilities.iter().enumerate() {
            let field = format!("capabilities[{i}]");
            let bare = cap.strip_prefix("cap_").unwrap_or(cap);
            if bare != cap || cap.chars().any(|ch| ch.is_ascii_uppercase()) {
                c.push(
                    &field,
                    format!("{cap:?} is not written in the manifest's form"),
                    format!(
                        "write it lowercase without the cap_ prefix: {:?}",
                        bare.to_lowercase()
                    ),
                );
                continue;
            }
            if !KNOWN_CAPABILITIES.contains(&cap.as_str()) {
                c.push(
                    &field,
                    format!("{cap:?} is not a Linux capability"),
                    "use a name from capabilities(7), lowercase without cap_, e.g. \"net_raw\"",
                );
                continue;
            }
            if let Some((_, why)) = FORBIDDEN_CAPABILITIES.iter().find(|(n, _)| *n == cap) {
                c.push(
                    &field,
                    format!("{cap:?} may not be kept: {why}"),
                    "remove it; instruments get only capabilities that stay inside their container",
                );
            }
            if !seen.insert(cap) {
                c.push(&field, format!("{cap:?} is listed twice"), "list it once");
            }
        }
    }

    fn validate_interfaces(&self, c: &mut Collector) {
        let mut roles = BTreeSet::new();
        for (i, itf) in self.interfaces.iter().enumerate() {
            let field = format!("interfaces[{i}]");
            if let Some(p) = names::role_problem(&itf.role) {
                c.push(format!("{field}.role"), p, ROLE_FIX);
            } else if itf.role == "lo" {
                c.push(
                    format!("{field}.role"),
                    "\"lo\" is the container's loopback",
                    "choose another role name, e.g. seg0",
                );
            }
            if !roles.insert(&itf.role) {
                c.push(
                    format!("{field}.role"),
                    format!("role {:?} is declared twice", itf.role),
                    "give every interface role its own name",
                );
            }
            if itf.capabilities.is_empty() {
                c.push(
                    format!("{field}.capabilities"),
                    "is empty",
                    "list \"rx\", \"tx\" or both",
                );
            }
            let caps: BTreeSet<_> = itf.capabilities.iter().collect();
            if caps.len() != itf.capabilities.len() {
                c.push(
                    format!("{field}.capabilities"),
                    "lists a capability twice",
                    "list each of \"rx\" and \"tx\" at most once",
                );
            }
            let tx = caps.contains(&InterfaceCapability::Tx);
            if tx && self.network == NetworkAccess::Passive {
                c.push(
                    format!("{field}.capabilities"),
                    format!(
                        "role {:?} asks for \"tx\" but the instrument is passive",
                        itf.role
                    ),
                    "remove \"tx\", or set network = \"active\" if the instrument must send",
                );
            }
            if !tx && itf.kind != InterfaceType::Mirror && !itf.capabilities.is_empty() {
                c.push(
                    format!("{field}.type"),
                    format!(
                        "role {:?} is receive-only, and only a mirror is receive-only by the kernel",
                        itf.role
                    ),
                    "make it a mirror role, or give it \"tx\" (in an active instrument)",
                );
            }
            if tx && itf.kind == InterfaceType::Mirror {
                c.push(
                    format!("{field}.capabilities"),
                    format!("role {:?} is a mirror, which is receive-only", itf.role),
                    "remove \"tx\" from a mirror role",
                );
            }
        }
    }

    fn validate_resources(&self, c: &mut Collector) {
        if self.storage.transient.as_u64() == 0 {
            c.push(
                "storage.transient",
                "is zero",
                "give /run/instrument a size, e.g. \"16MiB\"",
            );
        } else if self.storage.transient > MAX_TRANSIENT {
            c.push(
                "storage.transient",
                format!(
                    "{} is more than the {} a memory-backed tmpfs may take",
                    self.storage.transient, MAX_TRANSIENT
                ),
                "use persistent storage for large data",
            );
        }
        if self.limits.memory < MIN_MEMORY {
            c.push(
                "limits.memory",
                format!(
                    "{} is below the minimum of {MIN_MEMORY}",
                    self.limits.memory
                ),
                "give at least \"4MiB\"",
            );
        }
        if !(self.limits.cpu > 0.0 && self.limits.cpu <= MAX_CPU) {
            c.push(
                "limits.cpu",
                format!("{} is not between 0 and {MAX_CPU} cores", self.limits.cpu),
                "give a fraction of cores, e.g. 0.5",
            );
        }
        if self.limits.pids == 0 {
            c.push(
                "limits.pids",
                "is zero",
                "allow at least the instrument's own process, e.g. 32",
            );
        }
        if self.health.interval < MIN_HEALTH_INTERVAL {
            c.push(
                "health.interval",
                format!("{:?} is shorter than 1s", self.health.interval),
                "check at most once a second",
            );
        }
        if self.health.timeout.is_zero() || self.health.timeout >= self.health.interval {
            c.push(
                "health.timeout",
                format!(
                    "{:?} is not between 0 and the interval ({:?})",
                    self.health.timeout, self.health.interval
                ),
                "make the timeout shorter than the interval",
            );
        }
        match (self.retention.supported, self.retention.default_period) {
            (true, None) => c.push(
                "retention.default-period",
                "is missing although retention is supported",
                "say how long data is kept by default, e.g. \"7d\"",
            ),
            (false, Some(_)) => c.push(
                "retention.default-period",
                "is set although retention is not supported",
                "set retention.supported = true or remove the period",
            ),
            (true, Some(p)) if p.is_zero() => c.push(
                "retention.default-period",
                "is zero",
                "give a period, e.g. \"7d\"",
            ),
            _ => {}
        }
        if self.retention.required && !self.retention.supported {
            c.push(
                "retention.required",
                "is true although retention is not supported",
                "set retention.supported = true (and answer retention requests) or remove required",
            );
        }
        if self.retention.timeout.is_zero() {
            c.push(
                "retention.timeout",
                "is zero",
                "say how long one retention run may take, e.g. \"60s\"",
            );
        }
    }

    fn validate_config_schema(&self, c: &mut Collector) {
        let events = self.events.iter().map(|(kind, e)| {
            (
                format!("events.{kind}.schema"),
                e.schema.as_ref(),
                Some(kind),
            )
        });
        let all = std::iter::once((
            "config.schema".to_string(),
            self.config.schema.as_ref(),
            None,
        ))
        .chain(events);
        for (field, schema, kind) in all {
            if let Some(k) = kind
                && let Some(p) = crate::envelope::kind_problem(k)
            {
                c.push(
                    format!("events.{k}"),
                    p,
                    "name the event kind in lowercase, e.g. [events.escape]",
                );
            }
            let Some(schema) = schema else { continue };
            if !schema.is_object() {
                c.push(
                    field,
                    "is not a JSON Schema object",
                    "write the schema as a table, e.g. { type = \"object\" }",
                );
            } else if let Err(e) = jsonschema::validator_for(schema) {
                c.push(
                    field,
                    format!("is not a valid JSON Schema: {e}"),
                    "fix the schema so a JSON Schema validator accepts it",
                );
            }
        }
    }

    fn validate_permissions(&self, c: &mut Collector) {
        let lists = [
            ("permissions.read-events", &self.permissions.read_events),
            ("permissions.call", &self.permissions.call),
        ];
        for (field, list) in lists {
            for (i, peer) in list.iter().enumerate() {
                if let Some(p) = names::name_problem(peer) {
                    c.push(format!("{field}[{i}]"), p, NAME_FIX);
                } else if *peer == self.name {
                    c.push(
                        format!("{field}[{i}]"),
                        "names the instrument itself",
                        "remove it; an instrument always reaches its own subjects",
                    );
                }
            }
        }
    }

    /// The compiled schema of event `kind`'s payload, when the manifest
    /// declares one (it compiled when the manifest was validated).
    pub fn event_validator(&self, kind: &str) -> Option<jsonschema::Validator> {
        jsonschema::validator_for(self.events.get(kind)?.schema.as_ref()?).ok()
    }

    /// Validates a config body against the manifest's schema.
    pub fn check_config(&self, config: &serde_json::Value) -> Result<(), Vec<String>> {
        let empty = match config {
            serde_json::Value::Null => true,
            serde_json::Value::Object(m) => m.is_empty(),
            _ => false,
        };
        let Some(schema) = &self.config.schema else {
            return if empty {
                Ok(())
            } else {
                Err(vec![format!(
                    "image {:?} declares no config schema, so it takes no config; remove the config",
                    self.name
                )])
            };
        };
        let validator = jsonschema::validator_for(schema)
            .map_err(|e| vec![format!("the image's config schema is invalid: {e}")])?;
        let body = if config.is_null() {
            serde_json::Value::Object(Default::default())
        } else {
            config.clone()
        };
        let errors: Vec<String> = validator
            .iter_errors(&body)
            .map(|e| {
                let path = e.instance_path().to_string();
                let at = if path.is_empty() {
                    "config".into()
                } else {
                    format!("config{path}")
                };
                format!("{at}: {e}")
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
        name = "beacon"
        version = "1.2.0"
        entrypoint = ["/usr/bin/beacon", "--verbose"]
        capabilities = ["net_raw"]
        network = "active"

        [[interfaces]]
        role = "seg0"
        type = "bridge"
        capabilities = ["rx", "tx"]
        description = "the segment that must stay isolated"

        [storage]
        persistent = "256MiB"
        transient = "8MiB"

        [limits]
        memory = "64MiB"
        cpu = 0.25
        pids = 32

        [health]
        interval = "5s"
        timeout = "1s"

        [retention]
        supported = true
        default-period = "7days"

        [config.schema]
        type = "object"
        required = ["interval"]
        properties.interval = { type = "integer", minimum = 1 }

        [permissions]
        read-events = ["downloader"]
        call = ["downloader"]
    "#;

    fn fields(text: &str) -> Vec<String> {
        let m = Manifest::parse(text).expect("parses");
        match m.validate() {
            Ok(()) => vec![],
            Err(inv) => inv.errors.into_iter().map(|e| e.field).collect(),
        }
    }

    #[test]
    fn full_manifest_parses_and_validates() {
        let m = Manifest::parse_valid(FULL).unwrap();
        assert_eq!(m.name, "beacon");
        assert_eq!(m.network, NetworkAccess::Active);
        assert_eq!(m.interfaces[0].kind, InterfaceType::Bridge);
        assert_eq!(m.storage.persistent, ByteSize::mib(256));
        assert_eq!(m.limits.cpu, 0.25);
        assert_eq!(m.health.interval, Duration::from_secs(5));
        assert_eq!(
            m.retention.default_period,
            Some(Duration::from_secs(7 * 86400))
        );
        assert_eq!(m.permissions.call, vec!["downloader"]);
    }

    #[test]
    fn minimal_manifest_gets_defaults() {
        let m =
            Manifest::parse_valid("name = \"x\"\nversion = \"0.1.0\"\nentrypoint = [\"/bin/x\"]\n")
                .unwrap();
        assert_eq!(m.network, NetworkAccess::Passive);
        assert!(m.capabilities.is_empty());
        assert_eq!(m.storage, Storage::default());
        assert_eq!(m.health, Health::default());
    }

    #[test]
    fn event_schemas_are_declared_per_kind_and_checked() {
        let base = "name = \"x\"\nversion = \"0.1.0\"\nentrypoint = [\"/bin/x\"]\n";
        let m = Manifest::parse_valid(&format!(
            "{base}[events.escape]\nschema = {{ type = \"object\", required = [\"route\"] }}\n"
        ))
        .unwrap();
        let v = m.event_validator("escape").unwrap();
        assert!(v.is_valid(&serde_json::json!({"route": "dns"})));
        assert!(!v.is_valid(&serde_json::json!({"other": 1})));
        assert!(m.event_validator("started").is_none());
        let again = Manifest::parse_valid(&m.to_toml()).unwrap();
        assert_eq!(m, again);
        let err = Manifest::parse_valid(&format!(
            "{base}[events.\"Bad Kind\"]\nschema = {{ type = 3 }}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("events.Bad Kind"), "{err}");
        assert!(err.contains("events.Bad Kind.schema"), "{err}");
    }

    #[test]
    fn round_trips_through_toml() {
        let m = Manifest::parse_valid(FULL).unwrap();
        let again = Manifest::parse_valid(&m.to_toml()).unwrap();
        assert_eq!(m, again);
    }

    #[test]
    fn unknown_field_is_refused_by_name() {
        let err = Manifest::parse(
            "name = \"x\"\nversion = \"0.1.0\"\nentrypoint = [\"/bin/x\"]\nprivileged = true\n",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("privileged"), "{msg}");
        assert!(msg.contains("unknown field"), "{msg}");
    }

    #[test]
    fn wrong_type_names_the_field() {
        let err = Manifest::parse("name = \"x\"\nversion = \"0.1.0\"\nentrypoint = \"/bin/x\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("entrypoint"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let text = r#"
            name = "Bad Name"
            version = "one"
            entrypoint = ["bin/x"]
            capabilities = ["sys_admin", "CAP_NET_RAW", "flying", "kill", "kill"]
            [[interfaces]]
            role = "seg0"
            type = "mirror"
            capabilities = ["rx", "tx"]
            [[interfaces]]
            role = "seg0"
            type = "phy"
            capabilities = []
            [limits]
            memory = "1KiB"
            cpu = 0.0
            pids = 0
            [health]
            interval = "100ms"
            timeout = "1s"
            [retention]
            supported = true
            [permissions]
            call = ["Bad"]
        "#;
        let f = fields(text);
        for want in [
            "name",
            "version",
            "entrypoint[0]",
            "capabilities[0]",
            "capabilities[1]",
            "capabilities[2]",
            "capabilities[4]",
            "interfaces[0].capabilities",
            "interfaces[1].role",
            "interfaces[1].capabilities",
            "limits.memory",
            "limits.cpu",
            "limits.pids",
            "health.interval",
            "health.timeout",
            "retention.default-period",
            "permissions.call[0]",
        ] {
            assert!(f.contains(&want.to_string()), "missing {want} in {f:?}");
        }
        assert!(
            !f.contains(&"capabilities[3]".to_string()),
            "kill is allowed: {f:?}"
        );
    }

    #[test]
    fn passive_instrument_cannot_ask_for_tx() {
        let text = r#"
            name = "ids"
            version = "1.0.0"
            entrypoint = ["/bin/ids"]
            network = "passive"
            [[interfaces]]
            role = "tap0"
            type = "mirror"
            capabilities = ["rx", "tx"]
        "#;
        let err = Manifest::parse(text).unwrap().validate().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("passive"), "{msg}");
        assert!(msg.contains("receive-only"), "{msg}");
    }

    #[test]
    fn forbidden_capability_says_why() {
        let text = "name = \"x\"\nversion = \"1.0.0\"\nentrypoint = [\"/x\"]\ncapabilities = [\"sys_module\"]\n";
        let msg = Manifest::parse(text)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(msg.contains("kernel modules"), "{msg}");
    }

    #[test]
    fn invalid_schema_is_refused() {
        let text = "name = \"x\"\nversion = \"1.0.0\"\nentrypoint = [\"/x\"]\n[config.schema]\ntype = 12\n";
        assert_eq!(fields(text), vec!["config.schema"]);
    }

    #[test]
    fn config_checked_against_schema() {
        let m = Manifest::parse_valid(FULL).unwrap();
        assert!(m.check_config(&serde_json::json!({"interval": 5})).is_ok());
        let errs = m
            .check_config(&serde_json::json!({"interval": 0}))
            .unwrap_err();
        assert!(errs[0].contains("config/interval"), "{errs:?}");
        let errs = m.check_config(&serde_json::json!({})).unwrap_err();
        assert!(errs[0].contains("interval"), "{errs:?}");
    }

    #[test]
    fn no_schema_means_no_config() {
        let m = Manifest::parse_valid("name = \"x\"\nversion = \"1.0.0\"\nentrypoint = [\"/x\"]\n")
            .unwrap();
        assert!(m.check_config(&serde_json::json!({})).is_ok());
        assert!(m.check_config(&serde_json::Value::Null).is_ok());
        let errs = m.check_config(&serde_json::json!({"a": 1})).unwrap_err();
        assert!(errs[0].contains("no config schema"), "{errs:?}");
    }
}
