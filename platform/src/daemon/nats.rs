//! The daemon's nats-server: started or adopted, its config (accounts,
//! identities, permissions) kept in step with the desired state, and
//! restarted when it dies.

use std::collections::BTreeSet;
use std::fs;
use std::time::{Duration, Instant};

use outpost_protocol::InstrumentSpec;
use outpost_protocol::subjects::{PLATFORM, instrument_permissions};
use tracing::{error, info, warn};

use super::{Command, Daemon, DaemonError};
use crate::messaging::bus::Bus;
use crate::messaging::server::{self, NatsServer};
use crate::messaging::server_config::{self, InstrumentUser, ServerSettings};
use crate::runtime::Runtime;

/// JetStream storage limits of the sensor's own server.
const JETSTREAM_MAX_FILE: u64 = 2 << 30;
const JETSTREAM_MAX_MEMORY: u64 = 64 << 20;

impl<R: Runtime> Daemon<R> {
    /// Starts (or adopts) nats-server with the current identities, connects
    /// the platform, and makes sure the `EVENTS` stream exists.
    pub(super) async fn start_bus(&mut self) -> Result<(), DaemonError> {
        let dir = self.cfg.state.nats();
        fs::create_dir_all(&dir)
            .map_err(|e| DaemonError::Setup(format!("cannot create {}: {e}", dir.display())))?;
        let mut server = match self.given_nats.take() {
            Some(s) => s,
            None => {
                let binary = server::find_binary(self.cfg.nats_server.as_deref())?;
                let port = server::choose_port(&dir, self.cfg.nats_port)?;
                NatsServer::new(binary, &dir, port)
            }
        };
        self.keys.ensure(PLATFORM)?;
        let port = server.port();
        server.leave_global_account().await?;
        self.nats = Some(server);
        let wanted: Vec<InstrumentSpec> = self
            .desired
            .as_ref()
            .map(|(_, s)| s.instruments.clone())
            .unwrap_or_default();
        let before = fs::read_to_string(self.nats.as_ref().expect("just set").config_path())
            .unwrap_or_default();
        self.sync_bus_users(&wanted).await;
        let nats = self.nats.as_mut().expect("just set");
        let (pid, adopted) = nats.start_or_adopt()?;
        nats.wait_ready(Duration::from_secs(15)).await?;
        self.watch_nats(pid);
        if adopted && self.nats_users.as_deref() != Some(before.as_str()) {
            // Identities changed while outpostd was down: a reload when the
            // accounts are the same, else a restart (see sync_bus_users).
            if server_config::instrument_accounts(&before)
                == server_config::instrument_accounts(
                    self.nats_users.as_deref().unwrap_or_default(),
                )
            {
                self.nats.as_ref().expect("just set").reload();
            } else {
                self.restart_nats("instruments came or went while outpostd was down")
                    .await;
            }
        }
        let bus = Bus::connect(port, self.keys.seed(PLATFORM)?, &self.sensor_name()).await?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match bus.ensure_events_stream(self.cfg.events).await {
                Ok(()) => break,
                Err(e) if Instant::now() < deadline => {
                    info!("waiting for JetStream: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        info!(port, "bus ready: nats-server on 127.0.0.1, stream EVENTS");
        if self.control.is_none() {
            self.control = Some(std::sync::Arc::new(bus.clone()));
        }
        self.shared_bus.set(bus.clone());
        self.bus = Some(bus);
        Ok(())
    }

    pub(super) fn watch_nats(&self, pid: i32) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            NatsServer::exited(pid).await;
            let _ = tx.send(Command::NatsExited { pid }).await;
        });
    }

    /// nats-server ended: start it again (with back-off while it keeps
    /// failing), as a job off the loop. Instruments and the platform
    /// reconnect by themselves.
    pub(super) fn on_nats_exit(&mut self, pid: i32) {
        if self.nats_job {
            return; // our own restart stopped it
        }
        let Some(nats) = self.nats.as_mut() else {
            return;
        };
        if nats.pid().is_some_and(|p| p != pid) {
            return;
        }
        if pid != 0 {
            warn!(pid, "nats-server exited; restarting it");
        }
        nats.forget();
        self.nats_failures += 1;
        let delay = Duration::from_millis(100 * (1 << self.nats_failures.min(6)))
            .min(Duration::from_secs(5));
        self.nats_restart_job(delay, "it exited");
    }

