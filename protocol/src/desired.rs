//! The sensor's desired state: which instruments run, from which image, how
//! they are restarted, their limits and their config.
//!
//! Locally it is written as the *sensor file* (TOML, see the README); the
//! fleet will send the same structure. `outpostd` stores every version of it.
//!
//! ```
//! use outpost_protocol::SensorSpec;
//! let spec = SensorSpec::parse(r#"
//!     [sensor]
//!     name = "lab-1"
//!
//!     [[instrument]]
//!     name = "example"
//!     image = "example"
//!     version = "0.1.0"
//! "#).unwrap();
//! spec.validate().unwrap();
//! assert_eq!(spec.instruments[0].restart, outpost_protocol::RestartPolicy::OnFailure);
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::bindings::{self, Binding};
use crate::manifest::{Limits, MAX_CPU, MIN_MEMORY, Manifest};
use crate::names::{self, NAME_FIX};
use crate::validate::{Collector, Invalid};

/// Version of the desired-state format, stored with every saved copy.
pub const FORMAT_VERSION: u32 = 1;

/// The whole desired state of one sensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SensorSpec {
    pub sensor: SensorMeta,
    #[serde(default, rename = "instrument")]
    pub instruments: Vec<InstrumentSpec>,
    /// Which provider's artifacts go to which consumers, verified how.
    #[serde(default, rename = "artifact", skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<crate::artifacts::ArtifactRoute>,
}

/// Facts about the sensor itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SensorMeta {
    /// The sensor's name, unique in its fleet.
    pub name: String,
    /// How often the platform asks every instrument to delete what is older
    /// than its retention period (default [`DEFAULT_RETENTION_EVERY`]).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde"
    )]
    pub retention_every: Option<Duration>,
    /// Whether a crash report to the fleet carries the last 50 lines of
    /// the instrument's console log (default true; logs may hold
    /// sensitive data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_report_logs: Option<bool>,
}

/// How often retention runs when the sensor file does not say.
pub const DEFAULT_RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// The shortest retention schedule (a run takes a walk of the storage).
pub const MIN_RETENTION_EVERY: Duration = Duration::from_secs(1);

impl SensorMeta {
    /// The retention schedule in force.
    pub fn retention_every(&self) -> Duration {
        self.retention_every.unwrap_or(DEFAULT_RETENTION_EVERY)
    }
}

/// One instrument the sensor should run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct InstrumentSpec {
    /// Unique on the sensor; also the container's name.
    pub name: String,
    /// Image name (the manifest's `name`).
    pub image: String,
    /// Image version (the manifest's `version`).
    pub version: String,
    /// `false` keeps the instrument defined but stopped.
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub backoff: Backoff,
    /// Failed or unanswered health checks in a row that restart the
    /// instrument (as its restart policy allows).
    #[serde(default = "default_health_failures")]
    pub health_failures: u32,
    /// Overrides of the manifest's limits.
    #[serde(default)]
    pub limits: LimitOverrides,
    /// What each interface role of the image is bound to on the sensor.
    #[serde(default)]
    pub interfaces: BTreeMap<String, Binding>,
    /// The configuration body, checked against the image's schema.
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    /// How long its persistent data is kept (`"30d"`), or `"off"`; absent:
    /// the image's default period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionSetting>,
}

/// An instrument's retention setting in the sensor file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionSetting {
    /// Never ask it to delete anything.
    Off,
    /// Delete what is older than this.
    Keep(Duration),
}

impl std::fmt::Display for RetentionSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetentionSetting::Off => f.write_str("off"),
            RetentionSetting::Keep(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

impl std::str::FromStr for RetentionSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "off" {
            return Ok(RetentionSetting::Off);
        }
        humantime::parse_duration(s)
            .map(RetentionSetting::Keep)
            .map_err(|e| format!("{s:?} is neither \"off\" nor a period such as \"30d\": {e}"))
    }
}

