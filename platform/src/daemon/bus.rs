//! The daemon's bus side for each running instrument: its proxy, health
//! checks (with its storage use), config delivery, platform events.

use std::fs;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use outpost_protocol::messages::{
    ConfigRequest, ConfigResult, HealthTransition, InstrumentHealth, StorageFull, StorageUse,
    schema,
};
use serde::Serialize;
use tracing::{error, info, warn};

use super::{Command, Daemon};
use crate::db::{ConfigRejection, HealthCheck, now_ms};
use crate::health::{Outcome, Tracker};
use crate::messaging::bus::BusError;
use crate::messaging::proxy;
use crate::runtime::Runtime;

/// How long an instrument may take to answer a config push.
const CONFIG_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a starting instrument is asked, until it first answers.
const STARTING_POLL: Duration = Duration::from_millis(250);

impl<R: Runtime> Daemon<R> {
    pub(super) fn sensor_name(&self) -> String {
        self.desired
            .as_ref()
            .map(|(_, s)| s.sensor.name.clone())
            .unwrap_or_else(|| "sensor".into())
    }

    /// Health interval and timeout from the instrument's manifest.
    fn health_timing(&self, name: &str) -> (Duration, Duration, u32) {
        let ins = self.wanted(name);
        let m = ins
            .as_ref()
            .and_then(|i| {
                self.images
                    .get(&self.db, &i.image, &i.version)
                    .ok()
                    .flatten()
            })
            .map(|(_, m)| m.health)
            .unwrap_or_default();
        (m.interval, m.timeout, ins.map_or(3, |i| i.health_failures))
    }

    /// Connects a running instrument to the bus: its loopback proxy, its
    /// health checks and its config.
    pub(super) async fn attach_bus(&mut self, name: &str, pid: i32, adopted: bool) {
        let Some(bus) = self.control.clone() else {
            return;
        };
        // Without a nats-server of its own (the unit tests' fake bus) there
        // is nothing to proxy to.
        let proxy = match self.nats.as_ref().map(|n| n.port()) {
            None => None,
            Some(port) => {
                let upstream = SocketAddr::from(([127, 0, 0, 1], port));
                match proxy::start(name, pid, upstream, self.cfg.max_bus_connections).await {
                    Ok(p) => Some(p),
                    Err(e) => {
                        error!(
                            instrument = name,
                            "cannot open the bus proxy in its namespace: {e}"
                        );
                        None
                    }
                }
            }
        };
        let (interval, timeout, threshold) = self.health_timing(name);
        let Some(inst) = self.instances.get_mut(name) else {
            return;
        };
        inst.proxy = proxy;
        let grace = (interval * 3).max(Duration::from_secs(10));
        let tracker = Tracker::new(Instant::now(), grace, threshold);
        inst.status.health = tracker.state.to_string();
        inst.status.health_message = tracker.message.clone();
        inst.tracker = Some(tracker);
        // A new process starts without config. An adopted one runs what it
        // runs: what an earlier outpostd recorded is not trusted, the
        // instrument's first health reply says which version it has, and
        // the config push waits for it.
        inst.status.config_applied = None;
        inst.status.config_rejected = None;
        inst.config_known = !adopted;
        let generation = inst.generation;
        let tx = self.tx.clone();
        let n = name.to_string();
        let persist = self.cfg.state.persist_mount(name);
        if let Some(t) = inst.health_task.take() {
            t.abort();
        }
        inst.health_task = Some(tokio::spawn(async move {
            let mut answered = false;
            loop {
                let t0 = Instant::now();
                let res = bus.ask_health(&n, timeout).await;
                let latency = t0.elapsed();
                let (outcome, latency_ms) = match res {
                    Ok(r) => {
                        answered = true;
                        (Outcome::Reply(r), Some(latency.as_secs_f64() * 1e3))
                    }
                    Err(e) => (Outcome::NoReply(e.to_string()), None),
                };
                let cmd = Command::Health {
                    name: n.clone(),
                    generation,
                    outcome,
                    latency_ms,
                    storage: storage_use(&persist),
                };
                if tx.send(cmd).await.is_err() {
                    return;
                }
                let period = if answered { interval } else { STARTING_POLL };
                tokio::time::sleep(period.saturating_sub(latency)).await;
            }
        }));
        self.save(name);
        self.push_config(name);
    }

    /// Takes a measure of an instrument's persistent storage: a
    /// `storage-full` event when it fills up (once, until it has room
    /// again).
    pub(super) fn on_storage(&mut self, name: &str, generation: u64, usage: Option<StorageUse>) {
        let Some(inst) = self.instances.get_mut(name) else {
            return;
        };
        if inst.generation != generation {
            return;
        }
        inst.status.storage = usage;
        let Some(u) = usage else {
            return;
        };
        if !inst.status.storage_full && u.is_full() {
            inst.status.storage_full = true;
            warn!(
                instrument = name,
                size = u.size_bytes,
                free = u.free_bytes,
                "persistent storage is full; the instrument's writes fail with ENOSPC"
            );
            self.publish_event(
                "storage-full",
                schema::STORAGE_FULL,
                StorageFull {
                    instrument: name.into(),
                    usage: u,
                },
            );
        } else if inst.status.storage_full && u.has_room() {
            inst.status.storage_full = false;
            info!(
                instrument = name,
                free = u.free_bytes,
                "persistent storage has room again"
            );
        }
    }

