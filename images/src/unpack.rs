//! Verifying and unpacking an untrusted image archive.
//!
//! The archive is read twice from one open file: first to check its sha256
//! against the expected one (so a wrong file is refused before anything is
//! written), then to unpack it while hashing again (so what is unpacked is
//! exactly what was verified, even if someone writes to the file meanwhile).
//!
//! Unpacking refuses, naming the entry: absolute paths, `..`, anything
//! outside `manifest.toml` and `rootfs/`, symbolic links whose target leaves
//! the tree, hard links to anything but a file already unpacked, device
//! nodes, FIFOs, sparse files, setuid and setgid files, entries placed under
//! a non-directory, duplicate entries, and archives larger than the limits.
//! Nothing is ever followed: every parent directory is checked to be a real
//! directory, and files are created with `O_EXCL | O_NOFOLLOW`.
//!
//! On any error the destination directory is removed, so a failed import
//! leaves nothing behind.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;
use outpost_protocol::Manifest;
use outpost_protocol::manifest::ManifestError;
use tar::EntryType;

use crate::hash::{HashingReader, sha256_reader};

/// Bounds on what an archive may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Total bytes of file content.
    pub max_bytes: u64,
    /// Number of entries.
    pub max_entries: u64,
    /// Size of `manifest.toml`.
    pub max_manifest: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 4 << 30,
            max_entries: 200_000,
            max_manifest: 1 << 20,
        }
    }
}

/// Progress of an unpack, for a progress line.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// Bytes of the archive hashed so far, of `total`.
    Verifying { done: u64, total: u64 },
    /// Entries and file bytes unpacked so far.
    Unpacking { entries: u64, bytes: u64 },
}

/// What a successful unpack produced.
#[derive(Debug)]
pub struct Unpacked {
    pub manifest: Manifest,
    pub manifest_text: String,
    pub sha256: String,
    pub entries: u64,
    pub bytes: u64,
}

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("cannot read image archive {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "image archive {path} has sha256 {actual} but {expected} was expected: the file is damaged or is not the image you meant (fix: fetch the image again, or check the hash you gave)"
    )]
    HashMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error(
        "image archive {path} changed while it was imported (sha256 {first}, then {second}) (fix: import it again when nothing is writing to it)"
    )]
    Changed {
        path: PathBuf,
        first: String,
        second: String,
    },
    #[error(
        "image archive {path} is not a gzip-compressed tar archive: {detail} (fix: build images with outpost-image)"
    )]
    Format { path: PathBuf, detail: String },
    #[error(
        "image archive {path} is truncated or corrupt: {detail} (fix: copy or download it again; its sha256 matched, so it was damaged before it was hashed)"
    )]
    Damaged { path: PathBuf, detail: String },
    #[error(
        "image archive {path}: entry {entry:?} {problem}; the image is refused (fix: rebuild the image with outpost-image)"
    )]
    Entry {
        path: PathBuf,
        entry: String,
        problem: String,
    },
    #[error("image archive {path} unpacks to more than {limit} (fix: make the image smaller)")]
    TooLarge { path: PathBuf, limit: String },
    #[error(
        "image archive {path} has no manifest.toml at its top (fix: rebuild it with outpost-image)"
    )]
    NoManifest { path: PathBuf },
    #[error("image archive {path} has no rootfs/ tree (fix: rebuild it with outpost-image)")]
    NoRootfs { path: PathBuf },
    #[error("image archive {path}: {source}")]
    Manifest {
        path: PathBuf,
        source: ManifestError,
    },
    #[error(
        "image {image}: entrypoint {program} {problem} (fix: put the program into the image or correct entrypoint in manifest.toml)"
    )]
    Entrypoint {
        image: String,
        program: String,
        problem: String,
    },
    #[error("cannot unpack into {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Removes a directory when dropped, unless disarmed.
