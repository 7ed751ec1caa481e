//! An instrument's lifecycle: start (as a job, then its bindings and bus),
//! adoption after a restart of outpostd, exit and the restart policy. Stop,
//! restart and removal are in `stopping`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use outpost_protocol::InstrumentSpec;
use tracing::{debug, error, info, warn};

use super::stopping::AfterStop;
use super::{ApplyError, Command, Daemon, EXIT_READ_LIMIT};
use crate::db::now_ms;
use crate::paths;
use crate::runtime::{ContainerSpec, Runtime, RuntimeError, ffi};
use crate::supervisor::{self, Decision, ExitFile, ExitRecord, state};

impl<R: Runtime> Daemon<R> {
    /// Takes over a container that is already running (after a restart of
    /// outpostd), without touching it.
    pub(super) async fn adopt(&mut self, name: &str, init_pid: i32) {
        if !self.binding_records(Some(name)).is_empty() && !self.bindings_ready(name) {
            warn!(
                instrument = name,
                "its interfaces were being bound when outpostd stopped; starting it again"
            );
            self.stop_running(name, init_pid).await;
            return;
        }
        let inst = self.instances.get_mut(name).expect("present");
        let known = inst.status.init_pid;
        let since_ms = inst.status.started_at_ms.unwrap_or_else(now_ms);
        let ran = Duration::from_millis((now_ms() - since_ms).max(0) as u64);
        inst.started = Some(Instant::now().checked_sub(ran).unwrap_or_else(Instant::now));
        inst.status.init_pid = Some(init_pid);
        if inst.status.started_at_ms.is_none() || known != Some(init_pid) {
            inst.status.started_at_ms = Some(now_ms());
        }
        let st = if inst.status.state == state::CRASH_LOOPING {
            state::CRASH_LOOPING
        } else {
            state::RUNNING
        };
        if known == Some(init_pid) {
            info!(instrument = name, init_pid, "re-adopted running instrument");
        } else {
            warn!(
                instrument = name,
                init_pid,
                ?known,
                "adopted a running container with an init pid outpostd did not record"
            );
        }
        self.watch(name, init_pid);
        self.set_state(name, st, format!("running (init pid {init_pid}); adopted"));
        self.attach_bus(name, init_pid, true).await;
    }

    /// Resets the failure count of an instrument that has run long enough.
    pub(super) fn check_stable(&mut self, name: &str, ins: &InstrumentSpec) {
        let inst = self.instances.get_mut(name).expect("present");
        let stable = inst
            .started
            .is_some_and(|s| s.elapsed() >= ins.backoff.stable_after);
        if stable && inst.status.failures > 0 {
            inst.status.failures = 0;
            let pid = inst.status.init_pid.unwrap_or_default();
            self.set_state(
                name,
                state::RUNNING,
                format!("running (init pid {pid}); stable again"),
            );
        }
    }

    pub(super) fn watch(&mut self, name: &str, pid: i32) {
        let inst = self.instances.get_mut(name).expect("present");
        inst.generation += 1;
        let generation = inst.generation;
        let tx = self.tx.clone();
        let n = name.to_string();
        if let Some(old) = inst.watcher.take() {
            old.abort();
        }
        inst.watcher = Some(tokio::spawn(async move {
            wait_exit(pid).await;
            let _ = tx
                .send(Command::Exited {
                    name: n,
                    generation,
                })
                .await;
        }));
    }

