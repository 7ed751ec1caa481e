//! The sensor-local NATS subjects (DESIGN.md, messaging contract) and the
//! permissions that follow from a manifest.
//!
//! | subject | direction |
//! |---|---|
//! | `outpost.i.<name>.health` | platform → instrument, request |
//! | `outpost.i.<name>.config` | platform → instrument, request |
//! | `outpost.i.<name>.retention` | platform → instrument, request |
//! | `outpost.i.<name>.artifact` | platform → instrument |
//! | `outpost.i.<name>.rpc.<method>` | peer → instrument, request |
//! | `outpost.events.<name>.<kind>` | instrument → all (stream `EVENTS`) |
//!
//! Each instrument's replies arrive under its own inbox prefix
//! `_INBOX.<name>`, which no other instrument may subscribe to.

use crate::manifest::Permissions;

/// The JetStream stream that captures every event.
pub const EVENTS_STREAM: &str = "EVENTS";
/// Subjects the `EVENTS` stream captures.
pub const EVENTS_ALL: &str = "outpost.events.>";
/// The name the platform uses as `instrument` in its own events, and in
/// their subjects (`outpost.events.outpostd.<kind>`). No instrument may be
/// called this.
pub const PLATFORM: &str = "outpostd";
/// The platform's own inbox prefix (no instrument matches it).
pub const PLATFORM_INBOX_PREFIX: &str = "_OUTPOSTD_INBOX";

pub fn health(name: &str) -> String {
    format!("outpost.i.{name}.health")
}
pub fn config(name: &str) -> String {
    format!("outpost.i.{name}.config")
}
pub fn retention(name: &str) -> String {
    format!("outpost.i.{name}.retention")
}
pub fn artifact(name: &str) -> String {
    format!("outpost.i.{name}.artifact")
}
pub fn rpc(name: &str, method: &str) -> String {
    format!("outpost.i.{name}.rpc.{method}")
}
/// Everything addressed to one instrument.
pub fn instrument_all(name: &str) -> String {
    format!("outpost.i.{name}.>")
}
pub fn event(name: &str, kind: &str) -> String {
    format!("outpost.events.{name}.{kind}")
}
/// Every event of one instrument.
pub fn events_of(name: &str) -> String {
    format!("outpost.events.{name}.>")
}
/// An instrument's inbox prefix (for `custom_inbox_prefix`).
pub fn inbox_prefix(name: &str) -> String {
    format!("_INBOX.{name}")
}

/// The event kind a provider announces a verified artifact with.
pub const ARTIFACT_FETCHED: &str = "artifact-fetched";

/// `(instrument, kind)` of an event subject.
pub fn parse_event(subject: &str) -> Option<(&str, &str)> {
    let rest = subject.strip_prefix("outpost.events.")?;
    let (name, kind) = rest.split_once('.')?;
    (!name.is_empty() && !kind.is_empty() && !kind.contains('.')).then_some((name, kind))
}

/// What an instrument may publish and subscribe to; nats-server enforces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectPermissions {
    pub publish: Vec<String>,
    /// Subjects under `publish` it may still not publish on.
    pub deny_publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// The permissions of instrument `name` with manifest permissions `p`:
/// - publish: its own events, RPC to the peers it may call, and its own
///   inbox (only it can read there; the SDK uses it for round trips);
///   replies to requests it received are allowed separately
///   (`allow_responses`);
/// - subscribe: what is addressed to it, its own inbox, the events of the
///   peers it may read, and its NATS micro-service verbs.
///
/// Only an instrument whose image provides artifacts may announce one
/// (`artifact-fetched`); for any other the subject is denied.
pub fn instrument_permissions(
    name: &str,
    p: &Permissions,
    provides_artifacts: bool,
) -> SubjectPermissions {
    let mut publish = vec![events_of(name), format!("{}.>", inbox_prefix(name))];
    publish.extend(p.call.iter().map(|peer| format!("outpost.i.{peer}.rpc.>")));
    let mut subscribe = vec![
        instrument_all(name),
        format!("{}.>", inbox_prefix(name)),
        "$SRV.PING".into(),
        "$SRV.INFO".into(),
        "$SRV.STATS".into(),
        format!("$SRV.*.{name}"),
        format!("$SRV.*.{name}.*"),
    ];
    subscribe.extend(p.read_events.iter().map(|peer| events_of(peer)));
    let deny_publish = if provides_artifacts {
        Vec::new()
    } else {
        vec![format!("outpost.events.{name}.{ARTIFACT_FETCHED}")]
    };
    SubjectPermissions {
        publish,
        deny_publish,
        subscribe,
    }
}

/// Whether `subject` matches NATS pattern `pattern` (`*` one token, `>`
/// the rest).
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        assert_eq!(health("beacon"), "outpost.i.beacon.health");
        assert_eq!(rpc("downloader", "fetch"), "outpost.i.downloader.rpc.fetch");
        assert_eq!(event("beacon", "escape"), "outpost.events.beacon.escape");
        assert_eq!(
            parse_event("outpost.events.beacon.escape"),
            Some(("beacon", "escape"))
        );
        assert_eq!(parse_event("outpost.events.beacon"), None);
        assert_eq!(parse_event("outpost.events.beacon.a.b"), None);
        assert_eq!(parse_event("outpost.i.beacon.health"), None);
    }

    #[test]
    fn patterns() {
        assert!(matches("outpost.events.>", "outpost.events.a.b"));
        assert!(!matches("outpost.events.>", "outpost.events"));
        assert!(matches("$SRV.*.beacon", "$SRV.PING.beacon"));
        assert!(!matches("$SRV.*.beacon", "$SRV.PING.other"));
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
    }

    #[test]
    fn permissions_follow_the_manifest() {
        let p = Permissions {
            read_events: vec!["ids".into()],
            call: vec!["downloader".into()],
        };
        let perms = instrument_permissions("beacon", &p, false);
        let can_pub = |s: &str| perms.publish.iter().any(|p| matches(p, s));
        let can_sub = |s: &str| perms.subscribe.iter().any(|p| matches(p, s));
        assert!(can_pub("outpost.events.beacon.escape"));
        let denied = |s: &str| perms.deny_publish.iter().any(|p| matches(p, s));
        assert!(
            denied("outpost.events.beacon.artifact-fetched"),
            "only a provider announces artifacts"
        );
        let provider = instrument_permissions("dl", &Permissions::default(), true);
        assert!(provider.deny_publish.is_empty());
        assert!(
            !can_pub("outpost.events.ids.alert"),
            "not as another instrument"
        );
        assert!(can_pub("outpost.i.downloader.rpc.fetch"));
        assert!(!can_pub("outpost.i.ids.rpc.fetch"), "only allowed peers");
        assert!(
            !can_pub("outpost.i.downloader.config"),
            "not the platform's requests"
        );
        assert!(can_sub("outpost.i.beacon.health"));
        assert!(can_sub("_INBOX.beacon.abc.1"));
        assert!(!can_sub("_INBOX.ids.abc.1"), "not another's replies");
        assert!(!can_sub("_INBOX.>"));
        assert!(can_sub("outpost.events.ids.alert"));
        assert!(!can_sub("outpost.events.downloader.done"));
        assert!(!can_sub("outpost.i.ids.health"));
        assert!(can_sub("$SRV.PING.beacon"));
        assert!(!can_sub("$SRV.PING.ids"));
    }
}
