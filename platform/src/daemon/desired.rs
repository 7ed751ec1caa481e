//! The desired state's way in: the sensor file, read at start and on
//! SIGHUP and checked as a whole (see [`crate::validate`]), and the
//! manifests its checks need.

use std::fs;
use std::path::Path;

use outpost_protocol::{InstrumentSpec, Manifest, SensorSpec};
use tracing::{debug, error, info};

use super::Daemon;
use crate::db::{Refusal, now_ms};
use crate::runtime::Runtime;
use crate::validate;

impl<R: Runtime> Daemon<R> {
    /// Reads, validates and stores the sensor file. It is checked exactly
    /// as `outpostd check` does (alone, then against every imported
    /// image); a refused file changes nothing, and the refusal is kept for
    /// `status` until a valid file is applied.
    pub(super) fn load_sensor_file(&mut self, file: &Path) -> Result<(), String> {
        let source = format!("file:{}", file.display());
        let spec = match self.read_valid_sensor_file(file) {
            Ok(spec) => spec,
            Err(problems) => {
                let refusal = Refusal {
                    at_ms: now_ms(),
                    source,
                    problems: problems.clone(),
                };
                if let Err(e) = self.db.set_refusal(Some(&refusal)) {
                    error!("cannot record the refusal: {e}");
                }
                return Err(problems.join("; "));
            }
        };
        let stored = self
            .db
            .store_desired(&spec, &source)
            .map_err(|e| e.to_string())?;
        if let Err(e) = self.db.set_refusal(None) {
            error!("cannot clear the last refusal: {e}");
        }
        if stored.changed {
            info!(version = stored.version, file = %file.display(), "new desired state stored");
        } else {
            debug!(version = stored.version, "sensor file unchanged");
        }
        self.desired = Some((stored.version, spec));
        Ok(())
    }

    /// The sensor file, parsed and checked, or every problem with it.
    pub(super) fn read_valid_sensor_file(
        &mut self,
        file: &Path,
    ) -> Result<SensorSpec, Vec<String>> {
        let text = fs::read_to_string(file)
            .map_err(|e| vec![format!("cannot read sensor file {}: {e}", file.display())])?;
        let spec = SensorSpec::parse_valid(&text)
            .map_err(|e| vec![format!("sensor file {}: {e}", file.display())])?;
        let checked = validate::against_images(&spec, |i, v| self.manifest(i, v))
            .map_err(|e| vec![format!("sensor file {}: {e}", file.display())])?;
        if !checked.is_valid() {
            return Err(checked
                .problems
                .iter()
                .map(|p| format!("sensor file {}: {}", file.display(), p.replace('\n', " ")))
                .collect());
        }
        Ok(spec)
    }

    pub(super) fn reload(&mut self) {
        let Some(file) = self.cfg.sensor_file.clone() else {
            self.desired = self.db.latest_desired().unwrap_or(self.desired.take());
            return;
        };
        if let Err(e) = self.load_sensor_file(&file) {
            error!("{e}; keeping the previous desired state");
        }
    }

    /// The manifest of an imported image (parsed once per image).
    pub(super) fn manifest(
        &mut self,
        image: &str,
        version: &str,
    ) -> Result<Option<Manifest>, crate::images::ImageError> {
        let Some(rec) = self.db.image(image, version)? else {
            return Ok(None);
        };
        let key = (rec.name.clone(), rec.version.clone(), rec.sha256.clone());
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
    ) -> Result<(), String> {
        let key = (
            ins.image.clone(),
            ins.version.clone(),
            serde_json::to_string(&ins.config).unwrap_or_default(),
        );
        if let Some(r) = self.config_checks.get(&key) {
            return r.clone();
        }
        let r = SensorSpec::validate_against(ins, m).map_err(|e| e.to_string().replace('\n', " "));
        if self.config_checks.len() > 1000 {
            self.config_checks.clear();
        }
        self.config_checks.insert(key, r.clone());
        r
    }
}
