//! How liblxc writes an instrument's id maps, checked rather than assumed.
//!
//! liblxc writes `uid_map`/`gid_map` of a new container itself when it
//! runs as root, unless `newuidmap` and `newgidmap` (Debian's `uidmap`
//! package) are on its PATH: then it uses them, and they only map ranges
//! that `/etc/subuid` and `/etc/subgid` give root. outpostd does not
//! depend on either by accident: at start it says which way liblxc will
//! go, and before each start it checks that the files grant the
//! instrument's range when the tools are there.

use std::path::{Path, PathBuf};

use crate::db::IdRange;

/// Which way liblxc maps ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapper {
    /// liblxc writes the maps itself (as root).
    Direct,
    /// liblxc runs these `newuidmap`/`newgidmap`.
    Shadow {
        newuidmap: PathBuf,
        newgidmap: PathBuf,
    },
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Mapper {
    /// What liblxc will do in this process's environment.
    pub fn detect() -> Mapper {
        match (on_path("newuidmap"), on_path("newgidmap")) {
            (Some(newuidmap), Some(newgidmap)) => Mapper::Shadow {
                newuidmap,
                newgidmap,
            },
            _ => Mapper::Direct,
        }
    }

    /// Why `ids` cannot be mapped, or `None`.
    pub fn problem(&self, ids: IdRange) -> Option<String> {
        let Mapper::Shadow { .. } = self else {
            return None;
        };
        for file in ["/etc/subuid", "/etc/subgid"] {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            if !grants_root(&text, ids) {
                return Some(subid_problem(Path::new(file), ids));
            }
        }
        None
    }
}

fn subid_problem(file: &Path, ids: IdRange) -> String {
    format!(
        "newuidmap is installed, so liblxc maps ids through it, and {} gives root no range covering {}-{} (fix: add `root:{}:{}` to /etc/subuid and /etc/subgid, or remove the uidmap package so that liblxc writes the maps itself)",
        file.display(),
        ids.base,
        ids.last(),
        ids.base,
        u32::MAX - ids.base
    )
}

/// Whether a subuid/subgid file gives root (by name or as 0) the range.
pub fn grants_root(text: &str, ids: IdRange) -> bool {
    text.lines().any(|l| {
        let mut f = l.trim().split(':');
        let (Some(who), Some(start), Some(count)) = (f.next(), f.next(), f.next()) else {
            return false;
        };
        let (Ok(start), Ok(count)) = (start.parse::<u64>(), count.parse::<u64>()) else {
            return false;
        };
        (who == "root" || who == "0")
            && start <= ids.base as u64
            && (ids.last() as u64) < start + count
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subid_ranges_must_cover_the_whole_range() {
        let ids = IdRange {
            base: 1_500_000_000,
            count: 65536,
        };
        assert!(grants_root("root:1000000000:1000000000\n", ids));
        assert!(grants_root("0:1500000000:65536\n", ids));
        assert!(!grants_root("root:1500000000:65535\n", ids));
        assert!(!grants_root("alice:1000000000:1000000000\n", ids));
        assert!(!grants_root("root:100000:65536\n# comment\n", ids));
        assert!(Mapper::Direct.problem(ids).is_none());
    }
}
