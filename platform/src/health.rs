//! Health of a running instrument, kept pure: each check's outcome goes in,
//! the state and whether to restart come out.
//!
//! States: `starting` until the first reply (missing replies do not count
//! during a start-up grace), then the instrument's own `ok` / `degraded` /
//! `failed`, or `unresponsive` when it does not answer in time. `failed`
//! and `unresponsive` are failures; after `threshold` in a row the
//! instrument is restarted (as its restart policy allows).

use std::time::{Duration, Instant};

use outpost_protocol::messages::{HealthReply, HealthStatus, InstrumentHealth};

/// One check's outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Reply(HealthReply),
    /// No reply within the timeout (or nothing listening yet).
    NoReply(String),
}

/// What a check changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// `(from, to)` when the state changed.
    pub transition: Option<(InstrumentHealth, InstrumentHealth)>,
    /// Enough failures in a row to restart.
    pub restart: bool,
}

/// Health state of one instrument run.
#[derive(Debug, Clone)]
pub struct Tracker {
    pub state: InstrumentHealth,
    pub message: String,
    pub details: serde_json::Value,
    pub failures: u32,
    started: Instant,
    answered: bool,
    grace: Duration,
    threshold: u32,
}

impl Tracker {
    /// A fresh run, started at `now`.
    pub fn new(now: Instant, grace: Duration, threshold: u32) -> Tracker {
        Tracker {
            state: InstrumentHealth::Starting,
            message: "started; waiting for its first health reply".into(),
            details: serde_json::Value::Null,
            failures: 0,
            started: now,
            answered: false,
            grace,
            threshold: threshold.max(1),
        }
    }

    /// Whether the first reply is still awaited.
    pub fn starting(&self) -> bool {
        !self.answered
    }

    /// Takes one check's outcome.
    pub fn observe(&mut self, now: Instant, outcome: Outcome) -> Observed {
        let from = self.state;
        match outcome {
            Outcome::Reply(r) => {
                self.answered = true;
                self.state = r.status.into();
                self.message = r.message;
                self.details = r.details;
                if r.status == HealthStatus::Failed {
                    self.failures += 1;
                } else {
                    self.failures = 0;
                }
            }
            Outcome::NoReply(why) => {
                if !self.answered && now.duration_since(self.started) < self.grace {
                    self.message = format!("starting: {why}");
                } else {
                    self.state = InstrumentHealth::Unresponsive;
                    self.message = why;
                    self.failures += 1;
                }
            }
        }
        Observed {
            transition: (from != self.state).then_some((from, self.state)),
            restart: self.failures >= self.threshold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: HealthStatus) -> Outcome {
        Outcome::Reply(HealthReply {
            status,
            message: format!("{status:?}"),
            details: serde_json::Value::Null,
            config_version: None,
        })
    }

    #[test]
    fn starting_then_ok_then_degraded() {
        let t0 = Instant::now();
        let mut t = Tracker::new(t0, Duration::from_secs(10), 3);
        let o = t.observe(t0, Outcome::NoReply("not connected".into()));
        assert_eq!(
            o.transition, None,
            "silence during the grace is still starting"
        );
        assert_eq!(t.state, InstrumentHealth::Starting);
        let o = t.observe(t0, reply(HealthStatus::Ok));
        assert_eq!(
            o.transition,
            Some((InstrumentHealth::Starting, InstrumentHealth::Ok))
        );
        let o = t.observe(t0, reply(HealthStatus::Degraded));
        assert_eq!(
            o.transition,
            Some((InstrumentHealth::Ok, InstrumentHealth::Degraded))
        );
        assert!(!o.restart, "degraded is not a failure");
    }

    #[test]
    fn silence_after_the_grace_is_unresponsive_and_restarts_after_threshold() {
        let t0 = Instant::now();
        let mut t = Tracker::new(t0, Duration::from_secs(1), 3);
        let later = t0 + Duration::from_secs(2);
        let o = t.observe(later, Outcome::NoReply("timeout".into()));
        assert_eq!(
            o.transition,
            Some((InstrumentHealth::Starting, InstrumentHealth::Unresponsive))
        );
        assert!(!o.restart);
        assert!(!t.observe(later, Outcome::NoReply("timeout".into())).restart);
        assert!(t.observe(later, Outcome::NoReply("timeout".into())).restart);
    }

    #[test]
    fn failed_replies_count_and_ok_resets() {
        let t0 = Instant::now();
        let mut t = Tracker::new(t0, Duration::from_secs(1), 2);
        t.observe(t0, reply(HealthStatus::Failed));
        t.observe(t0, reply(HealthStatus::Ok));
        assert_eq!(t.failures, 0);
        t.observe(t0, reply(HealthStatus::Failed));
        assert!(t.observe(t0, reply(HealthStatus::Failed)).restart);
    }
}
