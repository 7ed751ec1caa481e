//! What `escape-probe` prints and what the beacon publishes.
//!
//! The probe prints one JSON object per line and attempt:
//!
//! ```json
//! {"ts":"2026-11-26T10:00:00.123Z","channel":"tcp","target":"203.0.113.7:7000",
//!  "outcome":"escaped","latency_ms":1.8,
//!  "evidence":{"level":"proven","detail":"HMAC of nonce 5f1c… verified"}}
//! ```
//!
//! [`parse_line`] is the one parser for it. It is pure (no I/O, no clock)
//! and fuzzed (`protocol/fuzz`, target `probe_line`), because the beacon
//! reads whatever the binary on disk prints, and that binary may be a new,
//! broken or hostile one.

use serde::{Deserialize, Serialize};

/// Schema names of the beacon's events.
pub mod schema {
    pub const ESCAPE: &str = "beacon.escape/1";
    pub const SUMMARY: &str = "beacon.escape-summary/1";
    pub const PROBE_SILENT: &str = "beacon.probe-silent/1";
    pub const PROBE_UPDATED: &str = "beacon.probe-updated/1";
    pub const PROBE_ROLLBACK: &str = "beacon.probe-rollback/1";
    pub const INTERFACE_CHANGED: &str = "beacon.interface-changed/1";
}

/// Longest line the parser takes; a longer one is refused unread.
pub const MAX_LINE: usize = 16 * 1024;
/// Longest target and evidence detail the parser takes.
pub const MAX_FIELD: usize = 1024;

/// How the probe tried to leave the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Channel {
    Tcp,
    Udp,
    Dns,
    /// ICMP echo (ICMPv6 echo for an IPv6 target).
    Icmp,
    Http,
    /// HTTP over TLS, the canary's certificate pinned.
    Https,
    /// An HTTP or HTTPS canary asked through a configured proxy.
    HttpProxy,
    /// A TCP canary reached by HTTP `CONNECT` through a configured proxy.
    Connect,
}

impl Channel {
    pub const ALL: [Channel; 8] = [
        Channel::Tcp,
        Channel::Udp,
        Channel::Dns,
        Channel::Icmp,
        Channel::Http,
        Channel::Https,
        Channel::HttpProxy,
        Channel::Connect,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Tcp => "tcp",
            Channel::Udp => "udp",
            Channel::Dns => "dns",
            Channel::Icmp => "icmp",
            Channel::Http => "http",
            Channel::Https => "https",
            Channel::HttpProxy => "http-proxy",
            Channel::Connect => "connect",
        }
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The canary answered (see [`Evidence::level`] for how sure that is).
    Escaped,
    /// Something stopped the attempt, or answered without the canary's proof.
    Blocked,
    /// The probe could not make the attempt (no interface, no permission).
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Escaped => "escaped",
            Outcome::Blocked => "blocked",
            Outcome::Error => "error",
        }
    }
}

/// How strong the evidence of an escape is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The canary answered with the HMAC of the probe's fresh nonce.
    Proven,
    /// Only the canary's address answered (ICMP echo): something at that
    /// address is reachable, which may not be the canary.
    Reachable,
    /// No evidence of an escape.
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    pub level: Level,
    /// What was seen, for a person: "HMAC verified", "connection refused
    /// (RST)", "HTTP 302 to http://portal/ without proof".
    pub detail: String,
}

/// One attempt, as the probe prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attempt {
    /// RFC 3339 time the attempt started.
    pub ts: String,
    pub channel: Channel,
    pub target: String,
    pub outcome: Outcome,
    pub latency_ms: f64,
    pub evidence: Evidence,
}

