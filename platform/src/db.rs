//! outpostd's persistent state in SQLite: every version of the desired
//! state, per-instrument config versions, imported images, instrument
//! status and exit history.
//!
//! The daemon and the `outpostd` subcommands open the same file (WAL mode,
//! busy timeout), so `outpostd status` or `image import` work while the
//! daemon runs. The schema carries its version in `PRAGMA user_version`.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use outpost_protocol::SensorSpec;
use outpost_protocol::desired::FORMAT_VERSION;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::supervisor::ExitRecord;

const SCHEMA_VERSION: i64 = 3;

/// Exits kept per instrument.
const EXIT_HISTORY: i64 = 100;
/// Health checks kept per instrument.
pub const HEALTH_HISTORY: i64 = 1000;

/// Database failure.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("state database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "state database {path} has schema version {found}, newer than this outpostd knows ({SCHEMA_VERSION}) (fix: run a newer outpostd)"
    )]
    TooNew { path: PathBuf, found: i64 },
    #[error(
        "state database {path}: stored desired state version {version} is unreadable: {detail}"
    )]
    Corrupt {
        path: PathBuf,
        version: i64,
        detail: String,
    },
    #[error(
        "image {name}:{version} is in use by {users} (fix: remove it from the sensor file first)"
    )]
    ImageInUse {
        name: String,
        version: String,
        users: String,
    },
    #[error("image {name}:{version} is not imported (see: outpostd image list)")]
    NoSuchImage { name: String, version: String },
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// An imported image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub manifest: String,
    pub imported_at_ms: i64,
    pub bytes: i64,
}

/// The stored status of one instrument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstrumentStatus {
    pub name: String,
    /// Lifecycle state (see `supervisor::state`).
    pub state: String,
    /// Why it is in that state, in words.
    pub detail: String,
    pub image: String,
    pub version: String,
    pub init_pid: Option<i32>,
    pub started_at_ms: Option<i64>,
    /// Restarts done by the supervisor since the instrument was defined.
    pub restarts: u32,
    /// Consecutive quick failures (resets after a stable run).
    pub failures: u32,
    /// When the next restart is due, while in back-off.
    pub next_restart_ms: Option<i64>,
    pub last_exit: Option<ExitRecord>,
    pub spec_hash: Option<String>,
    /// The newest config version of the desired state.
    pub config_version: Option<i64>,
    /// The config version the running instrument applied.
    #[serde(default)]
    pub config_applied: Option<i64>,
    /// The newest version it rejected, and why.
    #[serde(default)]
    pub config_rejected: Option<ConfigRejection>,
    /// Health as the platform sees it (see `outpost_protocol::messages::InstrumentHealth`).
    #[serde(default = "unknown_health")]
    pub health: String,
    #[serde(default)]
    pub health_message: String,
    /// The instrument's own health details (its last reply).
    #[serde(default)]
    pub health_details: serde_json::Value,
    pub updated_at_ms: i64,
}

fn unknown_health() -> String {
    "stopped".into()
}

/// A config version an instrument refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRejection {
    pub version: i64,
    pub reason: String,
}

/// One health check, as kept in the history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthCheck {
    pub at_ms: i64,
    pub state: String,
    pub message: String,
    pub latency_ms: Option<f64>,
}

/// What storing a desired state did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub version: i64,
    /// `false` when it equals the latest stored version (nothing written).
    pub changed: bool,
}

/// One stored desired-state version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredVersion {
    pub version: i64,
    pub sha256: String,
    pub source: String,
    pub created_at_ms: i64,
}

/// Maps SQLite errors to [`DbError`] naming the database file.
fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> DbError + '_ {
    move |source| DbError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

/// A connection to the state database.
pub struct Db {
    conn: Connection,
    path: PathBuf,
}

