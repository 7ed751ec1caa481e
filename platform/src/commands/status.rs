//! `outpostd status`: what the daemon last recorded about every instrument.

use std::path::Path;

use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

use crate::db::{InstrumentStatus, now_ms};
use crate::paths::StateDir;

#[derive(Serialize)]
struct Report {
    /// PID of the running daemon, if one holds the state directory.
    daemon_pid: Option<u32>,
    desired_version: Option<i64>,
    instruments: Vec<InstrumentStatus>,
}

/// PID of the daemon holding the state directory's lock, if any.
pub fn daemon_pid(st: &StateDir) -> Option<u32> {
    let f = std::fs::File::open(st.lock()).ok()?;
    match Flock::lock(f, FlockArg::LockSharedNonblock) {
        Ok(_) => None, // nobody holds it
        Err(_) => std::fs::read_to_string(st.lock()).ok()?.trim().parse().ok(),
    }
}

/// Prints the status table (or JSON).
pub fn status(state_dir: &Path, json: bool) -> anyhow::Result<()> {
    let (st, db) = super::open_state(state_dir)?;
    let report = Report {
        daemon_pid: daemon_pid(&st),
        desired_version: db.latest_desired()?.map(|(v, _)| v),
        instruments: db.statuses()?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    match report.daemon_pid {
        Some(pid) => println!("outpostd: running (pid {pid})"),
        None => println!("outpostd: not running"),
    }
    match report.desired_version {
        Some(v) => println!("desired state: version {v}"),
        None => println!("desired state: none yet (start outpostd with --sensor-file)"),
    }
    if report.instruments.is_empty() {
        println!("no instruments");
        return Ok(());
    }
    println!();
    println!(
        "{:<16} {:<14} {:<16} {:>8} {:>8} {:>8}  DETAIL",
        "INSTRUMENT", "STATE", "IMAGE", "PID", "UPTIME", "RESTARTS"
    );
    let now = now_ms();
    for s in report.instruments {
        let uptime = match (s.init_pid, s.started_at_ms) {
            (Some(_), Some(t)) => format!("{}s", (now - t).max(0) / 1000),
            _ => "-".into(),
        };
        println!(
            "{:<16} {:<14} {:<16} {:>8} {:>8} {:>8}  {}",
            s.name,
            s.state,
            format!("{}:{}", s.image, s.version),
            s.init_pid.map(|p| p.to_string()).unwrap_or("-".into()),
            uptime,
            s.restarts,
            s.detail
        );
    }
    Ok(())
}
