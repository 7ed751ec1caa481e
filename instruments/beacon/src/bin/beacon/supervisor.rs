//! The run loop's state: it starts and restarts the probe, takes its
//! lines, tries new binaries and rolls them back, and publishes what it
//! sees.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use instrument_sdk::Context;
use outpost_beacon::alerts::Alerter;
use outpost_beacon::binary::{Binaries, Choice};
use outpost_beacon::config::ProbeConfig;
use outpost_beacon::iface::{self, Tracker};
use outpost_protocol::beacon::{Outcome, parse_line, schema};
use outpost_protocol::ratelimit::RateLimited;
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::Beacon;
use crate::health::ProbeInfo;
use crate::process::{Exit, Line, Running, spawn_probe};
use crate::round_ms;
use crate::settings::Settings;

pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
pub(crate) const POLL_BINARY: Duration = Duration::from_secs(1);
/// A probe silent this many intervals (and at least `HUNG_MIN`) is killed
/// and restarted.
const HUNG_INTERVALS: u32 = 10;
const HUNG_MIN: Duration = Duration::from_secs(30);
/// How often the interface's addresses and routes are read.
const READ_INTERFACE: Duration = Duration::from_secs(1);
/// At most one `interface-changed` event per this; changes in between are
/// folded into the next one.
const INTERFACE_EVENT_GAP: Duration = Duration::from_secs(5);

/// What the run loop keeps to follow the interface's addresses and routes.
pub(crate) struct InterfaceWatch {
    tracker: Tracker,
    last_read: Option<Instant>,
    errors: RateLimited,
}

impl InterfaceWatch {
    pub(crate) fn new(interface: &str) -> InterfaceWatch {
        InterfaceWatch {
            tracker: Tracker::new(interface, INTERFACE_EVENT_GAP),
            last_read: None,
            errors: RateLimited::new(1, Duration::from_secs(60)),
        }
    }
}

/// The run loop's own state.
pub(crate) struct Supervisor<'a> {
    pub(crate) beacon: &'a Beacon,
    pub(crate) ctx: &'a Context,
    pub(crate) settings: Settings,
    pub(crate) binaries: Binaries,
    pub(crate) config_path: PathBuf,
    pub(crate) lines: mpsc::Sender<Line>,
    pub(crate) exits: mpsc::UnboundedSender<Exit>,
    pub(crate) generation: u64,
    pub(crate) current: Choice,
    pub(crate) running: Option<Running>,
    pub(crate) restart_at: Option<Instant>,
    pub(crate) backoff: Duration,
    pub(crate) trial_until: Option<Instant>,
    pub(crate) last_poll: Instant,
    pub(crate) alerter: Alerter,
    pub(crate) silent_alerted: bool,
    pub(crate) interface: InterfaceWatch,
}

