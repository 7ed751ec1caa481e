//! Storage paths, and the default retention: delete what is older than a
//! cutoff under the persistent directory.

use std::fs;
use std::path::Path;
use std::time::SystemTime;

use outpost_protocol::messages::RetentionReply;

/// Persistent storage inside an Outpost container (kept across restarts
/// and upgrades).
pub const PERSISTENT: &str = "/var/lib/instrument";
/// Transient storage (a tmpfs, empty at every start).
pub const TRANSIENT: &str = "/run/instrument";

/// Deletes every regular file under `root` last modified before `cutoff`,
/// then the directories that became empty; links are removed, never
/// followed. Returns counts, bytes, the errors met and when the oldest
/// file left was modified (the platform's proof that nothing older than
/// the cutoff stayed).
pub fn delete_older_than(root: &Path, cutoff: SystemTime) -> RetentionReply {
    let mut r = RetentionReply::default();
    let mut oldest = None;
    walk(root, cutoff, &mut r, &mut oldest, true);
    r.oldest_remaining = oldest.map(|t| humantime::format_rfc3339_millis(t).to_string());
    r
}

fn keep_oldest(oldest: &mut Option<SystemTime>, t: SystemTime) {
    if oldest.is_none_or(|o| t < o) {
        *oldest = Some(t);
    }
}

fn walk(
    dir: &Path,
    cutoff: SystemTime,
    r: &mut RetentionReply,
    oldest: &mut Option<SystemTime>,
    top: bool,
) -> bool {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            r.errors.push(format!("{}: {e}", dir.display()));
            return false;
        }
    };
    let mut emptied = true;
    for e in entries.flatten() {
        let path = e.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            emptied = false;
            continue;
        };
        if meta.is_dir() {
            if walk(&path, cutoff, r, oldest, false) {
                if fs::remove_dir(&path).is_err() {
                    emptied = false;
                }
            } else {
                emptied = false;
            }
            continue;
        }
        let modified = meta.modified().ok();
        let old = modified.is_some_and(|m| m < cutoff);
        if !old {
            emptied = false;
            if let Some(m) = modified {
                keep_oldest(oldest, m);
            }
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => {
                r.items += 1;
                r.bytes += meta.len();
            }
            Err(err) => {
                emptied = false;
                r.errors.push(format!("{}: {err}", path.display()));
                if let Some(m) = modified {
                    keep_oldest(oldest, m);
                }
            }
        }
    }
    !top && emptied
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn age(p: &Path, secs: u64) {
        let t = SystemTime::now() - Duration::from_secs(secs);
        let f = fs::File::options().write(true).open(p).unwrap();
        f.set_modified(t).unwrap();
    }

    #[test]
    fn deletes_only_what_is_older_than_the_cutoff() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("old/deeper")).unwrap();
        fs::create_dir_all(root.join("mixed")).unwrap();
        fs::write(root.join("old/deeper/a"), b"12345").unwrap();
        fs::write(root.join("old/b"), b"123").unwrap();
        fs::write(root.join("mixed/old"), b"1").unwrap();
        fs::write(root.join("mixed/new"), b"22").unwrap();
        fs::write(root.join("new"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        for p in ["old/deeper/a", "old/b", "mixed/old"] {
            age(&root.join(p), 3600);
        }
        let r = delete_older_than(root, SystemTime::now() - Duration::from_secs(60));
        assert_eq!((r.items, r.bytes), (3, 9), "{r:?}");
        assert!(r.errors.is_empty(), "{r:?}");
        let oldest = humantime::parse_rfc3339(r.oldest_remaining.as_deref().unwrap()).unwrap();
        let age = SystemTime::now().duration_since(oldest).unwrap();
        assert!(
            age < Duration::from_secs(60),
            "the oldest left is new: {r:?}"
        );
        assert!(!root.join("old").exists(), "emptied directories go too");
        assert!(root.join("mixed/new").exists());
        assert!(!root.join("mixed/old").exists());
        assert!(root.join("new").exists());
        assert!(root.exists(), "the root itself stays");
        assert!(Path::new("/etc/passwd").exists());
    }

    #[test]
    fn an_empty_store_has_no_oldest_item() {
        let d = tempfile::tempdir().unwrap();
        let r = delete_older_than(d.path(), SystemTime::now());
        assert_eq!(r.oldest_remaining, None);
        assert_eq!((r.items, r.bytes), (0, 0));
    }
}