impl Db {
    /// Opens (creating and migrating as needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let err = sql_err(path);
        let conn = Connection::open(path).map_err(&err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(&err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(&err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(&err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(&err)?;
        let mut db = Db {
            conn,
            path: path.to_path_buf(),
        };
        db.migrate()?;
        Ok(db)
    }

    fn err(&self, source: rusqlite::Error) -> DbError {
        sql_err(&self.path)(source)
    }

    /// A write transaction taken at once, so concurrent writers (the daemon
    /// and a CLI command) queue instead of failing half-way.
    fn immediate(&mut self) -> Result<(rusqlite::Transaction<'_>, &Path), DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql_err(&self.path))?;
        Ok((tx, &self.path))
    }

    fn migrate(&mut self) -> Result<(), DbError> {
        // The daemon and a CLI command may open a new database at the same
        // moment; one migrates, the other then sees it done.
        let (tx, path) = self.immediate()?;
        let err = sql_err(path);
        let v: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(&err)?;
        if v > SCHEMA_VERSION {
            return Err(DbError::TooNew {
                path: path.to_path_buf(),
                found: v,
            });
        }
        if v < 1 {
            tx.execute_batch(
                "CREATE TABLE desired_state (
                    version INTEGER PRIMARY KEY AUTOINCREMENT,
                    format INTEGER NOT NULL,
                    body TEXT NOT NULL,
                    sha256 TEXT NOT NULL,
                    source TEXT NOT NULL,
                    created_at_ms INTEGER NOT NULL
                );
                CREATE TABLE config_versions (
                    instrument TEXT NOT NULL,
                    version INTEGER NOT NULL,
                    body TEXT NOT NULL,
                    desired_version INTEGER NOT NULL,
                    created_at_ms INTEGER NOT NULL,
                    PRIMARY KEY (instrument, version)
                );
                -- The last config version number ever given, so a number
                -- is never reused, even after an instrument is removed.
                CREATE TABLE config_seq (
                    instrument TEXT PRIMARY KEY,
                    last INTEGER NOT NULL
                );
                CREATE TABLE images (
                    name TEXT NOT NULL,
                    version TEXT NOT NULL,
                    sha256 TEXT NOT NULL,
                    manifest TEXT NOT NULL,
                    imported_at_ms INTEGER NOT NULL,
                    bytes INTEGER NOT NULL,
                    PRIMARY KEY (name, version)
                );
                CREATE TABLE instruments (
                    name TEXT PRIMARY KEY,
                    body TEXT NOT NULL
                );
                CREATE TABLE exits (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    instrument TEXT NOT NULL,
                    body TEXT NOT NULL
                );
                CREATE INDEX exits_by_instrument ON exits (instrument, id);
                PRAGMA user_version = 1;",
            )
            .map_err(&err)?;
        }
        if v < 2 {
            tx.execute_batch(
                "CREATE TABLE health_checks (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    instrument TEXT NOT NULL,
                    at_ms INTEGER NOT NULL,
                    state TEXT NOT NULL,
                    message TEXT NOT NULL,
                    latency_ms REAL
                );
                CREATE INDEX health_by_instrument ON health_checks (instrument, id);
                CREATE TABLE config_results (
                    instrument TEXT NOT NULL,
                    version INTEGER NOT NULL,
                    applied INTEGER NOT NULL,
                    reason TEXT,
                    at_ms INTEGER NOT NULL,
                    PRIMARY KEY (instrument, version, at_ms)
                );
                PRAGMA user_version = 2;",
            )
            .map_err(&err)?;
        }
        if v < 3 {
            // One row per interface binding that may have touched the host:
            // written before the first change, so a crash at any point
            // leaves enough to undo it.
            tx.execute_batch(
                "CREATE TABLE bindings (
                    instrument TEXT NOT NULL,
                    role TEXT NOT NULL,
                    body TEXT NOT NULL,
                    PRIMARY KEY (instrument, role)
                );
                PRAGMA user_version = 3;",
            )
            .map_err(&err)?;
        }
        tx.commit().map_err(&err)
    }

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

