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
//!   carry the last attempt per target and counts per outcome.
//! - Events: `escape` (rate-limited), `escape-summary`, `probe-silent`,
//!   `probe-updated`, `probe-rollback`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use instrument_sdk::{ArtifactNotice, BoxError, Context, Health, Instrument};
use outpost_beacon::alerts::Alerter;
use outpost_beacon::binary::{Binaries, Choice};
use outpost_beacon::config::{ProbeConfig, duration};
use outpost_beacon::iface;
use outpost_protocol::beacon::{Attempt, MAX_LINE, Outcome, parse_line, schema};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

/// The probe the image ships.
const IMAGE_PROBE: &str = "/usr/bin/escape-probe";
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often the beacon looks at the interface, timers and the binary.
const TICK: Duration = Duration::from_millis(250);
const POLL_BINARY: Duration = Duration::from_secs(1);
/// A probe silent this many intervals (and at least `HUNG_MIN`) is killed
/// and restarted.
const HUNG_INTERVALS: u32 = 10;
const HUNG_MIN: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
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
struct Settings {
    version: u64,
    interface: String,
    probe: ProbeConfig,
    interval: Duration,
    window: Duration,
    summary: Duration,
    update_window: Duration,
    binary: Option<PathBuf>,
    update: Option<String>,
}

impl Settings {
    fn from_config(version: u64, c: Config) -> Result<Settings, String> {
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

#[derive(Debug, Default, Clone, Serialize)]
struct Counts {
    escaped: u64,
    blocked: u64,
    error: u64,
    /// Lines that were not valid attempts.
    unparsed: u64,
}

#[derive(Debug, Clone, Serialize)]
struct ProbeInfo {
    pid: Option<u32>,
    binary: PathBuf,
    sha256: String,
    trial: bool,
}

/// What health answers from; the run loop keeps it current.
#[derive(Default)]
struct State {
    settings: Option<Settings>,
    /// When supervision began under the current config.
    since: Option<Instant>,
    last_line: Option<Instant>,
    last_attempt: Option<Attempt>,
    /// The latest attempt per channel and target ("tcp 203.0.113.7:7000").
    targets: BTreeMap<String, Attempt>,
    counts: Counts,
    probe: Option<ProbeInfo>,
    restarts: u64,
    last_exit: Option<String>,
    start_error: Option<String>,
    alerts: u64,
    rollbacks: u64,
    /// Why the interface is not usable, if it is not.
    interface_problem: Option<String>,
}

impl State {
    /// How long the probe has printed no valid attempt: since its last
    /// one, or since supervision began under this config.
    fn silent(&self, now: Instant) -> Duration {
        self.last_line
            .or(self.since)
            .map(|t| now.duration_since(t))
            .unwrap_or_default()
    }
}

struct Beacon {
    state: Mutex<State>,
    config_tx: watch::Sender<Option<Settings>>,
    config_rx: Mutex<Option<watch::Receiver<Option<Settings>>>>,
    artifact_tx: mpsc::UnboundedSender<ArtifactNotice>,
    artifact_rx: Mutex<Option<mpsc::UnboundedReceiver<ArtifactNotice>>>,
}

/// A line the probe printed, or why it ended, tagged with its
/// generation. Exits go on an unbounded channel of their own, so that a
/// full line channel can never hold up a stop.
type Line = (u64, String);
type Exit = (u64, String);

/// The probe process the beacon runs.
struct Running {
    generation: u64,
    started: Instant,
    kill: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        let _ = (&mut self.done).await;
    }
}

/// Starts the probe at `binary` with the probe config at `config`; its
/// lines go to `lines` and its end to `exits`, tagged with `generation`.
fn spawn_probe(
    generation: u64,
    binary: &Path,
    config: &Path,
    lines: mpsc::Sender<Line>,
    exits: mpsc::UnboundedSender<Exit>,
) -> std::io::Result<(Running, Option<u32>)> {
    let mut child = tokio::process::Command::new(binary)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id();
    let stdout = child.stdout.take().expect("stdout is piped");
    let (kill_tx, mut kill_rx) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        let read = async move {
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                // A line is read up to MAX_LINE + 1 bytes; the rest of a
                // longer one is skipped, so a runaway probe cannot fill
                // the beacon's memory.
                match (&mut r)
                    .take(MAX_LINE as u64 + 1)
                    .read_until(b'\n', &mut buf)
                    .await
                {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if buf.last() != Some(&b'\n') && buf.len() > MAX_LINE {
                    let mut skip = Vec::new();
                    loop {
                        skip.clear();
                        match (&mut r).take(64 * 1024).read_until(b'\n', &mut skip).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) if skip.last() == Some(&b'\n') => break,
                            Ok(_) => {}
                        }
                    }
                }
                while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    buf.pop();
                }
                let line = String::from_utf8_lossy(&buf).into_owned();
                if lines.send((generation, line)).await.is_err() {
                    return;
                }
            }
        };
        // Its output ends when it exits (or closes stdout); a stop asked
        // for meanwhile wins.
        let ended = tokio::select! {
            _ = &mut kill_rx => None,
            s = async {
                read.await;
                child.wait().await
            } => Some(s),
        };
        let why = match ended {
            None => {
                let _ = child.kill().await;
                "stopped by the beacon".to_string()
            }
            Some(Ok(s)) => format!("exited ({s})"),
            Some(Err(e)) => format!("cannot be waited for: {e}"),
        };
        let _ = exits.send((generation, why));
    });
    Ok((
        Running {
            generation,
            started: Instant::now(),
            kill: Some(kill_tx),
            done,
        },
        pid,
    ))
}