impl Serialize for RetentionSetting {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RetentionSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What retention an instrument gets from its setting and its image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EffectiveRetention {
    /// The image does not handle retention.
    Unsupported,
    /// The operator turned it off.
    Off,
    /// Data older than this is deleted.
    Keep(Duration),
}

impl InstrumentSpec {
    /// The retention in force for this instrument with this image's
    /// manifest (the setting was validated against it).
    pub fn effective_retention(&self, m: &crate::manifest::Retention) -> EffectiveRetention {
        match (self.retention, m.supported, m.default_period) {
            (_, false, _) => EffectiveRetention::Unsupported,
            (Some(RetentionSetting::Off), true, _) => EffectiveRetention::Off,
            (Some(RetentionSetting::Keep(d)), true, _) => EffectiveRetention::Keep(d),
            (None, true, Some(d)) => EffectiveRetention::Keep(d),
            (None, true, None) => EffectiveRetention::Unsupported,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_health_failures() -> u32 {
    3
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// When a stopped instrument is started again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// After every exit, clean or not.
    Always,
    /// After a non-zero exit, a signal, or a failed health check.
    #[default]
    OnFailure,
    /// Never; the exit is recorded and the instrument stays down.
    Never,
}

impl std::fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        })
    }
}

impl RestartPolicy {
    /// Whether an exit with this outcome is followed by a restart.
    pub fn restarts_after(self, clean_exit: bool) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !clean_exit,
            RestartPolicy::Never => false,
        }
    }
}

/// Restart back-off: `initial`, doubling per consecutive failure up to
/// `max`. After `crash-loop-after` consecutive quick failures the
/// instrument is reported `crash-looping` and retried every `max`, forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Backoff {
    #[serde(default = "Backoff::default_initial", with = "humantime_serde")]
    pub initial: Duration,
    #[serde(default = "Backoff::default_max", with = "humantime_serde")]
    pub max: Duration,
    /// An instrument that ran this long is considered stable again and its
    /// failure count resets.
    #[serde(default = "Backoff::default_stable_after", with = "humantime_serde")]
    pub stable_after: Duration,
    #[serde(default = "Backoff::default_crash_loop_after")]
    pub crash_loop_after: u32,
}

impl Backoff {
    fn default_initial() -> Duration {
        Duration::from_secs(1)
    }
    fn default_max() -> Duration {
        Duration::from_secs(300)
    }
    fn default_stable_after() -> Duration {
        Duration::from_secs(60)
    }
    fn default_crash_loop_after() -> u32 {
        5
    }

    /// Delay before the restart that follows `failures` consecutive
    /// failures (1 = the first failure).
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(31);
        let d = self.initial.saturating_mul(1u32 << exp);
        d.min(self.max)
    }

    /// Whether `failures` consecutive failures make a crash loop.
    pub fn is_crash_loop(&self, failures: u32) -> bool {
        failures >= self.crash_loop_after
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Self::default_initial(),
            max: Self::default_max(),
            stable_after: Self::default_stable_after(),
            crash_loop_after: Self::default_crash_loop_after(),
        }
    }
}

/// Limits the operator sets over the manifest's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LimitOverrides {
    #[serde(default, serialize_with = "crate::size::serialize_opt")]
    pub memory: Option<ByteSize>,
    pub cpu: Option<f64>,
    pub pids: Option<u32>,
}

impl LimitOverrides {
    /// The manifest's limits with these overrides applied.
    pub fn apply(&self, base: Limits) -> Limits {
        Limits {
            memory: self.memory.unwrap_or(base.memory),
            cpu: self.cpu.unwrap_or(base.cpu),
            pids: self.pids.unwrap_or(base.pids),
        }
    }
}

/// Sensor-file parse failure.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(
        "sensor file cannot be read: {0}\n(fix: compare it with the sensor file reference in the README)"
    )]
    Parse(String),
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

impl SensorSpec {
    /// Parses the sensor file (TOML). Unknown fields are an error.
    pub fn parse(text: &str) -> Result<SensorSpec, SpecError> {
        let spec: SensorSpec = toml::from_str(text).map_err(|e| SpecError::Parse(e.to_string()))?;
        Ok(spec)
    }

