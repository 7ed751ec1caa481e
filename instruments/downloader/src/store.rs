//! Where artifacts live in the downloader's persistent storage:
//!
//! ```text
//! <root>/artifacts/<name>/<version>   the artifacts, newest `keep` kept
//! <root>/meta/<name>/<version>.json    the signed metadata of each, and
//! <root>/meta/<name>/<version>.minisig its signature (for the platform,
//!                                     which verifies again)
//! <root>/state/<name>.json            highest version accepted, the
//!                                     current one, HTTP validators
//! <root>/tmp/                         bodies while they come
//! ```
//!
//! An artifact is written to `tmp/`, verified, then renamed into place, so
//! `artifacts/` never holds a partial file; the state is written after, the
//! same way.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fetch::Validators;
use crate::verify::version_cmp;

/// What the downloader remembers of a resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The highest version ever accepted: nothing at or below it is taken
    /// again (kept even when its file is pruned).
    pub highest: Option<String>,
    pub current: Option<Current>,
    #[serde(default)]
    pub validators: Validators,
}

/// The version in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    pub version: String,
    pub sha256: String,
    pub length: u64,
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

impl Store {
    pub fn new(root: &Path) -> Result<Store, String> {
        for d in ["artifacts", "meta", "state", "tmp"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(io(&p))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    /// A fresh temporary path for a body.
    pub fn tmp(&self, name: &str) -> PathBuf {
        self.root
            .join("tmp")
            .join(format!("{name}.{:08x}", rand::random::<u32>()))
    }

    pub fn artifact(&self, name: &str, version: &str) -> PathBuf {
        self.root.join("artifacts").join(name).join(version)
    }

    fn state_path(&self, name: &str) -> PathBuf {
        self.root.join("state").join(format!("{name}.json"))
    }

    pub fn state(&self, name: &str) -> State {
        std::fs::read(self.state_path(name))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save_state(&self, name: &str, s: &State) -> Result<(), String> {
        write_whole(
            &self.state_path(name),
            &serde_json::to_vec_pretty(s).expect("serializes"),
        )
    }

    /// Where the signed metadata of `name` `version` and its signature are.
    pub fn meta(&self, name: &str, version: &str) -> (PathBuf, PathBuf) {
        let dir = self.root.join("meta").join(name);
        (
            dir.join(format!("{version}.json")),
            dir.join(format!("{version}.minisig")),
        )
    }

    /// Puts a verified body in place as `name` `version` (with its signed
    /// metadata and signature, if any, first) and keeps the newest `keep`
    /// versions.
    pub fn commit(
        &self,
        name: &str,
        version: &str,
        body: &Path,
        keep: usize,
        signed: Option<(&[u8], &str)>,
    ) -> Result<PathBuf, String> {
        if let Some((doc, sig)) = signed {
            let (m, s) = self.meta(name, version);
            let dir = m.parent().expect("meta dir");
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            write_whole(&m, doc)?;
            write_whole(&s, sig.as_bytes())?;
        }
        let dir = self.root.join("artifacts").join(name);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let dest = dir.join(version);
        std::fs::rename(body, &dest).map_err(io(&dest))?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        let mut versions: Vec<String> = std::fs::read_dir(&dir)
            .map_err(io(&dir))?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        versions.sort_by(|a, b| version_cmp(b, a));
        for old in versions.iter().skip(keep.max(1)) {
            let _ = std::fs::remove_file(dir.join(old));
            let (m, s) = self.meta(name, old);
            let _ = std::fs::remove_file(m);
            let _ = std::fs::remove_file(s);
        }
        Ok(dest)
    }

    /// Marks the version in use of `name` (and its state) as confirmed
    /// now: the file's time says when it was last known good, so retention
    /// removes what is no longer in use, not what still is.
    pub fn confirm_current(&self, name: &str) {
        let now = std::time::SystemTime::now();
        let mut paths = vec![self.state_path(name)];
        if let Some(c) = self.state(name).current {
            let (m, s) = self.meta(name, &c.version);
            paths.extend([self.artifact(name, &c.version), m, s]);
        }
        for p in paths {
            if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&p) {
                let _ = f.set_modified(now);
            }
        }
    }

    /// The versions kept of `name`, newest first.
    pub fn versions(&self, name: &str) -> Vec<String> {
        let dir = self.root.join("artifacts").join(name);
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by(|a, b| version_cmp(b, a));
        v
    }
}

/// Writes `path` whole or not at all.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn age(p: &Path, by: Duration) {
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        f.set_modified(SystemTime::now() - by).unwrap();
    }

    /// Retention (the SDK's default handler, as the downloader runs it)
    /// removes old versions and keeps the one in use, with its metadata.
    #[test]
    fn retention_keeps_the_version_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path()).unwrap();
        for v in ["1.0.0", "2.0.0"] {
            let body = store.tmp("p");
            std::fs::write(&body, v).unwrap();
            store
                .commit("p", v, &body, 3, Some((b"{}".as_slice(), "sig")))
                .unwrap();
        }
        let mut st = store.state("p");
        st.current = Some(Current {
            version: "2.0.0".into(),
            sha256: String::new(),
            length: 5,
        });
        store.save_state("p", &st).unwrap();
        let month = Duration::from_secs(30 * 86400);
        for v in ["1.0.0", "2.0.0"] {
            let (m, s) = store.meta("p", v);
            for p in [store.artifact("p", v), m, s] {
                age(&p, month);
            }
        }
        age(&store.state_path("p"), month);
        // A check finds nothing new and confirms the version in use.
        store.confirm_current("p");
        let cutoff = SystemTime::now() - Duration::from_secs(7 * 86400);
        let r = instrument_sdk::storage::delete_older_than(dir.path(), cutoff);
        assert!(r.items >= 3, "{r:?}");
        assert_eq!(store.versions("p"), ["2.0.0"]);
        assert!(store.meta("p", "2.0.0").0.exists());
        assert!(!store.meta("p", "1.0.0").0.exists());
        assert_eq!(store.state("p").current.unwrap().version, "2.0.0");
    }
}
