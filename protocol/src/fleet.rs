//! The contract between a sensor and its fleet: the subjects on the hub,
//! enrollment over HTTPS, and what the link sends.
//!
//! A sensor's hub credentials allow exactly: publish [`sensor_in`]`.>`,
//! subscribe [`sensor_out`]`.>` and its own inbox ([`inbox_prefix`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Longest sensor name at the fleet.
pub const MAX_SENSOR_NAME_LEN: usize = 48;

/// Why a sensor name is refused, or `None`. Sensor names are NATS
/// subject tokens and file names: the instrument naming rule.
pub fn sensor_name_problem(name: &str) -> Option<String> {
    crate::names::name_problem(name)
}

/// What a sensor may publish under (`fleet.in.<sensor>`).
pub fn sensor_in(sensor: &str) -> String {
    format!("fleet.in.{sensor}")
}

/// What a sensor may subscribe under (`fleet.sensor.<sensor>`).
pub fn sensor_out(sensor: &str) -> String {
    format!("fleet.sensor.{sensor}")
}

/// The sensor's own reply inboxes (`_INBOX.<sensor>`).
pub fn inbox_prefix(sensor: &str) -> String {
    format!("_INBOX.{sensor}")
}

/// Heartbeats: `fleet.in.<sensor>.heartbeat`.
pub fn heartbeat(sensor: &str) -> String {
    format!("{}.heartbeat", sensor_in(sensor))
}

/// Desired state pushed to a sensor: `fleet.sensor.<sensor>.desired`.
pub fn desired_push(sensor: &str) -> String {
    format!("{}.desired", sensor_out(sensor))
}

/// A sensor's answer to a push: `fleet.in.<sensor>.ack`.
pub fn desired_ack(sensor: &str) -> String {
    format!("{}.ack", sensor_in(sensor))
}

/// Every sensor's acks, for the fleet.
pub const ALL_ACKS: &str = "fleet.in.*.ack";

/// A sensor asks for a piece of an image archive: `fleet.in.<sensor>.image`
/// ([`ImageChunkRequest`]; the answer is the bytes, or a [`HDR_ERROR`]).
pub fn image_request(sensor: &str) -> String {
    format!("{}.image", sensor_in(sensor))
}

/// Every sensor's image requests, for the fleet.
pub const ALL_IMAGE_REQUESTS: &str = "fleet.in.*.image";

/// Why the fleet did not answer a request with what was asked.
pub const HDR_ERROR: &str = "Outpost-Error";

/// Largest piece of an image archive one answer carries.
pub const IMAGE_CHUNK: u64 = 512 * 1024;

/// An image the fleet distributes, as a push names it: the sensor fetches
/// the archive when it lacks `name` `version`, and imports it only if its
/// sha256 is this one.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub size: u64,
}

/// `fleet.in.<sensor>.image`: bytes `offset..offset + IMAGE_CHUNK` of an
/// archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageChunkRequest {
    pub name: String,
    pub version: String,
    pub offset: u64,
}

/// One version of a sensor's desired state, as the fleet pushes it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredPush {
    /// The fleet's version number for this sensor (1, 2, …).
    pub version: u64,
    /// The sensor file (TOML) of this version.
    pub toml: String,
    pub author: String,
    pub reason: String,
    /// Keep this version only if the link to the hub is healthy again
    /// within this time (a heartbeat got through); otherwise the sensor
    /// goes back to its previous version by itself and says why.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "2m"))]
    pub confirm_within: Option<std::time::Duration>,
    /// The images of this version the fleet has: a sensor that lacks one
    /// fetches it from the fleet before it applies the version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageRef>,
}

/// What the sensor did with a pushed version.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum DesiredOutcome {
    /// Stored through the sensor's intake as its local version.
    Applied { local_version: i64 },
    /// Refused by the sensor's intake; the previous version stays.
    Rejected { problems: Vec<String> },
    /// Applied, then undone by the sensor itself: its link to the hub did
    /// not come back healthy within `confirm_within`.
    RolledBack {
        /// The local version that applied it, and the one restored.
        applied_version: i64,
        restored_version: i64,
        reason: String,
    },
}

/// A sensor's acknowledgement of one pushed version.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredAck {
    pub version: u64,
    #[serde(flatten)]
    pub outcome: DesiredOutcome,
    /// Each instrument's result, once the version was stored: whether it
    /// took its config.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub instruments: BTreeMap<String, InstrumentOutcome>,
}

/// What one instrument made of a stored version.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum InstrumentOutcome {
    /// Running with this version's config.
    Applied { config_version: Option<i64> },
    /// The instrument refused its config; it keeps its previous one.
    Rejected { reason: String },
    /// Defined but `enabled = false`.
    Disabled,
    /// Not settled when the sensor answered (starting, waiting for its
    /// image, crashing): what it was doing.
    Waiting { detail: String },
}

/// Every sensor's heartbeats, for the fleet.
pub const ALL_HEARTBEATS: &str = "fleet.in.*.heartbeat";

/// Forwarded events, a batch per request: `fleet.in.<sensor>.events`.
pub fn events_in(sensor: &str) -> String {
    format!("{}.events", sensor_in(sensor))
}

/// Every sensor's forwarded events, for the fleet.
pub const ALL_EVENTS_IN: &str = "fleet.in.*.events";

/// Where the fleet stores the events a sensor forwarded (stream
/// `FLEET_EVENTS`).
pub fn stored_events(sensor: &str) -> String {
    format!("fleet.events.{sensor}.sensor")
}

/// Where the fleet stores the events it raises about a sensor (offline,
/// online, …).
pub fn fleet_raised_events(sensor: &str) -> String {
    format!("fleet.events.{sensor}.fleet")
}

