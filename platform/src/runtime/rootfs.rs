//! An instrument's root tree, built on the host before liblxc starts the
//! container, and taken apart after it stopped.
//!
//! ```text
//! instances/<name>/            0700 root, search-only ACL for its root
//!   lower/    the image's shared read-only tree, idmapped to the
//!             instrument's ids (ro,nosuid,nodev)
//!   scratch/  tmpfs (16 MiB, its root's) with upper/ and work/: the
//!             overlay's writable layer, bounded and never the host's disk
//!   rootfs/   overlay(lower, upper) (nosuid,nodev), with:
//!     .outpost/init            outpost-init          (ro,nosuid,nodev)
//!     .outpost/status          ../status             (nosuid,nodev,noexec)
//!     .outpost/nats.nkey       its bus key           (ro,nosuid,nodev,noexec)
//!     var/lib/instrument       ../persist            (nosuid,nodev)
//!     run/artifacts            <state>/artifacts/<name>, when it
//!                              consumes any   (ro,nosuid,nodev,noexec)
//!   status/   tmpfs (256 KiB, its root's, 0700): the exit record
//!   persist/  its ext4 image, mounted (nosuid,nodev)
//! ```
//!
//! liblxc gets `rootfs/` as a `dir` rootfs and bind-mounts it, with
//! everything below it, into the container's mount namespace, where those
//! mounts are locked: the instrument can neither unmount them nor make a
//! read-only one writable. Only the directories on the way to `rootfs/`
//! need a search permission for the instrument's root (see [`super::acl`]);
//! every other source is mounted by outpostd as host root.
//!
//! The image is never written: inside, its files belong to the
//! instrument's root (the idmapped lower layer), and what the instrument
//! writes lands in `upper/` as its own host ids, so a setuid copy is
//! setuid to an id that is nobody on the host, on a `nosuid` mount, in a
//! directory no other host user can enter.
//!
//! Mount points inside the image's tree are made without following any
//! symlink the image may hold (`openat` with `O_NOFOLLOW` one component at
//! a time), and mounts are attached to the descriptor found, never to a
//! path that could be swapped in between.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, open, openat};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag, fstat, mkdirat};
use nix::unistd::{Gid, Uid, fchownat};

use super::ffi::kernel;
use super::storage::{self, StorageError};
use super::{ContainerSpec, acl};

/// Failure to build or take apart an instrument's tree; each names the
/// path involved.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "image tree {root}: {entry} is a symlink or not a {kind}, and outpostd mounts there (fix: rebuild the image without it)"
    )]
    Reserved {
        root: PathBuf,
        entry: String,
        kind: &'static str,
    },
    #[error(
        "{path} is still mounted after unmounting it; not removing it (fix: unmount it by hand)"
    )]
    StillMounted { path: PathBuf },
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Several failures of one teardown, each kept.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Several(Vec<RootfsError>),
}

impl RootfsError {
    /// One error for several (at least one).
    fn all(mut errors: Vec<RootfsError>) -> RootfsError {
        if errors.len() == 1 {
            errors.remove(0)
        } else {
            RootfsError::Several(errors)
        }
    }
}

