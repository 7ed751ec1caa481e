//! The record of every retention run: what was asked, what the instrument
//! said, what the platform found, and the verdict.

use super::*;
use std::collections::BTreeMap;

/// Runs kept per instrument.
const RETENTION_HISTORY: i64 = 1000;

/// How a retention run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetentionOutcome {
    /// Nothing older than the cutoff is left.
    Ok,
    /// No valid answer in time.
    Failed,
    /// Something older than the cutoff is still there.
    Violated,
}

impl std::fmt::Display for RetentionOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RetentionOutcome::Ok => "ok",
            RetentionOutcome::Failed => "failed",
            RetentionOutcome::Violated => "violated",
        })
    }
}

/// One retention run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionRun {
    /// Set when stored.
    #[serde(default)]
    pub id: i64,
    pub instrument: String,
    /// `schedule` or `manual`.
    pub trigger: String,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    /// The period asked for, in seconds.
    pub period_s: u64,
    /// What is older than this had to go.
    pub cutoff_ms: i64,
    pub outcome: RetentionOutcome,
    /// Removed, as the instrument reported.
    pub items: u64,
    pub bytes: u64,
    /// The oldest item left, as the instrument reported.
    pub oldest_reported_ms: Option<i64>,
    /// The oldest item left, as the platform's own walk of the storage
    /// found (absent if the walk could not run).
    pub oldest_found_ms: Option<i64>,
    /// Files the platform's walk found.
    pub found_items: Option<u64>,
    /// What the instrument could not remove.
    #[serde(default)]
    pub errors: Vec<String>,
    /// The verdict in words.
    pub message: String,
}

impl Db {
    /// Stores a finished run; returns its id. Old runs beyond the history
    /// limit are dropped.
    pub fn add_retention_run(&self, run: &RetentionRun) -> Result<i64, DbError> {
        let body = serde_json::to_string(run).expect("a retention run serializes");
        self.conn
            .execute(
                "INSERT INTO retention_runs (instrument, started_at_ms, body) VALUES (?1, ?2, ?3)",
                params![run.instrument, run.started_at_ms, body],
            )
            .map_err(|e| self.err(e))?;
        let id = self.conn.last_insert_rowid();
        self.conn
            .execute(
                "DELETE FROM retention_runs WHERE instrument = ?1 AND id <= ?2 - ?3",
                params![run.instrument, id, RETENTION_HISTORY],
            )
            .map_err(|e| self.err(e))?;
        Ok(id)
    }

    /// The newest runs of an instrument (or of all), newest first.
    pub fn retention_runs(
        &self,
        instrument: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RetentionRun>, DbError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, body FROM retention_runs
                 WHERE ?1 IS NULL OR instrument = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![instrument, limit], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, body) = row.map_err(|e| self.err(e))?;
            if let Ok(mut run) = serde_json::from_str::<RetentionRun>(&body) {
                run.id = id;
                out.push(run);
            }
        }
        Ok(out)
    }

    /// The last run of every instrument that had one.
    pub fn last_retention_runs(&self) -> Result<BTreeMap<String, RetentionRun>, DbError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, body FROM retention_runs WHERE id IN
                 (SELECT MAX(id) FROM retention_runs GROUP BY instrument)",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| self.err(e))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (id, body) = row.map_err(|e| self.err(e))?;
            if let Ok(mut run) = serde_json::from_str::<RetentionRun>(&body) {
                run.id = id;
                out.insert(run.instrument.clone(), run);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(instrument: &str, started: i64, outcome: RetentionOutcome) -> RetentionRun {
        RetentionRun {
            id: 0,
            instrument: instrument.into(),
            trigger: "schedule".into(),
            started_at_ms: started,
            finished_at_ms: started + 5,
            period_s: 60,
            cutoff_ms: started - 60_000,
            outcome,
            items: 2,
            bytes: 10,
            oldest_reported_ms: None,
            oldest_found_ms: None,
            found_items: Some(0),
            errors: vec![],
            message: String::new(),
        }
    }

    #[test]
    fn runs_come_back_newest_first_and_the_last_of_each() {
        let d = tempfile::tempdir().unwrap();
        let db = Db::open(&d.path().join("db")).unwrap();
        db.add_retention_run(&run("a", 1, RetentionOutcome::Ok))
            .unwrap();
        db.add_retention_run(&run("b", 2, RetentionOutcome::Failed))
            .unwrap();
        let id = db
            .add_retention_run(&run("a", 3, RetentionOutcome::Violated))
            .unwrap();
        let a = db.retention_runs(Some("a"), 10).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!((a[0].id, a[0].outcome), (id, RetentionOutcome::Violated));
        assert_eq!(db.retention_runs(None, 10).unwrap().len(), 3);
        let last = db.last_retention_runs().unwrap();
        assert_eq!(last["a"].started_at_ms, 3);
        assert_eq!(last["b"].outcome, RetentionOutcome::Failed);
    }
}