    pub(super) async fn start_instance(
        &mut self,
        name: &str,
        ins: &InstrumentSpec,
        spec: ContainerSpec,
    ) {
        let restarting = self.instances[name].status.last_exit.is_some()
            && self.instances[name].next_restart.is_some();
        let looping = self.instances[name].status.state == state::CRASH_LOOPING;
        self.set_state(
            name,
            if looping {
                state::CRASH_LOOPING
            } else {
                state::STARTING
            },
            format!("starting {}:{}", ins.image, ins.version),
        );
        let t0 = Instant::now();
        let logs = self.cfg.state.logs(name);
        if let Err(e) = paths::create_private_dir(&logs) {
            let why = format!("cannot create its log directory {}: {e}", logs.display());
            self.fail_start(name, ins, why).await;
            return;
        }
        if let Err(why) = self.prepare_bindings(ins).await {
            self.fail_start(name, ins, why.to_string()).await;
            return;
        }
        let prepared = t0.elapsed();
        debug!(
            instrument = name,
            prepare_ms = prepared.as_secs_f64() * 1e3,
            "directories prepared"
        );
        // Defining and starting the container (its tree, its storage,
        // liblxc's start) is a job off the loop; it reports back with
        // `Command::Started`.
        self.instances.get_mut(name).expect("present").busy = Some(Busy::Starting);
        let rt = self.rt.clone();
        let tx = self.tx.clone();
        let n = name.to_string();
        tokio::spawn(async move {
            let s = spec.clone();
            let started = tokio::task::spawn_blocking(move || -> Result<i32, RuntimeError> {
                let t = Instant::now();
                rt.define(&s)?;
                crate::failpoint::hit("after-define");
                let defined = t.elapsed();
                let pid = rt.start(&s)?;
                crate::failpoint::hit("after-start");
                debug!(
                    instrument = %s.name,
                    define_ms = defined.as_secs_f64() * 1e3,
                    start_ms = (t.elapsed() - defined).as_secs_f64() * 1e3,
                    "container started"
                );
                Ok(pid)
            })
            .await
            .unwrap_or_else(|e| {
                Err(RuntimeError::Container {
                    name: n.clone(),
                    detail: format!("start task failed: {e}"),
                })
            });
            let _ = tx
                .send(Command::Started {
                    name: n,
                    spec: Box::new(spec),
                    started,
                    restarting,
                    looping,
                })
                .await;
        });
    }

    /// A start job ended: the interfaces are bound and the bus attached,
    /// or the start counts as a failure. An operator's restart waiting
    /// for it is answered.
    pub(super) async fn finish_start(
        &mut self,
        name: &str,
        spec: ContainerSpec,
        started: Result<i32, RuntimeError>,
        restarting: bool,
        looping: bool,
    ) {
        let Some(inst) = self.instances.get_mut(name) else {
            return;
        };
        inst.busy = None;
        let waiter = inst.after_start.take();
        let ins = self.wanted(name);
        let outcome = match (started, ins) {
            // It ran and ended before liblxc's start returned (a quick job,
            // or a loaded host): an exit like any other, so its own record
            // and the restart policy decide, not "could not start".
            (Err(RuntimeError::ExitedAtOnce { .. }), Some(ins)) => {
                let exit = self.read_exit(name).await;
                info!(
                    instrument = name,
                    "exited before its start returned: {}", exit.detail
                );
                if restarting {
                    self.instances
                        .get_mut(name)
                        .expect("present")
                        .status
                        .restarts += 1;
                }
                self.destroy(name).await;
                self.after_exit(name, &ins, exit, Duration::ZERO);
                Ok(())
            }
            (Err(e), Some(ins)) => {
                let e = e.to_string();
                self.fail_start(name, &ins, e.clone()).await;
                Err(e)
            }
            (Err(e), None) => {
                self.destroy(name).await;
                Err(e.to_string())
            }
            (Ok(pid), ins) => match self.apply_bindings(name, pid).await {
                Err(why) => {
                    self.stop_running(name, pid).await;
                    if let Some(ins) = &ins {
                        self.fail_start(name, ins, why.to_string()).await;
                    }
                    Err(why.to_string())
                }
                Ok(()) => {
                    let inst = self.instances.get_mut(name).expect("present");
                    inst.started = Some(Instant::now());
                    inst.next_restart = None;
                    inst.status.init_pid = Some(pid);
                    inst.status.started_at_ms = Some(now_ms());
                    inst.status.next_restart_ms = None;
                    inst.status.spec_hash = Some(spec.hash());
                    if restarting {
                        inst.status.restarts += 1;
                    }
                    self.watch(name, pid);
                    let st = if looping {
                        state::CRASH_LOOPING
                    } else {
                        state::RUNNING
                    };
                    self.set_state(name, st, format!("running (init pid {pid})"));
                    self.attach_bus(name, pid, false).await;
                    Ok(())
                }
            },
        };
        if let Some(w) = waiter {
            // Answered once the status shows the start.
            self.publish_status();
            let _ = w.send(outcome.map_err(|e| {
                ApplyError::Store(format!(
                    "instrument {name} was stopped but could not start: {e}"
                ))
            }));
        }
    }

