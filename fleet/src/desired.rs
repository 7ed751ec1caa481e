//! Central desired state: versions per sensor in the hub stream
//! `FLEET_DESIRED` (subject `fleet.desired.<sensor>`, one message per
//! version with author, time and reason), the rollout of the newest one
//! in KV `rollouts`, pushes over the link and the sensors' acks.
//!
//! A rollout is `pending` (the sensor is offline: it gets the version
//! when it is back), `delivered` (pushed while the sensor was online),
//! then `applied` or `rejected` with the sensor's reasons, or
//! `timed-out` when no answer came before its deadline. The fleet pushes
//! again while the sensor's heartbeats show an older version, so a
//! sensor that was offline gets the newest version when it returns.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use outpost_protocol::SensorSpec;
use outpost_protocol::fleet::{self as proto, DesiredAck, DesiredOutcome, DesiredPush};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::error::ApiError;
use crate::hub::{Hub, HubError, now_ms};
use crate::shutdown::Shutdown;

pub const STREAM: &str = "FLEET_DESIRED";

/// One stored version of a sensor's desired state.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DesiredVersion {
    pub sensor: String,
    pub version: u64,
    /// The sensor file (TOML).
    pub toml: String,
    pub author: String,
    pub reason: String,
    pub at_ms: i64,
    /// The sensor keeps it only if its link is healthy again within this.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde"
    )]
    #[schema(value_type = Option<String>)]
    pub confirm_within: Option<Duration>,
    /// The images of this version the fleet has (the sensor fetches the
    /// ones it lacks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<proto::ImageRef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutState {
    Pending,
    Delivered,
    Applied,
    Rejected,
    TimedOut,
    /// Applied, then undone by the sensor: its link did not come back
    /// healthy within `confirm-within`.
    RolledBack,
}

/// The rollout of a sensor's newest version.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rollout {
    pub version: u64,
    pub state: RolloutState,
    /// What the state is based on, in words.
    pub detail: String,
    /// The sensor's reasons, when it rejected the version.
    #[serde(default)]
    pub problems: Vec<String>,
    /// The sensor's own version number for it, once applied.
    pub local_version: Option<i64>,
    pub deadline_ms: i64,
    pub pushes: u32,
    pub updated_at_ms: i64,
    /// Each instrument's result, as the sensor answered.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub instruments: BTreeMap<String, proto::InstrumentOutcome>,
}

fn op(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::Hub(HubError::Op {
        what: what.to_string(),
        why: e.to_string(),
    })
}

pub async fn ensure_stream(hub: &Hub, replicas: usize) -> Result<stream::Stream, HubError> {
    crate::hub::stream(
        hub,
        stream::Config {
            name: STREAM.into(),
            subjects: vec!["fleet.desired.*".into()],
            storage: stream::StorageType::File,
            num_replicas: replicas.max(1),
            allow_direct: true,
            ..Default::default()
        },
    )
    .await
}

fn subject(sensor: &str) -> String {
    format!("fleet.desired.{sensor}")
}

/// The newest version of `sensor` and its stream sequence.
pub async fn latest(
    s: &stream::Stream,
    sensor: &str,
) -> Result<Option<(DesiredVersion, u64)>, ApiError> {
    match s.get_last_raw_message_by_subject(&subject(sensor)).await {
        Ok(m) => {
            let v = serde_json::from_slice(&m.payload).map_err(|e| op("a stored version", e))?;
            Ok(Some((v, m.sequence)))
        }
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(op("reading desired state", e)),
    }
}

/// Every version of `sensor`, oldest first.
pub async fn history(s: &stream::Stream, sensor: &str) -> Result<Vec<DesiredVersion>, ApiError> {
    crate::hub::read_all(s, subject(sensor))
        .await
        .map_err(|e| op("reading desired history", e))
}

/// The rollout of `sensor`'s newest version, and its KV revision.
pub async fn rollout(hub: &Hub, sensor: &str) -> Result<Option<(Rollout, u64)>, ApiError> {
    match hub.rollouts.entry(sensor).await {
        Ok(Some(e)) if e.operation == jetstream::kv::Operation::Put => {
            let r = serde_json::from_slice(&e.value).map_err(|e| op("a rollout", e))?;
            Ok(Some((r, e.revision)))
        }
        Ok(_) => Ok(None),
        Err(e) => Err(op("reading a rollout", e)),
    }
}

