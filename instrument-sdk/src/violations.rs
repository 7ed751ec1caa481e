//! nats-server reports a refused publish or subscription asynchronously
//! (`-ERR 'Permissions Violation for Publish to "x"'`); the operation
//! itself "succeeds" on the client. This module records those reports, and
//! [`Violations::confirm`] turns them into a result for the operation:
//! after the operation, a round trip through the server guarantees any
//! refusal of it was sent first; a short grace lets the client deliver it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// What was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Publish,
    Subscribe,
}

impl Op {
    pub fn verb(self) -> &'static str {
        match self {
            Op::Publish => "publish to",
            Op::Subscribe => "subscribe to",
        }
    }
}

/// Parses a server error text into a refused operation and subject.
pub fn parse(text: &str) -> Option<(Op, String)> {
    let lower = text.to_ascii_lowercase();
    let op = if lower.contains("permissions violation for publish") {
        Op::Publish
    } else if lower.contains("permissions violation for subscription") {
        Op::Subscribe
    } else {
        return None;
    };
    let start = text.find('"')? + 1;
    let end = start + text[start..].find('"')?;
    Some((op, text[start..end].to_string()))
}

/// Recent refusals, kept for a short while.
#[derive(Debug, Default)]
pub struct Violations {
    seen: Mutex<Vec<(Op, String, Instant)>>,
    notify: Notify,
}

const KEEP: Duration = Duration::from_secs(30);

impl Violations {
    /// Records a server error if it is a permission refusal.
    pub fn record(&self, server_error: &str) {
        if let Some((op, subject)) = parse(server_error) {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            seen.retain(|(_, _, at)| now.duration_since(*at) < KEEP);
            seen.push((op, subject, now));
            drop(seen);
            self.notify.notify_waiters();
        }
    }

    /// Whether `op` on `subject` was refused since `since`.
    pub fn refused(&self, op: Op, subject: &str, since: Instant) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.iter()
            .any(|(o, s, at)| *o == op && s == subject && *at >= since)
    }

    /// Waits up to `grace` for a refusal of `op` on `subject` recorded
    /// after `since`.
    pub async fn wait_refused(
        &self,
        op: Op,
        subject: &str,
        since: Instant,
        grace: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let notified = self.notify.notified();
            if self.refused(op, subject, since) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.refused(op, subject, since);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_texts() {
        assert_eq!(
            parse("Permissions Violation for Publish to \"outpost.events.other.x\""),
            Some((Op::Publish, "outpost.events.other.x".into()))
        );
        assert_eq!(
            parse("permissions violation for subscription to \"_INBOX.other.>\""),
            Some((Op::Subscribe, "_INBOX.other.>".into()))
        );
        assert_eq!(parse("Authorization Violation"), None);
    }

    #[tokio::test]
    async fn refusals_are_found_by_op_and_subject() {
        let v = Violations::default();
        let t0 = Instant::now();
        v.record("Permissions Violation for Publish to \"a.b\"");
        assert!(v.refused(Op::Publish, "a.b", t0));
        assert!(!v.refused(Op::Subscribe, "a.b", t0));
        assert!(!v.refused(Op::Publish, "a.c", t0));
        assert!(
            v.wait_refused(Op::Publish, "a.b", t0, Duration::from_millis(10))
                .await
        );
        assert!(
            !v.wait_refused(Op::Publish, "x", t0, Duration::from_millis(10))
                .await
        );
    }
}
