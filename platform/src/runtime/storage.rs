//! Persistent storage with a hard size: one ext4 image per instrument,
//! mounted through a loop device.
//!
//! Why an image and not project quotas: quotas depend on the filesystem
//! the state directory is on (ext4 with the `project` feature turned on
//! at mkfs time, or XFS mounted with `prjquota`), which a sensor's
//! operator rarely controls; a loop-mounted image works on any of them,
//! gives the instrument ENOSPC and nothing else when it is full (the
//! host's disk is never touched past the image), and holds the files
//! with the instrument's own host ids. The cost is a fixed allocation and
//! a loop device per running instrument; the benchmark measures the
//! write throughput against a plain directory.
//!
//! - The image is created with `mkfs.ext4` (e2fsprogs) on first use, sized
//!   so that at least the manifest's size is usable after the
//!   filesystem's own metadata ([`image_bytes`]), its root owned by the
//!   instrument's root, no blocks reserved.
//! - A manifest that asks for more grows it at the next start
//!   (`e2fsck -f -p`, then `resize2fs`), keeping the data; one that asks
//!   for less keeps the bigger size (shrinking could lose data; `purge`
//!   starts over).
//! - An older outpostd's plain directory is copied in once, its ids
//!   moved into the instrument's range, and then removed.
//! - Mounted `nosuid,nodev`: nothing written there gains privileges on
//!   the host.

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::MsFlags;
use tracing::{info, warn};

use super::ffi::kernel;
use crate::db::IdRange;

/// Failure to prepare or mount persistent storage; each names the image.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("persistent storage {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "persistent storage {image}: {tool} is not installed (fix: install e2fsprogs, which provides mkfs.ext4, e2fsck and resize2fs)"
    )]
    NoTool { image: PathBuf, tool: &'static str },
    #[error("persistent storage {image}: {tool} failed: {detail}")]
    Tool {
        image: PathBuf,
        tool: &'static str,
        detail: String,
    },
    #[error(
        "persistent storage {image}: the old directory {legacy} holds {used} bytes, more than the {size} bytes the image holds (fix: raise storage.persistent in the manifest, or clean the directory)"
    )]
    LegacyTooBig {
        image: PathBuf,
        legacy: PathBuf,
        used: u64,
        size: u64,
    },
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One instrument's persistent storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistSpec {
    /// The ext4 image.
    pub image: PathBuf,
    /// The size the manifest asks for (usable bytes).
    pub bytes: u64,
    /// A plain directory an older outpostd kept, to migrate.
    pub legacy: PathBuf,
}

const MIB: u64 = 1 << 20;

/// The image size that usually leaves at least `usable` bytes (and the
/// margin of [`wanted_capacity`]) to files once ext4 has laid out its
/// journal, inode tables and group descriptors (measured with e2fsprogs
/// 1.47: 1.6 MiB on 6 MiB, 7.4 MiB on 40 MiB, 33 MiB on 300 MiB, 67 MiB
/// on 1 GiB), rounded up to a MiB. [`ensure_capacity`] measures and grows
/// it where the estimate falls short.
pub fn image_bytes(usable: u64) -> u64 {
    let raw = usable + usable / 8 + 8 * MIB;
    raw.div_ceil(MIB) * MIB
}

/// Finds an e2fsprogs tool on PATH or in the sbin directories a daemon's
/// PATH may lack.
fn tool(image: &Path, name: &'static str) -> Result<PathBuf, StorageError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(StorageError::NoTool {
            image: image.to_path_buf(),
            tool: name,
        })
}

fn run(image: &Path, name: &'static str, args: &[&str], ok: &[i32]) -> Result<(), StorageError> {
    let bin = tool(image, name)?;
    let out = Command::new(&bin)
        .args(args)
        .arg(image)
        .output()
        .map_err(io_err(image))?;
    match out.status.code() {
        Some(c) if ok.contains(&c) => Ok(()),
        _ => Err(StorageError::Tool {
            image: image.to_path_buf(),
            tool: name,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }),
    }
}