async fn save_rollout(hub: &Hub, sensor: &str, r: &Rollout, rev: Option<u64>) -> bool {
    let body = Bytes::from(serde_json::to_vec(r).expect("serializes"));
    match rev {
        Some(rev) => hub.rollouts.update(sensor, body, rev).await.ok(),
        None => hub.rollouts.put(sensor, body).await.ok(),
    }
    .map(|rev| hub.index.rollouts.note(sensor, r.clone(), rev))
    .is_some()
}

/// A new version, as an operator asks for it.
pub struct Change {
    /// The sensor file (TOML).
    pub toml: String,
    pub reason: String,
    pub author: String,
    /// How long its rollout waits for the sensor.
    pub timeout: Duration,
    /// Keep it only if the sensor's link is healthy again within this.
    pub confirm_within: Option<Duration>,
}

/// Validates and stores a new version for `sensor`, then pushes it.
pub async fn put(
    hub: &Hub,
    catalog: &crate::images::Images,
    s: &stream::Stream,
    sensor: &str,
    change: Change,
    heartbeat_every: Duration,
) -> Result<(DesiredVersion, Rollout), ApiError> {
    let Change {
        toml,
        reason,
        author,
        timeout,
        confirm_within,
    } = change;
    let author = author.as_str();
    let (rec, _) = crate::registry::sensor(hub, sensor).await?;
    if rec.revoked_at_ms.is_some() {
        return Err(ApiError::Conflict(format!(
            "sensor {sensor} is revoked; nothing is pushed to it"
        )));
    }
    // Everything that does not need the images, all at once.
    let spec = match SensorSpec::parse_valid(&toml) {
        Ok(spec) => spec,
        Err(e) => {
            let problems = match e {
                outpost_protocol::desired::SpecError::Invalid(inv) => inv
                    .errors
                    .iter()
                    .map(|f| format!("{}: {} (fix: {})", f.field, f.problem, f.fix))
                    .collect(),
                other => vec![other.to_string().replace('\n', " ")],
            };
            return Err(ApiError::Invalid(problems));
        }
    };
    // Then the config bodies, against the manifests of the fleet's images.
    let images = check_against_images(&spec, catalog)?;
    let (version, last_seq) = match latest(s, sensor).await? {
        Some((v, seq)) => (v.version + 1, seq),
        None => (1, 0),
    };
    let v = DesiredVersion {
        sensor: sensor.to_string(),
        version,
        toml,
        author: author.to_string(),
        reason,
        at_ms: now_ms(),
        confirm_within,
        images,
    };
    let msg = jetstream::message::PublishMessage::build()
        .payload(Bytes::from(serde_json::to_vec(&v).expect("serializes")))
        .expected_last_subject_sequence(last_seq);
    let stored = hub
        .js
        .send_publish(subject(sensor), msg)
        .await
        .map_err(|e| op("storing desired state", e))?
        .await;
    if let Err(e) = stored {
        if e.to_string().contains("wrong last sequence") {
            return Err(ApiError::Conflict(format!(
                "sensor {sensor}'s desired state changed meanwhile (fix: read it again and retry)"
            )));
        }
        return Err(op("storing desired state", e));
    }
    let mut r = Rollout {
        version,
        state: RolloutState::Pending,
        detail: "stored; not pushed yet".into(),
        problems: Vec::new(),
        local_version: None,
        deadline_ms: now_ms() + timeout.as_millis() as i64,
        pushes: 0,
        updated_at_ms: now_ms(),
        instruments: BTreeMap::new(),
    };
    let p = crate::presence::get(hub, sensor);
    let online = crate::presence::judge(p.as_ref(), heartbeat_every, now_ms()).0
        == crate::presence::Online::Online;
    push(hub, &v, &mut r, online).await;
    save_rollout(hub, sensor, &r, None).await;
    info!(
        sensor,
        version,
        by = author,
        "desired state stored and pushed"
    );
    Ok((v, r))
}

