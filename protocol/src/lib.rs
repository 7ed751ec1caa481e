//! Outpost's shared vocabulary: the types that cross a process or machine
//! boundary, and the pure functions that parse and validate them.
//!
//! Nothing in this crate does I/O; every parser takes bytes or text and
//! returns a value or an error that names the field and the fix. That keeps
//! the parsers easy to unit-test and to fuzz (see `protocol/fuzz`).
//!
//! # Layout
//! - [`manifest`]: the instrument manifest (`manifest.toml` inside an image):
//!   what an instrument is, what it may do, and what it needs.
//! - [`bindings`]: what an instrument's interface roles are bound to.
//! - [`desired`]: the sensor's desired state (the sensor file): which
//!   instruments run, from which image, with which limits and config.
//! - [`envelope`]: the envelope every message payload travels in.
//! - [`subjects`]: the NATS subjects and the permissions a manifest gives.
//! - [`messages`]: the platform ↔ instrument payloads and their schemas.
//! - [`validate`]: the field-error type both validators report with.
//! - [`names`]: the rules for instrument, image and role names.
//! - [`ratelimit`]: a pure limiter for log lines a peer can trigger.
//! - [`size`]: byte sizes written back exactly.

pub mod artifacts;
pub mod beacon;
pub mod bindings;
pub mod desired;
pub mod envelope;
pub mod files;
pub mod fleet;
pub mod manifest;
pub mod messages;
pub mod names;
pub mod pin;
pub mod ratelimit;
pub mod size;
pub mod subjects;
pub mod validate;

pub use desired::{
    EffectiveRetention, InstrumentSpec, RestartPolicy, RetentionSetting, SensorSpec,
};
pub use envelope::Envelope;
pub use manifest::Manifest;
pub use validate::{FieldError, Invalid};