    /// Parses and validates.
    pub fn parse_valid(text: &str) -> Result<SensorSpec, SpecError> {
        let s = Self::parse(text)?;
        s.validate()?;
        Ok(s)
    }

    /// A canonical JSON form, used for storage and for change detection.
    pub fn to_canonical_json(&self) -> String {
        serde_json::to_string(self).expect("a sensor spec always serializes")
    }

    /// Reads back what [`SensorSpec::to_canonical_json`] wrote.
    pub fn from_json(text: &str) -> Result<SensorSpec, SpecError> {
        serde_json::from_str(text).map_err(|e| SpecError::Parse(e.to_string()))
    }

    /// The instrument called `name`.
    pub fn instrument(&self, name: &str) -> Option<&InstrumentSpec> {
        self.instruments.iter().find(|i| i.name == name)
    }

    /// Checks what does not depend on images.
    pub fn validate(&self) -> Result<(), Invalid> {
        let mut c = Collector::default();
        if let Some(p) = names::name_problem(&self.sensor.name) {
            c.push("sensor.name", p, NAME_FIX);
        }
        if let Some(e) = self.sensor.retention_every
            && e < MIN_RETENTION_EVERY
        {
            c.push(
                "sensor.retention-every",
                format!("{e:?} is shorter than {MIN_RETENTION_EVERY:?}"),
                "give a schedule such as \"1h\"",
            );
        }
        let mut seen = BTreeSet::new();
        for (i, ins) in self.instruments.iter().enumerate() {
            let at = |f: &str| format!("instrument[{i}].{f}");
            if let Some(p) = names::name_problem(&ins.name) {
                c.push(at("name"), p, NAME_FIX);
            } else if ins.name == crate::subjects::PLATFORM {
                c.push(
                    at("name"),
                    format!("{:?} is the platform's own name on the bus", ins.name),
                    "choose another instrument name",
                );
            }
            if !seen.insert(&ins.name) {
                c.push(
                    at("name"),
                    format!("instrument {:?} is listed twice", ins.name),
                    "give every instrument its own name",
                );
            }
            if let Some(p) = names::name_problem(&ins.image) {
                c.push(at("image"), p, NAME_FIX);
            }
            if let Err(e) = semver::Version::parse(&ins.version) {
                c.push(
                    at("version"),
                    format!("{:?} is not a semantic version: {e}", ins.version),
                    "give the image version exactly as in its manifest, e.g. \"1.0.0\"",
                );
            }
            let b = &ins.backoff;
            if b.initial.is_zero() || b.initial > b.max {
                c.push(
                    at("backoff.initial"),
                    format!("{:?} is not between 0 and max ({:?})", b.initial, b.max),
                    "give a positive initial delay no larger than max, e.g. \"1s\"",
                );
            }
            if b.crash_loop_after == 0 {
                c.push(
                    at("backoff.crash-loop-after"),
                    "is zero",
                    "give the number of quick failures that make a crash loop, e.g. 5",
                );
            }
            if let Some(m) = ins.limits.memory
                && m < MIN_MEMORY
            {
                c.push(
                    at("limits.memory"),
                    format!("{m} is below the minimum of {MIN_MEMORY}"),
                    "give at least \"4MiB\"",
                );
            }
            if let Some(cpu) = ins.limits.cpu
                && !(cpu > 0.0 && cpu <= MAX_CPU)
            {
                c.push(
                    at("limits.cpu"),
                    format!("{cpu} is not between 0 and {MAX_CPU} cores"),
                    "give a fraction of cores, e.g. 0.5",
                );
            }
            if ins.health_failures == 0 {
                c.push(
                    at("health-failures"),
                    "is zero",
                    "give the number of failed checks in a row that restart it, e.g. 3",
                );
            }
            if ins.limits.pids == Some(0) {
                c.push(at("limits.pids"), "is zero", "allow at least 1 process");
            }
            for (role, b) in &ins.interfaces {
                if let Some(p) = names::role_problem(role) {
                    c.push(at(&format!("interfaces.{role}")), p, names::ROLE_FIX);
                }
                b.check(&at(&format!("interfaces.{role}")), &mut c);
            }
            if let Some(RetentionSetting::Keep(d)) = ins.retention
                && d.is_zero()
            {
                c.push(
                    at("retention"),
                    "is zero: everything would be deleted at once",
                    "give a period such as \"30d\", or \"off\"",
                );
            }
            if !ins.config.is_object() {
                c.push(
                    at("config"),
                    "is not a table",
                    "write the config as a TOML table: [instrument.config]",
                );
            }
        }
        self.check_interface_conflicts(&mut c);
        let names: Vec<&str> = self.instruments.iter().map(|i| i.name.as_str()).collect();
        crate::artifacts::validate(&self.artifacts, &names, &mut c);
        c.finish("sensor file")
    }

