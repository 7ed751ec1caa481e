//! What health answers from, and the answer.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use instrument_sdk::Health;
use outpost_beacon::iface::Snapshot;
use outpost_protocol::beacon::Attempt;
use serde::Serialize;

use crate::round_ms;
use crate::settings::Settings;

#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct Counts {
    pub(crate) escaped: u64,
    pub(crate) blocked: u64,
    pub(crate) error: u64,
    /// Lines that were not valid attempts.
    pub(crate) unparsed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ProbeInfo {
    pub(crate) pid: Option<u32>,
    pub(crate) binary: PathBuf,
    pub(crate) sha256: String,
    pub(crate) trial: bool,
}

/// What health answers from; the run loop keeps it current.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) settings: Option<Settings>,
    /// When supervision began under the current config.
    pub(crate) since: Option<Instant>,
    pub(crate) last_line: Option<Instant>,
    pub(crate) last_attempt: Option<Attempt>,
    /// The latest attempt per channel and target ("tcp 203.0.113.7:7000").
    pub(crate) targets: BTreeMap<String, Attempt>,
    pub(crate) counts: Counts,
    pub(crate) probe: Option<ProbeInfo>,
    pub(crate) restarts: u64,
    pub(crate) last_exit: Option<String>,
    pub(crate) start_error: Option<String>,
    pub(crate) alerts: u64,
    pub(crate) rollbacks: u64,
    /// Why the interface is not usable, if it is not.
    pub(crate) interface_problem: Option<String>,
    /// The interface's addresses and routes at the last read, if it
    /// worked.
    pub(crate) interface_state: Option<Snapshot>,
    /// Why the last read of them did not work.
    pub(crate) interface_state_error: Option<String>,
}

impl State {
    /// How long the probe has printed no valid attempt: since its last
    /// one, or since supervision began under this config.
    pub(crate) fn silent(&self, now: Instant) -> Duration {
        self.last_line
            .or(self.since)
            .map(|t| now.duration_since(t))
            .unwrap_or_default()
    }
}

/// The beacon's health from its state.
pub(crate) fn health(st: &State) -> Health {
    let silent = st.silent(Instant::now());
    let details = serde_json::json!({
        "interface": st.settings.as_ref().map(|s| s.interface.clone()),
        "interface_problem": st.interface_problem,
        "interface_state": st.interface_state,
        "interface_state_error": st.interface_state_error,
        "config_version": st.settings.as_ref().map(|s| s.version),
        "probe": st.probe,
        "restarts": st.restarts,
        "last_exit": st.last_exit,
        "rollbacks": st.rollbacks,
        "last_attempt": st.last_attempt,
        "targets": st.targets,
        "counts": st.counts,
        "alerts": st.alerts,
        "silent_ms": st.last_line.or(st.since).map(|_| silent.as_millis() as u64),
    });
    let Some(s) = &st.settings else {
        return Health::degraded(
            "no config yet: give the probe's targets and key in [instrument.config.probe]",
        )
        .with_details(details);
    };
    let trial = st.probe.as_ref().filter(|p| p.trial);
    let h = if let Some(p) = &st.interface_problem {
        Health::degraded(p.clone())
    } else if silent > s.interval * 2 {
        let quiet = format!(
            "escape-probe has printed no attempt for {} (it should every {})",
            humantime::format_duration(round_ms(silent)),
            humantime::format_duration(s.interval)
        );
        match (trial, &st.start_error) {
            (Some(t), _) => Health::degraded(format!(
                "{quiet}: a new binary ({}) is on trial and is rolled back if it stays silent",
                &t.sha256[..12]
            )),
            (None, Some(e)) => Health::failed(format!("{quiet}: {e}")),
            (None, None) => Health::degraded(format!(
                "{quiet}: {}",
                st.last_exit
                    .as_ref()
                    .map(|e| format!("it {e}"))
                    .unwrap_or_else(|| "it is hung, stopped or not printing".into())
            )),
        }
    } else {
        let c = &st.counts;
        let last = st
            .last_attempt
            .as_ref()
            .map(|a| format!("; last {} {} {}", a.channel, a.target, a.outcome.as_str()))
            .unwrap_or_default();
        Health::ok(format!(
            "probing: {} escaped, {} blocked, {} errors{last}",
            c.escaped, c.blocked, c.error
        ))
    };
    h.with_details(details)
}
