//! Host id ranges of instruments' user namespaces, and small records kept
//! by key (the last refused desired state).
//!
//! Every instrument gets its own range of host uids and gids, never
//! shared with another instrument (like LXD's isolated idmaps): root in its
//! container is host id `base`, and nothing it owns is owned by anyone
//! else on the host. A range stays allocated while the instrument's
//! persistent storage exists (its files are owned by those ids) and is
//! freed by `outpostctl purge`.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::*;

/// The host ids one instrument's user namespace maps to: id `n` inside is
/// host id `base + n`, for `n < count`; the same numbers for gids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdRange {
    pub base: u32,
    pub count: u32,
}

impl IdRange {
    /// The host id of container id `inside`, if it is mapped.
    pub fn host(&self, inside: u32) -> Option<u32> {
        (inside < self.count).then(|| self.base + inside)
    }

    /// The last host id of the range.
    pub fn last(&self) -> u32 {
        self.base + (self.count - 1)
    }
}

/// A desired state that was refused, kept until one is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub at_ms: i64,
    /// Where it came from (`file:/etc/outpost/sensor.toml`).
    pub source: String,
    pub problems: Vec<String>,
}

const REFUSAL_KEY: &str = "desired-refused";

impl Db {
    /// The id range of `instrument`, allocating the lowest free one (from
    /// `first`, `count` ids each) if it has none.
    pub fn allocate_ids(
        &mut self,
        instrument: &str,
        first: u32,
        count: u32,
    ) -> Result<IdRange, DbError> {
        let (tx, path) = self.immediate()?;
        let err = sql_err(path);
        let have: Option<(i64, i64)> = tx
            .query_row(
                "SELECT base, count FROM idmaps WHERE instrument = ?1",
                params![instrument],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(&err)?;
        if let Some((base, count)) = have {
            return Ok(IdRange {
                base: base as u32,
                count: count as u32,
            });
        }
        let used: Vec<(i64, i64)> = {
            let mut st = tx
                .prepare("SELECT base, count FROM idmaps ORDER BY base")
                .map_err(&err)?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(&err)?
                .collect::<Result<_, _>>()
                .map_err(&err)?
        };
        let base = lowest_free(&used, first as i64, count as i64).ok_or_else(|| {
            DbError::IdsExhausted {
                instrument: instrument.to_string(),
                first,
                count,
            }
        })?;
        tx.execute(
            "INSERT INTO idmaps (instrument, base, count, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![instrument, base, count, now_ms()],
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(IdRange {
            base: base as u32,
            count,
        })
    }

    /// The id range of `instrument`, if it has one.
    pub fn ids(&self, instrument: &str) -> Result<Option<IdRange>, DbError> {
        self.conn
            .query_row(
                "SELECT base, count FROM idmaps WHERE instrument = ?1",
                params![instrument],
                |r| {
                    Ok(IdRange {
                        base: r.get::<_, i64>(0)? as u32,
                        count: r.get::<_, i64>(1)? as u32,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Frees the id range of `instrument` (its storage is gone).
    pub fn free_ids(&self, instrument: &str) -> Result<(), DbError> {
        self.conn
            .execute(
                "DELETE FROM idmaps WHERE instrument = ?1",
                params![instrument],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Records that a desired state was refused (`None`: one was accepted,
    /// which clears the record).
    pub fn set_refusal(&self, r: Option<&Refusal>) -> Result<(), DbError> {
        let res = match r {
            Some(r) => self.conn.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![
                    REFUSAL_KEY,
                    serde_json::to_string(r).expect("refusal serializes")
                ],
            ),
            None => self
                .conn
                .execute("DELETE FROM meta WHERE key = ?1", params![REFUSAL_KEY]),
        };
        res.map(|_| ()).map_err(|e| self.err(e))
    }

    /// The last refused desired state, while no newer one was accepted.
    pub fn refusal(&self) -> Result<Option<Refusal>, DbError> {
        let v: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                params![REFUSAL_KEY],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(v.and_then(|v| serde_json::from_str(&v).ok()))
    }
}

/// The lowest `base >= first` such that `[base, base + count)` overlaps no
/// used range and ends below `u32::MAX` (which is not a valid id).
fn lowest_free(used: &[(i64, i64)], first: i64, count: i64) -> Option<i64> {
    let mut candidate = first;
    let mut sorted = used.to_vec();
    sorted.sort();
    for (b, c) in sorted {
        if b + c <= candidate {
            continue;
        }
        if b >= candidate + count {
            break;
        }
        candidate = b + c;
    }
    (candidate + count - 1 < u32::MAX as i64).then_some(candidate)
}

#[cfg(test)]
mod tests {
    use super::lowest_free;

    #[test]
    fn lowest_free_fills_gaps_and_stops_at_the_top() {
        let n = 65536;
        assert_eq!(lowest_free(&[], 1000, n), Some(1000));
        assert_eq!(lowest_free(&[(1000, n)], 1000, n), Some(1000 + n));
        assert_eq!(
            lowest_free(&[(1000 + n, n), (1000, n)], 1000, n),
            Some(1000 + 2 * n)
        );
        assert_eq!(
            lowest_free(&[(1000, n), (1000 + 2 * n, n)], 1000, n),
            Some(1000 + n),
            "a freed range is reused"
        );
        let max = u32::MAX as i64;
        assert_eq!(lowest_free(&[], max - n + 1, n), None, "u32::MAX is no id");
        assert_eq!(lowest_free(&[], max - n, n), Some(max - n));
    }
}