struct Cleanup {
    dir: PathBuf,
    armed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Verifies `archive` against `expected_sha256` and unpacks it into `dest`,
/// which must not exist yet. On error `dest` does not exist afterwards.
pub fn unpack(
    archive: &Path,
    expected_sha256: &str,
    dest: &Path,
    limits: Limits,
    mut progress: impl FnMut(Progress),
) -> Result<Unpacked, UnpackError> {
    let read_err = |source| UnpackError::Read {
        path: archive.to_path_buf(),
        source,
    };
    let mut file = File::open(archive).map_err(read_err)?;
    let total = file.metadata().map_err(read_err)?.len();

    let first = sha256_reader(&mut file, |done| {
        progress(Progress::Verifying { done, total })
    })
    .map_err(read_err)?;
    if first != expected_sha256 {
        return Err(UnpackError::HashMismatch {
            path: archive.to_path_buf(),
            expected: expected_sha256.to_string(),
            actual: first,
        });
    }
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;

    fs::create_dir(dest).map_err(|source| UnpackError::Write {
        path: dest.to_path_buf(),
        source,
    })?;
    let mut cleanup = Cleanup {
        dir: dest.to_path_buf(),
        armed: true,
    };

    let mut hashing = HashingReader::new(file);
    let mut magic = [0u8; 2];
    hashing.read_exact(&mut magic).map_err(read_err)?;
    if magic != [0x1f, 0x8b] {
        return Err(UnpackError::Format {
            path: archive.to_path_buf(),
            detail: "it does not start with the gzip magic bytes".into(),
        });
    }
    let gz = GzDecoder::new(io::Cursor::new(magic).chain(&mut hashing));
    let mut u = Unpacker {
        archive,
        dest,
        limits,
        entries: 0,
        bytes: 0,
        manifest_text: None,
        saw_rootfs: false,
        base_tree: false,
        notes: Vec::new(),
    };
    u.run(gz, &mut progress)?;
    let (entries, bytes) = (u.entries, u.bytes);
    let manifest_text = u.manifest_text.take();
    let saw_rootfs = u.saw_rootfs;

    let second = hashing.finish().map_err(read_err)?;
    if second != first {
        return Err(UnpackError::Changed {
            path: archive.to_path_buf(),
            first,
            second,
        });
    }

    let manifest_text = manifest_text.ok_or_else(|| UnpackError::NoManifest {
        path: archive.to_path_buf(),
    })?;
    if !saw_rootfs {
        return Err(UnpackError::NoRootfs {
            path: archive.to_path_buf(),
        });
    }
    let manifest =
        Manifest::parse_valid(&manifest_text).map_err(|source| UnpackError::Manifest {
            path: archive.to_path_buf(),
            source,
        })?;
    check_entrypoint(&dest.join("rootfs"), &manifest)?;

    cleanup.armed = false;
    Ok(Unpacked {
        manifest,
        manifest_text,
        sha256: first,
        entries,
        bytes,
    })
}

/// Reads the manifest of image archive `archive` without unpacking it
/// (the fleet learns what an image is when it is uploaded; the sensor that
/// imports it verifies and unpacks all of it). The manifest is checked as
/// an import checks it.
pub fn read_manifest(archive: &Path) -> Result<(Manifest, String), UnpackError> {
    let read_err = |source| UnpackError::Read {
        path: archive.to_path_buf(),
        source,
    };
    let format = |detail: String| UnpackError::Format {
        path: archive.to_path_buf(),
        detail,
    };
    let file = File::open(archive).map_err(read_err)?;
    let mut tar = tar::Archive::new(GzDecoder::new(io::BufReader::new(file)));
    let max = Limits::default().max_manifest;
    for entry in tar.entries().map_err(|e| format(e.to_string()))? {
        let entry = entry.map_err(|e| format(e.to_string()))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if normal_components(&raw).ok().as_deref() != Some(&["manifest.toml".to_string()][..]) {
            continue;
        }
        if entry.size() > max {
            return Err(UnpackError::Entry {
                path: archive.to_path_buf(),
                entry: raw,
                problem: format!("is more than {max} bytes, more than a manifest may be"),
            });
        }
        let mut text = String::new();
        entry
            .take(max)
            .read_to_string(&mut text)
            .map_err(|e| format(format!("manifest.toml is not UTF-8 text: {e}")))?;
        let manifest = Manifest::parse_valid(&text).map_err(|source| UnpackError::Manifest {
            path: archive.to_path_buf(),
            source,
        })?;
        return Ok((manifest, text));
    }
    Err(UnpackError::NoManifest {
        path: archive.to_path_buf(),
    })
}

/// Whether a read error means the archive's bytes are cut short or
/// damaged (rather than not being a gzip-compressed tar at all): the end
/// came too early, or the compressed stream does not decode.
fn is_damage(e: &io::Error) -> bool {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        return true;
    }
    let text = e.to_string();
    [
        "incomplete deflate stream",
        "corrupt deflate stream",
        "invalid checksum",
        "unexpected end",
        "entire block",
    ]
    .iter()
    .any(|t| text.contains(t))
}