/// Checks every instrument's config body against the manifest of its
/// image, for the images the fleet has; the references to push with the
/// version. An image the fleet does not have is the sensor's to have (it
/// checks that config itself).
fn check_against_images(
    spec: &SensorSpec,
    catalog: &crate::images::Images,
) -> Result<Vec<proto::ImageRef>, ApiError> {
    let mut problems = Vec::new();
    let mut refs: Vec<proto::ImageRef> = Vec::new();
    for (i, ins) in spec.instruments.iter().enumerate() {
        let Some(rec) = catalog.get(&ins.image, &ins.version) else {
            continue;
        };
        if let Some(m) = catalog.manifest(&ins.image, &ins.version)
            && let Err(errs) = m.check_config(&ins.config)
        {
            for e in errs {
                problems.push(format!(
                    "instruments[{i}] ({}): {e} (fix: give a config image {} {} accepts; outpost-fleet image show {} {} prints its schema)",
                    ins.name, ins.image, ins.version, ins.image, ins.version
                ));
            }
        }
        if !refs
            .iter()
            .any(|r| r.name == rec.name && r.version == rec.version)
        {
            refs.push(rec.reference());
        }
    }
    if problems.is_empty() {
        Ok(refs)
    } else {
        Err(ApiError::Invalid(problems))
    }
}

/// Pushes `v` to its sensor and says so in `r` (`online`: whether the
/// sensor's heartbeats are current).
async fn push(hub: &Hub, v: &DesiredVersion, r: &mut Rollout, online: bool) {
    let p = DesiredPush {
        version: v.version,
        toml: v.toml.clone(),
        author: v.author.clone(),
        reason: v.reason.clone(),
        confirm_within: v.confirm_within,
        images: v.images.clone(),
    };
    let body = Bytes::from(serde_json::to_vec(&p).expect("serializes"));
    let sent = hub
        .client
        .publish(proto::desired_push(&v.sensor), body)
        .await;
    r.pushes += 1;
    r.updated_at_ms = now_ms();
    match (sent, online) {
        (Ok(()), true) => {
            r.state = RolloutState::Delivered;
            r.detail = format!(
                "pushed to the sensor (push {}); waiting for its answer",
                r.pushes
            );
        }
        _ => {
            r.state = RolloutState::Pending;
            r.detail = "the sensor is not online; it gets this version when it is back".into();
        }
    }
}

fn settle(r: &mut Rollout, ack: &DesiredAck) {
    r.updated_at_ms = now_ms();
    r.instruments = ack.instruments.clone();
    match &ack.outcome {
        DesiredOutcome::Applied { local_version } => {
            r.local_version = Some(*local_version);
            r.problems = ack
                .instruments
                .iter()
                .filter_map(|(name, o)| match o {
                    proto::InstrumentOutcome::Rejected { reason } => Some(format!(
                        "instrument {name} refused its config: {reason} (it keeps its previous config)"
                    )),
                    _ => None,
                })
                .collect();
            let waiting: Vec<&str> = ack
                .instruments
                .iter()
                .filter(|(_, o)| matches!(o, proto::InstrumentOutcome::Waiting { .. }))
                .map(|(n, _)| n.as_str())
                .collect();
            if r.problems.is_empty() {
                r.state = RolloutState::Applied;
                r.detail = format!("applied by the sensor as its version {local_version}");
                if !waiting.is_empty() {
                    r.detail += &format!("; not settled yet: {}", waiting.join(", "));
                }
            } else {
                r.state = RolloutState::Rejected;
                r.detail = format!(
                    "stored by the sensor as its version {local_version}, but an instrument refused its config"
                );
            }
        }
        DesiredOutcome::Rejected { problems } => {
            r.local_version = None;
            r.state = RolloutState::Rejected;
            r.problems = problems.clone();
            r.detail = "rejected by the sensor; its previous version stays".into();
        }
        DesiredOutcome::RolledBack {
            applied_version,
            restored_version,
            reason,
        } => {
            r.state = RolloutState::RolledBack;
            r.local_version = Some(*restored_version);
            r.problems = vec![reason.clone()];
            r.detail = format!(
                "applied as the sensor's version {applied_version}, then rolled back by the sensor: {reason}"
            );
        }
    }
}