    /// A host interface moved into one instrument (phy) or put on a bridge
    /// cannot be used by another binding too.
    fn check_interface_conflicts(&self, c: &mut Collector) {
        let mut exclusive: BTreeMap<&str, String> = BTreeMap::new();
        let mut used: Vec<(&str, String)> = Vec::new();
        for (i, ins) in self.instruments.iter().enumerate() {
            for (role, b) in &ins.interfaces {
                let at = format!("instrument[{i}].interfaces.{role}");
                for (field, dev) in b.host_interfaces() {
                    let here = format!("{at}.{field}");
                    let own = b.owns() == Some(dev);
                    if let Some(first) = exclusive.get(dev) {
                        c.push(
                            &here,
                            format!("host interface {dev:?} is already taken by {first}"),
                            "give each instrument its own host interface, or share through a bridge",
                        );
                    } else if own {
                        if let Some((_, first)) = used.iter().find(|(d, _)| *d == dev) {
                            c.push(
                                &here,
                                format!("host interface {dev:?} is already used by {first}"),
                                "an interface moved into an instrument or put on a bridge serves nothing else",
                            );
                        }
                        exclusive.insert(dev, here.clone());
                    }
                    used.push((dev, here));
                }
            }
        }
    }

    /// Checks one instrument against the manifest of the image it names.
    pub fn validate_against(ins: &InstrumentSpec, manifest: &Manifest) -> Result<(), Invalid> {
        let mut c = Collector::default();
        if manifest.name != ins.image || manifest.version != ins.version {
            c.push(
                "image",
                format!(
                    "image {}:{} was asked for but the manifest says {}:{}",
                    ins.image, ins.version, manifest.name, manifest.version
                ),
                "import the image the sensor file names",
            );
        }
        bindings::validate_against("interfaces", &ins.interfaces, manifest, &mut c);
        let r = &manifest.retention;
        match ins.retention {
            Some(RetentionSetting::Keep(_)) if !r.supported => c.push(
                "retention",
                format!("image {:?} does not handle retention", ins.image),
                "remove the retention setting",
            ),
            Some(RetentionSetting::Off) if r.required => c.push(
                "retention",
                format!("image {:?} requires retention; it cannot be off", ins.image),
                "give a period such as \"30d\", or remove the setting for the image's default",
            ),
            _ => {}
        }
        if let Err(errors) = manifest.check_config(&ins.config) {
            for e in errors {
                c.push(
                    "config",
                    e,
                    format!(
                        "change the config to fit the schema of image {:?}",
                        ins.image
                    ),
                );
            }
        }
        c.finish(format!("instrument {:?}", ins.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SENSOR: &str = r#"
        [sensor]
        name = "lab-1"

        [[instrument]]
        name = "beacon"
        image = "beacon"
        version = "1.0.0"
        restart = "always"
        backoff = { initial = "200ms", max = "5s", crash-loop-after = 3 }
        limits = { memory = "32MiB" }
        [instrument.config]
        interval = 5

        [[instrument]]
        name = "ids"
        image = "ids"
        version = "2.1.0"
        enabled = false
    "#;

    #[test]
    fn parses_sensor_file() {
        let s = SensorSpec::parse_valid(SENSOR).unwrap();
        assert_eq!(s.sensor.name, "lab-1");
        let b = &s.instruments[0];
        assert_eq!(b.restart, RestartPolicy::Always);
        assert_eq!(b.backoff.initial, Duration::from_millis(200));
        assert_eq!(b.backoff.stable_after, Duration::from_secs(60));
        assert_eq!(b.config["interval"], 5);
        assert!(!s.instruments[1].enabled);
        assert_eq!(s.instruments[1].restart, RestartPolicy::OnFailure);
    }

    #[test]
    fn canonical_json_round_trips() {
        let s = SensorSpec::parse_valid(SENSOR).unwrap();
        let again = SensorSpec::from_json(&s.to_canonical_json()).unwrap();
        assert_eq!(s, again);
        assert_eq!(s.to_canonical_json(), again.to_canonical_json());
    }

    #[test]
    fn limit_overrides_apply_over_manifest() {
        let s = SensorSpec::parse_valid(SENSOR).unwrap();
        let l = s.instruments[0].limits.apply(Limits::default());
        assert_eq!(l.memory, ByteSize::mib(32));
        assert_eq!(l.pids, Limits::default().pids);
    }

    #[test]
    fn duplicate_and_bad_names_are_refused() {
        let text = r#"
            [sensor]
            name = "lab"
            [[instrument]]
            name = "a"
            image = "x"
            version = "1.0.0"
            [[instrument]]
            name = "a"
            image = "Bad"
            version = "latest"
            backoff = { initial = "10s", max = "1s" }
        "#;
        let err = SensorSpec::parse_valid(text).unwrap_err().to_string();
        assert!(err.contains("instrument[1].name"), "{err}");
        assert!(err.contains("listed twice"), "{err}");
        assert!(err.contains("instrument[1].image"), "{err}");
        assert!(err.contains("instrument[1].version"), "{err}");
        assert!(err.contains("instrument[1].backoff.initial"), "{err}");
    }

    #[test]
    fn a_host_interface_serves_one_exclusive_binding() {
        let text = r#"
            [sensor]
            name = "lab"
            [[instrument]]
            name = "a"
            image = "x"
            version = "1.0.0"
            [instrument.interfaces.cap0]
            type = "phy"
            device = "eth1"
            [[instrument]]
            name = "b"
            image = "x"
            version = "1.0.0"
            [instrument.interfaces.mon0]
            type = "mirror"
            source = "eth1"
            [instrument.interfaces.up0]
            type = "macvlan"
            parent = "eth0"
            [[instrument]]
            name = "c"
            image = "x"
            version = "1.0.0"
            [instrument.interfaces.up0]
            type = "macvlan"
            parent = "eth0"
        "#;
        let Err(SpecError::Invalid(err)) = SensorSpec::parse_valid(text) else {
            panic!("conflict not found");
        };
        let fields: Vec<&str> = err.errors.iter().map(|e| e.field.as_str()).collect();
        // eth1 is moved into a, so b cannot mirror it; eth0 may parent
        // two macvlans.
        assert_eq!(fields, vec!["instrument[1].interfaces.mon0.source"]);
        assert!(
            err.to_string()
                .contains("instrument[0].interfaces.cap0.device"),
            "{err}"
        );
    }

    #[test]
    fn unknown_field_is_refused() {
        let text = "[sensor]\nname = \"a\"\n[[instrument]]\nname = \"a\"\nimage = \"a\"\nversion = \"1.0.0\"\nprivileged = true\n";
        let err = SensorSpec::parse(text).unwrap_err().to_string();
        assert!(err.contains("privileged"), "{err}");
    }

    #[test]
    fn backoff_doubles_to_max() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            ..Backoff::default()
        };
        let d: Vec<u128> = (1..=6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(d, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_millis(1000));
        assert!(!b.is_crash_loop(4));
        assert!(b.is_crash_loop(5));
    }

    #[test]
    fn restart_policies() {
        assert!(RestartPolicy::Always.restarts_after(true));
        assert!(!RestartPolicy::OnFailure.restarts_after(true));
        assert!(RestartPolicy::OnFailure.restarts_after(false));
        assert!(!RestartPolicy::Never.restarts_after(false));
    }

    #[test]
    fn config_is_checked_against_the_manifest() {
        let s = SensorSpec::parse_valid(SENSOR).unwrap();
        let m = Manifest::parse_valid(
            r#"
            name = "beacon"
            version = "1.0.0"
            entrypoint = ["/b"]
            [config.schema]
            type = "object"
            properties.interval = { type = "string" }
            "#,
        )
        .unwrap();
        let err = SensorSpec::validate_against(&s.instruments[0], &m).unwrap_err();
        assert!(err.to_string().contains("config/interval"), "{err}");
        assert!(err.to_string().contains("instrument \"beacon\""), "{err}");
    }

    fn with_retention(setting: Option<&str>, every: Option<&str>) -> Result<SensorSpec, SpecError> {
        let every = every
            .map(|e| format!("retention-every = \"{e}\"\n"))
            .unwrap_or_default();
        let setting = setting
            .map(|r| format!("retention = \"{r}\"\n"))
            .unwrap_or_default();
        SensorSpec::parse_valid(&format!(
            "[sensor]\nname = \"s\"\n{every}[[instrument]]\nname = \"a\"\nimage = \"x\"\nversion = \"1.0.0\"\n{setting}"
        ))
    }

    fn retention_manifest(extra: &str) -> Manifest {
        Manifest::parse_valid(&format!(
            "name = \"x\"\nversion = \"1.0.0\"\nentrypoint = [\"/x\"]\n[retention]\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn retention_is_a_period_or_off_and_follows_the_image() {
        let s = with_retention(Some("30d"), Some("10m")).unwrap();
        assert_eq!(s.sensor.retention_every(), Duration::from_secs(600));
        let ins = &s.instruments[0];
        assert_eq!(
            ins.retention,
            Some(RetentionSetting::Keep(Duration::from_secs(30 * 86400)))
        );
        let again = SensorSpec::from_json(&s.to_canonical_json()).unwrap();
        assert_eq!(again, s, "the setting round-trips");

        let plain = with_retention(None, None).unwrap();
        assert_eq!(plain.sensor.retention_every(), DEFAULT_RETENTION_EVERY);
        assert!(
            !plain.to_canonical_json().contains("retention"),
            "an absent setting stores nothing, so older versions compare equal"
        );

        let kept = retention_manifest("supported = true\ndefault-period = \"7d\"");
        assert_eq!(
            plain.instruments[0].effective_retention(&kept.retention),
            EffectiveRetention::Keep(Duration::from_secs(7 * 86400))
        );
        assert_eq!(
            ins.effective_retention(&kept.retention),
            EffectiveRetention::Keep(Duration::from_secs(30 * 86400))
        );
        let off = with_retention(Some("off"), None).unwrap();
        assert_eq!(
            off.instruments[0].effective_retention(&kept.retention),
            EffectiveRetention::Off
        );
        SensorSpec::validate_against(&off.instruments[0], &kept).unwrap();

        let required =
            retention_manifest("supported = true\ndefault-period = \"7d\"\nrequired = true");
        let err = SensorSpec::validate_against(&off.instruments[0], &required).unwrap_err();
        assert!(err.to_string().contains("requires retention"), "{err}");

        let none = retention_manifest("supported = false");
        let err = SensorSpec::validate_against(ins, &none).unwrap_err();
        assert!(
            err.to_string().contains("does not handle retention"),
            "{err}"
        );
        assert_eq!(
            plain.instruments[0].effective_retention(&none.retention),
            EffectiveRetention::Unsupported
        );
    }

    #[test]
    fn bad_retention_settings_name_the_fix() {
        let err = with_retention(Some("forever"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("neither \"off\" nor a period"), "{err}");
        let err = with_retention(Some("0s"), None).unwrap_err().to_string();
        assert!(err.contains("instrument[0].retention"), "{err}");
        let err = with_retention(None, Some("10ms")).unwrap_err().to_string();
        assert!(err.contains("sensor.retention-every"), "{err}");
    }
}
