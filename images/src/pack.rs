//! Writing an image archive: deterministic, so the same inputs always give
//! the same sha256.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use outpost_protocol::Manifest;

use crate::hash::sha256_reader;

/// The result of [`pack`].
#[derive(Debug, Clone)]
pub struct Packed {
    pub archive: PathBuf,
    pub sha256: String,
    /// `<archive>.sha256`, in `sha256sum` format.
    pub sha256_file: PathBuf,
    pub entries: u64,
}

/// File name of the archive of `manifest`.
pub fn archive_name(m: &Manifest) -> String {
    format!("{}-{}.tar.gz", m.name, m.version)
}

/// Packs `rootfs` and `manifest` into `<out_dir>/<name>-<version>.tar.gz`
/// plus its `.sha256`. Entries are sorted, owned by root and dated 0.
pub fn pack(rootfs: &Path, manifest: &Manifest, out_dir: &Path) -> io::Result<Packed> {
    fs::create_dir_all(out_dir)?;
    let archive = out_dir.join(archive_name(manifest));
    let tmp = out_dir.join(format!(".{}.tmp", archive_name(manifest)));
    let entries = {
        let f = BufWriter::new(File::create(&tmp)?);
        let gz = GzEncoder::new(f, Compression::default());
        let mut tar = tar::Builder::new(gz);
        tar.mode(tar::HeaderMode::Deterministic);
        tar.follow_symlinks(false);

        let text = manifest.to_toml();
        let mut h = header(tar::EntryType::Regular, 0o644, text.len() as u64);
        tar.append_data(&mut h, "manifest.toml", text.as_bytes())?;
        let mut n = 1u64;
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut h, "rootfs/", io::empty())?;
        n += 1;
        n += append_tree(&mut tar, rootfs, Path::new("rootfs"))?;
        let gz = tar.into_inner()?;
        let mut f = gz.finish()?;
        f.flush()?;
        f.get_ref().sync_all()?;
        n
    };
    fs::rename(&tmp, &archive)?;
    let sha256 = sha256_reader(File::open(&archive)?, |_| {})?;
    let sha256_file = PathBuf::from(format!("{}.sha256", archive.display()));
    fs::write(
        &sha256_file,
        format!("{sha256}  {}\n", archive_name(manifest)),
    )?;
    Ok(Packed {
        archive,
        sha256,
        sha256_file,
        entries,
    })
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

fn append_tree<W: Write>(tar: &mut tar::Builder<W>, dir: &Path, at: &Path) -> io::Result<u64> {
    let mut names: Vec<_> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    let mut n = 0;
    for name in names {
        let host = dir.join(&name);
        let inside = at.join(&name);
        let meta = fs::symlink_metadata(&host)?;
        let mode = meta.permissions().mode() & 0o7777;
        let ft = meta.file_type();
        if ft.is_dir() {
            let mut h = header(tar::EntryType::Directory, mode, 0);
            tar.append_data(&mut h, &inside, io::empty())?;
            n += 1 + append_tree(tar, &host, &inside)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&host)?;
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            tar.append_link(&mut h, &inside, &target)?;
            n += 1;
        } else if ft.is_file() {
            let mut h = header(tar::EntryType::Regular, mode, meta.len());
            tar.append_data(&mut h, &inside, File::open(&host)?)?;
            n += 1;
        } else {
            return Err(io::Error::other(format!(
                "{} is neither file, directory nor link; images may not contain it",
                host.display()
            )));
        }
    }
    Ok(n)
}
