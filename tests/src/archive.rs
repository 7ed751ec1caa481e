//! Image archives for tests: variants of the example image, and hand-made
//! (also malicious) archives whose headers bypass the tar crate's checks.

use std::io::Write;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use outpost_protocol::Manifest;

use crate::ImageFile;

/// A copy of `base` with its manifest changed by `edit`, packed into
/// `out_dir` (same rootfs, so the same binaries).
pub fn variant(base: &ImageFile, out_dir: &Path, edit: impl FnOnce(&mut Manifest)) -> ImageFile {
    variant_with(base, out_dir, edit, &[])
}

/// [`variant`] that also adds files `(path in rootfs, mode, content)`.
pub fn variant_with(
    base: &ImageFile,
    out_dir: &Path,
    edit: impl FnOnce(&mut Manifest),
    files: &[(&str, u32, &[u8])],
) -> ImageFile {
    let work = tempfile::tempdir_in(out_dir).expect("temp dir");
    let tree = work.path().join("tree");
    let u = outpost_image::unpack(
        &base.archive,
        &base.sha256,
        &tree,
        Default::default(),
        |_| {},
    )
    .expect("unpack base image");
    let mut m = u.manifest;
    edit(&mut m);
    for (path, mode, content) in files {
        let p = tree.join("rootfs").join(path.trim_start_matches('/'));
        std::fs::write(&p, content).expect("write extra file");
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(*mode))
            .expect("chmod extra file");
    }
    let packed = outpost_image::pack(&tree.join("rootfs"), &m, out_dir).expect("pack variant");
    ImageFile {
        archive: packed.archive,
        sha256: packed.sha256,
    }
}

/// Builds a tar.gz entry by entry, writing names verbatim.
pub struct RawArchive {
    tar: tar::Builder<GzEncoder<Vec<u8>>>,
}

impl Default for RawArchive {
    fn default() -> Self {
        Self::new()
    }
}

impl RawArchive {
    pub fn new() -> RawArchive {
        RawArchive {
            tar: tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast())),
        }
    }

    /// A minimal valid image: manifest + rootfs with an executable entrypoint.
    pub fn minimal(name: &str) -> RawArchive {
        let mut a = RawArchive::new();
        a.file(
            "manifest.toml",
            0o644,
            format!("name = \"{name}\"\nversion = \"1.0.0\"\nentrypoint = [\"/bin/run\"]\n")
                .as_bytes(),
        );
        a.dir("rootfs/", 0o755);
        a.dir("rootfs/bin/", 0o755);
        a.file("rootfs/bin/run", 0o755, b"#!/bin/sh\n");
        a
    }

    fn header(name: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        let bytes = name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(0);
        h
    }

    fn link_header(name: &str, kind: tar::EntryType, target: &str) -> tar::Header {
        let mut h = Self::header(name, kind, 0o777, 0);
        let t = target.as_bytes();
        h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
        h.set_cksum();
        h
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
        let mut h = Self::header(name, tar::EntryType::Regular, mode, data.len() as u64);
        h.set_cksum();
        self.tar.append(&h, data).expect("append");
        self
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        let mut h = Self::header(name, tar::EntryType::Directory, mode, 0);
        h.set_cksum();
        self.tar.append(&h, std::io::empty()).expect("append");
        self
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let h = Self::link_header(name, tar::EntryType::Symlink, target);
        self.tar.append(&h, std::io::empty()).expect("append");
        self
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        let h = Self::link_header(name, tar::EntryType::Link, target);
        self.tar.append(&h, std::io::empty()).expect("append");
        self
    }

    pub fn char_device(&mut self, name: &str) -> &mut Self {
        let mut h = Self::header(name, tar::EntryType::Char, 0o666, 0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        h.set_cksum();
        self.tar.append(&h, std::io::empty()).expect("append");
        self
    }

    /// Writes the archive to `path` and returns it with its sha256.
    pub fn write(self, path: &Path) -> ImageFile {
        let gz = self.tar.into_inner().expect("finish tar");
        let bytes = gz.finish().expect("finish gzip");
        let mut f = std::fs::File::create(path).expect("create archive");
        f.write_all(&bytes).expect("write archive");
        ImageFile {
            archive: path.to_path_buf(),
            sha256: outpost_image::hash::sha256_bytes(&bytes),
        }
    }
}