fn io_at<'a>(what: &'static str, path: &'a Path) -> impl Fn(io::Error) -> RootfsError + 'a {
    move |source| RootfsError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn errno_at<'a>(what: &'static str, path: &'a Path) -> impl Fn(Errno) -> RootfsError + 'a {
    move |e| io_at(what, path)(io::Error::from(e))
}

const ATTR_RDONLY: u64 = libc::MOUNT_ATTR_RDONLY;
const ATTR_NOSUID: u64 = libc::MOUNT_ATTR_NOSUID;
const ATTR_NODEV: u64 = libc::MOUNT_ATTR_NODEV;
const ATTR_NOEXEC: u64 = libc::MOUNT_ATTR_NOEXEC;

/// Builds the tree of `spec` (anything left from an earlier one is taken
/// apart first). `search` are the directories above `spec.instance` that
/// the instrument's root must be able to search.
pub fn build(spec: &ContainerSpec, search: &[PathBuf]) -> Result<(), RootfsError> {
    teardown(&spec.instance)?;
    let inst = &spec.instance;
    let owner = spec.ids.map(|i| i.base);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(inst)
        .map_err(io_at("instance directory", inst))?;
    if let Some(uid) = owner {
        for dir in search.iter().chain([inst]) {
            let with_acl =
                acl::grant_search(dir, uid).map_err(io_at("search permission on", dir))?;
            if !with_acl {
                tracing::warn!(
                    dir = %dir.display(),
                    "the filesystem has no POSIX ACLs; the directory is searchable by every host user instead"
                );
            }
        }
    }
    let mk = |p: &Path, mode: u32, own: bool| -> Result<(), RootfsError> {
        fs::DirBuilder::new()
            .mode(mode)
            .create(p)
            .map_err(io_at("directory", p))?;
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(io_at("directory", p))?;
        if own && let Some(id) = owner {
            std::os::unix::fs::lchown(p, Some(id), Some(id)).map_err(io_at("directory", p))?;
        }
        Ok(())
    };
    // What the instrument writes outside its storage goes to tmpfs, so it
    // is bounded (and counted against its memory limit), never the host's
    // disk.
    let id = owner.unwrap_or(0);
    let tmpfs = |at: &Path, bytes: u64, inodes: u32| -> Result<(), RootfsError> {
        mk(at, 0o700, false)?;
        let opts = format!("size={bytes},nr_inodes={inodes},mode=0700,uid={id},gid={id}");
        nix::mount::mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
        .map_err(errno_at("tmpfs on", at))
    };
    tmpfs(&spec.scratch(), super::ROOTFS_WRITABLE_BYTES, 16384)?;
    tmpfs(&spec.status_dir(), super::STATUS_DIR_BYTES, 64)?;
    mk(&spec.upper(), 0o755, true)?;
    mk(&spec.work(), 0o700, true)?;
    mk(&spec.lower_mount(), 0o700, false)?;
    mk(&spec.rootfs(), 0o700, false)?;
    mk(&spec.persist_mount(), 0o700, false)?;

    // The image, read-only, seen through the instrument's id map.
    let userns = match spec.ids {
        Some(r) => {
            Some(kernel::userns_fd(r.base, r.count).map_err(io_at("user namespace for", inst))?)
        }
        None => None,
    };
    let lower = kernel::clone_tree(&spec.lower, false).map_err(io_at("image tree", &spec.lower))?;
    kernel::set_attrs(
        lower.as_fd(),
        ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV,
        0,
        userns.as_ref().map(|u| u.as_fd()),
    )
    .map_err(io_at("idmapped mount of", &spec.lower))?;
    let target = open_path(&spec.lower_mount(), true)?;
    kernel::attach_at(lower.as_fd(), target.as_fd())
        .map_err(io_at("mount on", &spec.lower_mount()))?;

    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        spec.lower_mount().display(),
        spec.upper().display(),
        spec.work().display()
    );
    nix::mount::mount(
        Some("overlay"),
        &spec.rootfs(),
        Some("overlay"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(opts.as_str()),
    )
    .map_err(errno_at("overlay on", &spec.rootfs()))?;

    storage::prepare(&spec.persist, spec.ids, &spec.persist_mount())?;
    storage::mount(&spec.persist, &spec.persist_mount())?;
    storage::ensure_capacity(&spec.persist, &spec.persist_mount())?;
    if let Some(id) = owner {
        // The image's root is the instrument root's from mkfs; an image
        // from a privileged run is handed over here.
        for p in [
            spec.persist_mount(),
            spec.persist_mount().join("lost+found"),
        ] {
            match std::os::unix::fs::lchown(&p, Some(id), Some(id)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_at("persistent storage", &p)(e));
                }
                _ => {}
            }
        }
    }

    // The bus key is read by the instrument's root, and nobody else.
    if let Some(id) = owner {
        std::os::unix::fs::lchown(&spec.nkey, Some(id), Some(id))
            .map_err(io_at("bus key", &spec.nkey))?;
        fs::set_permissions(&spec.nkey, fs::Permissions::from_mode(0o400))
            .map_err(io_at("bus key", &spec.nkey))?;
    }

    let root = open(
        &spec.rootfs(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno_at("root tree", &spec.rootfs()))?;
    let tree = |rel: &str, kind| MountPoint {
        root_path: spec.rootfs(),
        rel: rel.to_string(),
        kind,
        owner,
    };
    bind(
        &spec.init,
        &tree(".outpost/init", Kind::File).open(&root)?,
        ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV,
    )?;
    bind(
        &spec.status_dir(),
        &tree(".outpost/status", Kind::Dir).open(&root)?,
        ATTR_NOSUID | ATTR_NODEV | ATTR_NOEXEC,
    )?;
    bind(
        &spec.nkey,
        &tree(".outpost/nats.nkey", Kind::File).open(&root)?,
        ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV | ATTR_NOEXEC,
    )?;
    bind(
        &spec.persist_mount(),
        &tree("var/lib/instrument", Kind::Dir).open(&root)?,
        ATTR_NOSUID | ATTR_NODEV,
    )?;
    if let Some(dir) = &spec.artifacts {
        // What the platform installed for it, verified: it reads, never
        // writes, and runs nothing from here (a consumer copies what it
        // runs).
        fs::create_dir_all(dir).map_err(io_at("artifacts", dir))?;
        bind(
            dir,
            &tree("run/artifacts", Kind::Dir).open(&root)?,
            ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV | ATTR_NOEXEC,
        )?;
    }
    Ok(())
}

