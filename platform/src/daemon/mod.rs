//! The daemon core: an actor that owns the desired state, the instruments'
//! supervision state and the runtime, and keeps reality matching the
//! desired state.
//!
//! Everything that happens (a reload, an instrument's exit, a timer, a
//! shutdown) arrives as a [`Command`] on one channel; after each one, and on
//! a periodic tick, [`Daemon::reconcile`] compares what should run with
//! what runs and acts: create, start, adopt, restart, upgrade, stop, remove.
//! Reconciling from observed reality (not from a journal) is also what makes
//! outpostd crash-safe: after a `kill -9` it finds running containers and
//! adopts them, and finds half-made ones and removes them.
//!
//! An instrument's lifecycle (start, adoption, exit, stop, removal) is in
//! `lifecycle`; the bus side (nats-server, proxies, health checks, config
//! delivery) in `bus` and `nats`; interface bindings in `net`; purging a
//! removed instrument's data in [`purge`].

mod artifacts;
pub use artifacts::follow_announcements;
mod bus;
mod config;
mod crash;
mod desired;
mod dispatch;
mod handle;
mod intake;
mod lifecycle;
mod nats;
mod net;
mod proof;
pub mod purge;
mod retention;
mod spec;
mod stopping;

pub use config::{DEFAULT_ID_RANGE_START, DaemonConfig, ID_RANGE_SIZE, Parts};
pub use handle::{Command, Handle, Snapshot, Stopped};
pub use intake::{Applied, ApplyError, Change};
pub use retention::{RetentionError, RetentionState};
use spec::blank_status;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use outpost_protocol::{InstrumentSpec, Manifest, SensorSpec};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::db::{Db, DbError, InstrumentStatus, now_ms};
use crate::health;
use crate::images::ImageStore;
use crate::messaging::bus::Bus;
use crate::messaging::keys::Keys;
use crate::messaging::proxy::Proxy;
use crate::messaging::server::NatsServer;
use crate::messaging::shared::SharedBus;
use crate::paths;
use crate::runtime::{Observed, Runtime, rootfs};
use crate::shutdown::Shutdown;
use crate::supervisor::{State, state};

/// Says in a status detail that the desired state was not taken.
const REFUSED: &str = "new desired state refused";

/// How long reading an exit record may take before it counts as
/// unreadable.
const EXIT_READ_LIMIT: Duration = Duration::from_secs(2);

