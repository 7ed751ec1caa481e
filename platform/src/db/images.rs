//! Imported images.

use super::*;

impl Db {
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
