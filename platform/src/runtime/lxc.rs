//! The real runtime: liblxc containers under outpostd's own lxcpath.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tracing::{debug, info, warn};

use super::ffi::{self, Container};
use super::idmap::Mapper;
use super::lxc_config::{self, HostFacts};
use super::{ContainerSpec, Observed, Runtime, RuntimeError, rootfs};

/// Containers under `lxcpath`, one directory each.
///
/// Starting is delegated to a short-lived helper process (`outpostd
/// start-container`, see [`start_here`]), as LXD does with `forkstart`:
/// liblxc's daemonized start forks from the calling process and moves the
/// caller into the new container's monitor cgroup, which must not happen
/// to the long-running, multi-threaded daemon.
pub struct LxcRuntime {
    lxcpath: PathBuf,
    /// Where each container's root tree is built (`<instances>/<name>`).
    instances: PathBuf,
    facts: HostFacts,
    helper: PathBuf,
    mapper: Mapper,
}

impl LxcRuntime {
    /// A runtime keeping its containers under `lxcpath` and their trees
    /// under `instances` (both created if needed, 0700); `helper` is the
    /// `outpostd` binary that runs `start-container`.
    pub fn new(lxcpath: &Path, instances: &Path, helper: &Path) -> std::io::Result<LxcRuntime> {
        crate::paths::create_private_dir(lxcpath)?;
        crate::paths::create_private_dir(instances)?;
        let facts = HostFacts::detect();
        let mapper = Mapper::detect();
        debug!(lxcpath = %lxcpath.display(), ?facts, lxc = %ffi::lxc_version(), "lxc runtime ready");
        match &mapper {
            Mapper::Direct => info!(
                "user namespaces: liblxc writes each instrument's id map itself (no newuidmap on PATH)"
            ),
            Mapper::Shadow { newuidmap, .. } => info!(
                newuidmap = %newuidmap.display(),
                "user namespaces: liblxc maps ids through newuidmap/newgidmap; /etc/subuid and /etc/subgid must give root the instruments' ranges"
            ),
        }
        Ok(LxcRuntime {
            lxcpath: lxcpath.to_path_buf(),
            instances: instances.to_path_buf(),
            facts,
            helper: helper.to_path_buf(),
            mapper,
        })
    }

    pub fn lxcpath(&self) -> &Path {
        &self.lxcpath
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.lxcpath.join(name)
    }

    fn open(&self, name: &str) -> Result<Container, RuntimeError> {
        Container::open(name, &self.lxcpath).map_err(|e| RuntimeError::Container {
            name: name.into(),
            detail: e.0,
        })
    }
}

/// What `start-container` prints when the container's init had exited
/// before liblxc's start returned.
pub const EXITED_AT_ONCE: &str = "exited-at-once";

/// Starts container `name` from this process and returns its init's PID.
/// This is the body of the `outpostd start-container` helper; the daemon
/// itself never calls it (see [`LxcRuntime`]).
pub fn start_here(lxcpath: &Path, name: &str, argv: &[String]) -> Result<i32, RuntimeError> {
    let fail = |detail: String| RuntimeError::Container {
        name: name.to_string(),
        detail,
    };
    let c = Container::open(name, lxcpath).map_err(|e| fail(e.0))?;
    if c.is_running() {
        return Err(fail("it is already running".into()));
    }
    c.start(argv).map_err(|e| fail(e.0))?;
    c.init_pid().ok_or_else(|| RuntimeError::ExitedAtOnce {
        name: name.to_string(),
    })
}