/// Takes the sensors' acks until `shutdown`.
pub async fn take_acks(hub: Hub, shutdown: Shutdown) {
    let Some(mut share) = hub
        .share(proto::ALL_ACKS, "desired-state acks", &shutdown)
        .await
    else {
        return;
    };
    while let Some((sensor, msg)) = share.next().await {
        let Ok(ack) = serde_json::from_slice::<DesiredAck>(&msg.payload) else {
            debug!(sensor, "an ack that does not parse");
            continue;
        };
        record_ack(&hub, &sensor, &ack).await;
    }
}

/// Settles the rollout of `sensor` with `ack` if it is for its version.
pub async fn record_ack(hub: &Hub, sensor: &str, ack: &DesiredAck) {
    for _ in 0..5 {
        let Ok(Some((mut r, rev))) = rollout(hub, sensor).await else {
            return;
        };
        let open = matches!(
            r.state,
            RolloutState::Pending | RolloutState::Delivered | RolloutState::TimedOut
        );
        if r.version != ack.version || !open {
            return;
        }
        settle(&mut r, ack);
        if save_rollout(hub, sensor, &r, Some(rev)).await {
            info!(sensor, version = ack.version, state = ?r.state, "rollout settled");
            return;
        }
    }
}

/// On a heartbeat: a sensor behind the newest version gets it again
/// (at most every 5 s); an answer the heartbeat carries settles a
/// rollout whose ack was lost.
pub async fn on_heartbeat(
    hub: &Hub,
    s: &stream::Stream,
    sensor: &str,
    handled: Option<&DesiredAck>,
) {
    let Some((r, rev)) = hub.index.rollouts.get(sensor) else {
        return;
    };
    if let Some(a) = handled
        && a.version == r.version
    {
        record_ack(hub, sensor, a).await;
        return;
    }
    let behind = handled.is_none_or(|a| a.version < r.version);
    let open = matches!(
        r.state,
        RolloutState::Pending | RolloutState::Delivered | RolloutState::TimedOut
    );
    if !behind || !open || now_ms() - r.updated_at_ms < 5_000 {
        return;
    }
    let Ok(Some((v, _))) = latest(s, sensor).await else {
        return;
    };
    let mut r = r;
    // A heartbeat just came: it is online.
    push(hub, &v, &mut r, true).await;
    save_rollout(hub, sensor, &r, Some(rev)).await;
}

/// Marks rollouts past their deadline `timed-out` (the fleet keeps
/// pushing; a late answer still settles it).
pub async fn check_deadlines(hub: &Hub) {
    let now = now_ms();
    let names = hub
        .index
        .rollouts
        .all()
        .into_iter()
        .filter_map(|(name, r, _)| {
            let open = matches!(r.state, RolloutState::Pending | RolloutState::Delivered);
            (open && now > r.deadline_ms).then_some(name)
        });
    for name in names {
        let Ok(Some((mut r, rev))) = rollout(hub, &name).await else {
            continue;
        };
        let open = matches!(r.state, RolloutState::Pending | RolloutState::Delivered);
        if open && now_ms() > r.deadline_ms {
            r.state = RolloutState::TimedOut;
            r.detail = format!(
                "no answer from the sensor by the deadline ({} pushes); still pushing",
                r.pushes
            );
            r.updated_at_ms = now_ms();
            if save_rollout(hub, &name, &r, Some(rev)).await {
                warn!(sensor = %name, version = r.version, "rollout timed out");
            }
        }
    }
}

/// Version `version` of `sensor`.
pub async fn version(
    s: &stream::Stream,
    sensor: &str,
    version: u64,
) -> Result<DesiredVersion, ApiError> {
    history(s, sensor)
        .await?
        .into_iter()
        .find(|v| v.version == version)
        .ok_or_else(|| ApiError::NotFound(format!("version {version} of sensor {sensor:?}")))
}

/// A unified diff of two versions' sensor files.
pub async fn diff(s: &stream::Stream, sensor: &str, a: u64, b: u64) -> Result<String, ApiError> {
    let (va, vb) = (version(s, sensor, a).await?, version(s, sensor, b).await?);
    let d = similar::TextDiff::from_lines(&va.toml, &vb.toml);
    Ok(d.unified_diff()
        .context_radius(3)
        .header(
            &format!("{sensor} version {a}"),
            &format!("{sensor} version {b}"),
        )
        .to_string())
}
