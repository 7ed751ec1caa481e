//! The downloader instrument.
//!
//! Empty until its issue lands.
