//! One shutdown token for every part of `outpost-fleet run`.

/// Cancelled once the fleet stops; clones share it.
pub type Shutdown = tokio_util::sync::CancellationToken;
