//! The one way desired state comes in. The sensor file (at start-up when
//! it changed, on SIGHUP), a local operator (`outpostctl`, D-Bus) and,
//! later, the fleet all call [`Daemon::apply`], which validates the whole
//! state against the imported images, stores a new version atomically with
//! who asked and why, and answers with the version or every problem.
//!
//! The stored, versioned state is the truth. At start-up the sensor file
//! is applied only if it changed since the last version that came from it,
//! so a local change survives a restart. On a fleet-managed sensor, file
//! and local changes are refused unless overridden, and an override is
//! recorded as drift.

use serde::{Deserialize, Serialize};
use tracing::{error, info};

use super::Daemon;
use crate::db::{Origin, Refusal, Source, now_ms};
use crate::runtime::Runtime;
use crate::validate;

/// A change that was stored (or equalled the newest version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub version: i64,
    /// `false` when it equalled the newest version: nothing was written.
    pub changed: bool,
}

/// Why a change was not stored. Nothing changed in either case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ApplyError {
    /// Every problem, each naming the field and the fix.
    #[error("the desired state is invalid; nothing was changed:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
    #[error(
        "this sensor is managed by a fleet: {} changes are refused and nothing was changed \
         (fix: make the change in the fleet, or pass --override to make it here and have it \
         recorded as drift)",
        .0.as_str()
    )]
    FleetManaged(Source),
    #[error("cannot store the desired state: {0}")]
    Store(String),
}

impl<R: Runtime> Daemon<R> {
    /// Validates `text` (a sensor file's TOML) as a whole and stores it as
    /// a new version from `origin`. `force` overrides the fleet on a
    /// fleet-managed sensor (recorded as drift).
    pub(super) fn apply(
        &mut self,
        text: &str,
        label: &str,
        mut origin: Origin,
        force: bool,
    ) -> Result<Applied, ApplyError> {
        let managed = self
            .db
            .fleet_managed()
            .map_err(|e| ApplyError::Store(e.to_string()))?;
        if managed && origin.source != Source::Fleet {
            if !force {
                return Err(ApplyError::FleetManaged(origin.source));
            }
            origin.drift = true;
        }
        let spec = match self.check_text(text, label) {
            Ok(spec) => spec,
            Err(problems) => {
                let refusal = Refusal {
                    at_ms: now_ms(),
                    source: format!("{} ({})", origin.source.as_str(), origin.author),
                    problems: problems.clone(),
                };
                if let Err(e) = self.db.set_refusal(Some(&refusal)) {
                    error!("cannot record the refusal: {e}");
                }
                return Err(ApplyError::Invalid(problems));
            }
        };
        let stored = self
            .db
            .store_desired(&spec, &origin)
            .map_err(|e| ApplyError::Store(e.to_string()))?;
        if let Err(e) = self.db.set_refusal(None) {
            error!("cannot clear the last refusal: {e}");
        }
        if stored.changed {
            info!(
                version = stored.version,
                source = origin.source.as_str(),
                author = %origin.author,
                reason = %origin.reason,
                drift = origin.drift,
                "new desired state stored"
            );
        }
        self.desired = Some((stored.version, spec));
        Ok(Applied {
            version: stored.version,
            changed: stored.changed,
        })
    }

    /// `text` parsed and checked alone and against every imported image,
    /// exactly as `outpostctl check` does; problems are prefixed with
    /// `label` (the file, or "desired state").
    pub(super) fn check_text(
        &mut self,
        text: &str,
        label: &str,
    ) -> Result<outpost_protocol::SensorSpec, Vec<String>> {
        let spec = outpost_protocol::SensorSpec::parse_valid(text)
            .map_err(|e| vec![format!("{label}: {e}")])?;
        let checked = validate::against_images(&spec, |i, v| self.manifest(i, v))
            .map_err(|e| vec![format!("{label}: {e}")])?;
        if !checked.is_valid() {
            return Err(checked
                .problems
                .iter()
                .map(|p| format!("{label}: {}", p.replace('\n', " ")))
                .collect());
        }
        Ok(spec)
    }
}