/// The run loop's own state.
struct Supervisor<'a> {
    beacon: &'a Beacon,
    ctx: &'a Context,
    settings: Settings,
    binaries: Binaries,
    config_path: PathBuf,
    lines: mpsc::Sender<Line>,
    exits: mpsc::UnboundedSender<Exit>,
    generation: u64,
    current: Choice,
    running: Option<Running>,
    restart_at: Option<Instant>,
    backoff: Duration,
    trial_until: Option<Instant>,
    last_poll: Instant,
    alerter: Alerter,
    silent_alerted: bool,
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

    async fn on_line(&mut self, line: &str) {
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

    async fn on_exit(&mut self, why: String) {
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

    async fn tick(&mut self) {
        let now = Instant::now();
        let problem = iface::problem(&self.settings.interface);
        self.beacon.state.lock().expect("lock").interface_problem = problem;

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

    /// Takes a new config: the probe restarts on it.
    async fn reconfigure(&mut self, s: Settings) -> Result<(), String> {
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

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
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
        let st = self.state.lock().expect("lock");
        let silent = st.silent(Instant::now());
        let details = serde_json::json!({
            "interface": st.settings.as_ref().map(|s| s.interface.clone()),
            "interface_problem": st.interface_problem,
            "config_version": st.settings.as_ref().map(|s| s.version),
            "probe": st.probe,
            "restarts": st.restarts,
            "last_exit": st.last_exit,
            "rollbacks": st.rollbacks,
            "last_attempt": st.last_attempt,
            "targets": st.targets,
            "counts": st.counts,
            "alerts": st.alerts,
            "silent_ms": st.last_line.or(st.since).map(|_| silent.as_millis() as u64),
        });
        let Some(s) = &st.settings else {
            return Health::degraded(
                "no config yet: give the probe's targets and key in [instrument.config.probe]",
            )
            .with_details(details);
        };
        let trial = st.probe.as_ref().filter(|p| p.trial);
        let h = if let Some(p) = &st.interface_problem {
            Health::degraded(p.clone())
        } else if silent > s.interval * 2 {
            let quiet = format!(
                "escape-probe has printed no attempt for {} (it should every {})",
                humantime::format_duration(round_ms(silent)),
                humantime::format_duration(s.interval)
            );
            match (trial, &st.start_error) {
                (Some(t), _) => Health::degraded(format!(
                    "{quiet}: a new binary ({}) is on trial and is rolled back if it stays silent",
                    &t.sha256[..12]
                )),
                (None, Some(e)) => Health::failed(format!("{quiet}: {e}")),
                (None, None) => Health::degraded(format!(
                    "{quiet}: {}",
                    st.last_exit
                        .as_ref()
                        .map(|e| format!("it {e}"))
                        .unwrap_or_else(|| "it is hung, stopped or not printing".into())
                )),
            }
        } else {
            let c = &st.counts;
            let last = st
                .last_attempt
                .as_ref()
                .map(|a| format!("; last {} {} {}", a.channel, a.target, a.outcome.as_str()))
                .unwrap_or_default();
            Health::ok(format!(
                "probing: {} escaped, {} blocked, {} errors{last}",
                c.escaped, c.blocked, c.error
            ))
        };
        h.with_details(details)
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
