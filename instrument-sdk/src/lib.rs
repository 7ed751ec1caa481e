//! The crate instrument authors build on.
//!
//! An instrument implements [`Instrument`] and hands itself to [`run`],
//! which owns the whole process contract with the Outpost platform:
//!
//! - connects to the sensor's bus from the environment the platform sets
//!   (`OUTPOST_INSTRUMENT`, `OUTPOST_SENSOR`, `OUTPOST_NATS_URL`,
//!   `OUTPOST_NATS_NKEY`), and reconnects with back-off for as long as it
//!   runs;
//! - answers health requests ([`Instrument::health`]), applies or rejects
//!   config versions ([`Instrument::configure`], typed with serde),
//!   answers retention requests (by default: delete files older than the
//!   cutoff under `/var/lib/instrument`), and passes on artifact notices;
//! - registers the instrument as a NATS micro-service, so `nats micro ls`
//!   and `$SRV.PING/INFO/STATS` see it;
//! - publishes typed events ([`Context::publish`]) through a bounded
//!   buffer that keeps them while the bus is away and stores each one
//!   exactly once (JetStream message ids); what does not fit is counted
//!   ([`Context::event_stats`]) and shown in health details;
//! - subscribes to the events of allowed peers and calls allowed peers;
//!   what nats-server refuses comes back as [`SdkError::PermissionDenied`];
//! - logs with `tracing` to stdout (the platform keeps it), stops cleanly on
//!   SIGTERM, and exits non-zero if the instrument's main loop fails.
//!
//! # Example
//!
//! ```no_run
//! use instrument_sdk::{Context, Health, Instrument};
//! use serde::Deserialize;
//! use std::sync::Mutex;
//!
//! #[derive(Deserialize)]
//! struct Config { interval_secs: u64 }
//!
//! #[derive(Default)]
//! struct Ticker { interval: Mutex<u64> }
//!
//! impl Instrument for Ticker {
//!     type Config = Config;
//!
//!     async fn run(&self, ctx: Context) -> Result<(), instrument_sdk::BoxError> {
//!         let mut n = 0u64;
//!         while !ctx.is_shutting_down() {
//!             n += 1;
//!             ctx.publish("tick", "ticker.tick/1", &serde_json::json!({ "n": n }))?;
//!             let secs = *self.interval.lock().unwrap();
//!             tokio::select! {
//!                 _ = tokio::time::sleep(std::time::Duration::from_secs(secs.max(1))) => {}
//!                 _ = ctx.shutdown() => {}
//!             }
//!         }
//!         Ok(())
//!     }
//!
//!     async fn health(&self, _ctx: &Context) -> Health {
//!         Health::ok("ticking")
//!     }
//!
//!     async fn configure(&self, _ctx: &Context, _version: u64, c: Config) -> Result<(), String> {
//!         if c.interval_secs == 0 {
//!             return Err("interval_secs must be at least 1".into());
//!         }
//!         *self.interval.lock().unwrap() = c.interval_secs;
//!         Ok(())
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     instrument_sdk::run(Ticker::default())
//! }
//! ```
//!
//! `examples/ticker.rs` is the same program; `instruments/example` is a
//! fuller one that the platform's tests run in real containers.
//!
//! # Layout
//! - [`runner`]: [`run`] and the [`Instrument`] trait.
//! - [`context`]: [`Context`], what an instrument uses to talk to the bus.
//! - [`publisher`]: the bounded, exactly-once event buffer.
//! - [`violations`]: turning nats-server's permission errors into results.
//! - [`storage`]: storage paths and the default retention.
//! - [`env`]: what the platform passes in the environment.

pub mod context;
pub mod env;
pub mod error;
pub mod publisher;
pub mod runner;
pub mod storage;
pub mod violations;

pub use context::{Context, EventStream};
pub use error::{BoxError, SdkError};
pub use outpost_protocol::Envelope;
pub use outpost_protocol::messages::{ArtifactNotice, HealthStatus, RetentionReply};
pub use publisher::EventStats;
pub use runner::{Health, Instrument, run};
