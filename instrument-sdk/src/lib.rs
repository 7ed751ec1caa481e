//! The crate instrument authors build on.
//!
//! Empty until the messaging issue lands: it will own the whole process
//! contract of an instrument (NATS connection, health, config, retention,
//! events, graceful shutdown). Nothing here pretends to work yet.
