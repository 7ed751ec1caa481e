//! The sensor's message bus: outpostd's own nats-server, one identity per
//! instrument, the loopback proxy into each instrument's namespace, and the
//! platform's client.
//!
//! - [`keys`]: an nkey per instrument (seed 0600 on the host, handed to the
//!   instrument read-only) and one for the platform;
//! - [`server_config`]: the generated nats-server config (pure);
//! - [`server`]: starting, adopting, reloading and watching nats-server;
//! - [`proxy`]: 127.0.0.1:4222 inside each instrument, spliced to the
//!   server; the instrument has no other way to the host;
//! - [`bus`]: the platform's connection: the `EVENTS` stream, requests to
//!   instruments, platform events.

pub mod bus;
pub mod control;
#[cfg(test)]
pub mod fake;
pub mod keys;
pub mod proxy;
pub mod server;
pub mod server_config;
pub mod shared;
