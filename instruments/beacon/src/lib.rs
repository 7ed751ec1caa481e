//! The beacon instrument, `escape-probe` and `beacon-home`.
//!
//! Empty until the beacon issue lands.
