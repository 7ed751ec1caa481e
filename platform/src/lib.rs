//! outpostd: the daemon that runs a sensor's instruments.
//!
//! It keeps the sensor's *desired state* (which instruments, from which
//! image, with which limits and config) in SQLite, runs every instrument in
//! its own hardened LXC container, supervises it, and re-adopts running
//! containers after its own crash.
//!
//! # Layout
//! - [`daemon`]: the actor that reconciles desired state with reality and
//!   supervises instruments.
//! - [`supervisor`]: pure restart decisions (policies, back-off, exits).
//! - [`health`]: pure health state per instrument run.
//! - [`messaging`]: nats-server, identities, the loopback proxy, the
//!   platform's bus client; [`netns`]: entering an instrument's namespace.
//! - [`runtime`]: the container seam: the [`runtime::Runtime`] trait, the
//!   liblxc implementation, the LXC config renderer, and the one module with
//!   `unsafe` code ([`runtime::ffi`]).
//! - [`images`]: the image store (import, list, remove, recovery).
//! - [`db`]: the SQLite state (desired-state versions, config versions,
//!   images, status, exit history, id ranges).
//! - [`validate`]: the one validation of a desired state against the
//!   imported images, for every way in.
//! - [`paths`]: what lives where under the state directory.
//! - [`run`]: `outpostd run` (the daemon process: lock, options, D-Bus,
//!   metrics, signals) and its internal `start-container` helper; the
//!   binary only parses arguments.
//! - [`dbus`]: the local admin API `org.outpost.Sensor1`; [`ctl`]:
//!   `outpostctl`, the operator's CLI, its client.
//! - [`metrics`]: the Prometheus endpoint; [`network`]: interface
//!   bindings.
//! - [`observability`]: logging set-up; [`failpoint`]: crash injection
//!   for the crash-safety tests.

pub mod ctl;
pub mod daemon;
pub mod db;
pub mod dbus;
pub mod failpoint;
pub mod fleet;
pub mod health;
pub mod images;
pub mod messaging;
pub mod metrics;
pub mod netns;
pub mod network;
pub mod observability;
pub mod paths;
pub mod run;
pub mod runtime;
pub mod shutdown;
pub mod supervisor;
pub mod validate;
