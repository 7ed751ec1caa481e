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
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use outpost_protocol::EffectiveRetention;
use outpost_protocol::messages::{
    RetentionFailed, RetentionReply, RetentionRequest, RetentionViolated, schema,
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::{ApplyError, Command, Daemon};
use crate::db::{RetentionOutcome, RetentionRun, now_ms};
use std::sync::Arc;

use crate::messaging::control::BusControl;
use crate::runtime::Runtime;
use crate::supervisor::State;

/// Entries the platform's walk of one instrument's storage looks at, at
/// most (a store with more is reported as not checked).
const WALK_LIMIT: u64 = 2_000_000;

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

/// What the platform's own walk found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Found {
    pub items: u64,
    pub oldest_ms: Option<i64>,
}

/// Walks a storage tree without following links: how many files (and
/// links) it holds, and when the oldest was modified. Directories do not
/// count (an empty one left behind holds no data).
pub(super) fn walk_oldest(root: &Path, limit: u64) -> Result<Found, String> {
    let mut found = Found {
        items: 0,
        oldest_ms: None,
    };
    let mut seen = 0u64;
    // What vanishes while we look (the instrument runs on) is no longer
    // there to keep; any other error means the walk proves nothing.
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if gone(&e) && dir != root => continue,
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        };
        for e in entries {
            let e = match e {
                Ok(e) => e,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(format!("{}: {e}", dir.display())),
            };
            seen += 1;
            if seen > limit {
                return Err(format!(
                    "{} holds more than {limit} entries; not checked",
                    root.display()
                ));
            }
            let path = e.path();
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(format!("{}: {e}", path.display())),
            };
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            found.items += 1;
            if let Ok(m) = meta.modified() {
                let t = ms(m);
                if found.oldest_ms.is_none_or(|o| t < o) {
                    found.oldest_ms = Some(t);
                }
            }
        }
    }
    Ok(found)
}

/// The verdict of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Verdict {
    pub outcome: RetentionOutcome,
    pub message: String,
    pub items: u64,
    pub bytes: u64,
    pub errors: Vec<String>,
    pub oldest_reported_ms: Option<i64>,
    pub oldest_found_ms: Option<i64>,
    pub found_items: Option<u64>,
}

