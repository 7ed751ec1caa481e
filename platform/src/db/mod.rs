//! outpostd's persistent state in SQLite: every version of the desired
//! state, per-instrument config versions, imported images, instrument
//! status and exit history.
//!
//! The daemon, its D-Bus service, image import jobs and `outpostctl check`
//! each open their own connection to the same file (WAL mode, busy
//! timeout), so a history read or an import works while the daemon writes. The schema carries its version in `PRAGMA user_version`.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use outpost_protocol::SensorSpec;
use outpost_protocol::desired::FORMAT_VERSION;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::supervisor::ExitRecord;

mod artifacts;
mod desired;
mod idmaps;
mod images;
mod instruments;
mod retention;

pub use artifacts::ArtifactInstall;
pub use idmaps::{IdRange, Refusal};
pub use retention::{RetentionOutcome, RetentionRun};

const SCHEMA_VERSION: i64 = 7;

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
    #[error("image {name}:{version} is not imported (see: outpostctl image list)")]
    NoSuchImage { name: String, version: String },
    #[error(
        "no free range of {count} host ids from {first} for instrument {instrument} (fix: purge removed instruments, or start outpostd with a lower --id-range-start)"
    )]
    IdsExhausted {
        instrument: String,
        first: u32,
        count: u32,
    },
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
    /// Lifecycle state.
    pub state: crate::supervisor::State,
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
    /// How full its persistent storage is (while it runs).
    #[serde(default)]
    pub storage: Option<outpost_protocol::messages::StorageUse>,
    /// Whether its persistent storage is full (writes fail with ENOSPC).
    #[serde(default)]
    pub storage_full: bool,
    /// Round trip of its last answered health check, in microseconds.
    #[serde(default)]
    pub health_rtt_us: Option<u64>,
    /// Health checks it did not answer in time, since the daemon started.
    #[serde(default)]
    pub health_unanswered: u64,
    /// Its bus connections through its proxy (while it runs).
    #[serde(default)]
    pub bus_connections: Option<crate::messaging::proxy::ProxyStats>,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredVersion {
    pub version: i64,
    pub sha256: String,
    /// `file`, `local` or `fleet` (`file:<path>` from before schema 5).
    pub source: String,
    pub author: String,
    pub reason: String,
    /// Made against the fleet on a fleet-managed sensor (an override).
    pub drift: bool,
    pub created_at_ms: i64,
}

/// One config version of an instrument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigVersion {
    pub version: i64,
    pub body: serde_json::Value,
    /// The desired-state version that brought it.
    pub desired_version: i64,
    pub created_at_ms: i64,
    /// That version's origin.
    pub source: String,
    pub author: String,
    pub reason: String,
}

/// Where a desired-state change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The sensor file (at start-up when it changed, on SIGHUP).
    File,
    /// An operator on the sensor (`outpostctl`, D-Bus).
    Local,
    /// The fleet.
    Fleet,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Local => "local",
            Source::Fleet => "fleet",
        }
    }
}

/// Who asked for a desired-state change, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub source: Source,
    /// For `file` the file's path; for `local` the caller ("uid 0 via
    /// :1.42"); for `fleet` the fleet operator.
    pub author: String,
    pub reason: String,
    /// An override of the fleet on a fleet-managed sensor.
    pub drift: bool,
}

impl Origin {
    pub fn new(source: Source, author: impl Into<String>, reason: impl Into<String>) -> Origin {
        Origin {
            source,
            author: author.into(),
            reason: reason.into(),
            drift: false,
        }
    }
}

