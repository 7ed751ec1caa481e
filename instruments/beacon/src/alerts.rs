//! Turning escapes into alerts without flooding: one `escape` alert per
//! channel and target per window, and every summary period one
//! "still escaping" summary of what escaped in it. Pure: the caller passes
//! the time in.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use outpost_protocol::beacon::{
    Attempt, Channel, EscapeAlert, EscapeSummary, Outcome, StillEscaping,
};

pub struct Alerter {
    window: Duration,
    every: Duration,
    /// Per channel and target: when it was last alerted, and how many
    /// escapes were held back since.
    last: HashMap<(Channel, String), (Instant, u64)>,
    period: BTreeMap<(Channel, String), StillEscaping>,
    period_start: Instant,
}

impl Alerter {
    pub fn new(window: Duration, every: Duration, now: Instant) -> Alerter {
        Alerter {
            window,
            every,
            last: HashMap::new(),
            period: BTreeMap::new(),
            period_start: now,
        }
    }

    /// Takes one attempt; returns the alert to publish, if it is an escape
    /// and its channel and target were not alerted within the window.
    pub fn on_attempt(&mut self, a: &Attempt, now: Instant) -> Option<EscapeAlert> {
        if a.outcome != Outcome::Escaped {
            return None;
        }
        let key = (a.channel, a.target.clone());
        self.period
            .entry(key.clone())
            .and_modify(|s| {
                s.count += 1;
                s.last = a.ts.clone();
            })
            .or_insert_with(|| StillEscaping {
                channel: a.channel,
                target: a.target.clone(),
                count: 1,
                first: a.ts.clone(),
                last: a.ts.clone(),
            });
        match self.last.get_mut(&key) {
            Some((at, held)) if now.duration_since(*at) < self.window => {
                *held += 1;
                None
            }
            slot => {
                let suppressed = slot.map(|(_, held)| *held).unwrap_or(0);
                self.last.insert(key, (now, 0));
                Some(EscapeAlert {
                    channel: a.channel,
                    target: a.target.clone(),
                    evidence: a.evidence.clone(),
                    latency_ms: a.latency_ms,
                    ts: a.ts.clone(),
                    suppressed,
                })
            }
        }
    }

    /// At the end of each summary period: what escaped in it, if anything.
    pub fn tick(&mut self, now: Instant) -> Option<EscapeSummary> {
        let elapsed = now.duration_since(self.period_start);
        if elapsed < self.every {
            return None;
        }
        self.period_start = now;
        let escapes: Vec<StillEscaping> = std::mem::take(&mut self.period).into_values().collect();
        (!escapes.is_empty()).then_some(EscapeSummary {
            period_ms: elapsed.as_millis() as u64,
            escapes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::beacon::{Evidence, Level};

    fn attempt(channel: Channel, target: &str, outcome: Outcome) -> Attempt {
        Attempt {
            ts: "2026-11-26T10:00:00Z".into(),
            channel,
            target: target.into(),
            outcome,
            latency_ms: 1.0,
            evidence: Evidence {
                level: if outcome == Outcome::Escaped {
                    Level::Proven
                } else {
                    Level::None
                },
                detail: String::new(),
            },
        }
    }

    #[test]
    fn one_alert_per_channel_and_target_per_window_with_the_count_held_back() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut a = Alerter::new(10 * s, 60 * s, t0);
        let tcp = attempt(Channel::Tcp, "10.0.0.1:7", Outcome::Escaped);
        let udp = attempt(Channel::Udp, "10.0.0.1:7", Outcome::Escaped);
        assert!(a.on_attempt(&tcp, t0).is_some());
        assert!(
            a.on_attempt(&udp, t0).is_some(),
            "another channel alerts on its own"
        );
        for i in 1..=4 {
            assert!(a.on_attempt(&tcp, t0 + i * 2 * s).is_none());
        }
        let again = a.on_attempt(&tcp, t0 + 10 * s).unwrap();
        assert_eq!(again.suppressed, 4);
        let blocked = attempt(Channel::Tcp, "10.0.0.2:7", Outcome::Blocked);
        assert!(a.on_attempt(&blocked, t0 + 11 * s).is_none());
    }

    #[test]
    fn a_summary_lists_what_escaped_in_its_period_and_nothing_when_quiet() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut a = Alerter::new(10 * s, 5 * s, t0);
        let tcp = attempt(Channel::Tcp, "10.0.0.1:7", Outcome::Escaped);
        for i in 0..3 {
            a.on_attempt(&tcp, t0 + i * s);
        }
        assert!(a.tick(t0 + 4 * s).is_none(), "period not over");
        let sum = a.tick(t0 + 5 * s).unwrap();
        assert_eq!(sum.escapes.len(), 1);
        assert_eq!(sum.escapes[0].count, 3);
        assert!(
            a.tick(t0 + 10 * s).is_none(),
            "nothing escaped in the next period"
        );
    }
}
