//! The sensor's side of the fleet: enrollment (`outpostctl fleet
//! enroll`) and the link to the hub (outbound only, reconnecting forever,
//! heartbeats with the sensor's summary).
//!
//! What enrollment leaves in `<state>/fleet/`: `hub-ca.pem` (the CA the
//! hub's certificate is signed by), `sensor.creds` (the sensor's user JWT
//! and its own nkey seed, mode 0600; the seed never left the sensor) and
//! `link.json` (written last: the enrollment's commit point).

pub mod desired;
pub mod enroll;
pub mod forward;
pub mod images;
pub mod link;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use link::{Link, LinkStatus};

/// Where the link's files are.
#[derive(Debug, Clone)]
pub struct LinkFiles {
    pub dir: PathBuf,
}

/// What `link.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LinkConfig {
    /// The sensor's name at the fleet.
    pub sensor: String,
    /// The fleet's API, where the sensor enrolled.
    pub fleet_url: String,
    /// The pin of the fleet's certificate at enrollment.
    pub fingerprint: String,
    pub hub_urls: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub heartbeat_every: Duration,
    pub enrolled_at_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {why} (fix: enroll again with `outpostctl fleet enroll`)")]
    Bad { path: PathBuf, why: String },
}

impl LinkFiles {
    pub fn new(state_root: &Path) -> LinkFiles {
        LinkFiles {
            dir: state_root.join("fleet"),
        }
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("link.json")
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.join("hub-ca.pem")
    }
    pub fn creds(&self) -> PathBuf {
        self.dir.join("sensor.creds")
    }

    /// The link's configuration, or `None` when the sensor has not
    /// enrolled.
    pub fn load(&self) -> Result<Option<LinkConfig>, LinkFileError> {
        let path = self.config();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(LinkFileError::Io { path, source }),
        };
        let cfg: LinkConfig = serde_json::from_str(&text).map_err(|e| LinkFileError::Bad {
            path: path.clone(),
            why: e.to_string(),
        })?;
        for f in [self.ca(), self.creds()] {
            if !f.exists() {
                return Err(LinkFileError::Bad {
                    path: f,
                    why: "missing".into(),
                });
            }
        }
        Ok(Some(cfg))
    }
}
