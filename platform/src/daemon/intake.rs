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

use outpost_protocol::{InstrumentSpec, SensorSpec};
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

/// What a change does to one instrument's spec.
type Edit = Box<dyn FnOnce(&mut InstrumentSpec)>;

/// A change to the desired state.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A whole sensor file (TOML); `label` names it in problems.
    Whole { text: String, label: String },
    /// One instrument's config body.
    Config {
        instrument: String,
        body: serde_json::Value,
    },
    /// Whether one instrument runs.
    Enabled { instrument: String, on: bool },
    /// An earlier stored version again, as a new version (a rollback).
    Restore { version: i64 },
}

/// Why a change was not stored. Nothing changed in any case.
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
    #[error(
        "no instrument {name} in the desired state (it has: {known}) (fix: check the name with \
         outpostctl instruments)"
    )]
    UnknownInstrument { name: String, known: String },
    #[error("there is no desired state yet (fix: outpostctl apply a sensor file first)")]
    NoDesiredState,
    #[error("cannot read sensor file {path}: {detail}")]
    Unreadable { path: String, detail: String },
    #[error("cannot store the desired state: {0}")]
    Store(String),
}

impl ApplyError {
    /// "No instrument `name`", listing those `spec` has.
    pub fn unknown(name: &str, spec: Option<&SensorSpec>) -> ApplyError {
        let names: Vec<&str> = spec
            .map(|s| s.instruments.iter().map(|i| i.name.as_str()).collect())
            .unwrap_or_default();
        ApplyError::UnknownInstrument {
            name: name.to_string(),
            known: if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            },
        }
    }
}

impl<R: Runtime> Daemon<R> {
    /// The whole desired state `change` asks for, and how problems name it.
    fn changed_spec(&self, change: Change) -> Result<(SensorSpec, String), ApplyError> {
        let (instrument, edit): (String, Edit) = match change {
            Change::Whole { text, label } => {
                let spec = SensorSpec::parse(&text).map_err(|e| {
                    ApplyError::Invalid(vec![format!(
                        "{label}: {}",
                        e.to_string().replace('\n', " ")
                    )])
                })?;
                return Ok((spec, label));
            }
            Change::Restore { version } => {
                let spec = self
                    .db
                    .desired_at(version)
                    .map_err(|e| ApplyError::Store(e.to_string()))?
                    .ok_or_else(|| {
                        ApplyError::Invalid(vec![format!(
                            "there is no stored desired state version {version}"
                        )])
                    })?;
                return Ok((spec, format!("version {version}")));
            }
            Change::Config { instrument, body } => (instrument, Box::new(move |i| i.config = body)),
            Change::Enabled { instrument, on } => (instrument, Box::new(move |i| i.enabled = on)),
        };
        let mut spec = self
            .desired
            .as_ref()
            .map(|(_, s)| s.clone())
            .ok_or(ApplyError::NoDesiredState)?;
        let Some(at) = spec.instruments.iter().position(|i| i.name == instrument) else {
            return Err(ApplyError::unknown(&instrument, Some(&spec)));
        };
        let ins = &mut spec.instruments[at];
        edit(ins);
        Ok((spec, format!("instrument {instrument}")))
    }

    /// Validates the state `change` makes as a whole and stores it as a
    /// new version from `origin`. `force` overrides the fleet on a
    /// fleet-managed sensor (recorded as drift).
    pub(super) fn apply(
        &mut self,
        change: Change,
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
        let checked = self
            .changed_spec(change)
            .and_then(|(spec, label)| self.check_spec(spec, &label).map_err(ApplyError::Invalid));
        let spec = match checked {
            Ok(spec) => spec,
            Err(ApplyError::Invalid(problems)) => {
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
            Err(e) => return Err(e),
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
        // The status answers with the new config versions at once, before
        // the reconcile that delivers them.
        for (name, inst) in self.instances.iter_mut() {
            if let Ok(v) = self.db.latest_config(name) {
                inst.status.config_version = v;
            }
        }
        self.desired = Some((stored.version, spec));
        Ok(Applied {
            version: stored.version,
            changed: stored.changed,
        })
    }

    /// `spec` checked alone and against every imported image, exactly as
    /// `outpostctl check` does; problems are prefixed with `label` (the
    /// file, or the instrument changed).
    pub(super) fn check_spec(
        &mut self,
        spec: SensorSpec,
        label: &str,
    ) -> Result<SensorSpec, Vec<String>> {
        spec.validate()
            .map_err(|e| vec![format!("{label}: {}", e.to_string().replace('\n', " "))])?;
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