/// Verifies a base-tree tarball (an Alpine minirootfs, gzip-compressed)
/// against its pinned sha256 and unpacks it into `<work>/rootfs`, which
/// must not exist yet. Returns notes on what was skipped or changed.
pub fn unpack_base(
    tarball: &Path,
    expected_sha256: &str,
    work: &Path,
) -> Result<Vec<String>, UnpackError> {
    let read_err = |source| UnpackError::Read {
        path: tarball.to_path_buf(),
        source,
    };
    let bytes = fs::read(tarball).map_err(read_err)?;
    let actual = crate::hash::sha256_bytes(&bytes);
    if actual != expected_sha256 {
        return Err(UnpackError::HashMismatch {
            path: tarball.to_path_buf(),
            expected: expected_sha256.to_string(),
            actual,
        });
    }
    let rootfs = work.join("rootfs");
    fs::create_dir(&rootfs).map_err(|source| UnpackError::Write {
        path: rootfs.clone(),
        source,
    })?;
    let mut cleanup = Cleanup {
        dir: rootfs,
        armed: true,
    };
    let mut u = Unpacker {
        archive: tarball,
        dest: work,
        limits: Limits::default(),
        entries: 0,
        bytes: 0,
        manifest_text: None,
        saw_rootfs: false,
        base_tree: true,
        notes: Vec::new(),
    };
    u.run(GzDecoder::new(&bytes[..]), &mut |_| {})?;
    cleanup.armed = false;
    Ok(u.notes)
}

struct Unpacker<'a> {
    archive: &'a Path,
    dest: &'a Path,
    limits: Limits,
    entries: u64,
    bytes: u64,
    manifest_text: Option<String>,
    saw_rootfs: bool,
    /// Base-tree mode (builder): the archive is a bare root tree, put under
    /// `rootfs/`; device nodes and FIFOs are skipped and setuid/setgid bits
    /// stripped (each noted) instead of refusing the whole archive.
    base_tree: bool,
    notes: Vec<String>,
}

