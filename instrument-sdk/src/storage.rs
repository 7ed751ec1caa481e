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
/// followed. Returns counts, bytes and the errors met.
pub fn delete_older_than(root: &Path, cutoff: SystemTime) -> RetentionReply {
    let mut r = RetentionReply::default();
    walk(root, cutoff, &mut r, true);
    r
}

fn walk(dir: &Path, cutoff: SystemTime, r: &mut RetentionReply, top: bool) -> bool {
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
            if walk(&path, cutoff, r, false) {
                if fs::remove_dir(&path).is_err() {
                    emptied = false;
                }
            } else {
                emptied = false;
            }
            continue;
        }
        let old = meta.modified().map(|m| m < cutoff).unwrap_or(false);
        if !old {
            emptied = false;
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
        assert!(!root.join("old").exists(), "emptied directories go too");
        assert!(root.join("mixed/new").exists());
        assert!(!root.join("mixed/old").exists());
        assert!(root.join("new").exists());
        assert!(root.exists(), "the root itself stays");
        assert!(Path::new("/etc/passwd").exists());
    }
}
