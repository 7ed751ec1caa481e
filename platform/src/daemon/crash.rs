//! Crash reports: when an instrument exits other than cleanly, the
//! platform raises `crash-report` (forwarded to the fleet with the other
//! events): the instrument, its image, the exit, the restarts so far and,
//! unless the sensor file says `crash-report-logs = false`, the last 50
//! lines of its console log. The log is the container's to write, so each
//! line is cut at 1000 bytes and only its last 64 KiB are read.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use outpost_protocol::InstrumentSpec;
use outpost_protocol::messages::{CRASH_LOG_LINE_MAX, CRASH_LOG_LINES, CrashReport, schema};
use tracing::warn;

use super::Daemon;
use crate::runtime::Runtime;
use crate::supervisor::ExitRecord;

/// The most of a console log read for a report.
const TAIL_BYTES: u64 = 64 * 1024;

impl<R: Runtime> Daemon<R> {
    /// Raises `crash-report` for `name`'s exit, off the loop.
    pub(super) fn report_crash(&self, name: &str, ins: &InstrumentSpec, exit: &ExitRecord) {
        let Some(bus) = self.control.clone() else {
            return;
        };
        let logs = self
            .desired
            .as_ref()
            .and_then(|(_, s)| s.sensor.crash_report_logs)
            .unwrap_or(true);
        let mut report = CrashReport {
            instrument: name.to_string(),
            image: ins.image.clone(),
            version: ins.version.clone(),
            exit_code: exit.code,
            signal: exit.signal,
            signal_name: exit.signal_name.clone(),
            detail: exit.detail.clone(),
            restarts: self.instances.get(name).map_or(0, |i| i.status.restarts),
            log_tail: None,
        };
        let log = self.cfg.state.console_log(name);
        tokio::spawn(async move {
            if logs {
                report.log_tail = tokio::task::spawn_blocking(move || tail(&log))
                    .await
                    .ok()
                    .flatten();
            }
            let payload = serde_json::to_value(&report).expect("a report serializes");
            if let Err(e) = bus
                .publish_event("crash-report", schema::CRASH_REPORT, payload)
                .await
            {
                warn!(instrument = %report.instrument, "crash report not stored: {e}");
            }
        });
    }
}

/// The last lines of the log at `path`, each cut to its limit.
fn tail(path: &Path) -> Option<Vec<String>> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))
        .ok()?;
    let mut buf = Vec::new();
    f.take(TAIL_BYTES).read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(CRASH_LOG_LINES);
    Some(
        lines[from..]
            .iter()
            .map(|l| l.chars().take(CRASH_LOG_LINE_MAX).collect())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_tail_is_the_last_fifty_lines_each_cut() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("console.log");
        let mut text = String::new();
        for i in 0..120 {
            text.push_str(&format!("line {i}\n"));
        }
        text.push_str(&"x".repeat(5000));
        std::fs::write(&p, text).unwrap();
        let t = super::tail(&p).unwrap();
        assert_eq!(t.len(), 50);
        assert_eq!(t[0], "line 71");
        assert_eq!(t[49].len(), 1000);
        assert!(super::tail(&dir.path().join("none")).is_none());
    }
}