/// Both kinds of one sensor's stored events.
pub fn all_stored_events_of(sensor: &str) -> String {
    format!("fleet.events.{sensor}.*")
}

/// Every stored event.
pub const ALL_STORED_EVENTS: &str = "fleet.events.*.*";

/// The name fleet-raised events carry as their `instrument`.
pub const FLEET_SOURCE: &str = "outpost-fleet";

/// The hub stream of every sensor's events.
pub const FLEET_EVENTS_STREAM: &str = "FLEET_EVENTS";

/// Headers of a stored event: the sensor's local stream sequence and
/// subject.
pub const HDR_LOCAL_SEQ: &str = "Outpost-Local-Seq";
pub const HDR_LOCAL_SUBJECT: &str = "Outpost-Local-Subject";

/// A batch of events from the sensor's local `EVENTS` stream, in its
/// order.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    pub events: Vec<ForwardedEvent>,
}

/// One event as the sensor forwards it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForwardedEvent {
    /// Its sequence in the sensor's local `EVENTS` stream: with the
    /// sensor's name, the key that makes delivery idempotent.
    pub seq: u64,
    /// Its local subject (`outpost.events.<instrument>.<kind>`).
    pub subject: String,
    /// The event's bytes (an envelope, unless an instrument sent
    /// something else), base64.
    pub data: String,
}

/// The fleet's answer to a batch: everything up to `upto` is stored.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchAck {
    pub upto: u64,
    /// Stored now.
    pub stored: u32,
    /// Had been stored before (a re-send).
    pub duplicates: u32,
    /// Set when the batch was not stored (then `upto` is 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The sensor a `fleet.in.<sensor>.…` subject came from.
pub fn sensor_of(subject: &str) -> Option<&str> {
    let rest = subject.strip_prefix("fleet.in.")?;
    let name = rest.split('.').next()?;
    (sensor_name_problem(name).is_none()).then_some(name)
}

/// `POST /api/v1/enroll`: a sensor trades a one-time token and its own
/// public key for hub credentials.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub token: String,
    /// The sensor's NATS user public key (`U…`); its seed never leaves
    /// the sensor.
    pub public_key: String,
    /// The sensor's own name for itself (informational).
    #[serde(default)]
    pub hostname: String,
}

/// The answer to a good enrollment.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The name the fleet knows this sensor by (its subjects use it).
    pub sensor: String,
    /// Where the hub listens (`tls://host:port`), first preferred.
    pub hub_urls: Vec<String>,
    /// The sensor's user JWT, for its own key.
    pub user_jwt: String,
    /// The certificate authority the hub's TLS certificate is signed by.
    pub hub_ca_pem: String,
    /// How often the fleet expects a heartbeat.
    #[serde(with = "humantime_serde")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "10s"))]
    pub heartbeat_every: std::time::Duration,
}

/// The state of a sensor's link to its fleet, as the sensor sees it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkState {
    /// Not enrolled in a fleet.
    #[default]
    None,
    /// Trying to reach the hub.
    Connecting,
    Up,
    Down,
    /// The hub refused the sensor's credentials (revoked?).
    Refused,
}

impl std::fmt::Display for LinkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LinkState::None => "none",
            LinkState::Connecting => "connecting",
            LinkState::Up => "up",
            LinkState::Down => "down",
            LinkState::Refused => "refused",
        })
    }
}

/// What the link has not delivered yet.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backlog {
    pub events: u64,
    pub bytes: u64,
    /// Age of the oldest event waiting, in seconds.
    pub oldest_age_s: Option<u64>,
    /// Events dropped before they were forwarded (local buffer full).
    pub dropped: u64,
}

/// One instrument in a heartbeat.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstrumentSummary {
    pub name: String,
    pub image: String,
    pub version: String,
    pub state: String,
    pub health: String,
    #[serde(default)]
    pub health_message: String,
    pub restarts: u32,
    /// The config version wanted, and the one the instrument applied.
    pub config_desired: Option<i64>,
    pub config_applied: Option<i64>,
    /// Its interfaces by role: `up`, `down` or why not bound.
    #[serde(default)]
    pub interfaces: BTreeMap<String, String>,
}

/// A local change against the fleet.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    pub local_version: i64,
    /// `file` or `local`.
    pub source: String,
    pub author: String,
    pub reason: String,
    pub at_ms: i64,
}

/// A heartbeat: the sensor's summary, every `heartbeat_every`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub sensor: String,
    /// Sensor clock, ms since the epoch.
    pub at_ms: i64,
    /// Counts up from 1 each time outpostd starts the link.
    pub seq: u64,
    pub desired_version: Option<i64>,
    pub fleet_managed: bool,
    /// The last fleet version the sensor handled, and how.
    #[serde(default)]
    pub fleet_version: Option<DesiredAck>,
    /// The sensor's desired state was changed locally against the fleet
    /// (`--override`): the newest local version and who made it.
    #[serde(default)]
    pub drift: Option<Drift>,
    pub instruments: Vec<InstrumentSummary>,
    pub backlog: Backlog,
    /// The platform's own software version.
    pub platform_version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sensor_is_read_from_its_subjects_only() {
        assert_eq!(sensor_of("fleet.in.edge-1.heartbeat"), Some("edge-1"));
        assert_eq!(sensor_of("fleet.in.*.heartbeat"), None);
        assert_eq!(sensor_of("fleet.sensor.edge-1.x"), None);
        assert_eq!(heartbeat("a"), "fleet.in.a.heartbeat");
        assert_eq!(inbox_prefix("a"), "_INBOX.a");
    }
}
