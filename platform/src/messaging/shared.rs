//! The platform's one client of the sensor's bus, shared: the daemon puts
//! it here once nats-server is up (and the `EVENTS` stream is there), and
//! every other part of outpostd (the D-Bus server's `Events`, later the
//! fleet link) takes it from here instead of logging in on its own.

use tokio::sync::watch;

use super::bus::Bus;

/// Where the platform's bus client is, once there is one.
#[derive(Clone)]
pub struct SharedBus {
    tx: std::sync::Arc<watch::Sender<Option<Bus>>>,
}

impl Default for SharedBus {
    fn default() -> Self {
        Self::new()
    }
}

impl SharedBus {
    pub fn new() -> SharedBus {
        SharedBus {
            tx: std::sync::Arc::new(watch::Sender::new(None)),
        }
    }

    /// Called by the daemon when its client is connected.
    pub fn set(&self, bus: Bus) {
        self.tx.send_replace(Some(bus));
    }

    /// The client, if the bus is up yet.
    pub fn get(&self) -> Option<Bus> {
        self.tx.borrow().clone()
    }
}
