//! The platform's proof of a retention run: its own walk of the
//! instrument's storage, and the verdict from that walk and the
//! instrument's answer (pure, unit-tested).

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use outpost_protocol::messages::RetentionReply;

use crate::db::RetentionOutcome;

/// Entries the platform's walk of one instrument's storage looks at, at
/// most (a store with more is reported as not checked).
pub(super) const WALK_LIMIT: u64 = 2_000_000;

/// What the platform's own walk found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Found {
    pub items: u64,
    pub oldest_ms: Option<i64>,
}

/// Walks a storage tree without following links: how many files (and
/// links) it holds, and when the oldest was modified. Directories do not
/// count (an empty one left behind holds no data).
pub(super) fn walk_oldest(root: &Path, limit: u64) -> Result<Found, String> {
    let mut found = Found {
        items: 0,
        oldest_ms: None,
    };
    let mut seen = 0u64;
    // What vanishes while we look (the instrument runs on) is no longer
    // there to keep; any other error means the walk proves nothing.
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if gone(&e) && dir != root => continue,
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        };
        for e in entries {
            let e = match e {
                Ok(e) => e,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(format!("{}: {e}", dir.display())),
            };
            seen += 1;
            if seen > limit {
                return Err(format!(
                    "{} holds more than {limit} entries; not checked",
                    root.display()
                ));
            }
            let path = e.path();
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(format!("{}: {e}", path.display())),
            };
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            found.items += 1;
            if let Ok(m) = meta.modified() {
                let t = ms(m);
                if found.oldest_ms.is_none_or(|o| t < o) {
                    found.oldest_ms = Some(t);
                }
            }
        }
    }
    Ok(found)
}

/// The verdict of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Verdict {
    pub outcome: RetentionOutcome,
    pub message: String,
    pub items: u64,
    pub bytes: u64,
    pub errors: Vec<String>,
    pub oldest_reported_ms: Option<i64>,
    pub oldest_found_ms: Option<i64>,
    pub found_items: Option<u64>,
}

/// Judges a run from the instrument's answer and the platform's walk.
pub(super) fn verdict(
    cutoff_ms: i64,
    reply: Result<RetentionReply, String>,
    found: Result<Found, String>,
) -> Verdict {
    let (oldest_found_ms, found_items, walk_note) = match &found {
        Ok(f) => (f.oldest_ms, Some(f.items), None),
        Err(e) => (
            None,
            None,
            Some(format!("the platform could not check the storage: {e}")),
        ),
    };
    let mut v = Verdict {
        outcome: RetentionOutcome::Ok,
        message: String::new(),
        items: 0,
        bytes: 0,
        errors: Vec::new(),
        oldest_reported_ms: None,
        oldest_found_ms,
        found_items,
    };
    let reply = match reply {
        Ok(r) => r,
        Err(e) => {
            v.outcome = RetentionOutcome::Failed;
            v.message = format!("no answer: {e}");
            return v;
        }
    };
    v.items = reply.items;
    v.bytes = reply.bytes;
    v.errors = reply.errors;
    if let Some(o) = &reply.oldest_remaining {
        match humantime::parse_rfc3339_weak(o) {
            Ok(t) => v.oldest_reported_ms = Some(ms(t)),
            Err(e) => {
                v.outcome = RetentionOutcome::Failed;
                v.message =
                    format!("the answer's oldest_remaining {o:?} is not an RFC 3339 time: {e}");
                return v;
            }
        }
    }
    let removed = format!("removed {} items ({} bytes)", v.items, v.bytes);
    let cant = if v.errors.is_empty() {
        String::new()
    } else {
        format!(
            "; could not remove {} (first: {})",
            v.errors.len(),
            v.errors[0]
        )
    };
    if let Some(r) = v.oldest_reported_ms.filter(|r| *r < cutoff_ms) {
        v.outcome = RetentionOutcome::Violated;
        v.message = format!(
            "{removed}, but the instrument reports an item from {} left, older than the cutoff {}{cant}",
            rfc3339(r),
            rfc3339(cutoff_ms)
        );
    } else if let Some(f) = oldest_found_ms.filter(|f| *f < cutoff_ms) {
        v.outcome = RetentionOutcome::Violated;
        v.message = format!(
            "{removed}, but the platform found an item from {} in its storage, older than the cutoff {}{cant}",
            rfc3339(f),
            rfc3339(cutoff_ms)
        );
    } else {
        let oldest = match oldest_found_ms.or(v.oldest_reported_ms) {
            Some(o) => format!("oldest left {}", rfc3339(o)),
            None => "nothing left".into(),
        };
        v.message = format!("{removed}; {oldest}{cant}");
        // Without its own walk the platform has no proof: an instrument
        // could keep its storage unreadable to hide what it keeps.
        if let Some(n) = walk_note {
            v.outcome = RetentionOutcome::Failed;
            v.message = format!("{removed}, but {n}");
        }
    }
    v
}

