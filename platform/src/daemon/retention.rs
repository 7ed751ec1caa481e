//! Retention enforced by the platform, with proof.
//!
//! On the sensor's schedule (`retention-every`, default 1 h; the first run
//! one schedule after outpostd first sees the instrument answer) and when
//! an operator asks, outpostd asks a running instrument to delete what is
//! older than its period, then walks the instrument's persistent storage
//! itself. A run is a job off the actor loop; its [`RetentionRun`] record
//! comes back as a command, is stored, and a run that got no valid answer
//! (or whose storage the platform could not walk) raises
//! `retention-failed`, one that left something older than the cutoff (by
//! the instrument's own report or by the platform's walk) raises
//! `retention-violated`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use outpost_protocol::EffectiveRetention;
use outpost_protocol::messages::{RetentionFailed, RetentionRequest, RetentionViolated, schema};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::proof::{WALK_LIMIT, ms, rfc3339, verdict, walk_oldest};
use super::{ApplyError, Command, Daemon};
use crate::db::{RetentionOutcome, RetentionRun, now_ms};
use std::sync::Arc;

use crate::messaging::control::BusControl;
use crate::runtime::Runtime;
use crate::supervisor::State;

/// Why a retention run was not started.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Unknown(#[from] ApplyError),
    #[error(
        "instrument {name} does not handle retention (image {image}:{version} says retention.supported = false)"
    )]
    Unsupported {
        name: String,
        image: String,
        version: String,
    },
    #[error(
        "instrument {name} has retention off in the desired state (fix: give --older-than for a one-off run, or set retention in the sensor file)"
    )]
    Off { name: String },
    #[error(
        "instrument {name} is {state}, not running and answering: retention runs on a running instrument (fix: outpostctl start {name}, then wait until it is healthy)"
    )]
    NotRunning { name: String, state: String },
    #[error(
        "a retention run of {name} is under way (fix: wait for it; see outpostctl retention status)"
    )]
    Busy { name: String },
    #[error("image {image}:{version} of {name} is not imported: {detail}")]
    NoManifest {
        name: String,
        image: String,
        version: String,
        detail: String,
    },
    #[error("outpostd is stopping and takes no more requests")]
    Stopped,
}

/// The retention picture of one instrument, in the status snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionState {
    /// `unsupported`, `off`, or the period kept (e.g. `7days`).
    pub policy: String,
    pub period_s: Option<u64>,
    /// The sensor's schedule.
    pub every_s: u64,
    /// When the next scheduled run is due (while it runs and answers).
    pub next_due_ms: Option<i64>,
    /// A run is under way.
    pub running: bool,
    pub last: Option<RetentionRun>,
    /// Runs by outcome since outpostd started.
    #[serde(default)]
    pub runs: RetentionCounts,
}

/// Retention runs by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionCounts {
    pub ok: u64,
    pub failed: u64,
    pub violated: u64,
}

/// Per-instrument schedule state, kept by the actor.
#[derive(Default)]
pub(super) struct Slot {
    /// The next scheduled run is due one schedule after this.
    base_ms: Option<i64>,
    busy: bool,
    waiter: Option<Waiter>,
    /// An operator's run asked while another ran: (period, timeout, who).
    queued: Option<(Duration, Duration, Waiter)>,
    last: Option<RetentionRun>,
    runs: RetentionCounts,
}

type Waiter = oneshot::Sender<Result<RetentionRun, RetentionError>>;

/// What a run needs, taken from the actor.
struct Job {
    name: String,
    trigger: &'static str,
    period: Duration,
    timeout: Duration,
    persist: PathBuf,
    bus: Option<Arc<dyn BusControl>>,
}

impl<R: Runtime> Daemon<R> {
    /// Loads the last run of every instrument (the schedule goes on from
    /// there after a restart).
    pub(super) fn load_retention(&mut self) {
        match self.db.last_retention_runs() {
            Ok(last) => {
                for (name, run) in last {
                    let slot = self.retention.entry(name).or_default();
                    slot.base_ms = Some(run.started_at_ms);
                    slot.last = Some(run);
                }
            }
            Err(e) => error!("cannot read the retention record: {e}"),
        }
    }

    /// The retention in force for an instrument, with its manifest's
    /// timeout.
    fn retention_of(
        &mut self,
        name: &str,
    ) -> Result<(EffectiveRetention, Duration), RetentionError> {
        let Some(ins) = self.wanted(name) else {
            return Err(ApplyError::unknown(name, self.desired.as_ref().map(|(_, s)| s)).into());
        };
        let no_manifest = |detail: String| RetentionError::NoManifest {
            name: name.into(),
            image: ins.image.clone(),
            version: ins.version.clone(),
            detail,
        };
        let m = self
            .manifest(&ins.image, &ins.version)
            .map_err(|e| no_manifest(e.to_string()))?
            .ok_or_else(|| no_manifest("see outpostctl image list".into()))?;
        Ok((ins.effective_retention(&m.retention), m.retention.timeout))
    }

