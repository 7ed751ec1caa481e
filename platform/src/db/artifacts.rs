//! The record of every artifact the platform installed or refused: which,
//! from which provider, for whom, and why not.

use super::*;

/// Records kept.
const ARTIFACT_HISTORY: i64 = 1000;

/// One install or refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactInstall {
    #[serde(default)]
    pub id: i64,
    pub at_ms: i64,
    /// The artifact's name (as consumers know it).
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub provider: String,
    /// The consumers it was installed for (none when refused).
    pub consumers: Vec<String>,
    /// `installed` or `refused`.
    pub outcome: String,
    /// Why it was refused (`hash`, `signature`, `rollback`, …).
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub detail: String,
}

impl Db {
    pub fn add_artifact_install(&self, a: &ArtifactInstall) -> Result<i64, DbError> {
        let body = serde_json::to_string(a).expect("an install serializes");
        self.conn
            .execute(
                "INSERT INTO artifact_installs (name, at_ms, outcome, body) VALUES (?1, ?2, ?3, ?4)",
                params![a.name, a.at_ms, a.outcome, body],
            )
            .map_err(|e| self.err(e))?;
        let id = self.conn.last_insert_rowid();
        self.conn
            .execute(
                "DELETE FROM artifact_installs WHERE id <= ?1 - ?2",
                params![id, ARTIFACT_HISTORY],
            )
            .map_err(|e| self.err(e))?;
        Ok(id)
    }

    /// The newest records, newest first.
    pub fn artifact_installs(&self, limit: u32) -> Result<Vec<ArtifactInstall>, DbError> {
        let mut st = self
            .conn
            .prepare("SELECT id, body FROM artifact_installs ORDER BY id DESC LIMIT ?1")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![limit], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, body) = row.map_err(|e| self.err(e))?;
            if let Ok(mut a) = serde_json::from_str::<ArtifactInstall>(&body) {
                a.id = id;
                out.push(a);
            }
        }
        Ok(out)
    }

    /// The highest version of `name` ever installed (nothing at or below
    /// it is installed again).
    pub fn artifact_highest(&self, name: &str) -> Result<Option<String>, DbError> {
        let mut st = self
            .conn
            .prepare("SELECT body FROM artifact_installs WHERE name = ?1 AND outcome = 'installed'")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![name], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        let mut best: Option<String> = None;
        for row in rows {
            let body = row.map_err(|e| self.err(e))?;
            if let Ok(a) = serde_json::from_str::<ArtifactInstall>(&body)
                && best.as_deref().is_none_or(|b| {
                    outpost_protocol::artifacts::verify::version_cmp(&a.version, b)
                        == std::cmp::Ordering::Greater
                })
            {
                best = Some(a.version);
            }
        }
        Ok(best)
    }
}