/// Daemon failure at start-up.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Images(#[from] crate::images::ImageError),
    #[error(transparent)]
    Nats(#[from] crate::messaging::server::ServerError),
    #[error(transparent)]
    Bus(#[from] crate::messaging::bus::BusError),
    #[error(transparent)]
    Keys(#[from] crate::messaging::keys::KeyError),
    #[error(transparent)]
    Desired(#[from] ApplyError),
    #[error("{0}")]
    Setup(String),
}

/// Supervision state of one instrument.
struct Instance {
    status: InstrumentStatus,
    started: Option<Instant>,
    next_restart: Option<Instant>,
    /// Bumped for every watcher, so a stale exit event is ignored.
    generation: u64,
    watcher: Option<JoinHandle<()>>,
    /// Left down by its restart policy; cleared when its spec changes.
    down_for_good: bool,
    /// The spec hash `down_for_good` and the failure count refer to.
    last_hash: Option<String>,
    /// Bus side of a running instrument: its loopback proxy, health
    /// checker, config push in flight and health state.
    proxy: Option<Proxy>,
    health_task: Option<JoinHandle<()>>,
    config_task: Option<(i64, JoinHandle<()>)>,
    tracker: Option<health::Tracker>,
    /// Whether the config version it runs is known: false for an adopted
    /// instrument until its first health reply says.
    config_known: bool,
    /// A job owns its container (stopping it, collecting its exit).
    busy: Option<lifecycle::Busy>,
    /// What follows the stop under way.
    after_stop: Option<stopping::AfterStop>,
    /// An operator's restart waiting for the start under way.
    after_start: Option<tokio::sync::oneshot::Sender<Result<(), ApplyError>>>,
    /// The generation whose first answer was followed by the notices of
    /// the artifacts installed for it.
    artifacts_told: Option<u64>,
}

impl Instance {
    fn new(status: InstrumentStatus) -> Instance {
        Instance {
            status,
            started: None,
            next_restart: None,
            generation: 0,
            watcher: None,
            down_for_good: false,
            last_hash: None,
            proxy: None,
            health_task: None,
            config_task: None,
            tracker: None,
            config_known: false,
            busy: None,
            after_stop: None,
            after_start: None,
            artifacts_told: None,
        }
    }
}

/// The daemon.
pub struct Daemon<R: Runtime> {
    cfg: DaemonConfig,
    db: Db,
    images: ImageStore,
    rt: Arc<R>,
    tx: mpsc::Sender<Command>,
    rx: Option<mpsc::Receiver<Command>>,
    status_tx: watch::Sender<Arc<Snapshot>>,
    desired: Option<(i64, SensorSpec)>,
    instances: BTreeMap<String, Instance>,
    keys: Keys,
    nats: Option<NatsServer>,
    bus: Option<Bus>,
    /// The nats-server config last written.
    nats_users: Option<String>,
    /// The instruments that have an account in it.
    nats_accounts: Option<BTreeSet<String>>,
    nats_failures: u32,
    /// A nats-server restart job is under way.
    nats_job: bool,
    /// Its config changed meanwhile: restart again once it is back.
    nats_resync: bool,
    /// Parsed manifests by (image, version): images never change, and
    /// their removal (through the actor) forgets them here.
    manifests: BTreeMap<(String, String), Manifest>,
    /// Config checks by (image, version, config body).
    config_checks:
        BTreeMap<(String, String, String), Result<(), outpost_protocol::validate::Invalid>>,
    /// Retention schedule and runs in flight, by instrument.
    retention: BTreeMap<String, retention::Slot>,
    /// Shutting down: jobs finish, nothing new starts.
    draining: bool,
    /// The host side of interface bindings.
    binder: Arc<dyn crate::network::Binder>,
    /// What the daemon asks of the bus (the platform client once the bus
    /// is up, or the unit tests' fake).
    control: Option<Arc<dyn crate::messaging::control::BusControl>>,
    /// The nats-server made outside, until the bus starts.
    given_nats: Option<NatsServer>,
    /// Where the platform's bus client is shared with the rest of outpostd.
    shared_bus: SharedBus,
    shutdown: Shutdown,
}

impl<R: Runtime> Daemon<R> {
    /// Opens the state and prepares the daemon; nothing runs until
    /// [`Daemon::run`].
    pub fn new(cfg: DaemonConfig, rt: R) -> Result<Daemon<R>, DaemonError> {
        Self::compose(cfg, rt, Parts::default())
    }

    /// [`Daemon::new`] with the parts made outside: by `outpostd run` (the
    /// nats-server, the shared bus client, the shutdown token it gives the
    /// D-Bus and metrics servers too) or by the unit tests (fakes).
    pub fn compose(cfg: DaemonConfig, rt: R, parts: Parts) -> Result<Daemon<R>, DaemonError> {
        let Parts {
            binder,
            control,
            nats,
            shared_bus,
            shutdown,
        } = parts;
        let db = Db::open(&cfg.state.db())?;
        let images = ImageStore::new(&cfg.state);
        let keys = Keys::new(&cfg.state.secrets());
        let (tx, rx) = mpsc::channel(256);
        Ok(Daemon {
            cfg,
            db,
            images,
            rt: Arc::new(rt),
            tx,
            rx: Some(rx),
            status_tx: watch::Sender::new(Arc::new(Snapshot::default())),
            desired: None,
            instances: BTreeMap::new(),
            keys,
            nats: None,
            bus: None,
            nats_users: None,
            nats_accounts: None,
            nats_failures: 0,
            nats_job: false,
            nats_resync: false,
            manifests: BTreeMap::new(),
            config_checks: BTreeMap::new(),
            retention: BTreeMap::new(),
            draining: false,
            binder,
            control,
            given_nats: nats,
            shared_bus,
            shutdown,
        })
    }

    /// A handle to send commands with.
    pub fn handle(&self) -> Handle {
        Handle {
            tx: self.tx.clone(),
            status: self.status_tx.subscribe(),
        }
    }

    /// Publishes the status snapshot, if it changed.
    fn publish_status(&mut self) {
        let desired_version = self.desired.as_ref().map(|(v, _)| *v);
        // Drift is read again only when the version changed.
        let drift = {
            let cur = self.status_tx.borrow();
            if cur.desired_version == desired_version && desired_version.is_some() {
                cur.drift.clone()
            } else {
                self.db.newest_drift()
            }
        };
        let snap = Snapshot {
            desired_version,
            drift,
            refused: self.db.refusal().ok().flatten(),
            fleet_managed: self.db.fleet_managed().unwrap_or(false),
            instruments: self.instances.values().map(|i| i.status.clone()).collect(),
            retention: self.retention_states(),
        };
        self.status_tx.send_if_modified(|cur| {
            if **cur == snap {
                return false;
            }
            *cur = Arc::new(snap);
            true
        });
    }

    /// Runs until a [`Command::Shutdown`].
    pub async fn run(mut self) -> Result<(), DaemonError> {
        let mut rx = self.rx.take().expect("run is called once");
        let t0 = Instant::now();
        self.startup()?;
        self.publish_status();
        self.start_bus().await?;
        self.release_orphaned_bindings().await;
        self.reconcile().await;
        self.publish_status();
        let running = self
            .instances
            .values()
            .filter(|i| i.watcher.is_some())
            .count();
        info!(
            instruments = self.instances.len(),
            running,
            elapsed_ms = t0.elapsed().as_millis() as u64,
            "outpostd ready"
        );
        let mut tick = tokio::time::interval(self.cfg.reconcile_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let reconcile = tokio::select! {
                _ = self.shutdown.triggered() => break,
                cmd = rx.recv() => match cmd {
                    None | Some(Command::Shutdown) => break,
                    Some(cmd) => self.on_command(cmd).await,
                },
                _ = tick.tick() => {
                    self.retention_tick();
                    true
                }
            };
            if reconcile {
                self.reconcile().await;
            }
            self.publish_status();
        }
        self.shutdown(&mut rx).await;
        Ok(())
    }

    /// Start-up: clear what crashes left, load the desired state and the
    /// last known status of every instrument.
    fn startup(&mut self) -> Result<(), DaemonError> {
        // Nothing under the state directory is for other host users; an
        // instrument's root gets a search-only ACL entry on the way to its
        // tree (see `runtime::rootfs`).
        let st = &self.cfg.state;
        for dir in [
            st.root().to_path_buf(),
            st.instances(),
            st.persist_root(),
            st.root().join("logs"),
            st.secrets(),
            st.images(),
            st.lxcpath(),
        ] {
            paths::create_private_dir(&dir)
                .map_err(|e| DaemonError::Setup(format!("cannot create {}: {e}", dir.display())))?;
        }
        self.images.recover(&self.db)?;
        artifacts::recover(&self.cfg.state.root().join("artifacts"));
        self.desired = self.db.latest_desired()?;
        if let Some(file) = self.cfg.sensor_file.clone() {
            match self.load_sensor_file(&file, false) {
                Ok(()) => {}
                Err(e) if self.desired.is_some() => {
                    error!(file = %file.display(), "{e}; keeping the stored desired state");
                }
                Err(e) => return Err(DaemonError::Desired(e)),
            }
        }
        for s in self.db.statuses()? {
            let mut inst = Instance::new(s.clone());
            inst.last_hash = s.spec_hash.clone();
            inst.down_for_good = matches!(s.state, State::Exited | State::Crashed);
            self.instances.insert(s.name.clone(), inst);
        }
        self.load_retention();
        // Instance dirs whose container definition is gone were half made
        // (or half removed) when outpostd last stopped.
        let defined: BTreeSet<String> = self.rt.list().unwrap_or_default().into_iter().collect();
        if let Ok(entries) = fs::read_dir(self.cfg.state.instances()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !defined.contains(&name) {
                    warn!(instrument = %name, "removing a half-made instance left by an earlier crash");
                    if let Err(e) = rootfs::teardown(&e.path()) {
                        error!(instrument = %name, "{e}");
                    }
                }
            }
        }
        Ok(())
    }

    fn save(&mut self, name: &str) {
        if let Some(inst) = self.instances.get_mut(name) {
            inst.status.updated_at_ms = now_ms();
            if let Err(e) = self.db.put_status(&inst.status) {
                error!(instrument = name, "cannot save status: {e}");
            }
        }
    }

    fn set_state(&mut self, name: &str, st: State, detail: impl Into<String>) {
        let detail = detail.into();
        if let Some(inst) = self.instances.get_mut(name) {
            if inst.status.state != st || inst.status.detail != detail {
                info!(instrument = name, state = st.as_str(), "{detail}");
            }
            inst.status.state = st;
            inst.status.detail = detail;
        }
        self.save(name);
    }

    /// Makes reality match the desired state.
    pub async fn reconcile(&mut self) {
        let wanted: Vec<InstrumentSpec> = self
            .desired
            .as_ref()
            .map(|(_, s)| s.instruments.clone())
            .unwrap_or_default();
        let wanted_names: BTreeSet<&str> = wanted.iter().map(|i| i.name.as_str()).collect();

        let mut unwanted: BTreeSet<String> = self
            .instances
            .keys()
            .filter(|n| !wanted_names.contains(n.as_str()))
            .cloned()
            .collect();
        for n in self.rt.list().unwrap_or_default() {
            if !wanted_names.contains(n.as_str()) {
                unwanted.insert(n);
            }
        }
        for name in unwanted {
            self.remove_instance(&name).await;
        }
        // After removals (a removed instrument keeps its identity while it
        // stops), before starts (a new one needs its identity to connect).
        self.sync_bus_users(&wanted).await;
        for ins in &wanted {
            self.reconcile_one(ins).await;
        }
    }

    async fn observe(&self, name: &str) -> Observed {
        let rt = self.rt.clone();
        let n = name.to_string();
        match tokio::task::spawn_blocking(move || rt.observe(&n)).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                warn!(instrument = name, "cannot observe container: {e}");
                Observed::Stopped
            }
            Err(e) => {
                error!(instrument = name, "observe task failed: {e}");
                Observed::Stopped
            }
        }
    }

    async fn reconcile_one(&mut self, ins: &InstrumentSpec) {
        let name = ins.name.as_str();
        if !self.instances.contains_key(name) {
            self.instances
                .insert(name.to_string(), Instance::new(blank_status(ins)));
            self.save(name);
        }
        // A job owns its container until it reports back.
        if self.instances[name].busy.is_some() {
            return;
        }
        // A container outpostd watches (pidfd) is known to run; only the
        // others are asked of liblxc.
        let inst = &self.instances[name];
        let observed = match (inst.watcher.is_some(), inst.status.init_pid) {
            (true, Some(pid)) => Observed::Running { init_pid: pid },
            _ => self.observe(name).await,
        };
        let running = matches!(observed, Observed::Running { .. });

        // The image it should run.
        let manifest = match self.manifest(&ins.image, &ins.version) {
            Ok(Some(m)) => m,
            Ok(None) => {
                let why = format!(
                    "image {}:{} is not imported (fix: outpostctl image import <archive>)",
                    ins.image, ins.version
                );
                if running {
                    self.note(name, format!("keeps running its current image; {why}"));
                } else {
                    self.set_state(name, state::PENDING, why);
                }
                return;
            }
            Err(e) => {
                self.set_state(name, state::FAILED, e.to_string());
                return;
            }
        };
        if let Err(why) = self.check_config(ins, &manifest) {
            let why = why.to_string().replace('\n', " ");
            if running {
                self.note(name, format!("keeps running; {REFUSED}: {why}"));
            } else {
                self.set_state(name, state::FAILED, why);
            }
            return;
        }
        if running && self.instances[name].status.detail.contains(REFUSED) {
            let pid = self.instances[name].status.init_pid.unwrap_or_default();
            self.note(name, format!("running (init pid {pid})"));
        }
        let ids = match self.id_range(name) {
            Ok(ids) => ids,
            Err(e) => {
                self.set_state(name, state::FAILED, e.to_string());
                return;
            }
        };
        let spec = self.container_spec(ins, &manifest, ids);
        let hash = spec.hash();
        {
            let inst = self.instances.get_mut(name).expect("inserted above");
            inst.status.image = ins.image.clone();
            inst.status.version = ins.version.clone();
            inst.status.config_version = self.db.latest_config(name).ok().flatten();
            if inst.last_hash.as_deref() != Some(hash.as_str()) {
                // A new spec deserves a fresh start.
                inst.down_for_good = false;
                inst.status.failures = 0;
                inst.next_restart = None;
                inst.last_hash = Some(hash.clone());
            }
        }

        if !ins.enabled {
            if observed != Observed::Absent {
                self.begin_stop(name, stopping::AfterStop::Reconcile).await;
                return;
            }
            self.set_state(name, state::STOPPED, "disabled in the desired state");
            return;
        }

        match observed {
            Observed::Running { init_pid } => {
                let inst = &self.instances[name];
                if inst.watcher.is_some() && inst.status.spec_hash.as_deref() == Some(hash.as_str())
                {
                    self.check_stable(name, ins);
                    self.push_config(name);
                    return;
                }
                let defined = {
                    let rt = self.rt.clone();
                    let n = name.to_string();
                    tokio::task::spawn_blocking(move || rt.defined_hash(&n))
                        .await
                        .ok()
                        .flatten()
                };
                // A container defined by outpostd 0.1 carries the hash of
                // the spec's Debug text; unchanged otherwise, it is adopted.
                let legacy = spec.legacy_hash();
                if defined.as_deref() == Some(hash.as_str())
                    || defined.as_deref() == Some(legacy.as_str())
                {
                    let inst = self.instances.get_mut(name).expect("present");
                    if inst.watcher.is_none() {
                        inst.status.spec_hash = Some(hash.clone());
                        self.adopt(name, init_pid).await;
                    } else {
                        self.check_stable(name, ins);
                        self.push_config(name);
                    }
                    return;
                }
                info!(
                    instrument = name,
                    image = %format!("{}:{}", ins.image, ins.version),
                    "its specification changed; recreating its container (persistent storage is kept)"
                );
                self.begin_stop(name, stopping::AfterStop::Reconcile).await;
                return;
            }
            Observed::Stopped => {
                if self.instances[name].watcher.is_some() {
                    return; // its exit event is on the way
                }
                self.collect_leftover(name, ins).await;
            }
            Observed::Absent => {}
        }

        let inst = &self.instances[name];
        if inst.down_for_good {
            return;
        }
        if let Some(at) = inst.next_restart
            && at > Instant::now()
        {
            return;
        }
        self.start_instance(name, ins, spec).await;
    }

    /// Changes the detail of the current state only.
    fn note(&mut self, name: &str, detail: String) {
        let st = self.instances[name].status.state;
        self.set_state(name, st, detail);
    }

    fn wanted(&self, name: &str) -> Option<InstrumentSpec> {
        self.desired
            .as_ref()
            .and_then(|(_, s)| s.instrument(name).cloned())
    }
}
#[cfg(test)]
mod tests;
