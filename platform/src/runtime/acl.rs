//! POSIX ACL entries that let one instrument's root (a host uid of its
//! range) traverse the state directories on the way to its root tree,
//! while the directories stay `0700` for everyone else.
//!
//! liblxc mounts an unprivileged container's root tree from inside the
//! container's user namespace, so its root must be able to search every
//! directory on the path (liblxc says: "Please grant it x access, or add
//! an ACL for the container root"). Granting `o+x` would let every host
//! user in; a named `--x` entry lets exactly that uid in.
//!
//! The ACL is the `system.posix_acl_access` attribute, encoded here: a
//! version word, then `(tag, perm, id)` entries sorted by tag and id.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::ffi::kernel;

const XATTR: &str = "system.posix_acl_access";
const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
const UNDEFINED_ID: u32 = u32::MAX;
/// Search (`x`) permission.
pub const SEARCH: u16 = 1;

/// One ACL entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub tag: u16,
    pub id: u32,
    pub perm: u16,
}

/// The minimal ACL that mode bits `mode` stand for.
pub fn from_mode(mode: u32) -> Vec<Entry> {
    let e = |tag, shift: u32| Entry {
        tag,
        id: UNDEFINED_ID,
        perm: ((mode >> shift) & 7) as u16,
    };
    vec![e(USER_OBJ, 6), e(GROUP_OBJ, 3), e(OTHER, 0)]
}

/// Decodes an attribute value.
pub fn decode(bytes: &[u8]) -> Option<Vec<Entry>> {
    let (head, rest) = bytes.split_at_checked(4)?;
    if u32::from_le_bytes(head.try_into().ok()?) != VERSION || rest.len() % 8 != 0 {
        return None;
    }
    Some(
        rest.chunks_exact(8)
            .map(|c| Entry {
                tag: u16::from_le_bytes([c[0], c[1]]),
                perm: u16::from_le_bytes([c[2], c[3]]),
                id: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect(),
    )
}

/// Encodes entries, sorted, with the mask the named entries need (and
/// none when there are none).
pub fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut es: Vec<Entry> = entries.iter().copied().filter(|e| e.tag != MASK).collect();
    let named = es.iter().any(|e| e.tag == USER || e.tag == GROUP);
    if named {
        let perm = es
            .iter()
            .filter(|e| matches!(e.tag, USER | GROUP | GROUP_OBJ))
            .fold(0, |m, e| m | e.perm);
        es.push(Entry {
            tag: MASK,
            id: UNDEFINED_ID,
            perm,
        });
    }
    es.sort_by_key(|e| (e.tag, e.id));
    let mut out = VERSION.to_le_bytes().to_vec();
    for e in es {
        out.extend(e.tag.to_le_bytes());
        out.extend(e.perm.to_le_bytes());
        out.extend(e.id.to_le_bytes());
    }
    out
}

/// `entries` with a named-user entry for `uid` set to `perm` (removed
/// with `None`).
pub fn with_user(entries: &[Entry], uid: u32, perm: Option<u16>) -> Vec<Entry> {
    let mut out: Vec<Entry> = entries
        .iter()
        .copied()
        .filter(|e| !(e.tag == USER && e.id == uid))
        .collect();
    if let Some(perm) = perm {
        out.push(Entry {
            tag: USER,
            id: uid,
            perm,
        });
    }
    out
}

fn current(dir: &Path) -> io::Result<Vec<Entry>> {
    match kernel::get_xattr(dir, XATTR)? {
        Some(v) => decode(&v)
            .ok_or_else(|| io::Error::other(format!("{}: unreadable access ACL", dir.display()))),
        None => Ok(from_mode(
            std::fs::symlink_metadata(dir)?.permissions().mode(),
        )),
    }
}

/// Lets host uid `uid` search `dir` (and nothing more), keeping the mode
/// for everyone else. Where the filesystem has no ACLs, `dir` gets `o+x`
/// instead, and `Ok(false)` says so.
pub fn grant_search(dir: &Path, uid: u32) -> io::Result<bool> {
    let entries = current(dir)?;
    let mask = entries.iter().find(|e| e.tag == MASK).map_or(0, |e| e.perm);
    if entries
        .iter()
        .any(|e| e.tag == USER && e.id == uid && e.perm & mask & SEARCH != 0)
    {
        return Ok(true);
    }
    match kernel::set_xattr(dir, XATTR, &encode(&with_user(&entries, uid, Some(SEARCH)))) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            let mode = std::fs::symlink_metadata(dir)?.permissions().mode();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o001))?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Takes back what [`grant_search`] gave `uid` on `dir`.
pub fn revoke(dir: &Path, uid: u32) -> io::Result<()> {
    let entries = current(dir)?;
    if !entries.iter().any(|e| e.tag == USER && e.id == uid) {
        return Ok(());
    }
    kernel::set_xattr(dir, XATTR, &encode(&with_user(&entries, uid, None)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_entry_brings_a_mask_and_round_trips() {
        let base = from_mode(0o700);
        let with = with_user(&base, 1_000_000_000, Some(SEARCH));
        let bytes = encode(&with);
        let back = decode(&bytes).unwrap();
        assert_eq!(
            back,
            vec![
                Entry {
                    tag: USER_OBJ,
                    id: UNDEFINED_ID,
                    perm: 7
                },
                Entry {
                    tag: USER,
                    id: 1_000_000_000,
                    perm: 1
                },
                Entry {
                    tag: GROUP_OBJ,
                    id: UNDEFINED_ID,
                    perm: 0
                },
                Entry {
                    tag: MASK,
                    id: UNDEFINED_ID,
                    perm: 1
                },
                Entry {
                    tag: OTHER,
                    id: UNDEFINED_ID,
                    perm: 0
                },
            ]
        );
        let without = with_user(&back, 1_000_000_000, None);
        assert_eq!(
            decode(&encode(&without)).unwrap(),
            base,
            "no mask without named entries"
        );
        assert_eq!(decode(&[1, 0, 0, 0]), None, "wrong version");
    }

    #[test]
    fn grant_and_revoke_on_a_real_directory() {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let acl = grant_search(d.path(), 1_234_567).unwrap();
        let mode = std::fs::metadata(d.path()).unwrap().permissions().mode() & 0o777;
        if acl {
            assert_eq!(mode, 0o710, "the group bits show the mask");
            let es = current(d.path()).unwrap();
            assert!(es.contains(&Entry {
                tag: USER,
                id: 1_234_567,
                perm: 1
            }));
            assert!(es.contains(&Entry {
                tag: OTHER,
                id: UNDEFINED_ID,
                perm: 0
            }));
            revoke(d.path(), 1_234_567).unwrap();
            assert!(!current(d.path()).unwrap().iter().any(|e| e.tag == USER));
        } else {
            assert_eq!(mode, 0o701);
        }
    }
}