/// Makes the database file `0600` if others may read it.
fn private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path)
        && m.permissions().mode() & 0o077 != 0
        && let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
    {
        tracing::warn!(path = %path.display(), "cannot make the state database private: {e}");
    }
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
        // The state is root's alone (SQLite gives its WAL files the same
        // mode), whichever command made the file.
        private(path);
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
        if v < 4 {
            // Host id ranges of the instruments' user namespaces, and
            // small records by key.
            tx.execute_batch(
                "CREATE TABLE idmaps (
                    instrument TEXT PRIMARY KEY,
                    base INTEGER NOT NULL UNIQUE,
                    count INTEGER NOT NULL,
                    created_at_ms INTEGER NOT NULL
                );
                CREATE TABLE meta (
                    key TEXT PRIMARY KEY,
                    value TEXT NOT NULL
                );
                PRAGMA user_version = 4;",
            )
            .map_err(&err)?;
        }
        if v < 5 {
            // Who made each desired-state version and why; whether it was
            // made against the fleet (drift). Rows from before keep their
            // `file:<path>` source.
            tx.execute_batch(
                "ALTER TABLE desired_state ADD COLUMN author TEXT NOT NULL DEFAULT '';
                ALTER TABLE desired_state ADD COLUMN reason TEXT NOT NULL DEFAULT '';
                ALTER TABLE desired_state ADD COLUMN drift INTEGER NOT NULL DEFAULT 0;
                PRAGMA user_version = 5;",
            )
            .map_err(&err)?;
        }
        if v < 6 {
            // The record of every retention run (the platform's proof).
            tx.execute_batch(
                "CREATE TABLE retention_runs (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    instrument TEXT NOT NULL,
                    started_at_ms INTEGER NOT NULL,
                    body TEXT NOT NULL
                );
                CREATE INDEX retention_by_instrument ON retention_runs (instrument, id);
                PRAGMA user_version = 6;",
            )
            .map_err(&err)?;
        }
        if v < 7 {
            // Every artifact installed or refused.
            tx.execute_batch(
                "CREATE TABLE artifact_installs (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    name TEXT NOT NULL,
                    at_ms INTEGER NOT NULL,
                    outcome TEXT NOT NULL,
                    body TEXT NOT NULL
                );
                CREATE INDEX artifacts_by_name ON artifact_installs (name, outcome);
                PRAGMA user_version = 7;",
            )
            .map_err(&err)?;
        }
        tx.commit().map_err(&err)
    }
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
    fn each_version_keeps_its_origin_and_start_up_compares_with_the_last_file_one() {
        let d = tempfile::tempdir().unwrap();
        let mut db = Db::open(&d.path().join("db")).unwrap();
        assert_eq!(db.last_file_sha().unwrap(), None);
        let file = db
            .store_desired(
                &spec("hi"),
                &Origin::new(Source::File, "/etc/outpost/sensor.toml", "start-up"),
            )
            .unwrap();
        let mut local = Origin::new(Source::Local, "uid 0 via :1.4", "add b");
        local.drift = true;
        db.store_desired(&spec("ho"), &local).unwrap();
        let h = db.desired_history(10).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(
            (
                h[0].source.as_str(),
                h[0].author.as_str(),
                h[0].reason.as_str(),
                h[0].drift
            ),
            ("local", "uid 0 via :1.4", "add b", true)
        );
        assert_eq!((h[1].version, h[1].source.as_str()), (file.version, "file"));
        // What start-up compares the file with is the file's version, not
        // the newest (a local one).
        assert_eq!(
            db.last_file_sha().unwrap().as_deref(),
            Some(h[1].sha256.as_str())
        );
        assert!(!db.fleet_managed().unwrap());
        db.set_fleet_managed(true).unwrap();
        assert!(db.fleet_managed().unwrap());
    }

    #[test]
    fn desired_state_is_versioned_and_deduplicated() {
        let d = tempfile::tempdir().unwrap();
        let mut db = Db::open(&d.path().join("db")).unwrap();
        assert!(db.latest_desired().unwrap().is_none());
        let s1 = db
            .store_desired(
                &spec("hi"),
                &Origin::new(Source::File, "/etc/sensor.toml", "test"),
            )
            .unwrap();
        assert!(s1.changed);
        let again = db
            .store_desired(
                &spec("hi"),
                &Origin::new(Source::File, "/etc/sensor.toml", "test"),
            )
            .unwrap();
        assert_eq!(
            again,
            Stored {
                version: s1.version,
                changed: false
            }
        );
        let s2 = db
            .store_desired(
                &spec("ho"),
                &Origin::new(Source::File, "/etc/sensor.toml", "test"),
            )
            .unwrap();
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
        db.store_desired(
            &spec("one"),
            &Origin::new(Source::File, "/etc/sensor.toml", "test"),
        )
        .unwrap();
        db.store_desired(
            &spec("two"),
            &Origin::new(Source::File, "/etc/sensor.toml", "test"),
        )
        .unwrap();
        // Remove the instrument, then add it back with the first body.
        let empty = SensorSpec::parse_valid("[sensor]\nname = \"s\"\n").unwrap();
        db.store_desired(
            &empty,
            &Origin::new(Source::File, "/etc/sensor.toml", "test"),
        )
        .unwrap();
        db.store_desired(
            &spec("one"),
            &Origin::new(Source::File, "/etc/sensor.toml", "test"),
        )
        .unwrap();
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
        db.store_desired(
            &spec("x"),
            &Origin::new(Source::File, "/etc/sensor.toml", "test"),
        )
        .unwrap();
        let err = db.delete_image_if_unused("example", "0.1.0").unwrap_err();
        assert!(err.to_string().contains("instrument a"), "{err}");
        db.store_desired(
            &SensorSpec::parse_valid("[sensor]\nname = \"s\"\n").unwrap(),
            &Origin::new(Source::File, "/etc/sensor.toml", "test"),
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
