//! The platform's only `unsafe` code: a small safe wrapper over liblxc
//! (through `lxc-sys`), the `pidfd_open` and `bpf` system calls, and (in
//! [`kernel`]) the mount API, loop devices, user namespaces and extended
//! attributes.
//!
//! liblxc hands out a `struct lxc_container *` whose methods are function
//! pointers in the struct. [`Container`] owns one reference (released with
//! `lxc_container_put` on drop) and exposes the handful of methods outpostd
//! needs, converting strings at the boundary. A `Container` is not `Send`:
//! it is made, used and dropped on one thread (a blocking-pool thread).
#![allow(unsafe_code)]

pub mod kernel;

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::ptr::NonNull;
use std::time::Duration;

use lxc_sys::lxc_container;

/// An error from liblxc, with whatever it said about it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LxcError(pub String);

/// One reference to a liblxc container object.
pub struct Container {
    ptr: NonNull<lxc_container>,
    name: String,
}

fn cstring(what: &str, s: &str) -> Result<CString, LxcError> {
    CString::new(s).map_err(|_| LxcError(format!("{what} {s:?} contains a NUL byte")))
}

macro_rules! method {
    ($self:ident, $m:ident) => {
        // SAFETY: `ptr` is a live container from `lxc_container_new`
        // (released only in Drop), and liblxc fills every method pointer
        // when it creates the struct; a missing one is a liblxc bug.
        unsafe { ($self.ptr.as_ref().$m).expect(concat!("liblxc provides ", stringify!($m))) }
    };
}

impl Container {
    /// Opens container `name` under `lxcpath`, loading its config file if
    /// there is one.
    pub fn open(name: &str, lxcpath: &Path) -> Result<Container, LxcError> {
        let cname = cstring("container name", name)?;
        let cpath = cstring("lxc path", &lxcpath.to_string_lossy())?;
        // SAFETY: both arguments are valid NUL-terminated strings that
        // outlive the call; liblxc copies them.
        let raw = unsafe { lxc_sys::lxc_container_new(cname.as_ptr(), cpath.as_ptr()) };
        let ptr = NonNull::new(raw).ok_or_else(|| {
            LxcError(format!(
                "liblxc could not open container {name:?} under {}",
                lxcpath.display()
            ))
        })?;
        Ok(Container {
            ptr,
            name: name.to_string(),
        })
    }

    fn raw(&self) -> *mut lxc_container {
        self.ptr.as_ptr()
    }

    /// liblxc's last error text for this container, if any.
    fn last_error(&self) -> String {
        // SAFETY: `ptr` is live; `error_string` is either NULL or a
        // NUL-terminated string owned by the container struct.
        let s = unsafe { self.ptr.as_ref().error_string };
        if s.is_null() {
            String::new()
        } else {
            // SAFETY: checked non-NULL above; liblxc keeps it valid until
            // the next call on this container, and we copy it now.
            unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
        }
    }

    /// Whether a config file exists for it.
    pub fn is_defined(&self) -> bool {
        let f = method!(self, is_defined);
        // SAFETY: `raw()` is a live container.
        unsafe { f(self.raw()) }
    }

    /// Whether it runs (RUNNING, FROZEN, STARTING or STOPPING).
    pub fn is_running(&self) -> bool {
        let f = method!(self, is_running);
        // SAFETY: `raw()` is a live container.
        unsafe { f(self.raw()) }
    }

    /// The state name liblxc reports (`STOPPED`, `RUNNING`, …).
    pub fn state(&self) -> String {
        let f = method!(self, state);
        // SAFETY: `raw()` is a live container; the result is a static
        // string in liblxc (or NULL).
        let s = unsafe { f(self.raw()) };
        if s.is_null() {
            return "UNKNOWN".into();
        }
        // SAFETY: non-NULL, NUL-terminated, static in liblxc.
        unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
    }

    /// The host PID of the container's init, while it runs.
    pub fn init_pid(&self) -> Option<i32> {
        let f = method!(self, init_pid);
        // SAFETY: `raw()` is a live container.
        let pid = unsafe { f(self.raw()) };
        (pid > 0).then_some(pid)
    }

    /// Starts the container daemonized (it outlives this process) with
    /// `argv` as its init, closing every inherited file descriptor.
    /// Returns once liblxc sees it running.
    pub fn start(&self, argv: &[String]) -> Result<(), LxcError> {
        let want_daemonize = method!(self, want_daemonize);
        let want_close_all_fds = method!(self, want_close_all_fds);
        let start = method!(self, start);
        let args: Vec<CString> = argv
            .iter()
            .map(|a| cstring("init argument", a))
            .collect::<Result<_, _>>()?;
        let mut ptrs: Vec<*mut libc::c_char> = args
            .iter()
            .map(|a| a.as_ptr() as *mut libc::c_char)
            .collect();
        ptrs.push(std::ptr::null_mut());
        // SAFETY: `raw()` is live; these setters only store a flag.
        let flags_ok =
            unsafe { want_daemonize(self.raw(), true) && want_close_all_fds(self.raw(), true) };
        if !flags_ok {
            return Err(LxcError(format!(
                "liblxc refused the daemonize/close-fds flags for {:?}: {}",
                self.name,
                self.last_error()
            )));
        }
        // SAFETY: `raw()` is live; `ptrs` is a NULL-terminated array of
        // NUL-terminated strings, all kept alive by `args` for the whole
        // call (liblxc copies them before it forks). useinit = 0: the init
        // is our own argv[0].
        let ok = unsafe { start(self.raw(), 0, ptrs.as_ptr()) };
        if ok {
            Ok(())
        } else {
            Err(LxcError(format!(
                "liblxc could not start {:?}: {}",
                self.name,
                self.last_error()
            )))
        }
    }