    /// Stores `spec` as a new version unless it equals the latest one, and
    /// gives every instrument whose config body changed a new config
    /// version number.
    pub fn store_desired(&mut self, spec: &SensorSpec, source: &str) -> Result<Stored, DbError> {
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
            "INSERT INTO desired_state (format, body, sha256, source, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![FORMAT_VERSION, body, sha, source, now],
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
        tx.commit().map_err(&err)?;
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
                "SELECT version, sha256, source, created_at_ms FROM desired_state ORDER BY version DESC LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![limit], |r| {
                Ok(DesiredVersion {
                    version: r.get(0)?,
                    sha256: r.get(1)?,
                    source: r.get(2)?,
                    created_at_ms: r.get(3)?,
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

    /// Appends a health check to the (bounded) history.
    pub fn record_health(&self, instrument: &str, c: &HealthCheck) -> Result<(), DbError> {
        self.conn
            .execute(
                "INSERT INTO health_checks (instrument, at_ms, state, message, latency_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![instrument, c.at_ms, c.state, c.message, c.latency_ms],
            )
            .map_err(|e| self.err(e))?;
        let id = self.conn.last_insert_rowid();
        if id % 64 == 0 {
            self.conn
                .execute(
                    "DELETE FROM health_checks WHERE instrument = ?1 AND id NOT IN
                       (SELECT id FROM health_checks WHERE instrument = ?1 ORDER BY id DESC LIMIT ?2)",
                    params![instrument, HEALTH_HISTORY],
                )
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// An instrument's health checks, newest first.
    pub fn health_history(
        &self,
        instrument: &str,
        limit: i64,
    ) -> Result<Vec<HealthCheck>, DbError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT at_ms, state, message, latency_ms FROM health_checks WHERE instrument = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![instrument, limit], |r| {
                Ok(HealthCheck {
                    at_ms: r.get(0)?,
                    state: r.get(1)?,
                    message: r.get(2)?,
                    latency_ms: r.get(3)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
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

    /// Records an imported image.
    pub fn insert_image(&self, rec: &ImageRecord) -> Result<(), DbError> {
        self.conn
            .execute(
                "INSERT INTO images (name, version, sha256, manifest, imported_at_ms, bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![rec.name, rec.version, rec.sha256, rec.manifest, rec.imported_at_ms, rec.bytes],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// One image.
    pub fn image(&self, name: &str, version: &str) -> Result<Option<ImageRecord>, DbError> {
        self.conn
            .query_row(
                "SELECT name, version, sha256, manifest, imported_at_ms, bytes FROM images WHERE name = ?1 AND version = ?2",
                params![name, version],
                image_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Every image, by name and version.
    pub fn images(&self) -> Result<Vec<ImageRecord>, DbError> {
        let mut st = self
            .conn
            .prepare("SELECT name, version, sha256, manifest, imported_at_ms, bytes FROM images ORDER BY name, version")
            .map_err(|e| self.err(e))?;
        let rows = st.query_map([], image_row).map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Deletes an image's record unless the desired state or an existing
    /// instrument uses it. The check and the delete are one transaction.
    pub fn delete_image_if_unused(&mut self, name: &str, version: &str) -> Result<(), DbError> {
        let (tx, path) = self.immediate()?;
        let err = sql_err(path);
        let exists: bool = tx
            .query_row(
                "SELECT COUNT(*) FROM images WHERE name = ?1 AND version = ?2",
                params![name, version],
                |r| r.get::<_, i64>(0),
            )
            .map_err(&err)?
            > 0;
        if !exists {
            return Err(DbError::NoSuchImage {
                name: name.into(),
                version: version.into(),
            });
        }
        let mut users = Vec::new();
        let desired: Option<String> = tx
            .query_row(
                "SELECT body FROM desired_state ORDER BY version DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(&err)?;
        if let Some(body) = desired
            && let Ok(spec) = SensorSpec::from_json(&body)
        {
            for i in spec.instruments {
                if i.image == name && i.version == version {
                    users.push(format!("instrument {} (sensor file)", i.name));
                }
            }
        }
        {
            let mut st = tx.prepare("SELECT body FROM instruments").map_err(&err)?;
            let rows = st.query_map([], |r| r.get::<_, String>(0)).map_err(&err)?;
            for body in rows {
                let body = body.map_err(&err)?;
                if let Ok(s) = serde_json::from_str::<InstrumentStatus>(&body)
                    && s.image == name
                    && s.version == version
                    && s.init_pid.is_some()
                {
                    let u = format!("instrument {} (running)", s.name);
                    if !users
                        .iter()
                        .any(|x: &String| x.starts_with(&format!("instrument {} ", s.name)))
                    {
                        users.push(u);
                    }
                }
            }
        }
        if !users.is_empty() {
            return Err(DbError::ImageInUse {
                name: name.into(),
                version: version.into(),
                users: users.join(", "),
            });
        }
        tx.execute(
            "DELETE FROM images WHERE name = ?1 AND version = ?2",
            params![name, version],
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)
    }

    /// Records (or updates) an interface binding's undo record.
    pub fn put_binding(&self, instrument: &str, role: &str, body: &str) -> Result<(), DbError> {
        self.conn
            .execute(
                "INSERT INTO bindings (instrument, role, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT (instrument, role) DO UPDATE SET body = excluded.body",
                params![instrument, role, body],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Forgets a binding once it is undone.
    pub fn delete_binding(&self, instrument: &str, role: &str) -> Result<(), DbError> {
        self.conn
            .execute(
                "DELETE FROM bindings WHERE instrument = ?1 AND role = ?2",
                params![instrument, role],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Every recorded binding as (instrument, role, body), or one
    /// instrument's.
    pub fn bindings(
        &self,
        instrument: Option<&str>,
    ) -> Result<Vec<(String, String, String)>, DbError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT instrument, role, body FROM bindings
                 WHERE ?1 IS NULL OR instrument = ?1 ORDER BY instrument, role",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![instrument], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Saves an instrument's status.
    pub fn put_status(&self, s: &InstrumentStatus) -> Result<(), DbError> {
        let body = serde_json::to_string(s).expect("status serializes");
        self.conn
            .execute(
                "INSERT INTO instruments (name, body) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET body = excluded.body",
                params![s.name, body],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Forgets an instrument's status (it was removed).
    pub fn delete_status(&self, name: &str) -> Result<(), DbError> {
        self.conn
            .execute("DELETE FROM instruments WHERE name = ?1", params![name])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Every instrument's status, by name.
    pub fn statuses(&self) -> Result<Vec<InstrumentStatus>, DbError> {
        let mut st = self
            .conn
            .prepare("SELECT body FROM instruments ORDER BY name")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for body in rows {
            let body = body.map_err(|e| self.err(e))?;
            if let Ok(s) = serde_json::from_str(&body) {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// One instrument's status.
    pub fn status(&self, name: &str) -> Result<Option<InstrumentStatus>, DbError> {
        let body: Option<String> = self
            .conn
            .query_row(
                "SELECT body FROM instruments WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(body.and_then(|b| serde_json::from_str(&b).ok()))
    }

    /// Appends to an instrument's exit history (bounded).
    pub fn record_exit(&self, name: &str, exit: &ExitRecord) -> Result<(), DbError> {
        let body = serde_json::to_string(exit).expect("exit serializes");
        self.conn
            .execute(
                "INSERT INTO exits (instrument, body) VALUES (?1, ?2)",
                params![name, body],
            )
            .map_err(|e| self.err(e))?;
        self.conn
            .execute(
                "DELETE FROM exits WHERE instrument = ?1 AND id NOT IN
                   (SELECT id FROM exits WHERE instrument = ?1 ORDER BY id DESC LIMIT ?2)",
                params![name, EXIT_HISTORY],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// An instrument's exits, newest first.
    pub fn exits(&self, name: &str, limit: i64) -> Result<Vec<ExitRecord>, DbError> {
        let mut st = self
            .conn
            .prepare("SELECT body FROM exits WHERE instrument = ?1 ORDER BY id DESC LIMIT ?2")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![name, limit], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for b in rows {
            if let Ok(e) = serde_json::from_str(&b.map_err(|e| self.err(e))?) {
                out.push(e);
            }
        }
        Ok(out)
    }
}

fn image_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ImageRecord> {
    Ok(ImageRecord {
        name: r.get(0)?,
        version: r.get(1)?,
        sha256: r.get(2)?,
        manifest: r.get(3)?,
        imported_at_ms: r.get(4)?,
        bytes: r.get(5)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(greeting: &str) -> SensorSpec {
        SensorSpec::parse_valid(&format!(
            "[sensor]\nname = \"s\"\n[[instrument]]\nname = \"a\"\nimage = \"example\"\nversion = \"0.1.0\"\nconfig = {{ greeting = \"{greeting}\" }}\n"
        ))
        .unwrap()
    }

    #[test]
    fn desired_state_is_versioned_and_deduplicated() {
        let d = tempfile::tempdir().unwrap();
        let mut db = Db::open(&d.path().join("db")).unwrap();
        assert!(db.latest_desired().unwrap().is_none());
        let s1 = db.store_desired(&spec("hi"), "test").unwrap();
        assert!(s1.changed);
        let again = db.store_desired(&spec("hi"), "test").unwrap();
        assert_eq!(
            again,
            Stored {
                version: s1.version,
                changed: false
            }
        );
        let s2 = db.store_desired(&spec("ho"), "test").unwrap();
        assert!(s2.version > s1.version);
        assert_eq!(db.latest_desired().unwrap().unwrap().1, spec("ho"));
        assert_eq!(db.latest_config("a").unwrap(), Some(2));
        assert_eq!(db.desired_history(10).unwrap().len(), 2);

        // Survives reopening.
        drop(db);
        let db = Db::open(&d.path().join("db")).unwrap();
        assert_eq!(db.latest_desired().unwrap().unwrap().0, s2.version);
    }

    #[test]
    fn config_versions_are_never_reused() {
        let d = tempfile::tempdir().unwrap();
        let mut db = Db::open(&d.path().join("db")).unwrap();
        db.store_desired(&spec("one"), "t").unwrap();
        db.store_desired(&spec("two"), "t").unwrap();
        // Remove the instrument, then add it back with the first body.
        let empty = SensorSpec::parse_valid("[sensor]\nname = \"s\"\n").unwrap();
        db.store_desired(&empty, "t").unwrap();
        db.store_desired(&spec("one"), "t").unwrap();
        assert_eq!(db.latest_config("a").unwrap(), Some(3));
    }

    #[test]
    fn image_in_use_cannot_be_deleted() {
        let d = tempfile::tempdir().unwrap();
        let mut db = Db::open(&d.path().join("db")).unwrap();
        let rec = ImageRecord {
            name: "example".into(),
            version: "0.1.0".into(),
            sha256: "00".into(),
            manifest: String::new(),
            imported_at_ms: 1,
            bytes: 1,
        };
        db.insert_image(&rec).unwrap();
        db.store_desired(&spec("x"), "t").unwrap();
        let err = db.delete_image_if_unused("example", "0.1.0").unwrap_err();
        assert!(err.to_string().contains("instrument a"), "{err}");
        db.store_desired(
            &SensorSpec::parse_valid("[sensor]\nname = \"s\"\n").unwrap(),
            "t",
        )
        .unwrap();
        db.delete_image_if_unused("example", "0.1.0").unwrap();
        assert!(db.image("example", "0.1.0").unwrap().is_none());
        assert!(matches!(
            db.delete_image_if_unused("example", "0.1.0"),
            Err(DbError::NoSuchImage { .. })
        ));
    }

    #[test]
    fn health_history_is_kept_and_bounded() {
        let d = tempfile::tempdir().unwrap();
        let db = Db::open(&d.path().join("db")).unwrap();
        for i in 0..(HEALTH_HISTORY + 200) {
            let c = HealthCheck {
                at_ms: i,
                state: "ok".into(),
                message: String::new(),
                latency_ms: Some(1.0),
            };
            db.record_health("a", &c).unwrap();
        }
        let h = db.health_history("a", 10_000).unwrap();
        assert!(h.len() as i64 <= HEALTH_HISTORY + 64, "{}", h.len());
        assert_eq!(h[0].at_ms, HEALTH_HISTORY + 199);
    }

    #[test]
    fn exit_history_is_bounded() {
        let d = tempfile::tempdir().unwrap();
        let db = Db::open(&d.path().join("db")).unwrap();
        for i in 0..(EXIT_HISTORY + 10) {
            db.record_exit("a", &ExitRecord::from_init(Some("{\"code\":1}"), i))
                .unwrap();
        }
        let exits = db.exits("a", 1000).unwrap();
        assert_eq!(exits.len() as i64, EXIT_HISTORY);
        assert_eq!(exits[0].at_ms, EXIT_HISTORY + 9);
    }
}
