//! How the daemon runs: its options, the parts it is made with, and the
//! id-range constants.

use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use crate::messaging::bus::EventsLimits;
use crate::messaging::server::NatsServer;
use crate::messaging::shared::SharedBus;
use crate::paths::StateDir;
use crate::shutdown::Shutdown;

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub state: StateDir,
    /// The sensor file; without one the stored desired state is used.
    pub sensor_file: Option<PathBuf>,
    /// The static `outpost-init` binary.
    pub init: PathBuf,
    /// Stop every instrument when the daemon exits.
    pub stop_on_exit: bool,
    /// How often reality is compared with the desired state even when
    /// nothing happened.
    pub reconcile_every: Duration,
    /// How long an instrument gets to stop after SIGTERM.
    pub stop_grace: Duration,
    /// Size at which an instrument's console log is rotated.
    pub console_log_size: u64,
    /// The nats-server binary (found on PATH when `None`).
    pub nats_server: Option<PathBuf>,
    /// Port of nats-server on 127.0.0.1; 0 picks a free one (kept).
    pub nats_port: u16,
    /// Limits of the `EVENTS` stream.
    pub events: EventsLimits,
    /// Bus connections one instrument may have at once (its proxy's cap,
    /// and nats-server's limit for its account).
    pub max_bus_connections: usize,
    /// First host id of the instruments' id ranges.
    pub id_range_start: u32,
    /// Run containers as host root with dropped capabilities, without a
    /// user namespace: only for the benchmark's comparison.
    pub privileged: bool,
}

/// Host ids per instrument: a whole 16-bit range, so images with ordinary
/// users and groups (up to 65534, "nobody") work inside.
pub const ID_RANGE_SIZE: u32 = 65536;

/// Where instruments' id ranges start by default: clear of the ids of host
/// users, of shadow's subordinate ranges (from 100000) and of LXD's
/// (1000000 to 1001000000), and below 2^31.
pub const DEFAULT_ID_RANGE_START: u32 = 1_500_000_000;

/// What a daemon is made with; `Parts::default()` is what `Daemon::new`
/// uses: the real binder, a bus client and nats-server of its own making,
/// a shutdown token no one else holds.
pub struct Parts {
    pub binder: Arc<dyn crate::network::Binder>,
    /// Instead of the platform's client once the bus is up (tests).
    pub control: Option<Arc<dyn crate::messaging::control::BusControl>>,
    /// nats-server to start or adopt (else made from the config).
    pub nats: Option<NatsServer>,
    pub shared_bus: SharedBus,
    pub shutdown: Shutdown,
}

impl Default for Parts {
    fn default() -> Self {
        Parts {
            binder: Arc::new(crate::network::Netlink),
            control: None,
            nats: None,
            shared_bus: SharedBus::default(),
            shutdown: Shutdown::default(),
        }
    }
}