    /// Ends a stopped instrument's bus side.
    pub(super) fn detach_bus(&mut self, name: &str, crashed: bool) {
        let Some(inst) = self.instances.get_mut(name) else {
            return;
        };
        inst.proxy = None;
        inst.status.bus_connections = None;
        if let Some(t) = inst.health_task.take() {
            t.abort();
        }
        if let Some((_, t)) = inst.config_task.take() {
            t.abort();
        }
        let from = inst.tracker.take().map(|t| t.state);
        let to = if crashed {
            InstrumentHealth::Crashed
        } else {
            InstrumentHealth::Stopped
        };
        inst.status.health = to.to_string();
        inst.status.health_message = String::new();
        if let Some(from) = from
            && from != to
        {
            self.publish_event(
                "health",
                schema::HEALTH_TRANSITION,
                HealthTransition {
                    instrument: name.into(),
                    from,
                    to,
                    message: String::new(),
                },
            );
        }
    }

    /// Publishes a platform event without waiting for it.
    pub(super) fn publish_event<T: Serialize + Send + Sync + 'static>(
        &self,
        kind: &'static str,
        schema: &'static str,
        payload: T,
    ) {
        if let Some(bus) = self.control.clone() {
            let payload = serde_json::to_value(&payload).expect("an event serializes");
            tokio::spawn(async move {
                if let Err(e) = bus.publish_event(kind, schema, payload).await {
                    warn!("platform event {kind} not stored: {e}");
                }
            });
        }
    }

    /// Takes a health check's outcome.
    pub(super) async fn on_health(
        &mut self,
        name: &str,
        generation: u64,
        outcome: Outcome,
        latency_ms: Option<f64>,
    ) {
        let Some(inst) = self.instances.get_mut(name) else {
            return;
        };
        if inst.generation != generation {
            return;
        }
        let Some(tracker) = inst.tracker.as_mut() else {
            return;
        };
        let reported_config = match &outcome {
            Outcome::Reply(r) => Some(r.config_version),
            Outcome::NoReply(_) => None,
        };
        match (&outcome, latency_ms) {
            (Outcome::Reply(_), Some(ms)) => inst.status.health_rtt_us = Some((ms * 1e3) as u64),
            (Outcome::NoReply(_), _) => inst.status.health_unanswered += 1,
            _ => {}
        }
        let obs = tracker.observe(Instant::now(), outcome);
        let (state, message, failures) = (tracker.state, tracker.message.clone(), tracker.failures);
        inst.status.health = state.to_string();
        inst.status.health_message = message.clone();
        inst.status.health_details = tracker.details.clone();
        let check = HealthCheck {
            at_ms: now_ms(),
            state: state.to_string(),
            message: message.clone(),
            latency_ms,
        };
        if let Err(e) = self.db.record_health(name, &check) {
            error!(instrument = name, "cannot record health: {e}");
        }
        let first_answer = reported_config.is_some() && inst.artifacts_told != Some(generation);
        if first_answer {
            inst.artifacts_told = Some(generation);
        }
        if let Some(reported) = reported_config {
            self.take_reported_config(name, reported);
        }
        if first_answer {
            // It listens now: the artifacts installed while it was away.
            self.renotify_artifacts(name);
        }
        self.save(name);
        if let Some((from, to)) = obs.transition {
            info!(instrument = name, %from, %to, "health: {message}");
            self.publish_event(
                "health",
                schema::HEALTH_TRANSITION,
                HealthTransition {
                    instrument: name.into(),
                    from,
                    to,
                    message: message.clone(),
                },
            );
        }
        if !obs.restart {
            return;
        }
        let Some(ins) = self.wanted(name) else {
            return;
        };
        if ins.restart.restarts_after(false) {
            warn!(
                instrument = name,
                failures, "failed health checks in a row; restarting it"
            );
            let ran_for = self.instances[name]
                .started
                .map(|s| s.elapsed())
                .unwrap_or_default();
            let exit = crate::supervisor::ExitRecord {
                at_ms: now_ms(),
                code: None,
                signal: None,
                signal_name: None,
                detail: format!(
                    "restarted after {failures} failed health checks ({state}: {message})"
                ),
            };
            self.begin_stop(name, super::stopping::AfterStop::Policy { exit, ran_for })
                .await;
        } else if let Some(t) = self
            .instances
            .get_mut(name)
            .and_then(|i| i.tracker.as_mut())
        {
            // Policy `never`: report, keep it running, do not repeat.
            t.failures = 0;
            let st = self.instances[name].status.state;
            self.set_state(
                name,
                st,
                format!("{failures} failed health checks; restart policy never leaves it running"),
            );
        }
    }

    /// Takes the config version an adopted instrument says it runs in its
    /// first health reply (`None`: it does not say, so it gets the desired
    /// one again) and pushes the desired one if that differs. Later replies
    /// are not used: one computed before a push was applied would undo it.
    fn take_reported_config(&mut self, name: &str, reported: Option<u64>) {
        let Some(inst) = self.instances.get_mut(name) else {
            return;
        };
        if inst.config_known {
            return;
        }
        inst.config_known = true;
        if let Some(v) = reported {
            inst.status.config_applied = (v > 0).then_some(v as i64);
            info!(
                instrument = name,
                runs = v,
                "adopted instrument reports its config version"
            );
        }
        self.push_config(name);
    }

    /// Pushes the newest config version to a running instrument, unless it
    /// has it, rejected it, or a push of it is in flight. An adopted
    /// instrument is first asked which version it runs (its health reply).
    pub(super) fn push_config(&mut self, name: &str) {
        let Some(bus) = self.control.clone() else {
            return;
        };
        let latest = match self.db.latest_config_body(name) {
            Ok(Some(v)) => v,
            Ok(None) => return,
            Err(e) => {
                error!(instrument = name, "{e}");
                return;
            }
        };
        let Some(inst) = self.instances.get_mut(name) else {
            return;
        };
        let (version, body) = latest;
        if inst.watcher.is_none()
            || !inst.config_known
            || inst.status.config_applied == Some(version)
            || inst
                .status
                .config_rejected
                .as_ref()
                .is_some_and(|r| r.version == version)
            || inst
                .config_task
                .as_ref()
                .is_some_and(|(v, _)| *v == version)
        {
            return;
        }
        if let Some((_, t)) = inst.config_task.take() {
            t.abort();
        }
        let generation = inst.generation;
        let tx = self.tx.clone();
        let n = name.to_string();
        let task = tokio::spawn(async move {
            let req = ConfigRequest {
                version: version as u64,
                config: body,
            };
            // A push that races the instrument's start can be lost (its
            // service is not yet imported into the platform's account), so
            // the first attempts wait briefly; a slow `configure` gets up
            // to CONFIG_TIMEOUT (a repeated version is applied once).
            let mut wait = Duration::from_millis(500);
            loop {
                let res = bus.push_config(&n, &req, wait).await;
                wait = (wait * 2).min(CONFIG_TIMEOUT);
                match res {
                    Ok(reply) => {
                        let _ = tx
                            .send(Command::ConfigResult {
                                name: n,
                                generation,
                                version,
                                applied: reply.applied,
                                reason: reply.reason,
                            })
                            .await;
                        return;
                    }
                    Err(BusError::NoResponders { .. }) | Err(BusError::Timeout { .. }) => {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(e) => {
                        warn!(instrument = %n, version, "config push failed: {e}; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        inst.config_task = Some((version, task));
        info!(instrument = name, version, "pushing config");
    }

    /// Records what the instrument said of a config version.
    pub(super) fn on_config_result(
        &mut self,
        name: &str,
        generation: u64,
        version: i64,
        applied: bool,
        reason: Option<String>,
    ) {
        let Some(inst) = self.instances.get_mut(name) else {
            return;
        };
        if inst.generation != generation {
            return;
        }
        inst.config_task = None;
        if applied {
            inst.status.config_applied = Some(version);
            if inst
                .status
                .config_rejected
                .as_ref()
                .is_some_and(|r| r.version < version)
            {
                inst.status.config_rejected = None;
            }
            info!(instrument = name, version, "config applied");
        } else {
            let why = reason.clone().unwrap_or_else(|| "no reason given".into());
            warn!(
                instrument = name,
                version,
                "config rejected: {why}; it keeps running on version {:?}",
                inst.status.config_applied
            );
            inst.status.config_rejected = Some(ConfigRejection {
                version,
                reason: why,
            });
        }
        if let Err(e) = self
            .db
            .record_config_result(name, version, applied, reason.as_deref())
        {
            error!(instrument = name, "cannot record config result: {e}");
        }
        self.save(name);
        self.publish_event(
            "config",
            schema::CONFIG_RESULT,
            ConfigResult {
                instrument: name.into(),
                version: version as u64,
                applied,
                reason,
            },
        );
    }
}

/// How full the filesystem mounted at `mount` is (`None` if it is not
/// there: the instrument's storage is mounted while its container exists).
fn storage_use(mount: &std::path::Path) -> Option<StorageUse> {
    use std::os::unix::fs::MetadataExt;
    let parent = mount.parent()?;
    if fs::metadata(mount).ok()?.dev() == fs::metadata(parent).ok()?.dev() {
        return None; // not mounted: this would be the host's disk
    }
    let st = nix::sys::statvfs::statvfs(mount).ok()?;
    let frag = st.fragment_size() as u64;
    let size = st.blocks() as u64 * frag;
    let free = st.blocks_available() as u64 * frag;
    Some(StorageUse {
        size_bytes: size,
        used_bytes: size.saturating_sub(st.blocks_free() as u64 * frag),
        free_bytes: free,
    })
}
