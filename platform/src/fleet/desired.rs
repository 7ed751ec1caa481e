//! Desired state from the fleet: a pushed version goes through the
//! sensor's one intake (source `fleet`), and the sensor answers with the
//! outcome. The last version handled is kept in `<state>/fleet/desired.json`,
//! so a version pushed again (the fleet re-pushes until it hears back) is
//! answered the same way without being applied twice.

use std::collections::BTreeMap;

use outpost_protocol::fleet::{DesiredAck, DesiredOutcome, DesiredPush, InstrumentOutcome};
use tracing::{info, warn};

use super::LinkFiles;
use crate::daemon::{ApplyError, Change, Handle};
use crate::db::{Origin, Source};

fn path(files: &LinkFiles) -> std::path::PathBuf {
    files.dir.join("desired.json")
}

/// The last pushed version this sensor handled, and how.
pub fn last(files: &LinkFiles) -> Option<DesiredAck> {
    let text = std::fs::read_to_string(path(files)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Whether fleet version `version` is still to be handled.
pub fn is_new(files: &LinkFiles, version: u64) -> bool {
    last(files).is_none_or(|d| d.version < version)
}

/// Answers fleet version `version` `rejected` without applying it.
pub fn reject(files: &LinkFiles, version: u64, problems: Vec<String>) -> DesiredAck {
    let ack = DesiredAck {
        version,
        outcome: DesiredOutcome::Rejected { problems },
        instruments: Default::default(),
    };
    save(files, &ack);
    ack
}

fn save(files: &LinkFiles, ack: &DesiredAck) {
    write_json(&path(files), ack);
}

/// A version applied with `confirm-within`, waiting for the link to be
/// healthy again (`<state>/fleet/confirm.json`, so a restart of outpostd
/// keeps waiting, or rolls back).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    pub version: u64,
    pub applied_version: i64,
    /// The local version before it (restored on a rollback).
    pub previous_version: Option<i64>,
    pub since_ms: i64,
    /// A heartbeat after this proves the link (the change had time to
    /// take effect: half the window, at most 5 s).
    pub confirm_after_ms: i64,
    pub deadline_ms: i64,
}

fn pending_path(files: &LinkFiles) -> std::path::PathBuf {
    files.dir.join("confirm.json")
}

/// The version waiting for its confirmation, if any.
pub fn pending(files: &LinkFiles) -> Option<Pending> {
    let text = std::fs::read_to_string(pending_path(files)).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_json<T: serde::Serialize>(p: &std::path::Path, v: &T) {
    let tmp = p.with_extension("tmp");
    let body = serde_json::to_vec(v).expect("serializes");
    if let Err(e) = std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, p)) {
        warn!(path = %p.display(), "cannot record the fleet link's state: {e}");
    }
}

/// Settles a pending version: kept when a heartbeat got through after it
/// was applied, rolled back when its deadline passed first. The answer to
/// send the fleet, when there is one.
pub async fn settle_pending(
    handle: &Handle,
    files: &LinkFiles,
    last_heartbeat_ms: Option<i64>,
) -> Option<DesiredAck> {
    let p = pending(files)?;
    let now = crate::db::now_ms();
    let outcome = if last_heartbeat_ms.is_some_and(|t| t > p.confirm_after_ms) {
        info!(
            fleet_version = p.version,
            "the link is healthy after the change: kept"
        );
        DesiredOutcome::Applied {
            local_version: p.applied_version,
        }
    } else if now >= p.deadline_ms {
        let Some(prev) = p.previous_version else {
            // Nothing to go back to; keep it and say so.
            let _ = std::fs::remove_file(pending_path(files));
            return None;
        };
        let secs = (p.deadline_ms - p.since_ms) / 1000;
        let reason = format!(
            "fleet version {}: no healthy link to the hub within {secs}s; back to local version {prev}",
            p.version
        );
        warn!("{reason}");
        let origin = Origin::new(Source::Fleet, "outpostd (confirm-within)", reason.clone());
        match handle
            .apply(Change::Restore { version: prev }, origin, false)
            .await
        {
            Ok(a) => DesiredOutcome::RolledBack {
                applied_version: p.applied_version,
                restored_version: a.version,
                reason,
            },
            Err(e) => {
                warn!("the rollback of fleet version {} failed: {e}", p.version);
                return None;
            }
        }
    } else {
        return None;
    };
    let ack = DesiredAck {
        version: p.version,
        outcome,
        instruments: Default::default(),
    };
    save(files, &ack);
    let _ = std::fs::remove_file(pending_path(files));
    Some(ack)
}

