//! Stopping an instrument: as a job off the loop (`begin_stop`, then
//! `finish_stop` when it reports back, then what was to follow), inline on
//! error paths, an operator's restart, removal, and shutdown (which drains
//! the jobs under way).

use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};

use super::lifecycle::{Busy, read_exit_at};
use super::{ApplyError, Command, Daemon};
use crate::messaging::proxy::Proxy;
use crate::runtime::{Observed, Runtime, rootfs};
use crate::supervisor::{ExitRecord, state};

impl<R: Runtime> Daemon<R> {
    /// Stops a container whose init is `pid` but which outpostd has not
    /// (yet) taken as running; the pid lets the stop undo its bindings
    /// inside its namespace.
    pub(super) async fn stop_running(&mut self, name: &str, pid: i32) {
        self.instances
            .get_mut(name)
            .expect("present")
            .status
            .init_pid = Some(pid);
        self.stop_and_destroy(name).await;
    }

    pub(super) async fn stop_and_destroy(&mut self, name: &str) {
        let proxy = self.release_for_stop(name).await;
        stop_container(self.rt.clone(), name, self.cfg.stop_grace).await;
        drop(proxy);
        if self.instances.contains_key(name) {
            let exit = self.read_exit(name).await;
            self.record_stopped(name, exit).await;
        } else {
            self.destroy(name).await;
        }
    }

    /// What every stop does first, while the container still runs: the
    /// exit that follows is marked as ours, the bus side ends (the proxy is
    /// handed back, to stay up while the instrument flushes its events),
    /// and its interfaces go home while its namespace still exists (a phy
    /// would otherwise come back under another name, a virtual one not at
    /// all).
    async fn release_for_stop(&mut self, name: &str) -> Option<Proxy> {
        if let Some(inst) = self.instances.get_mut(name) {
            inst.generation += 1;
            if let Some(w) = inst.watcher.take() {
                w.abort();
            }
            self.set_state(name, state::STOPPING, "stopping");
        }
        let proxy = self.instances.get_mut(name).and_then(|i| i.proxy.take());
        self.detach_bus(name, false);
        let pid = self.instances.get(name).and_then(|i| i.status.init_pid);
        self.release_bindings(name, pid).await;
        proxy
    }

    /// What every stop does last: its exit recorded, its container removed.
    async fn record_stopped(&mut self, name: &str, exit: ExitRecord) {
        if let Some(inst) = self.instances.get_mut(name) {
            inst.status.init_pid = None;
            inst.status.last_exit = Some(exit);
            inst.started = None;
        }
        self.destroy(name).await;
    }

