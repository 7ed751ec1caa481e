//! The sensor file as an input to [`Daemon::apply`] (see `intake`), and
//! the manifests the checks need.

use std::fs;
use std::path::Path;

use outpost_protocol::{InstrumentSpec, Manifest, SensorSpec};
use sha2::{Digest, Sha256};
use tracing::{debug, error};

use outpost_protocol::validate::Invalid;

use super::{ApplyError, Change, Daemon};
use crate::db::{Origin, Source};
use crate::runtime::Runtime;

impl<R: Runtime> Daemon<R> {
    /// Applies the sensor file through [`Daemon::apply`]: when `explicit`
    /// (SIGHUP) always, at start-up only when it changed since the last
    /// version that came from it, so that a local change made since
    /// survives a restart. A refused file changes nothing; the refusal is
    /// kept for `status` until a valid state is applied.
    pub(super) fn load_sensor_file(
        &mut self,
        file: &Path,
        explicit: bool,
    ) -> Result<(), ApplyError> {
        let text = fs::read_to_string(file).map_err(|e| ApplyError::Unreadable {
            path: file.display().to_string(),
            detail: e.to_string(),
        })?;
        if !explicit && let Ok(spec) = SensorSpec::parse_valid(&text) {
            let sha = hex::encode(Sha256::digest(spec.to_canonical_json().as_bytes()));
            let last = self
                .db
                .last_file_sha()
                .map_err(|e| ApplyError::Store(e.to_string()))?;
            if last.as_deref() == Some(sha.as_str()) {
                let version = self.desired.as_ref().map(|(v, _)| *v).unwrap_or(0);
                debug!(
                    file = %file.display(),
                    version,
                    "the sensor file is unchanged since it was last applied; the stored desired state stays"
                );
                return Ok(());
            }
        }
        let reason = if explicit {
            "SIGHUP"
        } else {
            "start-up: the sensor file changed since it was last applied"
        };
        let origin = Origin::new(Source::File, file.display().to_string(), reason);
        let label = format!("sensor file {}", file.display());
        self.apply(Change::Whole { text, label }, origin, false)
            .map(|_| ())
    }

    pub(super) fn reload(&mut self) {
        let Some(file) = self.cfg.sensor_file.clone() else {
            self.desired = self.db.latest_desired().unwrap_or(self.desired.take());
            return;
        };
        if let Err(e) = self.load_sensor_file(&file, true) {
            error!("{e}; keeping the previous desired state");
        }
    }

    /// The manifest of an imported image (parsed once per image).
    pub(super) fn manifest(
        &mut self,
        image: &str,
        version: &str,
    ) -> Result<Option<Manifest>, crate::images::ImageError> {
        // Asked for every instrument at every reconcile and status
        // snapshot: answered from memory. An imported image never changes
        // (another content under the same version is refused), and its
        // removal goes through the actor, which forgets it here.
        let key = (image.to_string(), version.to_string());
        if let Some(m) = self.manifests.get(&key) {
            return Ok(Some(m.clone()));
        }
        let m = self.images.get(&self.db, image, version)?.map(|(_, m)| m);
        if let Some(m) = &m {
            self.manifests.insert(key, m.clone());
        }
        Ok(m)
    }

    /// Checks an instrument's spec against its manifest (remembered per
    /// image and config body).
    pub(super) fn check_config(
        &mut self,
        ins: &InstrumentSpec,
        m: &Manifest,
    ) -> Result<(), Invalid> {
        let key = (
            ins.image.clone(),
            ins.version.clone(),
            format!(
                "{}\n{}",
                ins.retention.map(|r| r.to_string()).unwrap_or_default(),
                serde_json::to_string(&ins.config).unwrap_or_default()
            ),
        );
        if let Some(r) = self.config_checks.get(&key) {
            return r.clone();
        }
        let r = SensorSpec::validate_against(ins, m);
        if self.config_checks.len() > 1000 {
            self.config_checks.clear();
        }
        self.config_checks.insert(key, r.clone());
        r
    }
}
