//! Per-instrument records: status, exit and health history, and the
//! undo records of interface bindings.

use super::*;

impl Db {
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
}
