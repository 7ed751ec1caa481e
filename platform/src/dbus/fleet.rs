//! `org.outpost.Fleet1` (at the sensor's object path): enroll the sensor
//! in a fleet, and the link's state.

use std::sync::{Arc, Mutex};

use zbus::message::Header;

use super::SensorError;
use super::auth::Access;
use super::sensor::caller;
use crate::db::Db;
use crate::fleet::Link;
use crate::fleet::enroll::{EnrollError, enroll};
use crate::paths::StateDir;

pub struct Fleet {
    pub(super) link: Link,
    pub(super) db: Arc<Mutex<Db>>,
    pub(super) state: StateDir,
}

impl From<EnrollError> for SensorError {
    fn from(e: EnrollError) -> SensorError {
        match e {
            EnrollError::Input(_) => SensorError::Invalid(e.to_string()),
            _ => SensorError::Failed(e.to_string()),
        }
    }
}

#[zbus::interface(name = "org.outpost.Fleet1")]
impl Fleet {
    /// Enrolls this sensor at the fleet at `url` with a one-time `token`,
    /// pinning the fleet's certificate to `fingerprint`; marks the sensor
    /// fleet-managed and starts the link. Answers the link's settings
    /// (JSON).
    async fn enroll(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        url: String,
        token: String,
        fingerprint: String,
    ) -> Result<String, SensorError> {
        let who = caller(conn, &hdr, Access::Change).await?;
        let cfg = enroll(self.state.root(), &url, &token, &fingerprint).await?;
        self.db.lock().expect("lock").set_fleet_managed(true)?;
        tracing::info!(sensor = %cfg.sensor, fleet = %cfg.fleet_url, by = %who, "enrolled in a fleet");
        self.link.restart();
        serde_json::to_string(&cfg).map_err(|e| SensorError::Failed(e.to_string()))
    }

    /// Forwards the local events from sequence `from` on to the fleet
    /// again (the fleet keeps each once).
    async fn resend(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        from: u64,
    ) -> Result<(), SensorError> {
        let who = caller(conn, &hdr, Access::Change).await?;
        self.link.resend(from).await.map_err(SensorError::Failed)?;
        tracing::info!(from, by = %who, "events re-sent to the fleet");
        Ok(())
    }

    /// The link to the fleet: state, since when, why, heartbeats and
    /// backlog (JSON).
    async fn status(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<String, SensorError> {
        caller(conn, &hdr, Access::Read).await?;
        serde_json::to_string(&self.link.status()).map_err(|e| SensorError::Failed(e.to_string()))
    }
}
