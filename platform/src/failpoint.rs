//! Crash injection for the crash-safety tests.
//!
//! `OUTPOST_FAILPOINT=<name>` makes the process abort, as a `kill -9` would,
//! when it reaches the point called `<name>`. Unset (always, outside tests)
//! it costs one environment lookup. Points:
//! - `import-after-unpack`: an image is unpacked into staging, not placed;
//! - `after-define`: a container is defined but not started;
//! - `desired-before-commit`: a desired-state version is written in its
//!   transaction, not committed;
//! - `desired-after-commit`: it is committed, not yet answered;
//! - `artifact-mid-install`: an artifact is copied for a consumer under
//!   its temporary name, not yet renamed into place.

/// Aborts the process if `OUTPOST_FAILPOINT` names this point.
pub fn hit(name: &str) {
    if std::env::var("OUTPOST_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("outpostd: failpoint {name} reached; aborting as a crash would");
        std::process::abort();
    }
}