impl Unpacker<'_> {
    fn refuse(&self, entry: &str, problem: impl Into<String>) -> UnpackError {
        UnpackError::Entry {
            path: self.archive.to_path_buf(),
            entry: entry.to_string(),
            problem: problem.into(),
        }
    }

    fn format(&self, e: io::Error) -> UnpackError {
        if is_damage(&e) {
            return UnpackError::Damaged {
                path: self.archive.to_path_buf(),
                detail: e.to_string(),
            };
        }
        UnpackError::Format {
            path: self.archive.to_path_buf(),
            detail: e.to_string(),
        }
    }

    fn write_err(&self, path: &Path, source: io::Error) -> UnpackError {
        UnpackError::Write {
            path: path.to_path_buf(),
            source,
        }
    }

    fn run(
        &mut self,
        r: impl Read,
        progress: &mut impl FnMut(Progress),
    ) -> Result<(), UnpackError> {
        let mut ar = tar::Archive::new(r);
        for entry in ar.entries().map_err(|e| self.format(e))? {
            let mut entry = entry.map_err(|e| self.format(e))?;
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                return Err(UnpackError::TooLarge {
                    path: self.archive.to_path_buf(),
                    limit: format!("{} entries", self.limits.max_entries),
                });
            }
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            if self.base_tree && (raw == "./" || raw == ".") {
                continue;
            }
            let mut parts = normal_components(&raw).map_err(|p| self.refuse(&raw, p))?;
            if self.base_tree {
                parts.insert(0, "rootfs".into());
            }
            self.entry(&raw, &parts, &mut entry)?;
            if self.entries % 500 == 0 {
                progress(Progress::Unpacking {
                    entries: self.entries,
                    bytes: self.bytes,
                });
            }
        }
        progress(Progress::Unpacking {
            entries: self.entries,
            bytes: self.bytes,
        });
        Ok(())
    }

    fn entry<R: Read>(
        &mut self,
        raw: &str,
        parts: &[String],
        entry: &mut tar::Entry<R>,
    ) -> Result<(), UnpackError> {
        let kind = entry.header().entry_type();
        let mut mode = entry.header().mode().map_err(|e| self.format(e))?;
        if self.base_tree {
            if matches!(kind, EntryType::Char | EntryType::Block | EntryType::Fifo) {
                self.notes.push(format!(
                    "skipped {raw}: {kind:?} nodes do not go into images"
                ));
                return Ok(());
            }
            if mode & 0o6000 != 0 && kind != EntryType::Directory {
                self.notes
                    .push(format!("stripped setuid/setgid from {raw}"));
                mode &= !0o6000;
            }
        }

        match parts {
            [top] if top == "manifest.toml" && !self.base_tree => {
                if kind != EntryType::Regular && kind != EntryType::Continuous {
                    return Err(self.refuse(raw, "is not a regular file"));
                }
                if self.manifest_text.is_some() {
                    return Err(self.refuse(raw, "appears twice"));
                }
                let size = entry.size();
                if size > self.limits.max_manifest {
                    return Err(
                        self.refuse(raw, format!("is {size} bytes, more than a manifest may be"))
                    );
                }
                let mut text = String::new();
                entry
                    .take(self.limits.max_manifest)
                    .read_to_string(&mut text)
                    .map_err(|e| self.refuse(raw, format!("is not UTF-8 text: {e}")))?;
                fs::write(self.dest.join("manifest.toml"), &text)
                    .map_err(|e| self.write_err(&self.dest.join("manifest.toml"), e))?;
                self.manifest_text = Some(text);
                return Ok(());
            }
            [top, ..] if top == "rootfs" => self.saw_rootfs = true,
            _ => {
                return Err(self.refuse(raw, "is outside manifest.toml and rootfs/"));
            }
        }

        if mode & 0o6000 != 0 && kind != EntryType::Directory {
            return Err(self.refuse(raw, "is setuid or setgid"));
        }
        let target = self.prepare_parents(raw, parts)?;

        match kind {
            EntryType::Directory => {
                match fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(self.refuse(raw, "appears twice")),
                    Err(_) => fs::create_dir(&target).map_err(|e| self.write_err(&target, e))?,
                }
                fs::set_permissions(&target, fs::Permissions::from_mode(mode & 0o1777))
                    .map_err(|e| self.write_err(&target, e))?;
            }
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.size();
                if self.bytes + size > self.limits.max_bytes {
                    return Err(UnpackError::TooLarge {
                        path: self.archive.to_path_buf(),
                        limit: format!("{} bytes", self.limits.max_bytes),
                    });
                }
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(mode & 0o777)
                    .open(&target)
                    .map_err(|e| {
                        if e.kind() == io::ErrorKind::AlreadyExists {
                            self.refuse(raw, "appears twice")
                        } else {
                            self.write_err(&target, e)
                        }
                    })?;
                let copied = io::copy(&mut entry.take(size), &mut f).map_err(|e| self.format(e))?;
                self.bytes += copied;
                // The mode given at open is filtered by the umask.
                fs::set_permissions(&target, fs::Permissions::from_mode(mode & 0o777))
                    .map_err(|e| self.write_err(&target, e))?;
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(|e| self.format(e))?
                    .ok_or_else(|| self.refuse(raw, "is a link without a target"))?;
                let link = link.to_string_lossy().into_owned();
                // parts[0] is "rootfs"; the link lives in parts[1..len-1].
                let dir = &parts[1..parts.len() - 1];
                if !link_stays_inside(dir, &link) {
                    return Err(self.refuse(
                        raw,
                        format!("is a link to {link:?}, which leaves the image"),
                    ));
                }
                std::os::unix::fs::symlink(&link, &target).map_err(|e| {
                    if e.kind() == io::ErrorKind::AlreadyExists {
                        self.refuse(raw, "appears twice")
                    } else {
                        self.write_err(&target, e)
                    }
                })?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(|e| self.format(e))?
                    .ok_or_else(|| self.refuse(raw, "is a hard link without a target"))?;
                let link = link.to_string_lossy().into_owned();
                let mut lparts = normal_components(&link).map_err(|p| {
                    self.refuse(raw, format!("is a hard link to {link:?}, whose path {p}"))
                })?;
                if self.base_tree {
                    lparts.insert(0, "rootfs".into());
                }
                if lparts.first().map(String::as_str) != Some("rootfs") {
                    return Err(self.refuse(
                        raw,
                        format!("is a hard link to {link:?}, which is not in rootfs/"),
                    ));
                }
                let source = lparts
                    .iter()
                    .fold(self.dest.to_path_buf(), |p, c| p.join(c));
                match fs::symlink_metadata(&source) {
                    Ok(m) if m.is_file() => {}
                    _ => {
                        return Err(self.refuse(
                            raw,
                            format!(
                                "is a hard link to {link:?}, which is not a file unpacked before it"
                            ),
                        ));
                    }
                }
                fs::hard_link(&source, &target).map_err(|e| {
                    if e.kind() == io::ErrorKind::AlreadyExists {
                        self.refuse(raw, "appears twice")
                    } else {
                        self.write_err(&target, e)
                    }
                })?;
            }
            EntryType::Char | EntryType::Block => {
                return Err(self.refuse(raw, "is a device node"));
            }
            EntryType::Fifo => return Err(self.refuse(raw, "is a FIFO")),
            EntryType::GNUSparse => return Err(self.refuse(raw, "is a sparse file")),
            other => {
                return Err(self.refuse(raw, format!("has unsupported type {other:?}")));
            }
        }
        Ok(())
    }

    /// Makes sure every parent of the entry is a real directory inside
    /// `dest` (creating missing ones), and returns the entry's host path.
    fn prepare_parents(&self, raw: &str, parts: &[String]) -> Result<PathBuf, UnpackError> {
        let mut p = self.dest.to_path_buf();
        for part in &parts[..parts.len() - 1] {
            p.push(part);
            match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(self.refuse(
                        raw,
                        format!(
                            "is placed under {:?}, which is not a directory",
                            p.strip_prefix(self.dest).unwrap_or(&p)
                        ),
                    ));
                }
                Err(_) => {
                    fs::create_dir(&p).map_err(|e| self.write_err(&p, e))?;
                }
            }
        }
        p.push(&parts[parts.len() - 1]);
        Ok(p)
    }
}