    /// Restarts nats-server as a job off the loop: stop (if it runs), wait
    /// `delay`, start on its current config, wait until it is ready; the
    /// job reports back with [`Command::NatsBack`]. A second restart asked
    /// meanwhile follows the first.
    pub(super) fn nats_restart_job(&mut self, delay: Duration, why: &'static str) {
        if self.nats_job {
            self.nats_resync = true;
            return;
        }
        let Some(nats) = self.nats.as_mut() else {
            return;
        };
        let mut job = nats.clone();
        nats.forget();
        self.nats_job = true;
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            job.stop().await;
            tokio::time::sleep(delay).await;
            let started = match job.start_or_adopt() {
                Ok((pid, _)) => job.wait_ready(Duration::from_secs(15)).await.map(|_| pid),
                Err(e) => Err(e),
            };
            let _ = tx
                .send(Command::NatsBack {
                    started: started.map_err(|e| e.to_string()),
                    why,
                    took: t0.elapsed(),
                })
                .await;
        });
    }

    /// A restart job ended.
    pub(super) fn on_nats_back(&mut self, started: Result<i32, String>, why: &str, took: Duration) {
        self.nats_job = false;
        match started {
            Ok(pid) => {
                self.nats_failures = 0;
                if let Some(n) = self.nats.as_mut() {
                    n.set_pid(pid);
                }
                self.watch_nats(pid);
                info!(
                    pid,
                    ms = took.as_millis() as u64,
                    "nats-server restarted: {why}"
                );
                if let Some(bus) = self.bus.clone() {
                    let limits = self.cfg.events;
                    tokio::spawn(async move {
                        for _ in 0..50 {
                            if bus.ensure_events_stream(limits).await.is_ok() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        error!("stream EVENTS could not be checked after the nats-server restart");
                    });
                }
                if std::mem::take(&mut self.nats_resync) && !self.draining {
                    self.nats_restart_job(Duration::ZERO, "identities changed during the restart");
                }
            }
            Err(e) => {
                error!("nats-server could not be restarted ({why}): {e}; retrying");
                self.nats_resync = false;
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(Command::NatsExited { pid: 0 }).await;
                });
            }
        }
    }

    /// Writes nats-server's config for the platform and every wanted
    /// instrument (its nkey, its own account with its connection limit, the
    /// permissions and peers its manifest gives), and has the server take
    /// it: a reload when only users or permissions changed, a restart when
    /// accounts came or went (nats-server 2.9 does not wire a service
    /// import into the JetStream account for an account a reload adds, so
    /// the new instrument's events would find no stream; fixed upstream
    /// only in later versions). Instruments and the platform reconnect by
    /// themselves and resend what was not acknowledged.
    pub(super) async fn sync_bus_users(&mut self, wanted: &[InstrumentSpec]) {
        if self.nats.is_none() {
            return;
        }
        let platform = match self.keys.ensure(PLATFORM) {
            Ok(k) => k,
            Err(e) => {
                error!("{e}");
                return;
            }
        };
        let present: Vec<&str> = wanted.iter().map(|i| i.name.as_str()).collect();
        let mut users = Vec::new();
        for ins in wanted {
            let (perms, provides) = match self.manifest(&ins.image, &ins.version) {
                Ok(Some(m)) => (m.permissions, m.artifacts.provides),
                _ => Default::default(),
            };
            let among = |peers: &[String]| -> Vec<String> {
                peers
                    .iter()
                    .filter(|p| present.contains(&p.as_str()) && **p != ins.name)
                    .cloned()
                    .collect()
            };
            match self.keys.ensure(&ins.name) {
                Ok(nkey) => users.push(InstrumentUser {
                    name: ins.name.clone(),
                    nkey,
                    permissions: instrument_permissions(&ins.name, &perms, provides),
                    reads: among(&perms.read_events),
                    calls: among(&perms.call),
                }),
                Err(e) => error!(instrument = %ins.name, "{e}"),
            }
        }
        let dir = self.cfg.state.nats();
        let sensor = self.sensor_name();
        let nats = self.nats.as_ref().expect("checked above");
        let text = server_config::render(
            &ServerSettings {
                port: nats.port(),
                server_name: &sensor,
                dir: &dir,
                jetstream_max_file: JETSTREAM_MAX_FILE,
                jetstream_max_memory: JETSTREAM_MAX_MEMORY,
                max_connections_per_instrument: self.cfg.max_bus_connections,
            },
            &platform,
            &users,
        );
        if self.nats_users.as_deref() == Some(text.as_str()) {
            return;
        }
        let accounts: BTreeSet<String> = users.iter().map(|u| u.name.clone()).collect();
        let same_accounts = self.nats_accounts.as_ref() == Some(&accounts);
        match nats.write_config(&text) {
            Ok(changed) => {
                self.nats_users = Some(text);
                self.nats_accounts = Some(accounts);
                if !changed || nats.pid().is_none() {
                    // A restart under way must take this config too.
                    if changed && self.nats_job {
                        self.nats_resync = true;
                    }
                    return;
                }
                if same_accounts {
                    nats.reload();
                    info!(
                        instruments = users.len(),
                        "bus identities updated; nats-server reloaded"
                    );
                } else {
                    self.nats_restart_job(Duration::ZERO, "instruments came or went");
                }
            }
            Err(e) => error!("{e}"),
        }
    }

    /// Stops nats-server and starts it on its current config, waiting
    /// until it accepts connections: at start-up only, before anything
    /// else runs (later restarts are jobs, see `nats_restart_job`).
    pub(super) async fn restart_nats(&mut self, why: &str) {
        let Some(nats) = self.nats.as_mut() else {
            return;
        };
        let t0 = Instant::now();
        nats.stop().await;
        let started = match nats.start_or_adopt() {
            Ok((pid, _)) => nats.wait_ready(Duration::from_secs(15)).await.map(|_| pid),
            Err(e) => Err(e),
        };
        match started {
            Ok(pid) => {
                self.watch_nats(pid);
                info!(
                    pid,
                    ms = t0.elapsed().as_millis() as u64,
                    "nats-server restarted: {why}"
                );
            }
            Err(e) => {
                error!("nats-server could not be restarted ({why}): {e}; retrying");
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(Command::NatsExited { pid: 0 }).await;
                });
            }
        }
    }
}