/// Bind-mounts `source` on `target` with `attrs`.
fn bind(source: &Path, target: &OwnedFd, attrs: u64) -> Result<(), RootfsError> {
    let t = kernel::clone_tree(source, false).map_err(io_at("bind source", source))?;
    kernel::set_attrs(t.as_fd(), attrs, 0, None).map_err(io_at("bind of", source))?;
    kernel::attach_at(t.as_fd(), target.as_fd()).map_err(io_at("bind of", source))
}

fn open_path(p: &Path, dir: bool) -> Result<OwnedFd, RootfsError> {
    let mut flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    if dir {
        flags |= OFlag::O_DIRECTORY;
    }
    open(p, flags, Mode::empty()).map_err(errno_at("mount point", p))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
}

/// A mount point inside the image's tree.
struct MountPoint {
    root_path: PathBuf,
    rel: String,
    kind: Kind,
    /// Who new directories belong to (`.outpost` stays host root's).
    owner: Option<u32>,
}

impl MountPoint {
    fn reserved(&self, entry: &str, kind: &'static str) -> RootfsError {
        RootfsError::Reserved {
            root: self.root_path.clone(),
            entry: entry.to_string(),
            kind,
        }
    }

    /// Opens (making what is missing) the mount point below `root`, one
    /// component at a time and never through a symlink.
    fn open(&self, root: &OwnedFd) -> Result<OwnedFd, RootfsError> {
        let parts: Vec<&str> = self.rel.split('/').collect();
        let (last, dirs) = parts.split_last().expect("a relative path");
        let mut dir = openat(
            root,
            ".",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno_at("root tree", &self.root_path))?;
        let mut walked = String::new();
        for (i, part) in dirs.iter().chain(std::iter::once(last)).enumerate() {
            if !walked.is_empty() {
                walked.push('/');
            }
            walked.push_str(part);
            let is_last = i == dirs.len();
            if is_last && self.kind == Kind::File {
                return self.file(&dir, part, &walked);
            }
            dir = self.subdir(&dir, part, &walked)?;
        }
        Ok(dir)
    }

    fn subdir(&self, dir: &OwnedFd, name: &str, walked: &str) -> Result<OwnedFd, RootfsError> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        match openat(dir, name, flags, Mode::empty()) {
            Ok(d) => Ok(d),
            Err(Errno::ENOENT) => {
                mkdirat(dir, name, Mode::from_bits_truncate(0o755))
                    .map_err(errno_at("mount point", &self.root_path.join(walked)))?;
                if let Some(id) = self.owner
                    && !walked.starts_with(".outpost")
                {
                    // Owned by the instrument's root, like the rest of its
                    // tree (a directory made by host root would be
                    // "nobody's" inside).
                    let (u, g) = (Some(Uid::from_raw(id)), Some(Gid::from_raw(id)));
                    fchownat(dir, name, u, g, AtFlags::AT_SYMLINK_NOFOLLOW)
                        .map_err(errno_at("mount point", &self.root_path.join(walked)))?;
                }
                openat(dir, name, flags, Mode::empty())
                    .map_err(errno_at("mount point", &self.root_path.join(walked)))
            }
            Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => Err(self.reserved(walked, "directory")),
            Err(e) => Err(errno_at("mount point", &self.root_path.join(walked))(e)),
        }
    }

    fn file(&self, dir: &OwnedFd, name: &str, walked: &str) -> Result<OwnedFd, RootfsError> {
        let at = self.root_path.join(walked);
        match openat(
            dir,
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o444),
        ) {
            Ok(_) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(errno_at("mount point", &at)(e)),
        }
        let fd = openat(
            dir,
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno_at("mount point", &at))?;
        let st = fstat(&fd).map_err(errno_at("mount point", &at))?;
        if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG {
            return Err(self.reserved(walked, "regular file"));
        }
        Ok(fd)
    }
}

/// Mount points at or below `dir`, deepest first, from
/// `/proc/self/mountinfo`.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    out.dedup();
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    use std::os::unix::ffi::OsStrExt;
    OsStr::from_bytes(&out).to_string_lossy().into_owned()
}

/// Takes an instance tree apart: unmounts everything at or below it
/// (lazily, so a mount still held by a dying container does not stop us)
/// and removes it. Refuses to remove anything while a mount remains below
/// it, so persistent storage is never deleted through its mount point.
pub fn teardown(dir: &Path) -> Result<(), RootfsError> {
    // Every mount is tried, also after one fails: what can go, goes, and
    // every failure is reported.
    let mut failed = Vec::new();
    for _ in 0..3 {
        let mounts = mounts_below(dir);
        if mounts.is_empty() {
            break;
        }
        failed.clear();
        for m in mounts {
            match nix::mount::umount2(&m, MntFlags::MNT_DETACH) {
                Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
                Err(e) => failed.push(errno_at("unmount of", &m)(e)),
            }
        }
    }
    if let Some(m) = mounts_below(dir).into_iter().next() {
        failed.push(RootfsError::StillMounted { path: m });
        return Err(RootfsError::all(failed));
    }
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_at("instance directory", dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/x\\134y"), "/x\\y");
    }
}