/// Makes sure the image exists, has the size the manifest asks for and
/// holds whatever an older outpostd kept in a plain directory. `ids` own
/// its root (`None`: host root, for privileged containers).
pub fn prepare(p: &PersistSpec, ids: Option<IdRange>, scratch: &Path) -> Result<(), StorageError> {
    let want = image_bytes(p.bytes);
    let legacy = fs::symlink_metadata(&p.legacy).is_ok_and(|m| m.is_dir());
    if legacy {
        // An interrupted migration starts over: the directory is removed
        // only once its copy is complete.
        let _ = fs::remove_file(&p.image);
    }
    match fs::metadata(&p.image) {
        // An image bigger than asked for is kept as it is: shrinking could
        // lose data (purge starts over).
        Ok(m) if m.len() >= want => {}
        Ok(m) => grow(&p.image, m.len(), want)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => create(&p.image, want, ids)?,
        Err(e) => return Err(io_err(&p.image)(e)),
    }
    if legacy {
        migrate(p, ids, scratch)?;
    }
    Ok(())
}

fn create(image: &Path, bytes: u64, ids: Option<IdRange>) -> Result<(), StorageError> {
    if let Some(dir) = image.parent() {
        crate::paths::create_private_dir(dir).map_err(io_err(dir))?;
    }
    let tmp = image.with_extension("ext4.new");
    let _ = fs::remove_file(&tmp);
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.set_len(bytes).map_err(io_err(&tmp))?;
    drop(f);
    let owner = ids.map_or(0, |i| i.base);
    let opts = format!("root_owner={owner}:{owner},lazy_itable_init=1");
    run(
        &tmp,
        "mkfs.ext4",
        &["-q", "-F", "-m", "0", "-E", &opts],
        &[0],
    )
    .inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })?;
    fs::rename(&tmp, image).map_err(io_err(image))?;
    info!(image = %image.display(), bytes, "persistent storage created");
    Ok(())
}

fn grow(image: &Path, have: u64, want: u64) -> Result<(), StorageError> {
    info!(image = %image.display(), have, want, "growing persistent storage");
    // resize2fs wants a freshly checked filesystem; exit 1 means e2fsck
    // fixed something, which is fine here.
    run(image, "e2fsck", &["-f", "-p"], &[0, 1])?;
    fs::OpenOptions::new()
        .write(true)
        .open(image)
        .and_then(|f| f.set_len(want))
        .map_err(io_err(image))?;
    run(image, "resize2fs", &[], &[0])
}

/// Mounts the image on `target` (`nosuid,nodev`), through a loop device
/// that goes away by itself when the last mount of it does.
pub fn mount(p: &PersistSpec, target: &Path) -> Result<(), StorageError> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&p.image)
        .map_err(io_err(&p.image))?;
    let label = p
        .image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (dev, dev_fd) = kernel::loop_attach(file.as_fd(), &label).map_err(io_err(&p.image))?;
    let res = nix::mount::mount(
        Some(&dev),
        target,
        Some("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("errors=remount-ro"),
    );
    // With the fs mounted (or not), the loop device's autoclear takes over.
    drop(dev_fd);
    drop(file);
    res.map_err(|e| io_err(&p.image)(io::Error::from(e)))
}

/// The capacity an image must show, mounted, for `declared` bytes of
/// files: a little more, for the files' own metadata.
pub fn wanted_capacity(declared: u64) -> u64 {
    declared + declared / 64 + MIB
}

/// Checks the mounted image's capacity (as the kernel counts it, after
/// ext4's metadata) and grows it until it holds at least the manifest's
/// size: the size formula is an estimate, this is the measure. Returns
/// the capacity.
pub fn ensure_capacity(p: &PersistSpec, target: &Path) -> Result<u64, StorageError> {
    let want = wanted_capacity(p.bytes);
    for _ in 0..4 {
        let st = nix::sys::statvfs::statvfs(target).map_err(|e| io_err(&p.image)(e.into()))?;
        let have = st.blocks() as u64 * st.fragment_size() as u64;
        if have >= want {
            return Ok(have);
        }
        let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
        let len = fs::metadata(&p.image).map_err(io_err(&p.image))?.len();
        let more = ((want - have) * 5 / 4).div_ceil(MIB) * MIB + MIB;
        grow(&p.image, len, len + more)?;
        mount(p, target)?;
    }
    let st = nix::sys::statvfs::statvfs(target).map_err(|e| io_err(&p.image)(e.into()))?;
    Ok(st.blocks() as u64 * st.fragment_size() as u64)
}

