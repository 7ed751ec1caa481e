//! Kernel calls that neither `nix` nor `std` wrap: the new mount API
//! (idmapped and detached bind mounts), loop devices, a user namespace to
//! hand to `mount_setattr`, and extended attributes (POSIX ACLs). Each is a
//! small safe function; every `unsafe` block says why it is sound.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} contains a NUL byte", p.display()),
        )
    })
}

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a name contains a NUL byte"))
}

/// Takes a new descriptor the kernel returned (or -1 and errno).
fn fd_result(ret: libc::c_long) -> io::Result<OwnedFd> {
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}

fn unit_result(ret: libc::c_long) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The child of [`userns_fd`]: waits until the parent writes to the pipe
/// (its own copy of the write end keeps the pipe open, so EOF never
/// comes), then exits. Only async-signal-safe calls: it runs in a copy of a
/// multi-threaded process.
extern "C" fn hold_userns(arg: *mut libc::c_void) -> libc::c_int {
    let fd = arg as usize as libc::c_int;
    let mut b = 0u8;
    // SAFETY: `fd` is the read end of a pipe the parent made before the
    // clone, and `b` is a valid one-byte buffer on this stack.
    unsafe {
        libc::read(fd, (&mut b as *mut u8).cast(), 1);
        libc::_exit(0)
    }
}

/// A user namespace whose ids 0..`count` map to host ids `base`.. (uids
/// and gids alike), as a descriptor for `MOUNT_ATTR_IDMAP`. A short-lived
/// child is cloned into a new user namespace, its maps are written from
/// here (as root, so no `newuidmap` is involved), the namespace is opened,
/// and the child is told to exit.
pub fn userns_fd(base: u32, count: u32) -> io::Result<OwnedFd> {
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let mut stack = vec![0u8; 64 * 1024];
    // The stack grows down; its top must be 16-byte aligned.
    let top = {
        let end = stack.as_mut_ptr() as usize + stack.len();
        (end & !15) as *mut libc::c_void
    };
    // SAFETY: clone without CLONE_VM makes a copy of this process (like
    // fork) that runs `hold_userns` on `stack`, which outlives the call in
    // the parent and is a separate copy in the child. The child only reads
    // the pipe and exits. SIGCHLD lets us wait for it.
    let pid = unsafe {
        libc::clone(
            hold_userns,
            top,
            libc::CLONE_NEWUSER | libc::SIGCHLD,
            rd.as_raw_fd() as usize as *mut libc::c_void,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    let res = (|| {
        let map = format!("0 {base} {count}\n");
        std::fs::write(format!("/proc/{pid}/uid_map"), &map)?;
        std::fs::write(format!("/proc/{pid}/gid_map"), &map)?;
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/user"))?;
        Ok(OwnedFd::from(ns))
    })();
    let _ = nix::unistd::write(&wr, b"x");
    drop(wr);
    drop(rd);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    drop(stack);
    res
}

/// A detached copy of the mount tree at `path` (`open_tree` with
/// `OPEN_TREE_CLONE`), to be changed and attached with [`set_attrs`] and
/// [`attach_at`]. `recursive` takes submounts too.
pub fn clone_tree(path: &Path, recursive: bool) -> io::Result<OwnedFd> {
    let p = cpath(path)?;
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: open_tree(dirfd, path, flags) reads the NUL-terminated path,
    // which lives until the call returns, and returns a new descriptor.
    fd_result(unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, p.as_ptr(), flags) })
}

/// Sets and clears `MOUNT_ATTR_*` flags on a detached tree; with
/// `userns`, the tree becomes idmapped through that namespace's maps.
pub fn set_attrs(
    tree: BorrowedFd<'_>,
    set: u64,
    clear: u64,
    userns: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let mut attr = libc::mount_attr {
        attr_set: set,
        attr_clr: clear,
        propagation: libc::MS_PRIVATE,
        userns_fd: 0,
    };
    if let Some(ns) = userns {
        attr.attr_set |= libc::MOUNT_ATTR_IDMAP;
        attr.userns_fd = ns.as_raw_fd() as u64;
    }
    let empty = c"";
    // SAFETY: mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, attr,
    // size) reads `size` bytes of `attr`, a live, fully initialised
    // struct on this stack, and the empty NUL-terminated path.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    })
}

/// Attaches a detached tree on the file or directory `target` refers to
/// (an `O_PATH` descriptor opened without following symlinks), so no
/// path is resolved again between checking the target and mounting on it.
pub fn attach_at(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()> {
    let empty = c"";
    // SAFETY: move_mount(from_fd, "", to_fd, "", F_EMPTY_PATH |
    // T_EMPTY_PATH) reads two empty NUL-terminated strings; both
    // descriptors are live for the call.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
}

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` from `<linux/loop.h>`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` from `<linux/loop.h>`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Attaches `backing` (an open image file) to a free loop device with
/// `LO_FLAGS_AUTOCLEAR`: the device is released by itself once the last
/// mount of it is gone. Returns the device's path and an open descriptor
/// of it (keep it until the device is mounted). `label` is shown by
/// `losetup -a`.
pub fn loop_attach(backing: BorrowedFd<'_>, label: &str) -> io::Result<(PathBuf, OwnedFd)> {
    let ctl = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    let mut last = io::Error::other("no loop device could be had");
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device
        // number (or -1); it touches no memory of ours.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        {
            Ok(d) => d,
            Err(e) => {
                last = e;
                std::thread::sleep(std::time::Duration::from_millis(5));
                continue;
            }
        };
        let mut name = [0u8; 64];
        for (d, s) in name.iter_mut().zip(label.bytes().take(63)) {
            *d = s;
        }
        let cfg = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 0,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: 0,
                lo_sizelimit: 0,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: LO_FLAGS_AUTOCLEAR,
                lo_file_name: name,
                lo_crypt_name: [0; 64],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which `cfg`
        // is (same layout, repr(C)), alive on this stack for the call; the
        // backing descriptor in it is live.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &cfg as *const LoopConfig) };
        if r == 0 {
            return Ok((path, OwnedFd::from(dev)));
        }
        last = io::Error::last_os_error();
        // Another process took this device between the two calls.
        if last.raw_os_error() != Some(libc::EBUSY) {
            return Err(last);
        }
    }
    Err(last)
}

/// An extended attribute of `path` (not following a final symlink), or
/// `None` if it has none of that name.
pub fn get_xattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let p = cpath(path)?;
    let n = cstr(OsStr::new(name))?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: lgetxattr reads the two NUL-terminated strings and writes at
    // most `buf.len()` bytes into `buf`, which lives for the call.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) => Ok(None),
            _ => Err(e),
        };
    }
    buf.truncate(r as usize);
    Ok(Some(buf))
}

/// Sets an extended attribute of `path` (not following a final symlink).
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let p = cpath(path)?;
    let n = cstr(OsStr::new(name))?;
    // SAFETY: lsetxattr reads the two NUL-terminated strings and
    // `value.len()` bytes of `value`, all alive for the call.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    unit_result(r as libc::c_long)
}