/// Applies `push` unless it was handled already; `None` when the intake
/// could not decide (outpostd stopping, a store failure) or a
/// `confirm-within` is still running: then the fleet pushes again.
pub async fn apply(push: DesiredPush, handle: &Handle, files: &LinkFiles) -> Option<DesiredAck> {
    if let Some(done) = last(files)
        && done.version >= push.version
    {
        return Some(done);
    }
    if pending(files).is_some_and(|p| p.version >= push.version) {
        return None;
    }
    let previous_version = handle.status().desired_version;
    // Which instruments to hear from once it is stored.
    let names: Vec<(String, bool)> = outpost_protocol::SensorSpec::parse(&push.toml)
        .map(|s| {
            s.instruments
                .into_iter()
                .map(|i| (i.name, i.enabled))
                .collect()
        })
        .unwrap_or_default();
    let origin = Origin::new(Source::Fleet, push.author.clone(), push.reason.clone());
    let change = Change::Whole {
        text: push.toml,
        label: format!("fleet version {}", push.version),
    };
    let outcome = match handle.apply(change, origin, false).await {
        Ok(a) => {
            info!(
                fleet_version = push.version,
                local_version = a.version,
                "desired state from the fleet applied"
            );
            if let Some(within) = push.confirm_within {
                let now = crate::db::now_ms();
                let window = within.as_millis() as i64;
                write_json(
                    &pending_path(files),
                    &Pending {
                        version: push.version,
                        applied_version: a.version,
                        previous_version: previous_version.filter(|p| *p != a.version),
                        since_ms: now,
                        confirm_after_ms: now + (window / 2).min(5_000),
                        deadline_ms: now + window,
                    },
                );
                return None;
            }
            DesiredOutcome::Applied {
                local_version: a.version,
            }
        }
        Err(ApplyError::Invalid(problems)) => {
            warn!(
                fleet_version = push.version,
                "desired state from the fleet refused: {}",
                problems.join("; ")
            );
            DesiredOutcome::Rejected { problems }
        }
        Err(e @ (ApplyError::Unreadable { .. } | ApplyError::UnknownInstrument { .. })) => {
            DesiredOutcome::Rejected {
                problems: vec![e.to_string()],
            }
        }
        Err(e) => {
            warn!(
                fleet_version = push.version,
                "desired state from the fleet not applied yet: {e}"
            );
            return None;
        }
    };
    let instruments = match outcome {
        DesiredOutcome::Applied { .. } => {
            instrument_outcomes(handle, &names, INSTRUMENT_WAIT).await
        }
        _ => Default::default(),
    };
    let ack = DesiredAck {
        version: push.version,
        outcome,
        instruments,
    };
    save(files, &ack);
    Some(ack)
}

/// How long the sensor waits for its instruments to take a new version
/// before it answers with what they are doing.
const INSTRUMENT_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Each instrument's result for the version just stored: waits until
/// every enabled one applied or refused its config, or `wait` passed.
pub async fn instrument_outcomes(
    handle: &Handle,
    names: &[(String, bool)],
    wait: std::time::Duration,
) -> BTreeMap<String, InstrumentOutcome> {
    let mut rx = handle.watch_status();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let snap = rx.borrow_and_update().clone();
        let out: BTreeMap<String, InstrumentOutcome> = names
            .iter()
            .map(|(name, enabled)| {
                let st = snap.instruments.iter().find(|i| &i.name == name);
                (name.clone(), outcome_of(st, *enabled))
            })
            .collect();
        let settled = !out
            .values()
            .any(|o| matches!(o, InstrumentOutcome::Waiting { .. }));
        if settled {
            return out;
        }
        if tokio::time::timeout_at(deadline, rx.changed())
            .await
            .is_err()
        {
            return out;
        }
    }
}

fn outcome_of(st: Option<&crate::db::InstrumentStatus>, enabled: bool) -> InstrumentOutcome {
    if !enabled {
        return InstrumentOutcome::Disabled;
    }
    let Some(st) = st else {
        return InstrumentOutcome::Waiting {
            detail: "not started yet".into(),
        };
    };
    if let Some(r) = &st.config_rejected
        && Some(r.version) == st.config_version
    {
        return InstrumentOutcome::Rejected {
            reason: r.reason.clone(),
        };
    }
    let running = st.state == crate::supervisor::State::Running;
    if running && st.config_applied == st.config_version {
        return InstrumentOutcome::Applied {
            config_version: st.config_version,
        };
    }
    InstrumentOutcome::Waiting {
        detail: if st.detail.is_empty() {
            format!("{:?}", st.state).to_lowercase()
        } else {
            format!("{:?}: {}", st.state, st.detail).to_lowercase()
        },
    }
}