pub(super) fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(super) fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CUTOFF: i64 = 1_700_000_000_000;

    fn reply(oldest: Option<i64>) -> RetentionReply {
        RetentionReply {
            items: 3,
            bytes: 300,
            errors: vec![],
            oldest_remaining: oldest.map(rfc3339),
        }
    }

    fn found(oldest: Option<i64>) -> Result<Found, String> {
        Ok(Found {
            items: 5,
            oldest_ms: oldest,
        })
    }

    #[test]
    fn nothing_older_than_the_cutoff_left_is_ok() {
        let v = verdict(
            CUTOFF,
            Ok(reply(Some(CUTOFF + 5000))),
            found(Some(CUTOFF + 5000)),
        );
        assert_eq!(v.outcome, RetentionOutcome::Ok, "{v:?}");
        assert!(
            v.message.contains("removed 3 items (300 bytes)"),
            "{}",
            v.message
        );
        let v = verdict(CUTOFF, Ok(reply(None)), found(None));
        assert_eq!(v.outcome, RetentionOutcome::Ok);
        assert!(v.message.contains("nothing left"), "{}", v.message);
    }

    #[test]
    fn no_answer_fails() {
        let v = verdict(CUTOFF, Err("timed out after 3s".into()), found(None));
        assert_eq!(v.outcome, RetentionOutcome::Failed);
        assert!(v.message.contains("timed out"), "{}", v.message);
        let mut r = reply(None);
        r.oldest_remaining = Some("yesterday".into());
        let v = verdict(CUTOFF, Ok(r), found(None));
        assert_eq!(v.outcome, RetentionOutcome::Failed);
        assert!(v.message.contains("\"yesterday\""), "{}", v.message);
    }

    #[test]
    fn an_old_item_is_a_violation_whoever_sees_it() {
        // The instrument admits it.
        let v = verdict(
            CUTOFF,
            Ok(reply(Some(CUTOFF - 10_000))),
            found(Some(CUTOFF + 1)),
        );
        assert_eq!(v.outcome, RetentionOutcome::Violated);
        assert!(
            v.message.contains("the instrument reports"),
            "{}",
            v.message
        );
        // The instrument claims all is gone; the platform's walk says not.
        let v = verdict(CUTOFF, Ok(reply(None)), found(Some(CUTOFF - 10_000)));
        assert_eq!(v.outcome, RetentionOutcome::Violated);
        assert!(v.message.contains("the platform found"), "{}", v.message);
    }

    #[test]
    fn a_walk_that_cannot_run_proves_nothing() {
        let v = verdict(CUTOFF, Ok(reply(None)), Err("/x: permission denied".into()));
        assert_eq!(v.outcome, RetentionOutcome::Failed);
        assert!(
            v.message.contains("could not check the storage"),
            "{}",
            v.message
        );
        assert_eq!(v.found_items, None);
    }

    #[test]
    fn the_walk_finds_the_oldest_file_and_follows_no_link() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/old"), b"x").unwrap();
        fs::write(root.join("new"), b"y").unwrap();
        let old = SystemTime::now() - Duration::from_secs(86400);
        fs::File::options()
            .write(true)
            .open(root.join("a/b/old"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        std::os::unix::fs::symlink("/", root.join("up")).unwrap();
        let f = walk_oldest(root, 100).unwrap();
        assert_eq!(f.items, 3, "two files and the link itself");
        assert_eq!(f.oldest_ms, Some(ms(old)));
        assert!(
            walk_oldest(root, 2)
                .unwrap_err()
                .contains("more than 2 entries")
        );
    }
}
