//! Desired-state versions and per-instrument config versions.

use super::*;

/// `meta` key of the fleet-managed mark.
const FLEET_MANAGED_KEY: &str = "fleet-managed";

impl Db {
    /// The newest desired state, with its version.
    pub fn latest_desired(&self) -> Result<Option<(i64, SensorSpec)>, DbError> {
        let row: Option<(i64, String)> = self
            .conn
            .query_row(
                "SELECT version, body FROM desired_state ORDER BY version DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        row.map(|(version, body)| {
            SensorSpec::from_json(&body)
                .map(|s| (version, s))
                .map_err(|e| DbError::Corrupt {
                    path: self.path.clone(),
                    version,
                    detail: e.to_string(),
                })
        })
        .transpose()
    }

    /// The desired state stored as `version`, if there is one.
    pub fn desired_at(&self, version: i64) -> Result<Option<SensorSpec>, DbError> {
        let body: Option<String> = self
            .conn
            .query_row(
                "SELECT body FROM desired_state WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        body.map(|b| {
            SensorSpec::from_json(&b).map_err(|e| DbError::Corrupt {
                path: self.path.clone(),
                version,
                detail: e.to_string(),
            })
        })
        .transpose()
    }

    /// Stores `spec` as a new version unless it equals the latest one, and
    /// gives every instrument whose config body changed a new config
    /// version number.
    pub fn store_desired(&mut self, spec: &SensorSpec, origin: &Origin) -> Result<Stored, DbError> {
        let body = spec.to_canonical_json();
        let sha = hex::encode(Sha256::digest(body.as_bytes()));
        let (tx, path) = self.immediate()?;
        let err = sql_err(path);
        let latest: Option<(i64, String)> = tx
            .query_row(
                "SELECT version, sha256 FROM desired_state ORDER BY version DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(&err)?;
        if let Some((version, latest_sha)) = &latest
            && *latest_sha == sha
        {
            return Ok(Stored {
                version: *version,
                changed: false,
            });
        }
        let now = now_ms();
        tx.execute(
            "INSERT INTO desired_state (format, body, sha256, source, author, reason, drift, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                FORMAT_VERSION,
                body,
                sha,
                origin.source.as_str(),
                origin.author,
                origin.reason,
                origin.drift,
                now
            ],
        )
        .map_err(&err)?;
        let version = tx.last_insert_rowid();
        for ins in &spec.instruments {
            let cfg = serde_json::to_string(&ins.config).expect("json value serializes");
            let last_body: Option<String> = tx
                .query_row(
                    "SELECT body FROM config_versions WHERE instrument = ?1 ORDER BY version DESC LIMIT 1",
                    params![ins.name],
                    |r| r.get(0),
                )
                .optional()
                .map_err(&err)?;
            if last_body.as_deref() == Some(cfg.as_str()) {
                continue;
            }
            let next: i64 = tx
                .query_row(
                    "SELECT last FROM config_seq WHERE instrument = ?1",
                    params![ins.name],
                    |r| r.get(0),
                )
                .optional()
                .map_err(&err)?
                .unwrap_or(0)
                + 1;
            tx.execute(
                "INSERT INTO config_seq (instrument, last) VALUES (?1, ?2)
                 ON CONFLICT (instrument) DO UPDATE SET last = excluded.last",
                params![ins.name, next],
            )
            .map_err(&err)?;
            tx.execute(
                "INSERT INTO config_versions (instrument, version, body, desired_version, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![ins.name, next, cfg, version, now],
            )
            .map_err(&err)?;
        }
        crate::failpoint::hit("desired-before-commit");
        tx.commit().map_err(&err)?;
        crate::failpoint::hit("desired-after-commit");
        Ok(Stored {
            version,
            changed: true,
        })
    }

    /// Stored desired-state versions, newest first.
    pub fn desired_history(&self, limit: i64) -> Result<Vec<DesiredVersion>, DbError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT version, sha256, source, author, reason, drift, created_at_ms
                 FROM desired_state ORDER BY version DESC LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![limit], |r| {
                Ok(DesiredVersion {
                    version: r.get(0)?,
                    sha256: r.get(1)?,
                    source: r.get(2)?,
                    author: r.get(3)?,
                    reason: r.get(4)?,
                    drift: r.get(5)?,
                    created_at_ms: r.get(6)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// The newest version, when it was made locally against the fleet.
    pub fn newest_drift(&self) -> Option<outpost_protocol::fleet::Drift> {
        let newest = self.desired_history(1).ok()?.into_iter().next()?;
        newest.drift.then_some(outpost_protocol::fleet::Drift {
            local_version: newest.version,
            source: newest.source,
            author: newest.author,
            reason: newest.reason,
            at_ms: newest.created_at_ms,
        })
    }

    /// The sha256 of the newest version that came from the sensor file
    /// (what start-up compares the file with), if one did.
    pub fn last_file_sha(&self) -> Result<Option<String>, DbError> {
        self.conn
            .query_row(
                "SELECT sha256 FROM desired_state WHERE source = 'file' OR source LIKE 'file:%'
                 ORDER BY version DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Whether the sensor is managed by a fleet (local changes are then
    /// refused unless overridden).
    pub fn fleet_managed(&self) -> Result<bool, DbError> {
        let v: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                params![FLEET_MANAGED_KEY],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(v.as_deref() == Some("1"))
    }

    pub fn set_fleet_managed(&self, on: bool) -> Result<(), DbError> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![FLEET_MANAGED_KEY, if on { "1" } else { "0" }],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// An instrument's config versions, newest first, each with the
    /// desired-state version that brought it and that version's origin.
    pub fn config_history(&self, instrument: &str) -> Result<Vec<ConfigVersion>, DbError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT c.version, c.body, c.desired_version, c.created_at_ms, d.source, d.author, d.reason
                 FROM config_versions c JOIN desired_state d ON d.version = c.desired_version
                 WHERE c.instrument = ?1 ORDER BY c.version DESC",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![instrument], |r| {
                let body: String = r.get(1)?;
                Ok(ConfigVersion {
                    version: r.get(0)?,
                    body: serde_json::from_str(&body).unwrap_or_default(),
                    desired_version: r.get(2)?,
                    created_at_ms: r.get(3)?,
                    source: r.get(4)?,
                    author: r.get(5)?,
                    reason: r.get(6)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// The newest config version of an instrument and its body.
    pub fn latest_config_body(
        &self,
        instrument: &str,
    ) -> Result<Option<(i64, serde_json::Value)>, DbError> {
        let row: Option<(i64, String)> = self
            .conn
            .query_row(
                "SELECT version, body FROM config_versions WHERE instrument = ?1 ORDER BY version DESC LIMIT 1",
                params![instrument],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(row.map(|(v, b)| (v, serde_json::from_str(&b).unwrap_or_default())))
    }

    /// Records what an instrument said of a config version.
    pub fn record_config_result(
        &self,
        instrument: &str,
        version: i64,
        applied: bool,
        reason: Option<&str>,
    ) -> Result<(), DbError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO config_results (instrument, version, applied, reason, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![instrument, version, applied, reason, now_ms()],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The newest config version of an instrument.
    pub fn latest_config(&self, instrument: &str) -> Result<Option<i64>, DbError> {
        self.conn
            .query_row(
                "SELECT MAX(version) FROM config_versions WHERE instrument = ?1",
                params![instrument],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }
}
