//! Which `escape-probe` binary the beacon runs.
//!
//! - The image's `/usr/bin/escape-probe` until something better exists.
//! - A new binary is dropped at the watched path (by an operator, or by
//!   the downloader through an artifact). When its sha256 differs from the
//!   running one and was not rejected before, it goes on *trial*: the
//!   beacon runs a copy of it (so the file can be replaced again while it
//!   runs).
//! - A trial binary that prints a valid attempt is *promoted*: copied to
//!   `good` in the beacon's persistent directory, which survives restarts.
//! - One that prints nothing within the update window is *rejected*: its
//!   sha256 is remembered in `bad` (persistent too), and the beacon goes
//!   back to `good`, or to the image's binary.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

/// A binary to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub path: PathBuf,
    pub sha256: String,
    /// Not yet seen to work.
    pub trial: bool,
}

pub struct Binaries {
    /// Persistent: `good`, `good.sha256`, `bad`.
    dir: PathBuf,
    /// Where trial copies are run from (transient).
    run_dir: PathBuf,
    image: PathBuf,
    watched: PathBuf,
    bad: BTreeSet<String>,
    /// The watched file's (mtime, length, sha256) when last hashed.
    seen: Option<(SystemTime, u64, String)>,
}

pub fn sha256_file(p: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut f = fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match f.read(&mut buf)? {
            0 => return Ok(hex::encode(h.finalize())),
            n => h.update(&buf[..n]),
        }
    }
}

/// Writes `bytes` to `to` through a temporary file and a rename, so a
/// crash leaves the old file or the new one, never half of one.
fn write_atomic(to: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = to.with_extension("tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
    }
    fs::rename(&tmp, to)
}

impl Binaries {
    pub fn new(dir: &Path, run_dir: &Path, image: &Path, watched: &Path) -> io::Result<Binaries> {
        fs::create_dir_all(dir)?;
        let bad = match fs::read_to_string(dir.join("bad")) {
            Ok(s) => s.lines().map(str::to_owned).collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(e),
        };
        Ok(Binaries {
            dir: dir.into(),
            run_dir: run_dir.into(),
            image: image.into(),
            watched: watched.into(),
            bad,
            seen: None,
        })
    }

    /// Watches another path from now on (a new artifact, a new config).
    pub fn watch(&mut self, path: &Path) {
        if self.watched != path {
            self.watched = path.into();
            self.seen = None;
        }
    }

    pub fn watched(&self) -> &Path {
        &self.watched
    }

