//! The fleet manager: the hub (NATS with JetStream, where the fleet's
//! state lives), enrollment and the sensor registry, heartbeat intake and
//! the REST API. See `docs/design.md` (Fleet) for what is stored where.

pub mod api;
pub mod app;
pub mod auth;
pub mod client;
pub mod desired;
pub mod error;
pub mod events;
pub mod health;
pub mod hub;
pub mod images;
pub mod ingest;
pub mod metrics;
pub mod presence;
pub mod registry;
pub mod shutdown;
pub mod signals;
pub mod tls;