    /// A start that failed counts as a quick failure; nothing half-made
    /// stays behind.
    pub(super) async fn fail_start(&mut self, name: &str, ins: &InstrumentSpec, why: String) {
        self.destroy(name).await;
        let exit = ExitRecord {
            at_ms: now_ms(),
            code: None,
            signal: None,
            signal_name: None,
            detail: format!("could not start: {why}"),
        };
        self.after_exit(name, ins, exit, Duration::ZERO);
    }

    /// Handles the exit of a running instrument: waiting until liblxc has
    /// it fully stopped and reading its exit record run as a job off the
    /// loop, which reports back with [`Command::ExitCollected`].
    pub(super) fn on_exit(&mut self, name: &str, generation: u64) {
        let Some(inst) = self.instances.get_mut(name) else {
            return;
        };
        if inst.generation != generation || inst.watcher.is_none() {
            return;
        }
        inst.watcher = None;
        inst.busy = Some(Busy::CollectingExit);
        let ran_for = inst.started.map(|s| s.elapsed()).unwrap_or_default();
        self.detach_bus(name, true);
        let rt = self.rt.clone();
        let n = name.to_string();
        let dir = self.cfg.state.status_dir(name);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let r = n.clone();
            let _ =
                tokio::task::spawn_blocking(move || rt.wait_stopped(&r, Duration::from_secs(10)))
                    .await;
            let exit = read_exit_at(&n, dir).await;
            let _ = tx
                .send(Command::ExitCollected {
                    name: n,
                    exit,
                    ran_for,
                })
                .await;
        });
    }

    /// The exit of a running instrument, collected: the restart policy
    /// decides.
    pub(super) async fn on_exit_collected(
        &mut self,
        name: &str,
        exit: ExitRecord,
        ran_for: Duration,
    ) {
        let mut then = None;
        if let Some(inst) = self.instances.get_mut(name) {
            inst.busy = None;
            then = inst.after_stop.take();
        }
        let Some(ins) = self.wanted(name) else {
            if let Some(t) = then {
                t.done(Ok(()));
            }
            self.remove_instance(name).await;
            return;
        };
        self.destroy(name).await;
        self.after_exit(name, &ins, exit, ran_for);
        // An operator asked for a restart while it was going down anyway.
        if let Some(AfterStop::Restart(reply)) = then {
            if let Some(inst) = self.instances.get_mut(name) {
                inst.down_for_good = false;
                inst.next_restart = None;
            }
            self.reconcile_one(&ins).await;
            self.answer_restart(name, reply);
        }
    }

    /// Reads the exit record outpost-init left (see [`read_exit_at`]).
    pub(super) async fn read_exit(&self, name: &str) -> ExitRecord {
        read_exit_at(name, self.cfg.state.status_dir(name)).await
    }

    /// Records an exit and applies the restart policy.
    pub(super) fn after_exit(
        &mut self,
        name: &str,
        ins: &InstrumentSpec,
        exit: ExitRecord,
        ran_for: Duration,
    ) {
        if let Err(e) = self.db.record_exit(name, &exit) {
            error!(instrument = name, "cannot record exit: {e}");
        }
        if !exit.is_clean() {
            self.report_crash(name, ins, &exit);
        }
        let inst = self.instances.get_mut(name).expect("present");
        let decision = supervisor::after_exit(
            ins.restart,
            &ins.backoff,
            &exit,
            ran_for,
            inst.status.failures,
        );
        inst.status.init_pid = None;
        inst.status.last_exit = Some(exit.clone());
        inst.started = None;
        match decision {
            Decision::Restart {
                after,
                failures,
                crash_loop,
            } => {
                inst.status.failures = failures;
                inst.next_restart = Some(Instant::now() + after);
                inst.status.next_restart_ms = Some(now_ms() + after.as_millis() as i64);
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let _ = tx.send(Command::Wake).await;
                });
                let (st, what) = if crash_loop {
                    (
                        state::CRASH_LOOPING,
                        format!("{failures} quick failures in a row; "),
                    )
                } else {
                    (state::BACKOFF, String::new())
                };
                self.set_state(
                    name,
                    st,
                    format!(
                        "{}; {what}restarting in {} (policy {})",
                        exit.detail,
                        humantime::format_duration(after),
                        ins.restart
                    ),
                );
            }
            Decision::StayDown => {
                inst.down_for_good = true;
                inst.next_restart = None;
                inst.status.next_restart_ms = None;
                let st = if exit.is_clean() {
                    state::EXITED
                } else {
                    state::CRASHED
                };
                self.set_state(
                    name,
                    st,
                    format!(
                        "{}; restart policy {} leaves it down",
                        exit.detail, ins.restart
                    ),
                );
            }
        }
    }

    /// A container found stopped without a watcher: it exited while
    /// outpostd was down, or it was half made.
    pub(super) async fn collect_leftover(&mut self, name: &str, ins: &InstrumentSpec) {
        let was_running = self.instances[name].status.init_pid.is_some();
        if was_running {
            let exit = self.read_exit(name).await;
            info!(
                instrument = name,
                "exited while outpostd was down: {}", exit.detail
            );
            let ran = self.instances[name]
                .status
                .started_at_ms
                .map(|s| Duration::from_millis((now_ms() - s).max(0) as u64))
                .unwrap_or_default();
            self.destroy(name).await;
            self.after_exit(name, ins, exit, ran);
        } else {
            warn!(
                instrument = name,
                "removing a container that was never started (half made by a crash)"
            );
            self.destroy(name).await;
        }
    }

    /// Removes the container definition and the per-start directories.
    pub(super) async fn destroy(&mut self, name: &str) {
        self.release_bindings(name, None).await;
        let rt = self.rt.clone();
        let n = name.to_string();
        match tokio::task::spawn_blocking(move || rt.destroy(&n)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!(instrument = name, "{e}"),
            Err(e) => error!(instrument = name, "destroy task failed: {e}"),
        }
    }
}

