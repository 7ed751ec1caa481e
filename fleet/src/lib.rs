//! The fleet manager: hub link, REST API and web UI.
//!
//! Empty until its issue lands.