/// Copies the legacy directory into the image (mounted on `scratch` for
/// the copy), moving its ids into the instrument's range, then removes it.
fn migrate(p: &PersistSpec, ids: Option<IdRange>, scratch: &Path) -> Result<(), StorageError> {
    let used = tree_bytes(&p.legacy).map_err(io_err(&p.legacy))?;
    if used > p.bytes.max(1) {
        return Err(StorageError::LegacyTooBig {
            image: p.image.clone(),
            legacy: p.legacy.clone(),
            used,
            size: p.bytes,
        });
    }
    fs::create_dir_all(scratch).map_err(io_err(scratch))?;
    mount(p, scratch)?;
    let copied = copy_shifted(&p.legacy, scratch, ids).and_then(|n| {
        let d = fs::File::open(scratch)?;
        nix::unistd::syncfs(&d).map_err(io::Error::from)?;
        Ok(n)
    });
    let _ = nix::mount::umount2(scratch, nix::mount::MntFlags::MNT_DETACH);
    let copied = copied.map_err(io_err(&p.legacy))?;
    fs::remove_dir_all(&p.legacy).map_err(io_err(&p.legacy))?;
    warn!(
        image = %p.image.display(),
        from = %p.legacy.display(),
        entries = copied,
        "persistent storage migrated from a plain directory into its image, ids moved into the instrument's range"
    );
    Ok(())
}

fn tree_bytes(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let m = fs::symlink_metadata(e.path())?;
        total += m.blocks() * 512;
        if m.is_dir() {
            total += tree_bytes(&e.path())?;
        }
    }
    Ok(total)
}

/// The host id a legacy file's id becomes.
fn shift(id: u32, ids: Option<IdRange>) -> u32 {
    match ids {
        None => id,
        // Ids beyond the range become its "nobody".
        Some(r) => r.host(id).unwrap_or(r.base + 65534.min(r.count - 1)),
    }
}

/// Copies `from` into `to` (an existing directory): directories, regular
/// files and symlinks, with modes (setuid and setgid dropped), times and
/// shifted owners. Other file types are skipped. Returns how many entries
/// were copied.
fn copy_shifted(from: &Path, to: &Path, ids: Option<IdRange>) -> io::Result<u64> {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    let mut n = 0;
    for e in fs::read_dir(from)? {
        let e = e?;
        let src = e.path();
        let dst = to.join(e.file_name());
        let m = fs::symlink_metadata(&src)?;
        let ft = m.file_type();
        if ft.is_dir() {
            fs::create_dir(&dst)?;
            n += copy_shifted(&src, &dst, ids)?;
        } else if ft.is_file() {
            let mut r = fs::File::open(&src)?;
            let mut w = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&dst)?;
            io::copy(&mut r, &mut w)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
        } else {
            warn!(path = %src.display(), "not a file, directory or symlink; not migrated");
            continue;
        }
        std::os::unix::fs::lchown(&dst, Some(shift(m.uid(), ids)), Some(shift(m.gid(), ids)))?;
        if !ft.is_symlink() {
            fs::set_permissions(&dst, fs::Permissions::from_mode(m.mode() & 0o1777))?;
        }
        let at = |s: i64, ns: i64| TimeSpec::new(s, ns);
        utimensat(
            nix::fcntl::AT_FDCWD,
            &dst,
            &at(m.atime(), m.atime_nsec()),
            &at(m.mtime(), m.mtime_nsec()),
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(io::Error::from)?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_leave_at_least_the_declared_size() {
        // The measured ext4 overheads plus the margin for files' metadata.
        for (declared, overhead) in [(4, 3), (32, 9), (256, 36), (1024, 84)] {
            let img = image_bytes(declared * MIB);
            assert!(img >= (declared + overhead) * MIB, "{declared} MiB: {img}");
            assert_eq!(img % MIB, 0);
        }
    }

    #[test]
    fn ids_move_into_the_range() {
        let r = Some(IdRange {
            base: 1_000_000_000,
            count: 65536,
        });
        assert_eq!(shift(0, r), 1_000_000_000);
        assert_eq!(shift(1000, r), 1_000_001_000);
        assert_eq!(shift(70000, r), 1_000_065_534);
        assert_eq!(shift(5, None), 5);
    }
}
