//! The beacon: `escape-probe` tries to leave an isolated segment by every
//! channel it is given, `beacon-home` (outside) proves each escape with an
//! HMAC of the probe's nonce, and the `beacon` instrument supervises the
//! probe and turns proven escapes into alerts.
//!
//! - [`proof`]: the nonce, the HMAC and the wire format of hello and reply.
//! - [`config`]: the probe's settings and their checks.
//! - [`probe`]: one attempt per channel, judged into an attempt line.
//! - [`home`]: the canary's listeners.
//! - [`alerts`]: rate-limited escape alerts and "still escaping" summaries.
//! - [`binary`]: which probe binary runs, trials of new ones, rollback.
//! - [`iface`]: the segment interface's state, addresses and routes, and
//!   what changed in them.
//!
//! The probe's line format and its parser are in
//! [`outpost_protocol::beacon`], next to the event payloads.

pub mod alerts;
pub mod binary;
pub mod config;
pub mod home;
pub mod iface;
pub mod probe;
pub mod proof;