/// Judges a run from the instrument's answer and the platform's walk.
pub(super) fn verdict(
    cutoff_ms: i64,
    reply: Result<RetentionReply, String>,
    found: Result<Found, String>,
) -> Verdict {
    let (oldest_found_ms, found_items, walk_note) = match &found {
        Ok(f) => (f.oldest_ms, Some(f.items), None),
        Err(e) => (
            None,
            None,
            Some(format!("the platform could not check the storage: {e}")),
        ),
    };
    let mut v = Verdict {
        outcome: RetentionOutcome::Ok,
        message: String::new(),
        items: 0,
        bytes: 0,
        errors: Vec::new(),
        oldest_reported_ms: None,
        oldest_found_ms,
        found_items,
    };
    let reply = match reply {
        Ok(r) => r,
        Err(e) => {
            v.outcome = RetentionOutcome::Failed;
            v.message = format!("no answer: {e}");
            return v;
        }
    };
    v.items = reply.items;
    v.bytes = reply.bytes;
    v.errors = reply.errors;
    if let Some(o) = &reply.oldest_remaining {
        match humantime::parse_rfc3339_weak(o) {
            Ok(t) => v.oldest_reported_ms = Some(ms(t)),
            Err(e) => {
                v.outcome = RetentionOutcome::Failed;
                v.message =
                    format!("the answer's oldest_remaining {o:?} is not an RFC 3339 time: {e}");
                return v;
            }
        }
    }
    let removed = format!("removed {} items ({} bytes)", v.items, v.bytes);
    let cant = if v.errors.is_empty() {
        String::new()
    } else {
        format!(
            "; could not remove {} (first: {})",
            v.errors.len(),
            v.errors[0]
        )
    };
    if let Some(r) = v.oldest_reported_ms.filter(|r| *r < cutoff_ms) {
        v.outcome = RetentionOutcome::Violated;
        v.message = format!(
            "{removed}, but the instrument reports an item from {} left, older than the cutoff {}{cant}",
            rfc3339(r),
            rfc3339(cutoff_ms)
        );
    } else if let Some(f) = oldest_found_ms.filter(|f| *f < cutoff_ms) {
        v.outcome = RetentionOutcome::Violated;
        v.message = format!(
            "{removed}, but the platform found an item from {} in its storage, older than the cutoff {}{cant}",
            rfc3339(f),
            rfc3339(cutoff_ms)
        );
    } else {
        let oldest = match oldest_found_ms.or(v.oldest_reported_ms) {
            Some(o) => format!("oldest left {}", rfc3339(o)),
            None => "nothing left".into(),
        };
        v.message = format!("{removed}; {oldest}{cant}");
        // Without its own walk the platform has no proof: an instrument
        // could keep its storage unreadable to hide what it keeps.
        if let Some(n) = walk_note {
            v.outcome = RetentionOutcome::Failed;
            v.message = format!("{removed}, but {n}");
        }
    }
    v
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CUTOFF: i64 = 1_700_000_000_000;

    fn reply(oldest: Option<i64>) -> RetentionReply {
        RetentionReply {
            items: 3,
            bytes: 300,
            errors: vec![],
            oldest_remaining: oldest.map(rfc3339),
        }
    }

    fn found(oldest: Option<i64>) -> Result<Found, String> {
        Ok(Found {
            items: 5,
            oldest_ms: oldest,
        })
    }

    #[test]
    fn nothing_older_than_the_cutoff_left_is_ok() {
        let v = verdict(
            CUTOFF,
            Ok(reply(Some(CUTOFF + 5000))),
            found(Some(CUTOFF + 5000)),
        );
        assert_eq!(v.outcome, RetentionOutcome::Ok, "{v:?}");
        assert!(
            v.message.contains("removed 3 items (300 bytes)"),
            "{}",
            v.message
        );
        let v = verdict(CUTOFF, Ok(reply(None)), found(None));
        assert_eq!(v.outcome, RetentionOutcome::Ok);
        assert!(v.message.contains("nothing left"), "{}", v.message);
    }

    #[test]
    fn no_answer_fails() {
        let v = verdict(CUTOFF, Err("timed out after 3s".into()), found(None));
        assert_eq!(v.outcome, RetentionOutcome::Failed);
        assert!(v.message.contains("timed out"), "{}", v.message);
        let mut r = reply(None);
        r.oldest_remaining = Some("yesterday".into());
        let v = verdict(CUTOFF, Ok(r), found(None));
        assert_eq!(v.outcome, RetentionOutcome::Failed);
        assert!(v.message.contains("\"yesterday\""), "{}", v.message);
    }

    #[test]
    fn an_old_item_is_a_violation_whoever_sees_it() {
        // The instrument admits it.
        let v = verdict(
            CUTOFF,
            Ok(reply(Some(CUTOFF - 10_000))),
            found(Some(CUTOFF + 1)),
        );
        assert_eq!(v.outcome, RetentionOutcome::Violated);
        assert!(
            v.message.contains("the instrument reports"),
            "{}",
            v.message
        );
        // The instrument claims all is gone; the platform's walk says not.
        let v = verdict(CUTOFF, Ok(reply(None)), found(Some(CUTOFF - 10_000)));
        assert_eq!(v.outcome, RetentionOutcome::Violated);
        assert!(v.message.contains("the platform found"), "{}", v.message);
    }

    #[test]
    fn a_walk_that_cannot_run_proves_nothing() {
        let v = verdict(CUTOFF, Ok(reply(None)), Err("/x: permission denied".into()));
        assert_eq!(v.outcome, RetentionOutcome::Failed);
        assert!(
            v.message.contains("could not check the storage"),
            "{}",
            v.message
        );
        assert_eq!(v.found_items, None);
    }

    #[test]
    fn the_walk_finds_the_oldest_file_and_follows_no_link() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/old"), b"x").unwrap();
        fs::write(root.join("new"), b"y").unwrap();
        let old = SystemTime::now() - Duration::from_secs(86400);
        fs::File::options()
            .write(true)
            .open(root.join("a/b/old"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        std::os::unix::fs::symlink("/", root.join("up")).unwrap();
        let f = walk_oldest(root, 100).unwrap();
        assert_eq!(f.items, 3, "two files and the link itself");
        assert_eq!(f.oldest_ms, Some(ms(old)));
        assert!(
            walk_oldest(root, 2)
                .unwrap_err()
                .contains("more than 2 entries")
        );
    }
}