    /// Starts stopping a running instrument as a job off the loop (the
    /// stop may take its whole grace period): the bus side and the
    /// interfaces are released here, the container is stopped by the job,
    /// which reports back with [`Command::StopDone`]; `then` says what
    /// follows. Until then the instrument is busy and reconcile leaves it
    /// alone. A container outpostd has no record of is stopped inline.
    pub(super) async fn begin_stop(&mut self, name: &str, then: AfterStop) {
        let Some(inst) = self.instances.get_mut(name) else {
            self.stop_and_destroy(name).await;
            then.done(Ok(()));
            return;
        };
        if inst.busy.is_some() {
            // Already on its way down; a second reason waits for the same
            // stop, unless one already does.
            match inst.after_stop {
                None => inst.after_stop = Some(then),
                Some(_) => then.done(Err(ApplyError::Store(format!(
                    "instrument {name} is being stopped for another request; try again in a moment"
                )))),
            }
            return;
        }
        inst.busy = Some(Busy::Stopping);
        inst.after_stop = Some(then);
        let proxy = self.release_for_stop(name).await;
        let rt = self.rt.clone();
        let n = name.to_string();
        let grace = self.cfg.stop_grace;
        let dir = self.cfg.state.status_dir(name);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            stop_container(rt, &n, grace).await;
            // Its proxy stayed up while it stopped, so it could flush its
            // events.
            drop(proxy);
            let exit = read_exit_at(&n, dir).await;
            let _ = tx.send(Command::StopDone { name: n, exit }).await;
        });
    }

    /// A stop job ended: the container is removed, and what was to follow
    /// follows.
    pub(super) async fn finish_stop(&mut self, name: &str, exit: ExitRecord) {
        let Some(inst) = self.instances.get_mut(name) else {
            self.destroy(name).await;
            return;
        };
        inst.busy = None;
        let then = inst.after_stop.take().unwrap_or(AfterStop::Reconcile);
        self.record_stopped(name, exit).await;
        match then {
            AfterStop::Reconcile => {}
            AfterStop::Restart(reply) => {
                if self.draining {
                    let _ = reply.send(Err(ApplyError::Store(super::Stopped.to_string())));
                    return;
                }
                if let Some(ins) = self.wanted(name) {
                    self.reconcile_one(&ins).await;
                }
                self.answer_restart(name, reply);
            }
            AfterStop::Policy { exit, ran_for } => {
                if let Some(ins) = self.wanted(name) {
                    self.after_exit(name, &ins, exit, ran_for);
                }
            }
        }
    }

    /// An operator's restart: stops the container (whatever its restart
    /// policy says) and starts it again at once; the desired state is
    /// unchanged. A disabled instrument is not started. Answered once it
    /// runs again.
    pub(super) async fn restart(
        &mut self,
        name: &str,
        reply: tokio::sync::oneshot::Sender<Result<(), ApplyError>>,
    ) {
        let Some(ins) = self.wanted(name) else {
            let _ = reply.send(Err(ApplyError::unknown(
                name,
                self.desired.as_ref().map(|(_, s)| s),
            )));
            return;
        };
        info!(instrument = name, "restart asked by an operator");
        if let Some(inst) = self.instances.get_mut(name) {
            inst.down_for_good = false;
            inst.next_restart = None;
            inst.status.restarts += 1;
        }
        let busy = self.instances.get(name).and_then(|i| i.busy);
        if busy == Some(Busy::Starting) {
            // It is being started right now: that start is the restart.
            self.answer_restart(name, reply);
            return;
        }
        if busy.is_some() || !matches!(self.observe(name).await, Observed::Absent) {
            self.begin_stop(name, AfterStop::Restart(reply)).await;
            return;
        }
        self.reconcile_one(&ins).await;
        self.answer_restart(name, reply);
    }

    /// Answers an operator's restart once it runs again: now if its start
    /// already ended (or none was due), else when the start job reports.
    pub(super) fn answer_restart(
        &mut self,
        name: &str,
        reply: tokio::sync::oneshot::Sender<Result<(), ApplyError>>,
    ) {
        if let Some(inst) = self.instances.get_mut(name)
            && inst.busy == Some(Busy::Starting)
        {
            if inst.after_start.is_some() {
                let _ = reply.send(Err(ApplyError::Store(format!(
                    "instrument {name} is being restarted for another request; try again in a moment"
                ))));
            } else {
                inst.after_start = Some(reply);
            }
            return;
        }
        // Answered once the status shows the new start, so a status asked
        // after the answer does too.
        self.publish_status();
        let _ = reply.send(Ok(()));
    }

    /// Stops and removes an instrument that is no longer wanted. Its
    /// persistent storage and logs stay until `outpostctl purge`.
    pub(super) async fn remove_instance(&mut self, name: &str) {
        if self.instances.get(name).is_some_and(|i| i.busy.is_some()) {
            return; // the next reconcile after its job finishes the removal
        }
        let defined = !matches!(self.observe(name).await, Observed::Absent);
        if defined {
            info!(
                instrument = name,
                "no longer in the desired state; removing it (persistent storage is kept)"
            );
            if self.instances.contains_key(name) {
                self.begin_stop(name, AfterStop::Reconcile).await;
                return;
            }
            self.stop_and_destroy(name).await;
        }
        if let Err(e) = rootfs::teardown(&self.cfg.state.instance(name)) {
            error!(instrument = name, "{e}");
        }
        self.instances.remove(name);
        self.forget_retention(name);
        self.keys.remove(name);
        if let Err(e) = self.db.delete_status(name) {
            error!(instrument = name, "cannot forget status: {e}");
        }
    }

    pub(super) async fn shutdown(&mut self, rx: &mut tokio::sync::mpsc::Receiver<Command>) {
        self.drain_jobs(rx).await;
        let names: Vec<String> = self.instances.keys().cloned().collect();
        for name in &names {
            if let Some(inst) = self.instances.get_mut(name)
                && let Some(w) = inst.watcher.take()
            {
                w.abort();
            }
            if let Some(inst) = self.instances.get_mut(name) {
                // Checks end with outpostd (proxies too, when it exits); a
                // restarted outpostd re-creates them for what it adopts.
                if let Some(t) = inst.health_task.take() {
                    t.abort();
                }
                if let Some((_, t)) = inst.config_task.take() {
                    t.abort();
                }
            }
        }
        if self.cfg.stop_on_exit {
            info!("stopping every instrument (--stop-on-exit)");
            for name in &names {
                if !matches!(self.observe(name).await, Observed::Absent) {
                    self.stop_and_destroy(name).await;
                }
                self.set_state(
                    name,
                    state::STOPPED,
                    "stopped with outpostd (--stop-on-exit)",
                );
            }
            if let Some(n) = self.nats.as_mut() {
                n.stop().await;
            }
        } else {
            info!("outpostd exits; instruments keep running and will be re-adopted");
        }
    }
}