impl Supervisor<'_> {
    fn publish<T: Serialize>(&self, kind: &str, schema: &str, payload: &T) {
        if let Err(e) = self.ctx.publish(kind, schema, payload) {
            warn!("cannot publish a {kind} event: {e}");
        }
    }

    async fn start(&mut self, why: &str) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
        self.generation += 1;
        let spawned = spawn_probe(
            self.generation,
            &self.current.path,
            &self.config_path,
            self.lines.clone(),
            self.exits.clone(),
        );
        let mut info = ProbeInfo {
            pid: None,
            binary: self.current.path.clone(),
            sha256: self.current.sha256.clone(),
            trial: self.current.trial,
        };
        let start_error = match spawned {
            Ok((r, pid)) => {
                info!(
                    binary = %self.current.path.display(),
                    sha256 = %self.current.sha256,
                    trial = self.current.trial,
                    ?pid,
                    "escape-probe started ({why})"
                );
                info.pid = pid;
                self.running = Some(r);
                self.restart_at = None;
                None
            }
            Err(e) => {
                let msg = format!(
                    "cannot start escape-probe {}: {e}",
                    self.current.path.display()
                );
                warn!("{msg}");
                if self.current.trial {
                    // A new binary that cannot even be started is rolled
                    // back at the next tick, not retried.
                    self.trial_until = Some(Instant::now());
                } else {
                    self.schedule_restart();
                }
                Some(msg)
            }
        };
        let mut st = self.beacon.state.lock().expect("lock");
        st.probe = Some(info);
        st.start_error = start_error;
    }

    /// The next start after the current back-off, which then doubles.
    fn schedule_restart(&mut self) {
        self.restart_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    pub(crate) async fn on_line(&mut self, line: &str) {
        let now = Instant::now();
        let attempt = match parse_line(line) {
            Ok(a) => a,
            Err(e) => {
                let mut st = self.beacon.state.lock().expect("lock");
                st.counts.unparsed += 1;
                if st.counts.unparsed % 100 == 1 {
                    warn!(
                        "escape-probe printed a line that is not an attempt ({} so far): {e}",
                        st.counts.unparsed
                    );
                }
                return;
            }
        };
        self.backoff = BACKOFF_MIN;
        self.silent_alerted = false;
        if self.current.trial {
            self.promote();
        }
        if attempt.outcome == Outcome::Escaped {
            warn!(
                channel = %attempt.channel,
                target = %attempt.target,
                "escape: {}",
                attempt.evidence.detail
            );
        }
        let alert = self.alerter.on_attempt(&attempt, now);
        {
            let mut st = self.beacon.state.lock().expect("lock");
            match attempt.outcome {
                Outcome::Escaped => st.counts.escaped += 1,
                Outcome::Blocked => st.counts.blocked += 1,
                Outcome::Error => st.counts.error += 1,
            }
            st.last_line = Some(now);
            st.targets.insert(
                format!("{} {}", attempt.channel, attempt.target),
                attempt.clone(),
            );
            st.last_attempt = Some(attempt);
            if alert.is_some() {
                st.alerts += 1;
            }
        }
        if let Some(a) = alert {
            self.publish("escape", schema::ESCAPE, &a);
        }
    }

    fn promote(&mut self) {
        let previous = self.binaries.fallback().ok().map(|c| c.sha256);
        match self.binaries.promote(&self.current) {
            Ok(()) => {
                info!(sha256 = %self.current.sha256, "the new escape-probe works; keeping it");
                self.publish(
                    "probe-updated",
                    schema::PROBE_UPDATED,
                    &serde_json::json!({
                        "sha256": self.current.sha256,
                        "previous_sha256": previous,
                    }),
                );
            }
            Err(e) => warn!("cannot keep the new escape-probe as the good one: {e}"),
        }
        self.current.trial = false;
        self.trial_until = None;
        if let Some(p) = &mut self.beacon.state.lock().expect("lock").probe {
            p.trial = false;
        }
    }

    async fn rollback(&mut self, reason: String) {
        let rejected = self.current.clone();
        let back = match self.binaries.reject(&rejected) {
            Ok(b) => b,
            Err(e) => {
                warn!("cannot roll back the escape-probe: {e}");
                return;
            }
        };
        warn!(
            rejected = %rejected.sha256,
            back_to = %back.sha256,
            "rolling back the escape-probe: {reason}"
        );
        self.beacon.state.lock().expect("lock").rollbacks += 1;
        self.publish(
            "probe-rollback",
            schema::PROBE_ROLLBACK,
            &serde_json::json!({
                "rejected_sha256": rejected.sha256,
                "running_sha256": back.sha256,
                "reason": reason,
            }),
        );
        self.current = back;
        self.trial_until = None;
        self.backoff = BACKOFF_MIN;
        self.start("rollback").await;
    }

    pub(crate) async fn on_exit(&mut self, why: String) {
        let Some(r) = self.running.take() else {
            return;
        };
        let _ = r.done.await;
        warn!(
            "escape-probe {} {why}; restarting in {}",
            self.current.path.display(),
            humantime::format_duration(self.backoff)
        );
        {
            let mut st = self.beacon.state.lock().expect("lock");
            st.restarts += 1;
            st.last_exit = Some(why);
            if let Some(p) = &mut st.probe {
                p.pid = None;
            }
        }
        self.schedule_restart();
    }

    pub(crate) async fn tick(&mut self) {
        let now = Instant::now();
        let problem = iface::problem(&self.settings.interface);
        self.beacon.state.lock().expect("lock").interface_problem = problem;
        if self
            .interface
            .last_read
            .is_none_or(|t| now.duration_since(t) >= READ_INTERFACE)
        {
            self.interface.last_read = Some(now);
            self.watch_interface().await;
        }

        if self.running.is_none() && self.restart_at.is_some_and(|t| now >= t) {
            self.start("restart after exit").await;
        }
        if let Some(until) = self.trial_until
            && now >= until
        {
            let start_error = self.beacon.state.lock().expect("lock").start_error.clone();
            let reason = start_error.unwrap_or_else(|| {
                format!(
                    "the new binary printed no valid attempt within {}",
                    humantime::format_duration(self.settings.update_window)
                )
            });
            self.rollback(reason).await;
        }
        if now.duration_since(self.last_poll) >= POLL_BINARY {
            self.last_poll = now;
            match self.binaries.poll(&self.current.sha256) {
                Ok(Some(c)) => {
                    info!(
                        sha256 = %c.sha256,
                        from = %self.binaries.watched().display(),
                        "a new escape-probe binary; trying it"
                    );
                    self.trial_until = c.trial.then(|| now + self.settings.update_window);
                    self.current = c;
                    self.backoff = BACKOFF_MIN;
                    self.start("new binary").await;
                }
                Ok(None) => {}
                Err(e) => warn!(
                    "cannot read the probe binary at {}: {e}",
                    self.binaries.watched().display()
                ),
            }
        }
        if let Some(s) = self.alerter.tick(now) {
            info!(
                "still escaping: {} channel(s) and target(s)",
                s.escapes.len()
            );
            self.publish("escape-summary", schema::SUMMARY, &s);
        }
        let silent = self.beacon.state.lock().expect("lock").silent(now);
        let hung_after = (self.settings.interval * HUNG_INTERVALS).max(HUNG_MIN);
        if silent > hung_after
            && self
                .running
                .as_ref()
                .is_some_and(|r| now.duration_since(r.started) > hung_after)
        {
            warn!(
                "escape-probe has printed nothing for {}; killing and restarting it",
                humantime::format_duration(round_ms(silent))
            );
            self.beacon.state.lock().expect("lock").restarts += 1;
            self.start("silent too long").await;
        }
        if silent > self.settings.interval * 2 && !self.silent_alerted {
            self.silent_alerted = true;
            warn!(
                "escape-probe has printed nothing for {}",
                humantime::format_duration(round_ms(silent))
            );
            let pid = self
                .beacon
                .state
                .lock()
                .expect("lock")
                .probe
                .as_ref()
                .and_then(|p| p.pid);
            self.publish(
                "probe-silent",
                schema::PROBE_SILENT,
                &serde_json::json!({
                    "silent_ms": silent.as_millis() as u64,
                    "interval_ms": self.settings.interval.as_millis() as u64,
                    "pid": pid,
                }),
            );
        }
    }

    /// Reads the interface's addresses and routes into the state and
    /// publishes what changed since the last `interface-changed` event
    /// (the first read is the baseline). A failed read is shown in health
    /// and logged, at most once a minute.
    async fn watch_interface(&mut self) {
        let name = self.settings.interface.clone();
        if self.interface.tracker.interface() != name {
            // Another interface: its first read is a new baseline.
            self.interface.tracker = Tracker::new(&name, INTERFACE_EVENT_GAP);
        }
        let read = iface::read(&name).await;
        let now = Instant::now();
        let snapshot = match read {
            Ok(s) => s,
            Err(e) => {
                if let Some(held) = self.interface.errors.allow(now) {
                    warn!(
                        held_back = held,
                        "cannot follow the interface's addresses and routes: {e}"
                    );
                }
                let mut st = self.beacon.state.lock().expect("lock");
                st.interface_state = None;
                st.interface_state_error = Some(e.to_string());
                return;
            }
        };
        {
            let mut st = self.beacon.state.lock().expect("lock");
            st.interface_state = Some(snapshot.clone());
            st.interface_state_error = None;
        }
        if let Some(c) = self.interface.tracker.observe(snapshot, now) {
            info!(
                "interface {name} changed: added [{}], removed [{}]",
                c.added.join(", "),
                c.removed.join(", ")
            );
            self.publish("interface-changed", schema::INTERFACE_CHANGED, &c);
        }
    }

    /// Takes a new config: the probe restarts on it.
    pub(crate) async fn reconfigure(&mut self, s: Settings) -> Result<(), String> {
        write_probe_config(&self.config_path, &s.probe)?;
        if let Some(b) = &s.binary {
            self.binaries.watch(b);
        }
        self.alerter = Alerter::new(s.window, s.summary, Instant::now());
        {
            let mut st = self.beacon.state.lock().expect("lock");
            st.since = Some(Instant::now());
            st.last_line = None;
            st.targets.clear();
        }
        self.settings = s;
        self.backoff = BACKOFF_MIN;
        self.start("new config").await;
        Ok(())
    }
}

/// Writes the probe's settings where only the beacon can read them (they
/// hold the key).
fn write_probe_config(path: &Path, c: &ProbeConfig) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let text = toml::to_string(c).map_err(|e| format!("cannot write the probe config: {e}"))?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("cannot write the probe config {}: {e}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write the probe config {}: {e}", path.display()))
}
