//! `beacon`: the instrument. It runs `escape-probe` in its segment,
//! supervises it, and turns what it prints into alerts and health.
//!
//! - Config (`[instrument.config]`): `interface` (the role, default
//!   `seg0`), `probe` (the probe's settings: targets, key, interval,
//!   timeout), `window` (one alert per channel and target per window,
//!   default 5m), `summary` (a "still escaping" summary every, default
//!   1m), `update_window` (how long a new probe binary gets to print,
//!   default 3 intervals and at least 5s), `binary` (where a new probe
//!   binary is dropped, default `/var/lib/instrument/probe/escape-probe`)
//!   and `update` (the artifact name that brings new probe binaries).
//! - Health: `ok` while the interface is up and the probe printed a valid
//!   attempt within 2x its interval; `degraded` while the interface is
//!   missing or down, there is no config, a new probe binary is on trial,
//!   or the probe is silent (the beacon handles that itself: it restarts a
//!   probe that exits, and kills and restarts one silent for 10 intervals,
//!   at least 30s); `failed` while the probe binary cannot be started at
//!   all, which the platform answers by restarting the instrument. Details
//!   carry the last attempt per target, counts per outcome, and the
//!   interface's addresses and routes (`interface_state`, read every
//!   second; `interface_state_error` when that read fails).
//! - Events: `escape` (rate-limited), `escape-summary`, `probe-silent`,
//!   `probe-updated`, `probe-rollback`, `interface-changed` (what came and
//!   went on the interface, at most one per 5s).

mod health;
mod process;
mod settings;
mod supervisor;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use instrument_sdk::{ArtifactNotice, BoxError, Context, Health, Instrument};
use outpost_beacon::alerts::Alerter;
use outpost_beacon::binary::Binaries;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::health::State;
use crate::settings::{Config, Settings};
use crate::supervisor::{BACKOFF_MIN, InterfaceWatch, POLL_BINARY, Supervisor};

/// The probe the image ships.
const IMAGE_PROBE: &str = "/usr/bin/escape-probe";
/// How often the beacon looks at the interface, timers and the binary.
const TICK: Duration = Duration::from_millis(250);

struct Beacon {
    state: Mutex<State>,
    config_tx: watch::Sender<Option<Settings>>,
    config_rx: Mutex<Option<watch::Receiver<Option<Settings>>>>,
    artifact_tx: mpsc::UnboundedSender<ArtifactNotice>,
    artifact_rx: Mutex<Option<mpsc::UnboundedReceiver<ArtifactNotice>>>,
}

impl Instrument for Beacon {
    type Config = Config;

    async fn run(&self, ctx: Context) -> Result<(), BoxError> {
        let mut config_rx = self
            .config_rx
            .lock()
            .expect("lock")
            .take()
            .ok_or("run called twice")?;
        let mut artifacts = self
            .artifact_rx
            .lock()
            .expect("lock")
            .take()
            .ok_or("run called twice")?;
        // Nothing to run until a config names the targets.
        let first = loop {
            if let Some(s) = config_rx.borrow_and_update().clone() {
                break s;
            }
            tokio::select! {
                r = config_rx.changed() => r?,
                _ = ctx.shutdown() => return Ok(()),
            }
        };
        let persist = ctx.persistent_dir().join("probe");
        let watched = first
            .binary
            .clone()
            .unwrap_or_else(|| persist.join("escape-probe"));
        let mut binaries = Binaries::new(
            &persist,
            &ctx.transient_dir().join("probe"),
            Path::new(IMAGE_PROBE),
            &watched,
        )
        .map_err(|e| format!("probe storage {}: {e}", persist.display()))?;
        let current = binaries.startup()?;
        let trial_until = current.trial.then(|| Instant::now() + first.update_window);
        let (lines, mut line_rx) = mpsc::channel(1024);
        let (exits, mut exit_rx) = mpsc::unbounded_channel();
        let mut sup = Supervisor {
            beacon: self,
            ctx: &ctx,
            settings: first.clone(),
            binaries,
            config_path: ctx.transient_dir().join("probe.toml"),
            lines,
            exits,
            generation: 0,
            current,
            running: None,
            restart_at: None,
            backoff: BACKOFF_MIN,
            trial_until,
            last_poll: Instant::now(),
            alerter: Alerter::new(first.window, first.summary, Instant::now()),
            silent_alerted: false,
            interface: InterfaceWatch::new(&first.interface),
        };
        sup.reconfigure(first).await?;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ctx.shutdown() => break,
                r = config_rx.changed() => {
                    if r.is_err() {
                        break;
                    }
                    let next = config_rx.borrow_and_update().clone();
                    if let Some(s) = next
                        && let Err(e) = sup.reconfigure(s).await
                    {
                        warn!("{e}");
                    }
                }
                Some(notice) = artifacts.recv() => {
                    if sup.settings.update.as_deref() == Some(notice.name.as_str()) {
                        info!(artifact = %notice.name, version = %notice.version, "a new escape-probe artifact");
                        sup.binaries.watch(Path::new(&notice.path));
                        sup.last_poll = Instant::now() - POLL_BINARY;
                    }
                }
                Some((g, l)) = line_rx.recv() => {
                    if sup.running.as_ref().is_some_and(|r| r.generation == g) {
                        sup.on_line(&l).await;
                    }
                }
                Some((g, why)) = exit_rx.recv() => {
                    if sup.running.as_ref().is_some_and(|r| r.generation == g) {
                        sup.on_exit(why).await;
                    }
                }
                _ = tick.tick() => sup.tick().await,
            }
        }
        if let Some(r) = sup.running.take() {
            r.stop().await;
        }
        Ok(())
    }

    async fn health(&self, _ctx: &Context) -> Health {
        health::health(&self.state.lock().expect("lock"))
    }

    async fn configure(&self, _ctx: &Context, version: u64, c: Config) -> Result<(), String> {
        let s = Settings::from_config(version, c)?;
        {
            let mut st = self.state.lock().expect("lock");
            st.settings = Some(s.clone());
            st.since.get_or_insert_with(Instant::now);
        }
        self.config_tx.send_replace(Some(s));
        info!("config version {version} applied");
        Ok(())
    }

    async fn artifact(&self, _ctx: &Context, notice: ArtifactNotice) {
        let _ = self.artifact_tx.send(notice);
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

fn main() -> ExitCode {
    let (config_tx, config_rx) = watch::channel(None);
    let (artifact_tx, artifact_rx) = mpsc::unbounded_channel();
    instrument_sdk::run(Beacon {
        state: Mutex::new(State::default()),
        config_tx,
        config_rx: Mutex::new(Some(config_rx)),
        artifact_tx,
        artifact_rx: Mutex::new(Some(artifact_rx)),
    })
}
