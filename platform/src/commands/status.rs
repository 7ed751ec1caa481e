//! `outpostd status`: what the daemon last recorded about every instrument.

use std::path::Path;

use nix::fcntl::{Flock, FlockArg};
use outpost_protocol::SensorSpec;
use serde::Serialize;

use crate::daemon::Snapshot;
use crate::db::{InstrumentStatus, Refusal, now_ms};
use crate::network::{self, InterfaceStatus};
use crate::paths::StateDir;

#[derive(Serialize)]
struct Report {
    /// PID of the running daemon, if one holds the state directory.
    daemon_pid: Option<u32>,
    desired_version: Option<i64>,
    /// The last desired state refused, while no newer one was accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    refused: Option<Refusal>,
    instruments: Vec<Row>,
}

#[derive(Serialize)]
struct Row {
    #[serde(flatten)]
    status: InstrumentStatus,
    /// Each bound interface's state and counters, read now inside the
    /// instrument's namespace.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    interfaces: Vec<InterfaceStatus>,
}

/// Reads the interfaces of running instruments that have bindings in the
/// desired state.
fn interfaces(desired: Option<&SensorSpec>, statuses: Vec<InstrumentStatus>) -> Vec<Row> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok();
    statuses
        .into_iter()
        .map(|status| {
            let bindings = desired
                .and_then(|d| d.instrument(&status.name))
                .map(|i| i.interfaces.clone())
                .unwrap_or_default();
            let interfaces = match (status.init_pid, &rt) {
                (Some(pid), Some(rt)) if !bindings.is_empty() => rt
                    .block_on(network::statuses(pid, &bindings))
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            Row { status, interfaces }
        })
        .collect()
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
    let desired = db.latest_desired()?;
    let report = Report {
        daemon_pid: daemon_pid(&st),
        desired_version: desired.as_ref().map(|(v, _)| *v),
        refused: db.refusal()?,
        instruments: interfaces(desired.as_ref().map(|(_, d)| d), db.statuses()?),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let snapshot = Snapshot {
        desired_version: report.desired_version,
        refused: report.refused,
        fleet_managed: db.fleet_managed()?,
        instruments: Vec::new(),
        retention: Default::default(),
    };
    let (statuses, interfaces): (Vec<_>, Vec<_>) = report
        .instruments
        .into_iter()
        .map(|r| (r.status, r.interfaces))
        .unzip();
    let snapshot = Snapshot {
        instruments: statuses,
        ..snapshot
    };
    print_table(report.daemon_pid, &snapshot, &interfaces);
    Ok(())
}

/// Prints the status table: the daemon, the desired state, a refusal, and
/// one line per instrument with its bound interfaces (`interfaces[n]`
/// belongs to `snap.instruments[n]`, when given).
pub fn print_table(daemon_pid: Option<u32>, snap: &Snapshot, interfaces: &[Vec<InterfaceStatus>]) {
    match daemon_pid {
        Some(pid) => println!("outpostd: running (pid {pid})"),
        None => println!("outpostd: not running"),
    }
    match snap.desired_version {
        Some(v) => println!("desired state: version {v}"),
        None => println!("desired state: none yet (start outpostd with --sensor-file)"),
    }
    if snap.fleet_managed {
        println!("managed by a fleet: local changes need --override and count as drift");
    }
    if let Some(r) = &snap.refused {
        let ago = (now_ms() - r.at_ms).max(0) / 1000;
        println!(
            "refused {ago}s ago from {} (the version above stays in force):",
            r.source
        );
        for p in &r.problems {
            println!("  {p}");
        }
    }
    if snap.instruments.is_empty() {
        println!("no instruments");
        return;
    }
    println!();
    println!(
        "{:<16} {:<14} {:<13} {:<16} {:>8} {:>8} {:>8} {:>7}  DETAIL",
        "INSTRUMENT", "STATE", "HEALTH", "IMAGE", "PID", "UPTIME", "RESTARTS", "CONFIG"
    );
    let now = now_ms();
    for (n, s) in snap.instruments.iter().enumerate() {
        let uptime = match (s.init_pid, s.started_at_ms) {
            (Some(_), Some(t)) => format!("{}s", (now - t).max(0) / 1000),
            _ => "-".into(),
        };
        // Applied / desired config version.
        let config = match (s.config_applied, s.config_version) {
            (_, None) => "-".to_string(),
            (Some(a), Some(d)) => format!("{a}/{d}"),
            (None, Some(d)) => format!("-/{d}"),
        };
        let mut detail = s.detail.clone();
        if !s.health_message.is_empty() {
            detail = format!("{detail}; health: {}", s.health_message);
        }
        if s.storage_full
            && let Some(u) = &s.storage
        {
            detail = format!(
                "{detail}; persistent storage full ({} of {} bytes used)",
                u.used_bytes, u.size_bytes
            );
        }
        if let Some(r) = &s.config_rejected {
            detail = format!("{detail}; config {} rejected: {}", r.version, r.reason);
        }
        println!(
            "{:<16} {:<14} {:<13} {:<16} {:>8} {:>8} {:>8} {:>7}  {}",
            s.name,
            s.state,
            s.health,
            format!("{}:{}", s.image, s.version),
            s.init_pid.map(|p| p.to_string()).unwrap_or("-".into()),
            uptime,
            s.restarts,
            config,
            detail
        );
        for i in interfaces.get(n).into_iter().flatten() {
            println!(
                "  {:<8} {:<8} {:<10} rx {} pkts {} B (dropped {})  tx {} pkts {} B (dropped {})",
                i.role,
                i.kind,
                i.state,
                i.rx_packets,
                i.rx_bytes,
                i.rx_dropped,
                i.tx_packets,
                i.tx_bytes,
                i.tx_dropped
            );
        }
    }
}
