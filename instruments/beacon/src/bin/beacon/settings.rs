//! The beacon's config and the settings checked out of it.

use std::path::PathBuf;
use std::time::Duration;

use outpost_beacon::config::{ProbeConfig, duration};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    #[serde(default)]
    interface: Option<String>,
    probe: ProbeConfig,
    #[serde(default)]
    window: Option<String>,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    update_window: Option<String>,
    #[serde(default)]
    binary: Option<PathBuf>,
    #[serde(default)]
    update: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) version: u64,
    pub(crate) interface: String,
    pub(crate) probe: ProbeConfig,
    pub(crate) interval: Duration,
    pub(crate) window: Duration,
    pub(crate) summary: Duration,
    pub(crate) update_window: Duration,
    pub(crate) binary: Option<PathBuf>,
    pub(crate) update: Option<String>,
}

impl Settings {
    pub(crate) fn from_config(version: u64, c: Config) -> Result<Settings, String> {
        let interface = c.interface.unwrap_or_else(|| "seg0".into());
        let mut probe = c.probe;
        // The probe leaves by the beacon's interface unless told otherwise.
        probe.interface.get_or_insert_with(|| interface.clone());
        let plan = probe.plan().map_err(|e| format!("probe: {e}"))?;
        let interval = plan.interval;
        let window = duration("window", &c.window, Duration::from_secs(300))?;
        let summary = duration("summary", &c.summary, Duration::from_secs(60))?;
        let update_window = duration(
            "update_window",
            &c.update_window,
            (interval * 3).max(Duration::from_secs(5)),
        )?;
        if update_window < interval * 2 {
            return Err(format!(
                "update_window {update_window:?} is shorter than two probe intervals ({:?}); a good new probe would be rolled back",
                interval * 2
            ));
        }
        if let Some(b) = &c.binary
            && !b.is_absolute()
        {
            return Err(format!(
                "binary {} must be an absolute path inside the container",
                b.display()
            ));
        }
        Ok(Settings {
            version,
            interface,
            probe,
            interval,
            window,
            summary,
            update_window,
            binary: c.binary,
            update: c.update,
        })
    }
}