/// The last error lines liblxc wrote to a container's log, to explain a
/// failed start.
fn lxc_log_errors(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let errors: Vec<&str> = text.lines().filter(|l| l.contains(" ERROR ")).collect();
    let tail = &errors[errors.len().saturating_sub(4)..];
    tail.iter()
        .map(|l| l.split_once(" - ").map_or(*l, |(_, m)| m.trim()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Cgroup directories liblxc made for container `name` (`lxc.payload.*`
/// and `lxc.monitor.*`) under every mounted hierarchy, deepest first.
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fstype = right.split_whitespace().next().unwrap_or("");
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        let Some(mnt) = left.split_whitespace().nth(4) else {
            continue;
        };
        let mnt = PathBuf::from(mnt);
        let mut bases = vec![mnt.clone()];
        // liblxc nests its cgroups under the caller's own cgroup when it
        // is not the root (e.g. under a systemd service).
        for l in own.lines() {
            if let Some(rel) = l.splitn(3, ':').nth(2) {
                let rel = rel.trim_start_matches('/');
                if !rel.is_empty() && mnt.join(rel).is_dir() {
                    bases.push(mnt.join(rel));
                }
            }
        }
        for b in bases {
            for kind in ["payload", "monitor"] {
                let d = b.join(format!("lxc.{kind}.{name}"));
                if d.is_dir() {
                    out.push(d);
                }
            }
        }
    }
    out
}

/// Removes the (empty) cgroups liblxc leaves behind for a stopped
/// container; liblxc 5 on cgroup v1 keeps `lxc.monitor.<name>`.
pub fn remove_cgroups(name: &str) {
    // The monitor leaves its cgroup a few milliseconds after the container
    // is reported stopped.
    for _ in 0..100 {
        let dirs = cgroup_dirs(name);
        if dirs.is_empty() {
            return;
        }
        for d in dirs {
            rmdir_tree(&d);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for d in cgroup_dirs(name) {
        warn!(instrument = name, path = %d.display(), "cgroup could not be removed (still in use?)");
    }
}

/// Removes a cgroup directory and its children, deepest first (cgroupfs
/// allows `rmdir` of a directory whose only files are its controls).
fn rmdir_tree(d: &Path) {
    if let Ok(entries) = fs::read_dir(d) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(d);
}

impl Runtime for LxcRuntime {
    fn define(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let dir = self.dir(&spec.name);
        let io = |path: &Path, source| RuntimeError::Io {
            name: spec.name.clone(),
            path: path.to_path_buf(),
            source,
        };
        fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let seccomp = dir.join("seccomp");
        fs::write(&seccomp, lxc_config::seccomp_policy()).map_err(|e| io(&seccomp, e))?;
        let config = dir.join("config");
        let tmp = dir.join("config.tmp");
        fs::write(&tmp, lxc_config::render(spec, self.facts, &seccomp)).map_err(|e| io(&tmp, e))?;
        fs::rename(&tmp, &config).map_err(|e| io(&config, e))?;
        Ok(())
    }

    fn start(&self, spec: &ContainerSpec) -> Result<i32, RuntimeError> {
        let _ = fs::remove_file(&spec.lxc_log);
        let fail = |detail: String| RuntimeError::Container {
            name: spec.name.clone(),
            detail,
        };
        if let Some(ids) = spec.ids
            && let Some(p) = self.mapper.problem(ids)
        {
            return Err(fail(p));
        }
        rootfs::build(spec, &spec.search).map_err(|source| RuntimeError::Rootfs {
            name: spec.name.clone(),
            source,
        })?;
        crate::failpoint::hit("after-rootfs");
        // The helper's output goes to a file, not a pipe: liblxc's forked
        // monitor may hold inherited descriptors for a while after the
        // helper exits, and the daemon should not wait for that. The file
        // has no name (O_TMPFILE), so a crash leaves nothing behind.
        let dir = self.dir(&spec.name);
        let mut out_file = tempfile::tempfile_in(&dir)
            .map_err(|e| fail(format!("cannot create a file in {}: {e}", dir.display())))?;
        let (out, err) = match (out_file.try_clone(), out_file.try_clone()) {
            (Ok(o), Ok(e)) => (o, e),
            (Err(e), _) | (_, Err(e)) => {
                return Err(fail(format!("cannot use a file in {}: {e}", dir.display())));
            }
        };
        let status = Command::new(&self.helper)
            .arg("start-container")
            .arg("--lxcpath")
            .arg(&self.lxcpath)
            .arg("--name")
            .arg(&spec.name)
            .arg("--")
            .args(spec.init_argv())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .map_err(|e| {
                fail(format!(
                    "cannot run {} start-container: {e}",
                    self.helper.display()
                ))
            })?;
        let mut said = String::new();
        let _ = out_file.seek(SeekFrom::Start(0));
        let _ = (&mut out_file).take(64 * 1024).read_to_string(&mut said);
        debug!(instrument = %spec.name, helper = %said.trim().replace('\n', "; "), "start-container helper finished");
        let pid = said
            .lines()
            .find_map(|l| l.trim().strip_prefix("init-pid "))
            .and_then(|p| p.parse::<i32>().ok());
        match pid {
            Some(pid) if status.success() && pid > 0 => Ok(pid),
            None if status.success() && said.lines().any(|l| l.trim() == EXITED_AT_ONCE) => {
                Err(RuntimeError::ExitedAtOnce {
                    name: spec.name.clone(),
                })
            }
            _ => {
                let mut why = said.trim().replace("outpostd: error: ", "");
                let log = lxc_log_errors(&spec.lxc_log);
                if !log.is_empty() {
                    why = format!("{why}: {log}");
                }
                Err(fail(why))
            }
        }
    }

    fn observe(&self, name: &str) -> Result<Observed, RuntimeError> {
        if !self.dir(name).join("config").exists() {
            return Ok(Observed::Absent);
        }
        let c = self.open(name)?;
        if !c.is_defined() {
            return Ok(Observed::Absent);
        }
        if c.is_running()
            && let Some(pid) = c.init_pid()
        {
            return Ok(Observed::Running { init_pid: pid });
        }
        Ok(Observed::Stopped)
    }

    fn defined_hash(&self, name: &str) -> Option<String> {
        let text = fs::read_to_string(self.dir(name).join("config")).ok()?;
        lxc_config::hash_of(&text)
    }

    fn stop(&self, name: &str, grace: Duration) -> Result<(), RuntimeError> {
        let c = self.open(name)?;
        if !c.is_running() {
            return Ok(());
        }
        if !c.shutdown(grace) {
            warn!(
                instrument = name,
                ?grace,
                "did not stop within its grace period; killing it"
            );
            if !c.stop() && c.is_running() {
                return Err(RuntimeError::Container {
                    name: name.into(),
                    detail: "could not be killed".into(),
                });
            }
        }
        c.wait("STOPPED", Duration::from_secs(10));
        Ok(())
    }

    fn wait_stopped(&self, name: &str, timeout: Duration) -> bool {
        match self.open(name) {
            Ok(c) => !c.is_running() || c.wait("STOPPED", timeout),
            Err(_) => true,
        }
    }

    fn destroy(&self, name: &str) -> Result<(), RuntimeError> {
        let dir = self.dir(name);
        let tree = |name: &str| {
            rootfs::teardown(&self.instances.join(name)).map_err(|source| RuntimeError::Rootfs {
                name: name.into(),
                source,
            })
        };
        if !dir.exists() {
            return tree(name);
        }
        let c = self.open(name)?;
        if c.is_running() {
            return Err(RuntimeError::Container {
                name: name.into(),
                detail: "is still running; stop it before removing it".into(),
            });
        }
        drop(c);
        remove_cgroups(name);
        tree(name)?;
        // Our containers own nothing in their directory but the config and
        // the seccomp policy (the tree was taken apart above), so removing
        // the directory is the whole of it; liblxc's destroy would also try
        // to remove the rootfs.
        fs::remove_dir_all(&dir).map_err(|source| RuntimeError::Io {
            name: name.into(),
            path: dir,
            source,
        })
    }

    fn list(&self) -> Result<Vec<String>, RuntimeError> {
        let mut names = Vec::new();
        let entries = fs::read_dir(&self.lxcpath).map_err(|source| RuntimeError::Io {
            name: "*".into(),
            path: self.lxcpath.clone(),
            source,
        })?;
        for e in entries.flatten() {
            if e.path().is_dir() {
                names.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }
}
