//! `outpostctl status` as a table (its JSON is [`StatusReport`] itself).

use crate::db::now_ms;
use crate::dbus::StatusReport;

/// Prints the status table: the daemon, the desired state, a refusal, and
/// one line per instrument with its bound interfaces.
pub(super) fn print_table(report: &StatusReport) {
    let snap = &report.snapshot;
    println!("outpostd: running (pid {})", report.daemon_pid);
    match snap.desired_version {
        Some(v) => println!("desired state: version {v}"),
        None => println!("desired state: none yet (start outpostd with --sensor-file)"),
    }
    if snap.fleet_managed {
        println!("managed by a fleet: local changes need --override and count as drift");
    }
    if report.fleet.state != outpost_protocol::fleet::LinkState::None {
        println!("{}", super::fleet::describe(&report.fleet));
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
    for s in &snap.instruments {
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
        for i in report.interfaces.get(&s.name).into_iter().flatten() {
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