    /// Asks the container to stop (its `lxc.signal.halt` goes to init) and
    /// waits up to `timeout` for it. Returns whether it stopped.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        let f = method!(self, shutdown);
        let secs = timeout.as_secs().clamp(0, i32::MAX as u64) as i32;
        // SAFETY: `raw()` is a live container.
        unsafe { f(self.raw(), secs) }
    }

    /// Kills the container at once.
    pub fn stop(&self) -> bool {
        let f = method!(self, stop);
        // SAFETY: `raw()` is a live container.
        unsafe { f(self.raw()) }
    }

    /// Waits up to `timeout` for the container to reach `state`.
    pub fn wait(&self, state: &str, timeout: Duration) -> bool {
        let f = method!(self, wait);
        let Ok(cstate) = CString::new(state) else {
            return false;
        };
        let secs = timeout.as_secs().clamp(0, i32::MAX as u64) as i32;
        // SAFETY: `raw()` is live and `cstate` outlives the call.
        unsafe { f(self.raw(), cstate.as_ptr(), secs) }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // SAFETY: we own exactly one reference, taken in `open`.
        unsafe {
            lxc_sys::lxc_container_put(self.raw());
        }
    }
}

/// liblxc's version string.
pub fn lxc_version() -> String {
    // SAFETY: returns a pointer to a static NUL-terminated string.
    let v = unsafe { lxc_sys::lxc_get_version() };
    if v.is_null() {
        return "unknown".into();
    }
    // SAFETY: non-NULL static string.
    unsafe { CStr::from_ptr(v) }.to_string_lossy().into_owned()
}

/// A pidfd for `pid` (any process, not only a child): it becomes readable
/// when the process exits.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes (pid_t, unsigned int flags) and returns a new
    // file descriptor or -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until the process behind `pidfd` has exited.
pub async fn wait_pidfd(pidfd: OwnedFd) -> io::Result<()> {
    // SAFETY: `pidfd` is an owned, valid descriptor; it moves into the
    // AsyncFd, which keeps it open until dropped and never replaces it.
    let afd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
    }
    .map_err(|e| io::Error::other(e.to_string()))?;
    let _ready = afd.readable().await?;
    Ok(())
}

/// Restores the default SIGPIPE action, so a process whose output pipe
/// closes ends quietly instead of failing on it. Only for the short-lived
/// `start-container` helper, never the daemon.
pub fn default_sigpipe() {
    // SAFETY: setting a signal to SIG_DFL installs no handler code; it is
    // called at the start of main, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Loads the two-instruction tc classifier `r0 = TC_ACT_SHOT; exit` (a
/// `BPF_PROG_TYPE_SCHED_CLS` program for cls_bpf in direct-action mode):
/// it drops every packet it sees. The kernel here has no `act_gact`, so a
/// plain tc `drop` action does not exist; this is how a mirror interface
/// becomes receive-only. The returned descriptor keeps the program alive
/// until a filter holds it.
pub fn load_drop_all_program() -> io::Result<OwnedFd> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
    const TC_ACT_SHOT: i32 = 2;
    /// `struct bpf_insn`: code, dst/src registers, offset, immediate.
    #[repr(C)]
    struct Insn {
        code: u8,
        regs: u8,
        off: i16,
        imm: i32,
    }
    /// The leading fields of `union bpf_attr` for BPF_PROG_LOAD; the rest
    /// of the 128-byte union stays zero.
    #[repr(C)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        rest: [u8; 88],
    }
    let insns = [
        // BPF_ALU64 | BPF_MOV | BPF_K: r0 = TC_ACT_SHOT
        Insn {
            code: 0xb7,
            regs: 0,
            off: 0,
            imm: TC_ACT_SHOT,
        },
        // BPF_JMP | BPF_EXIT
        Insn {
            code: 0x95,
            regs: 0,
            off: 0,
            imm: 0,
        },
    ];
    let license = c"GPL";
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_SCHED_CLS,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        rest: [0; 88],
    };
    // SAFETY: bpf(BPF_PROG_LOAD, attr, size) reads `size` bytes of `attr`,
    // and through it `insn_cnt` instructions at `insns` and the
    // NUL-terminated license; all live on this stack frame until the call
    // returns. It writes nothing of ours (no log buffer is given) and
    // returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoad,
            std::mem::size_of::<ProgLoad>() as u32,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