/// Splits an archive path into plain components, refusing absolute paths
/// and `..`. A leading `./` is allowed.
fn normal_components(raw: &str) -> Result<Vec<String>, String> {
    if raw.is_empty() {
        return Err("has an empty path".into());
    }
    let mut out = Vec::new();
    for c in Path::new(raw).components() {
        match c {
            Component::Normal(s) => out.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err("has an absolute path".into());
            }
            Component::ParentDir => return Err("has '..' in its path".into()),
        }
    }
    if out.is_empty() {
        return Err("has an empty path".into());
    }
    Ok(out)
}

/// Whether a symbolic link in directory `dir` (components below the image
/// root) pointing at `target` resolves, lexically, inside the image root.
/// Absolute targets are taken relative to the image root, as the container
/// sees them.
pub fn link_stays_inside(dir: &[String], target: &str) -> bool {
    let mut at: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        dir.iter().map(String::as_str).collect()
    };
    for c in Path::new(target).components() {
        match c {
            Component::Normal(s) => match s.to_str() {
                Some(s) => at.push(s),
                None => return false,
            },
            Component::ParentDir => {
                if at.pop().is_none() {
                    return false;
                }
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    true
}

/// Resolves `path` inside `root` the way the container would, following
/// links within the tree; `None` if it does not exist or loops.
pub fn resolve_in_root(root: &Path, path: &str) -> Option<PathBuf> {
    let mut pending: Vec<String> = Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .rev()
        .collect();
    let mut at: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        if c == ".." {
            at.pop();
            continue;
        }
        let candidate = at
            .iter()
            .fold(root.to_path_buf(), |p, c| p.join(c))
            .join(&c);
        let meta = fs::symlink_metadata(&candidate).ok()?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let target = fs::read_link(&candidate).ok()?;
            let t = target.to_string_lossy();
            if t.starts_with('/') {
                at.clear();
            }
            for part in Path::new(&*t).components().rev() {
                match part {
                    Component::Normal(s) => pending.push(s.to_string_lossy().into_owned()),
                    Component::ParentDir => pending.push("..".into()),
                    _ => {}
                }
            }
        } else {
            at.push(c);
        }
    }
    Some(at.iter().fold(root.to_path_buf(), |p, c| p.join(c)))
}

