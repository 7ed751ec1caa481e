//! What an instrument's container is made from: its id range, its
//! container spec, and the status it starts with.

use outpost_protocol::{InstrumentSpec, Manifest};

use super::{Daemon, ID_RANGE_SIZE};
use crate::db::{DbError, IdRange, InstrumentStatus, now_ms};
use crate::runtime::{ContainerSpec, PersistSpec, Runtime};
use crate::supervisor::state;

pub(super) fn blank_status(ins: &InstrumentSpec) -> InstrumentStatus {
    InstrumentStatus {
        name: ins.name.clone(),
        state: state::PENDING,
        detail: "not started yet".into(),
        image: ins.image.clone(),
        version: ins.version.clone(),
        init_pid: None,
        started_at_ms: None,
        restarts: 0,
        failures: 0,
        next_restart_ms: None,
        last_exit: None,
        spec_hash: None,
        config_version: None,
        config_applied: None,
        config_rejected: None,
        health: "stopped".into(),
        health_message: String::new(),
        health_details: serde_json::Value::Null,
        storage: None,
        storage_full: false,
        health_rtt_us: None,
        health_unanswered: 0,
        bus_connections: None,
        updated_at_ms: now_ms(),
    }
}

impl<R: Runtime> Daemon<R> {
    /// The host id range of an instrument's user namespace (allocated on
    /// first use, kept until purge); `None` when containers run privileged
    /// (the benchmark's comparison only).
    pub(super) fn id_range(&mut self, name: &str) -> Result<Option<IdRange>, DbError> {
        if self.cfg.privileged {
            return Ok(None);
        }
        self.db
            .allocate_ids(name, self.cfg.id_range_start, ID_RANGE_SIZE)
            .map(Some)
    }

    pub(super) fn container_spec(
        &self,
        ins: &InstrumentSpec,
        m: &Manifest,
        ids: Option<IdRange>,
    ) -> ContainerSpec {
        let st = &self.cfg.state;
        let limits = ins.limits.apply(m.limits);
        let sensor = self
            .desired
            .as_ref()
            .map(|(_, s)| s.sensor.name.clone())
            .unwrap_or_default();
        ContainerSpec {
            name: ins.name.clone(),
            lower: self.images.rootfs(&ins.image, &ins.version),
            instance: st.instance(&ins.name),
            search: vec![
                st.root().to_path_buf(),
                st.instances(),
                st.lxcpath(),
                st.lxcpath().join(&ins.name),
            ],
            persist: PersistSpec {
                image: st.persist_image(&ins.name),
                bytes: m.storage.persistent.as_u64(),
                legacy: st.persist_legacy(&ins.name),
            },
            ids,
            init: self.cfg.init.clone(),
            nkey: self.keys.seed_path(&ins.name),
            console_log: st.console_log(&ins.name),
            console_log_size: self.cfg.console_log_size,
            lxc_log: st.logs(&ins.name).join("lxc.log"),
            entrypoint: m.entrypoint.clone(),
            env: vec![
                ("OUTPOST_INSTRUMENT".into(), ins.name.clone()),
                ("OUTPOST_SENSOR".into(), sensor),
                (
                    "OUTPOST_IMAGE".into(),
                    format!("{}:{}", ins.image, ins.version),
                ),
            ],
            capabilities: m.capabilities.clone(),
            memory_bytes: limits.memory.as_u64(),
            cpu: limits.cpu,
            pids: limits.pids,
            transient_bytes: m.storage.transient.as_u64(),
            bindings: if ins.interfaces.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&ins.interfaces).expect("bindings serialize")
            },
            artifacts: (!m.artifacts.consumes.is_empty()).then(|| st.artifacts(&ins.name)),
        }
    }
}
