//! The base tree an image is built on.
//!
//! By default it is Debian's `busybox-static` (`/bin/busybox`), so images
//! build offline: the one static binary plus a link for each applet and a
//! minimal `/etc`. An Alpine minirootfs tarball can be used instead; it is
//! given by path with a pinned sha256 and unpacked with the same checks as
//! an image import.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::elf;

/// Where the base tree comes from.
#[derive(Debug, Clone)]
pub enum Base {
    /// A static busybox binary (Debian's `busybox-static`).
    Busybox(PathBuf),
    /// An Alpine minirootfs `.tar.gz` and its expected sha256.
    Alpine { tarball: PathBuf, sha256: String },
}

impl Default for Base {
    fn default() -> Self {
        Base::Busybox(PathBuf::from("/bin/busybox"))
    }
}

/// Directories every Outpost image has (mode, path).
const SKELETON_DIRS: &[(u32, &str)] = &[
    (0o755, "bin"),
    (0o755, "sbin"),
    (0o755, "usr/bin"),
    (0o755, "usr/sbin"),
    (0o755, "etc"),
    (0o755, "dev"),
    (0o555, "proc"),
    (0o555, "sys"),
    (0o1777, "tmp"),
    (0o755, "run"),
    (0o755, "run/instrument"),
    (0o755, "var/lib/instrument"),
    (0o700, "root"),
    // Mount points for outpost-init and its status directory.
    (0o755, ".outpost"),
    (0o755, ".outpost/status"),
];

const SKELETON_FILES: &[(&str, &str)] = &[
    (
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    ),
    ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
    ("etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n"),
    // Placeholders for the bind mounts of the platform's outpost-init and
    // of the instrument's bus credentials.
    (".outpost/init", ""),
    (".outpost/nats.nkey", ""),
];

/// Fills `<work>/rootfs` (which must not exist) from `base`. `say` gets one
/// line per notable step.
pub fn populate(base: &Base, work: &Path, say: &mut dyn FnMut(&str)) -> Result<(), String> {
    let rootfs = work.join("rootfs");
    match base {
        Base::Busybox(bb) => {
            elf::check_static(bb).map_err(|e| {
                format!("{e}\n(fix: install Debian's busybox-static, or pass --busybox with a static busybox)")
            })?;
            fs::create_dir(&rootfs)
                .map_err(|e| format!("cannot create {}: {e}", rootfs.display()))?;
            skeleton(&rootfs)?;
            let dest = rootfs.join("bin/busybox");
            fs::copy(bb, &dest).map_err(|e| format!("cannot copy {}: {e}", bb.display()))?;
            fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))
                .map_err(|e| e.to_string())?;
            let applets = list_applets(bb)?;
            let mut made = 0;
            for a in &applets {
                let rel = a.trim_start_matches('/');
                if rel.is_empty() || rel.split('/').any(|c| c == ".." || c == ".") {
                    continue;
                }
                let p = rootfs.join(rel);
                if fs::symlink_metadata(&p).is_ok() {
                    continue;
                }
                if let Some(parent) = p.parent() {
                    fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                }
                std::os::unix::fs::symlink("/bin/busybox", &p)
                    .map_err(|e| format!("cannot link {}: {e}", p.display()))?;
                made += 1;
            }
            fs::write(
                rootfs.join("etc/os-release"),
                "NAME=\"Outpost busybox base\"\nID=outpost-busybox\n",
            )
            .map_err(|e| e.to_string())?;
            say(&format!(
                "base: busybox from {} with {made} applets",
                bb.display()
            ));
        }
        Base::Alpine { tarball, sha256 } => {
            let notes =
                crate::unpack::unpack_base(tarball, sha256, work).map_err(|e| e.to_string())?;
            for n in &notes {
                say(&format!("base: {n}"));
            }
            skeleton(&rootfs)?;
            say(&format!(
                "base: alpine minirootfs {} (sha256 {sha256})",
                tarball.display()
            ));
        }
    }
    Ok(())
}

fn skeleton(rootfs: &Path) -> Result<(), String> {
    for (mode, d) in SKELETON_DIRS {
        let p = rootfs.join(d);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => {
                return Err(format!(
                    "base tree has {d} as a non-directory; Outpost needs it to be a directory"
                ));
            }
            Err(_) => {}
        }
        fs::create_dir_all(&p).map_err(|e| format!("cannot create {}: {e}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).map_err(|e| e.to_string())?;
    }
    for (f, content) in SKELETON_FILES {
        let p = rootfs.join(f);
        if fs::symlink_metadata(&p).is_err() {
            fs::write(&p, content).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o644))
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn list_applets(bb: &Path) -> Result<Vec<String>, String> {
    let out = Command::new(bb)
        .arg("--list-full")
        .output()
        .map_err(|e| format!("cannot run {} --list-full: {e}", bb.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} --list-full failed: {}",
            bb.display(),
            out.status
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| format!("/{}", l.trim()))
        .collect())
}