fn check_entrypoint(rootfs: &Path, m: &Manifest) -> Result<(), UnpackError> {
    let program = &m.entrypoint[0];
    let problem = match resolve_in_root(rootfs, program) {
        None => Some("is not in the image".to_string()),
        Some(p) => match fs::metadata(&p) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => None,
            Ok(meta) if meta.is_file() => Some("is not executable".into()),
            Ok(_) => Some("is not a file".into()),
            Err(_) => Some("is not in the image".into()),
        },
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(UnpackError::Entrypoint {
            image: m.name.clone(),
            program: program.clone(),
            problem,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn components() {
        assert_eq!(
            normal_components("./rootfs/bin/sh").unwrap(),
            v(&["rootfs", "bin", "sh"])
        );
        assert!(
            normal_components("/etc/passwd")
                .unwrap_err()
                .contains("absolute")
        );
        assert!(
            normal_components("rootfs/../../x")
                .unwrap_err()
                .contains("..")
        );
        assert!(normal_components("").is_err());
        assert!(normal_components("./").is_err());
    }

    #[test]
    fn links() {
        assert!(link_stays_inside(&v(&["bin"]), "busybox"));
        assert!(link_stays_inside(&v(&["bin"]), "/bin/busybox"));
        assert!(link_stays_inside(&v(&["usr", "bin"]), "../../bin/busybox"));
        assert!(!link_stays_inside(
            &v(&["usr", "bin"]),
            "../../../etc/shadow"
        ));
        assert!(!link_stays_inside(&v(&[]), ".."));
        assert!(!link_stays_inside(&v(&["a"]), "/../../etc"));
        assert!(link_stays_inside(&v(&["a"]), "./b/../c"));
    }

    #[test]
    fn resolves_links_inside_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::write(root.join("bin/busybox"), b"x").unwrap();
        std::os::unix::fs::symlink("/bin/busybox", root.join("usr/bin/sh")).unwrap();
        std::os::unix::fs::symlink("../../bin/busybox", root.join("usr/bin/rel")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert_eq!(
            resolve_in_root(root, "/usr/bin/sh"),
            Some(root.join("bin/busybox"))
        );
        assert_eq!(
            resolve_in_root(root, "/usr/bin/rel"),
            Some(root.join("bin/busybox"))
        );
        assert_eq!(resolve_in_root(root, "/loop"), None);
        assert_eq!(resolve_in_root(root, "/missing"), None);
    }
}