    /// The last binary that worked, else the image's.
    pub fn fallback(&self) -> io::Result<Choice> {
        let good = self.dir.join("good");
        match fs::read_to_string(self.dir.join("good.sha256")) {
            Ok(sha) if good.exists() => Ok(Choice {
                path: good,
                sha256: sha.trim().into(),
                trial: false,
            }),
            _ => Ok(Choice {
                sha256: sha256_file(&self.image).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("probe binary {}: {e}", self.image.display()),
                    )
                })?,
                path: self.image.clone(),
                trial: false,
            }),
        }
    }

    /// What to run at start: a new binary at the watched path on trial, or
    /// the fallback.
    pub fn startup(&mut self) -> io::Result<Choice> {
        let fallback = self.fallback()?;
        Ok(self.poll(&fallback.sha256)?.unwrap_or(fallback))
    }

    /// A trial choice if the watched file now holds a binary other than
    /// `running` that was not rejected before. Hashes only when the file's
    /// time or length changed.
    pub fn poll(&mut self, running: &str) -> io::Result<Option<Choice>> {
        let meta = match fs::metadata(&self.watched) {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.seen = None;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let stamp = (meta.modified()?, meta.len());
        let sha = match &self.seen {
            Some((t, l, sha)) if (*t, *l) == stamp => sha.clone(),
            _ => {
                let sha = sha256_file(&self.watched)?;
                self.seen = Some((stamp.0, stamp.1, sha.clone()));
                sha
            }
        };
        if sha == running || self.bad.contains(&sha) {
            return Ok(None);
        }
        if let Ok(good) = fs::read_to_string(self.dir.join("good.sha256"))
            && good.trim() == sha
        {
            return Ok(Some(Choice {
                path: self.dir.join("good"),
                sha256: sha,
                trial: false,
            }));
        }
        // Run a copy: the watched file may be replaced while it runs, and
        // a running file cannot be written ("text file busy").
        let bytes = fs::read(&self.watched)?;
        if hex::encode(Sha256::digest(&bytes)) != sha {
            // Changed while read: take it at the next poll.
            self.seen = None;
            return Ok(None);
        }
        fs::create_dir_all(&self.run_dir)?;
        let copy = self.run_dir.join(format!("escape-probe-{}", &sha[..12]));
        write_atomic(&copy, &bytes, 0o755)?;
        Ok(Some(Choice {
            path: copy,
            sha256: sha,
            trial: true,
        }))
    }

    /// Keeps `c` as the binary that works.
    pub fn promote(&mut self, c: &Choice) -> io::Result<()> {
        let bytes = fs::read(&c.path)?;
        write_atomic(&self.dir.join("good"), &bytes, 0o755)?;
        write_atomic(&self.dir.join("good.sha256"), c.sha256.as_bytes(), 0o644)?;
        if c.path.starts_with(&self.run_dir) {
            let _ = fs::remove_file(&c.path);
        }
        Ok(())
    }

    /// Rejects `c` for good and returns what to run instead.
    pub fn reject(&mut self, c: &Choice) -> io::Result<Choice> {
        self.bad.insert(c.sha256.clone());
        let list: String = self.bad.iter().map(|s| format!("{s}\n")).collect();
        write_atomic(&self.dir.join("bad"), list.as_bytes(), 0o644)?;
        if c.path.starts_with(&self.run_dir) {
            let _ = fs::remove_file(&c.path);
        }
        self.fallback()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct T {
        _tmp: tempfile::TempDir,
        root: PathBuf,
    }

    impl T {
        /// The beacon's view of the files, as a (re)started beacon has it.
        fn open(&self) -> Binaries {
            Binaries::new(
                &self.root.join("persist"),
                &self.root.join("run"),
                &self.root.join("image-probe"),
                &self.root.join("persist/escape-probe"),
            )
            .unwrap()
        }
    }

    fn setup() -> (T, Binaries) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        fs::write(root.join("image-probe"), b"image binary").unwrap();
        let t = T { _tmp: tmp, root };
        let b = t.open();
        (t, b)
    }

    #[test]
    fn the_image_binary_runs_until_a_new_one_is_dropped_and_works() {
        let (t, mut b) = setup();
        let first = b.startup().unwrap();
        assert_eq!(first.path, t.root.join("image-probe"));
        assert!(!first.trial);
        assert_eq!(b.poll(&first.sha256).unwrap(), None);

        fs::write(b.watched(), b"new binary").unwrap();
        let trial = b.poll(&first.sha256).unwrap().unwrap();
        assert!(trial.trial && trial.path.starts_with(t.root.join("run")));
        assert_eq!(fs::read(&trial.path).unwrap(), b"new binary");
        b.promote(&trial).unwrap();
        assert_eq!(b.poll(&trial.sha256).unwrap(), None, "running it already");

        // A restarted beacon starts on the promoted binary.
        let mut again = t.open();
        let c = again.startup().unwrap();
        assert_eq!((c.path, c.trial), (t.root.join("persist/good"), false));
    }

    #[test]
    fn a_rejected_binary_is_not_tried_again_also_after_a_restart() {
        let (t, mut b) = setup();
        let first = b.startup().unwrap();
        fs::write(b.watched(), b"#!/bin/sh\nsleep 1000\n").unwrap();
        let trial = b.poll(&first.sha256).unwrap().unwrap();
        let back = b.reject(&trial).unwrap();
        assert_eq!(back.path, t.root.join("image-probe"));
        assert!(!trial.path.exists(), "the trial copy is removed");
        assert_eq!(b.poll(&back.sha256).unwrap(), None);
        let mut again = t.open();
        assert_eq!(again.startup().unwrap().path, t.root.join("image-probe"));
    }
}
