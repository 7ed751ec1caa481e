//! The daemon's side of interface bindings: checks before a start, the
//! undo records in SQLite, apply after the container's init runs, and
//! release before a stop, after a death, and at start-up.

use std::fs;
use std::os::unix::fs::OpenOptionsExt;

use outpost_protocol::InstrumentSpec;
use tracing::{error, info, warn};

use super::Daemon;
use crate::network::{NetError, Record};
use crate::runtime::{NET_READY, Runtime};

impl<R: Runtime> Daemon<R> {
    /// The undo records of `instrument`, or of every instrument.
    pub(super) fn binding_records(&self, instrument: Option<&str>) -> Vec<Record> {
        match self.db.bindings(instrument) {
            Ok(rows) => rows
                .into_iter()
                .filter_map(|(i, role, body)| match serde_json::from_str(&body) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        error!(instrument = %i, role = %role, "unreadable binding record: {e}");
                        None
                    }
                })
                .collect(),
            Err(e) => {
                error!("cannot read binding records: {e}");
                Vec::new()
            }
        }
    }

    /// Before a start: checks the bindings against the host and stores
    /// their undo records. An error leaves nothing recorded or changed.
    pub(super) async fn prepare_bindings(&mut self, ins: &InstrumentSpec) -> Result<(), NetError> {
        if ins.interfaces.is_empty() {
            return Ok(());
        }
        // Records a crash left for this instrument go first.
        self.release_bindings(&ins.name, None).await;
        let others: Vec<Record> = self
            .binding_records(None)
            .into_iter()
            .filter(|r| r.instrument != ins.name)
            .collect();
        let records = self
            .binder
            .preflight(&ins.name, &ins.interfaces, &others)
            .await?;
        for r in &records {
            let body = serde_json::to_string(r).expect("record serializes");
            self.db
                .put_binding(&r.instrument, &r.role, &body)
                .map_err(|e| {
                    NetError::Refused(format!("cannot record the binding of role {}: {e}", r.role))
                })?;
        }
        Ok(())
    }

    /// After the container started: puts the bindings in place and lets
    /// the entrypoint run. On error the partial work stays recorded; the
    /// caller stops the container, which undoes it.
    pub(super) async fn apply_bindings(&mut self, name: &str, pid: i32) -> Result<(), NetError> {
        let records = self.binding_records(Some(name));
        if records.is_empty() {
            return Ok(());
        }
        let t0 = std::time::Instant::now();
        if let Err(e) = self.binder.apply(pid, &records).await {
            warn!(instrument = name, "binding failed, rolling back: {e}");
            return Err(e);
        }
        // The status directory is the instrument's to write: never follow
        // or reuse what is there.
        let ready = self.cfg.state.status_dir(name).join(NET_READY);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&ready)
            .map_err(|e| NetError::ctx(format!("cannot write {}", ready.display()), e))?;
        info!(
            instrument = name,
            interfaces = records.len(),
            ms = t0.elapsed().as_secs_f64() * 1e3,
            "interfaces in place"
        );
        Ok(())
    }

    /// Whether the entrypoint was let go (all bindings applied).
    pub(super) fn bindings_ready(&self, name: &str) -> bool {
        fs::symlink_metadata(self.cfg.state.status_dir(name).join(NET_READY))
            .is_ok_and(|m| m.is_file())
    }

    /// Undoes and forgets every binding of `name`. `pid` is its init while
    /// the container still runs. A record whose undo fails is kept, to be
    /// retried at the next release or start-up.
    pub(super) async fn release_bindings(&mut self, name: &str, pid: Option<i32>) {
        for r in self.binding_records(Some(name)) {
            match self.binder.undo(pid, &r).await {
                Ok(()) => {
                    if let Err(e) = self.db.delete_binding(&r.instrument, &r.role) {
                        error!(instrument = name, role = %r.role, "cannot forget binding: {e}");
                    }
                }
                Err(e) => error!(instrument = name, role = %r.role, "cannot undo binding: {e}"),
            }
        }
    }

    /// At start-up: bindings of instruments that are no longer running
    /// are undone (a crash may have left them anywhere between apply and
    /// release).
    pub(super) async fn release_orphaned_bindings(&mut self) {
        let mut names: Vec<String> = self
            .binding_records(None)
            .into_iter()
            .map(|r| r.instrument)
            .collect();
        names.dedup();
        for name in names {
            let running = matches!(
                self.observe(&name).await,
                crate::runtime::Observed::Running { .. }
            );
            if !running {
                info!(instrument = %name, "undoing the interface bindings of a stopped instrument");
                self.release_bindings(&name, None).await;
            }
        }
    }
}