    /// Whether an instrument runs and has answered a health check (a run
    /// before its SDK serves would only fail).
    fn answering(&self, name: &str) -> bool {
        self.instances.get(name).is_some_and(|i| {
            i.status.state == State::Running
                && i.tracker.as_ref().is_some_and(|t| {
                    t.state != outpost_protocol::messages::InstrumentHealth::Starting
                })
        })
    }

    /// Starts the scheduled runs that are due.
    pub(super) fn retention_tick(&mut self) {
        let every = self.retention_every();
        let now = now_ms();
        let names: Vec<String> = self.instances.keys().cloned().collect();
        for name in names {
            if !self.answering(&name) {
                continue;
            }
            let Ok((EffectiveRetention::Keep(period), timeout)) = self.retention_of(&name) else {
                continue;
            };
            let slot = self.retention.entry(name.clone()).or_default();
            let base = *slot.base_ms.get_or_insert(now);
            if slot.busy || now < base + every.as_millis() as i64 {
                continue;
            }
            self.start_retention(&name, "schedule", period, timeout);
        }
    }

    /// An operator's run: now, with `older_than` or the instrument's
    /// period. The answer comes when the run has ended.
    pub(super) fn retention_now(
        &mut self,
        name: &str,
        older_than: Option<Duration>,
        reply: oneshot::Sender<Result<RetentionRun, RetentionError>>,
    ) {
        let r = (|| {
            let (eff, timeout) = self.retention_of(name)?;
            let period = match (eff, older_than) {
                (EffectiveRetention::Unsupported, _) => {
                    let ins = self.wanted(name).expect("checked by retention_of");
                    return Err(RetentionError::Unsupported {
                        name: name.into(),
                        image: ins.image,
                        version: ins.version,
                    });
                }
                (_, Some(p)) => p,
                (EffectiveRetention::Keep(p), None) => p,
                (EffectiveRetention::Off, None) => {
                    return Err(RetentionError::Off { name: name.into() });
                }
            };
            if !self.answering(name) {
                let state = self.instances.get(name).map_or_else(
                    || "not started".to_string(),
                    |i| format!("{} (health {})", i.status.state, i.status.health),
                );
                return Err(RetentionError::NotRunning {
                    name: name.into(),
                    state,
                });
            }
            if self.retention.get(name).is_some_and(|s| s.queued.is_some()) {
                return Err(RetentionError::Busy { name: name.into() });
            }
            Ok((period, timeout))
        })();
        match r {
            Ok((period, timeout)) => {
                let slot = self.retention.entry(name.into()).or_default();
                if slot.busy {
                    // It runs after the one under way.
                    slot.queued = Some((period, timeout, reply));
                    return;
                }
                self.start_retention(name, "manual", period, timeout);
                self.retention.entry(name.into()).or_default().waiter = Some(reply);
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    fn retention_every(&self) -> Duration {
        self.desired
            .as_ref()
            .map(|(_, s)| s.sensor.retention_every())
            .unwrap_or(outpost_protocol::desired::DEFAULT_RETENTION_EVERY)
    }

    fn start_retention(
        &mut self,
        name: &str,
        trigger: &'static str,
        period: Duration,
        timeout: Duration,
    ) {
        self.retention.entry(name.into()).or_default().busy = true;
        let job = Job {
            name: name.into(),
            trigger,
            period,
            timeout,
            persist: self.cfg.state.persist_mount(name),
            bus: self.control.clone(),
        };
        info!(
            instrument = name,
            trigger,
            period = %humantime::format_duration(period),
            "retention run"
        );
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let run = job.run().await;
            let _ = tx.send(Command::RetentionDone { run }).await;
        });
    }

    /// Takes a finished run: stores it, raises its event, answers the
    /// operator who asked.
    pub(super) fn on_retention_done(&mut self, mut run: RetentionRun) {
        match self.db.add_retention_run(&run) {
            Ok(id) => run.id = id,
            Err(e) => error!(
                instrument = run.instrument,
                "cannot record a retention run: {e}"
            ),
        }
        let cutoff = rfc3339(run.cutoff_ms);
        match run.outcome {
            RetentionOutcome::Ok => info!(
                instrument = run.instrument,
                items = run.items,
                bytes = run.bytes,
                "retention: {}",
                run.message
            ),
            RetentionOutcome::Failed => {
                warn!(
                    instrument = run.instrument,
                    "retention failed: {}", run.message
                );
                self.publish_event(
                    "retention-failed",
                    schema::RETENTION_FAILED,
                    RetentionFailed {
                        instrument: run.instrument.clone(),
                        cutoff,
                        reason: run.message.clone(),
                    },
                );
            }
            RetentionOutcome::Violated => {
                warn!(
                    instrument = run.instrument,
                    "retention violated: {}", run.message
                );
                let (oldest, seen_by) = match (run.oldest_reported_ms, run.oldest_found_ms) {
                    (Some(r), _) if r < run.cutoff_ms => (r, "instrument"),
                    (_, Some(f)) => (f, "platform"),
                    (r, None) => (r.unwrap_or(run.cutoff_ms), "instrument"),
                };
                self.publish_event(
                    "retention-violated",
                    schema::RETENTION_VIOLATED,
                    RetentionViolated {
                        instrument: run.instrument.clone(),
                        cutoff,
                        oldest_remaining: rfc3339(oldest),
                        seen_by: seen_by.into(),
                        items: run.items,
                        bytes: run.bytes,
                        errors: run.errors.clone(),
                    },
                );
            }
        }
        let eff = self.retention_of(&run.instrument).ok().map(|(e, _)| e);
        let slot = self.retention.entry(run.instrument.clone()).or_default();
        slot.busy = false;
        // A one-off run with another period does not stand for the
        // scheduled one.
        if eff == Some(EffectiveRetention::Keep(Duration::from_secs(run.period_s))) {
            slot.base_ms = Some(run.started_at_ms);
        }
        match run.outcome {
            RetentionOutcome::Ok => slot.runs.ok += 1,
            RetentionOutcome::Failed => slot.runs.failed += 1,
            RetentionOutcome::Violated => slot.runs.violated += 1,
        }
        slot.last = Some(run.clone());
        let queued = slot.queued.take();
        let name = run.instrument.clone();
        if let Some(w) = slot.waiter.take() {
            let _ = w.send(Ok(run));
        }
        if let Some((period, timeout, w)) = queued {
            if self.answering(&name) {
                self.start_retention(&name, "manual", period, timeout);
                self.retention.entry(name).or_default().waiter = Some(w);
            } else {
                let _ = w.send(Err(RetentionError::NotRunning {
                    name,
                    state: "no longer running".into(),
                }));
            }
        }
    }

    /// The retention picture of every instrument, for the snapshot.
    pub(super) fn retention_states(&mut self) -> BTreeMap<String, RetentionState> {
        let every = self.retention_every();
        let names: Vec<String> = self.instances.keys().cloned().collect();
        let mut out = BTreeMap::new();
        for name in names {
            let Ok((eff, _)) = self.retention_of(&name) else {
                continue;
            };
            let (policy, period_s) = match eff {
                EffectiveRetention::Unsupported => ("unsupported".to_string(), None),
                EffectiveRetention::Off => ("off".to_string(), None),
                EffectiveRetention::Keep(p) => {
                    (humantime::format_duration(p).to_string(), Some(p.as_secs()))
                }
            };
            let answering = self.answering(&name);
            let slot = self.retention.get(&name);
            let next_due_ms = match (eff, slot.and_then(|s| s.base_ms)) {
                (EffectiveRetention::Keep(_), Some(b)) if answering => {
                    Some(b + every.as_millis() as i64)
                }
                _ => None,
            };
            out.insert(
                name,
                RetentionState {
                    policy,
                    period_s,
                    every_s: every.as_secs(),
                    next_due_ms,
                    running: slot.is_some_and(|s| s.busy),
                    last: slot.and_then(|s| s.last.clone()),
                    runs: slot.map(|s| s.runs).unwrap_or_default(),
                },
            );
        }
        out
    }

    /// Forgets a removed instrument's schedule (its record stays).
    pub(super) fn forget_retention(&mut self, name: &str) {
        if let Some(s) = self.retention.remove(name) {
            for w in s.waiter.into_iter().chain(s.queued.map(|q| q.2)) {
                let _ = w.send(Err(RetentionError::Stopped));
            }
        }
    }
}

impl Job {
    async fn run(self) -> RetentionRun {
        let started = SystemTime::now();
        let cutoff = started.checked_sub(self.period).unwrap_or(UNIX_EPOCH);
        let reply = match &self.bus {
            None => Err("the sensor's bus is down".to_string()),
            Some(bus) => bus
                .ask_retention(
                    &self.name,
                    &RetentionRequest {
                        cutoff: humantime::format_rfc3339_millis(cutoff).to_string(),
                    },
                    self.timeout,
                )
                .await
                .map_err(|e| e.to_string()),
        };
        let persist = self.persist.clone();
        let found = tokio::task::spawn_blocking(move || walk_oldest(&persist, WALK_LIMIT))
            .await
            .unwrap_or_else(|e| Err(format!("the walk failed: {e}")));
        let v = verdict(ms(cutoff), reply, found);
        RetentionRun {
            id: 0,
            instrument: self.name,
            trigger: self.trigger.into(),
            started_at_ms: ms(started),
            finished_at_ms: now_ms(),
            period_s: self.period.as_secs(),
            cutoff_ms: ms(cutoff),
            outcome: v.outcome,
            items: v.items,
            bytes: v.bytes,
            oldest_reported_ms: v.oldest_reported_ms,
            oldest_found_ms: v.oldest_found_ms,
            found_items: v.found_items,
            errors: v.errors,
            message: v.message,
        }
    }
}