impl<R: Runtime> Daemon<R> {
    /// Lets the stop and exit jobs under way finish (within the stop
    /// grace and a margin), so no container is left half stopped; other
    /// commands are dropped (their callers hear that outpostd stops).
    async fn drain_jobs(&mut self, rx: &mut tokio::sync::mpsc::Receiver<Command>) {
        self.draining = true;
        let deadline = tokio::time::Instant::now() + self.cfg.stop_grace + Duration::from_secs(15);
        while self.nats_job || self.instances.values().any(|i| i.busy.is_some()) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Command::StopDone { name, exit })) => self.finish_stop(&name, exit).await,
                Ok(Some(Command::ExitCollected {
                    name,
                    exit,
                    ran_for,
                })) => self.on_exit_collected(&name, exit, ran_for).await,
                Ok(Some(Command::NatsBack { started, why, took })) => {
                    self.on_nats_back(started, why, took)
                }
                Ok(Some(Command::Started {
                    name,
                    spec,
                    started,
                    restarting,
                    looping,
                })) => {
                    self.finish_start(&name, *spec, started, restarting, looping)
                        .await
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    warn!(
                        "stop jobs still under way as outpostd exits; the next start collects them"
                    );
                    break;
                }
            }
        }
    }
}

/// What follows a stop that ran as a job.
pub(super) enum AfterStop {
    /// Reconcile decides (removal, disabled, a new spec).
    Reconcile,
    /// An operator's restart: start it again, then answer.
    Restart(tokio::sync::oneshot::Sender<Result<(), ApplyError>>),
    /// Failed health checks: record this exit; the restart policy decides.
    Policy { exit: ExitRecord, ran_for: Duration },
}

impl AfterStop {
    /// Answers whoever waits, if anyone.
    pub(super) fn done(self, r: Result<(), ApplyError>) {
        if let AfterStop::Restart(reply) = self {
            let _ = reply.send(r);
        }
    }
}

/// Stops a container (its init gets the halt signal, then a kill after
/// `grace`) on a blocking thread; a failure is logged with its name.
async fn stop_container<R: Runtime>(rt: Arc<R>, name: &str, grace: Duration) {
    let n = name.to_string();
    match tokio::task::spawn_blocking(move || rt.stop(&n, grace)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => error!(instrument = name, "{e}"),
        Err(e) => error!(instrument = name, "stop task failed: {e}"),
    }
}
