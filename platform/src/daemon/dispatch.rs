//! One command at a time: what the actor does with each [`Command`], and
//! whether a reconcile follows.

use super::{Applied, Command, Daemon};
use crate::runtime::Runtime;

impl<R: Runtime> Daemon<R> {
    /// Takes one command; whether a reconcile should follow.
    pub(super) async fn on_command(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Shutdown => return false,
            Command::Reload => self.reload(),
            Command::Exited { name, generation } => {
                self.on_exit(&name, generation);
                return false;
            }
            Command::ExitCollected {
                name,
                exit,
                ran_for,
            } => self.on_exit_collected(&name, exit, ran_for).await,
            Command::StopDone { name, exit } => self.finish_stop(&name, exit).await,
            Command::Started {
                name,
                spec,
                started,
                restarting,
                looping,
            } => {
                self.finish_start(&name, *spec, started, restarting, looping)
                    .await
            }
            Command::Wake => {}
            Command::ArtifactAnnounced {
                from,
                payload,
                done,
            } => self.on_artifact_announced(from, payload, done),
            Command::ArtifactDone { job, result } => self.on_artifact_done(*job, result),
            // Health and config results change no desired or observed
            // container state (a health restart schedules its own
            // wake-up), so they do not reconcile.
            Command::Health {
                name,
                generation,
                outcome,
                latency_ms,
                storage,
            } => {
                self.on_storage(&name, generation, storage);
                self.on_health(&name, generation, outcome, latency_ms).await;
                if let Some(i) = self.instances.get_mut(&name) {
                    i.status.bus_connections = i.proxy.as_ref().map(|p| p.stats());
                }
                return false;
            }
            Command::ConfigResult {
                name,
                generation,
                version,
                applied,
                reason,
            } => {
                self.on_config_result(&name, generation, version, applied, reason);
                return false;
            }
            Command::NatsExited { pid } => {
                self.on_nats_exit(pid);
                return false;
            }
            Command::NatsBack { started, why, took } => self.on_nats_back(started, why, took),
            Command::RetentionNow {
                name,
                older_than,
                reply,
            } => {
                self.retention_now(&name, older_than, reply);
                return false;
            }
            Command::RetentionDone { run } => {
                self.on_retention_done(run);
                return false;
            }
            Command::Purge { name, reply } => {
                let r = super::purge::purge_data(&self.cfg.state, &self.db, &name);
                let _ = reply.send(r);
                return false;
            }
            Command::RemoveImage {
                name,
                version,
                reply,
            } => {
                let r = self.images.remove(&mut self.db, &name, &version);
                self.manifests
                    .retain(|k, _| !(k.0 == name && k.1 == version));
                let _ = reply.send(r);
                return false;
            }
            Command::Restart { name, reply } => self.restart(&name, reply).await,
            Command::Apply {
                change,
                origin,
                force,
                reply,
            } => {
                let r = self.apply(change, origin, force);
                let changed = matches!(r, Ok(Applied { changed: true, .. }));
                // The answer goes out before the (slow) reconcile: the
                // caller learns the version at once and watches the status
                // for the rest.
                self.publish_status();
                let _ = reply.send(r);
                return changed;
            }
        }
        true
    }
}
