//! Desired state from the fleet: a pushed version goes through the
//! sensor's one intake (source `fleet`), and the sensor answers with the
//! outcome. The last version handled is kept in `<state>/fleet/desired.json`,
//! so a version pushed again (the fleet re-pushes until it hears back) is
//! answered the same way without being applied twice.

use outpost_protocol::fleet::{DesiredAck, DesiredOutcome, DesiredPush};
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

fn save(files: &LinkFiles, ack: &DesiredAck) {
    let p = path(files);
    let tmp = p.with_extension("tmp");
    let body = serde_json::to_vec(ack).expect("serializes");
    if let Err(e) = std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, &p)) {
        warn!(path = %p.display(), "cannot record the fleet version handled: {e}");
    }
}

/// Applies `push` unless it was handled already; `None` when the intake
/// could not decide (outpostd stopping, a store failure): then the fleet
/// pushes again.
pub async fn apply(push: DesiredPush, handle: &Handle, files: &LinkFiles) -> Option<DesiredAck> {
    if let Some(done) = last(files)
        && done.version >= push.version
    {
        return Some(done);
    }
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
    let ack = DesiredAck {
        version: push.version,
        outcome,
    };
    save(files, &ack);
    Some(ack)
}