/// What a job is doing with an instrument's container; while one is,
/// reconcile leaves the instrument alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Busy {
    Starting,
    Stopping,
    CollectingExit,
}

/// Reads the exit record outpost-init left in `dir`, off the actor loop
/// and with a time limit: the status directory is the container's to
/// write, so what is there may be built to hang or to mislead us.
pub(super) async fn read_exit_at(name: &str, dir: PathBuf) -> ExitRecord {
    let read = tokio::task::spawn_blocking(move || supervisor::read_exit_file(&dir));
    let file = match tokio::time::timeout(EXIT_READ_LIMIT, read).await {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => ExitFile::Unreadable(format!("reading it failed: {e}")),
        Err(_) => ExitFile::Unreadable(format!("reading it took longer than {EXIT_READ_LIMIT:?}")),
    };
    if let ExitFile::Unreadable(why) = &file {
        warn!(instrument = name, "unreadable exit record: {why}");
    }
    ExitRecord::from_file(&file, now_ms())
}

/// Resolves when process `pid` has exited.
async fn wait_exit(pid: i32) {
    match ffi::pidfd_open(pid) {
        Ok(fd) => match ffi::wait_pidfd(fd).await {
            Ok(()) => {}
            Err(e) => {
                warn!(pid, "cannot watch pidfd ({e}); polling instead");
                poll_exit(pid).await;
            }
        },
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
        Err(e) => {
            warn!(pid, "pidfd_open failed ({e}); polling instead");
            poll_exit(pid).await;
        }
    }
}

async fn poll_exit(pid: i32) {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    while proc_dir.exists() {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