impl Attempt {
    /// The line the probe prints (no newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("an attempt serializes")
    }

    /// Whether this attempt is an escape proven by the canary's HMAC.
    pub fn is_proven_escape(&self) -> bool {
        self.outcome == Outcome::Escaped && self.evidence.level == Level::Proven
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LineError {
    #[error("line of {0} bytes is longer than {MAX_LINE}")]
    TooLong(usize),
    #[error("not a probe attempt: {0}")]
    Json(String),
    #[error("{0}")]
    Invalid(String),
}

/// Parses and checks one line the probe printed (without its newline).
///
/// Beyond the JSON shape it checks what the beacon relies on: a non-empty
/// target and detail of at most [`MAX_FIELD`] bytes, a finite latency that
/// is not negative, a parseable time, that only an `escaped` outcome has
/// evidence above `none`, that an escape has evidence, and that only ICMP
/// claims the weaker `reachable` level.
pub fn parse_line(line: &str) -> Result<Attempt, LineError> {
    if line.len() > MAX_LINE {
        return Err(LineError::TooLong(line.len()));
    }
    let a: Attempt = serde_json::from_str(line.trim_end_matches('\r'))
        .map_err(|e| LineError::Json(e.to_string()))?;
    let bad = |m: String| Err(LineError::Invalid(m));
    if a.target.is_empty() || a.target.len() > MAX_FIELD {
        return bad(format!(
            "target must be 1 to {MAX_FIELD} bytes, not {}",
            a.target.len()
        ));
    }
    if a.evidence.detail.len() > MAX_FIELD {
        return bad(format!(
            "evidence detail is {} bytes, more than {MAX_FIELD}",
            a.evidence.detail.len()
        ));
    }
    if !a.latency_ms.is_finite() || a.latency_ms < 0.0 {
        return bad(format!("latency_ms {} is not a duration", a.latency_ms));
    }
    if humantime::parse_rfc3339_weak(&a.ts).is_err() {
        return bad(format!("ts {:?} is not an RFC 3339 time", a.ts));
    }
    match (a.outcome, a.evidence.level) {
        (Outcome::Escaped, Level::None) => {
            return bad("an escape without evidence".into());
        }
        (Outcome::Blocked | Outcome::Error, l) if l != Level::None => {
            return bad(format!(
                "outcome {} cannot carry {l:?} evidence",
                a.outcome.as_str()
            ));
        }
        (_, Level::Reachable) if a.channel != Channel::Icmp => {
            return bad(format!(
                "only icmp has reachable-only evidence, not {}",
                a.channel
            ));
        }
        _ => {}
    }
    Ok(a)
}

/// Payload of an `escape` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EscapeAlert {
    pub channel: Channel,
    pub target: String,
    pub evidence: Evidence,
    pub latency_ms: f64,
    /// When the probe saw it.
    pub ts: String,
    /// Escapes on this channel and target not alerted on since the last
    /// alert (the rate limit held them back).
    pub suppressed: u64,
}

/// One channel and target in an `escape-summary` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StillEscaping {
    pub channel: Channel,
    pub target: String,
    pub count: u64,
    pub first: String,
    pub last: String,
}

/// Payload of an `escape-summary` event: what kept escaping in a period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EscapeSummary {
    pub period_ms: u64,
    pub escapes: Vec<StillEscaping>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(channel: &str, outcome: &str, level: &str) -> String {
        format!(
            r#"{{"ts":"2026-11-26T10:00:00.123Z","channel":"{channel}","target":"10.0.0.1:7","outcome":"{outcome}","latency_ms":1.5,"evidence":{{"level":"{level}","detail":"x"}}}}"#
        )
    }

    #[test]
    fn every_channel_reads_back_under_its_own_name() {
        for c in Channel::ALL {
            let a = parse_line(&line(c.as_str(), "escaped", "proven")).unwrap();
            assert_eq!(a.channel, c);
            assert!(a.to_line().contains(&format!("\"channel\":\"{c}\"")));
        }
        assert!(parse_line(&line("http_proxy", "blocked", "none")).is_err());
    }

    #[test]
    fn a_proven_escape_parses_and_prints_back_the_same() {
        let a = parse_line(&line("tcp", "escaped", "proven")).unwrap();
        assert!(a.is_proven_escape());
        assert_eq!(a.channel, Channel::Tcp);
        assert_eq!(parse_line(&a.to_line()).unwrap(), a);
    }

    #[test]
    fn icmp_may_only_claim_reachable_and_others_may_not() {
        let a = parse_line(&line("icmp", "escaped", "reachable")).unwrap();
        assert!(!a.is_proven_escape());
        let e = parse_line(&line("tcp", "escaped", "reachable")).unwrap_err();
        assert!(e.to_string().contains("only icmp"), "{e}");
    }

    #[test]
    fn inconsistent_or_malformed_lines_are_refused_with_the_reason() {
        for (l, want) in [
            (line("tcp", "escaped", "none"), "without evidence"),
            (line("udp", "blocked", "proven"), "cannot carry"),
            (line("smtp", "blocked", "none"), "not a probe attempt"),
            ("probe starting".to_string(), "not a probe attempt"),
            (
                line("tcp", "blocked", "none").replace("1.5", "-1"),
                "latency",
            ),
            (
                line("tcp", "blocked", "none").replace("2026-11-26T10:00:00.123Z", "yesterday"),
                "RFC 3339",
            ),
            (
                line("tcp", "blocked", "none").replace("10.0.0.1:7", ""),
                "target",
            ),
            (
                line("tcp", "blocked", "none").replace("}}", r#"},"extra":1}"#),
                "unknown field",
            ),
            ("x".repeat(MAX_LINE + 1), "longer than"),
        ] {
            let e = parse_line(&l).unwrap_err().to_string();
            assert!(e.contains(want), "{l}: {e}");
        }
    }
}
