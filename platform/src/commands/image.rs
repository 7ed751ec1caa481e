//! `outpostd image import|list|rm`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use outpost_image::hash::parse_sha256;
use outpost_image::unpack::Progress;

use crate::images::{ImageStore, Imported};

/// Imports an archive. Without `sha256`, `<archive>.sha256` is read.
pub fn import(state_dir: &Path, archive: &Path, sha256: Option<&str>) -> anyhow::Result<()> {
    let expected = match sha256 {
        Some(h) => h.to_string(),
        None => {
            let side = PathBuf::from(format!("{}.sha256", archive.display()));
            std::fs::read_to_string(&side).with_context(|| {
                format!(
                    "no --sha256 given and {} cannot be read (fix: pass --sha256 with the image's published hash)",
                    side.display()
                )
            })?
        }
    };
    let expected = parse_sha256(&expected).map_err(anyhow::Error::msg)?;
    let (st, db) = super::create_state(state_dir)?;
    let store = ImageStore::new(&st);
    let t0 = Instant::now();
    let mut last_pct = u64::MAX;
    let mut err = std::io::stderr();
    let res = store.import(&db, archive, &expected, |p| match p {
        Progress::Verifying { done, total } => {
            let pct = (done * 100).checked_div(total).unwrap_or(100);
            if pct / 25 != last_pct / 25 || done == total {
                last_pct = pct;
                let _ = writeln!(err, "verifying sha256: {pct}%");
            }
        }
        Progress::Unpacking { entries, bytes } => {
            let _ = writeln!(err, "unpacking: {entries} entries, {} KiB", bytes / 1024);
        }
    })?;
    match res {
        Imported::New(r) => println!(
            "imported {}:{} (sha256 {}) in {} ms",
            r.name,
            r.version,
            r.sha256,
            t0.elapsed().as_millis()
        ),
        Imported::AlreadyThere(r) => println!(
            "{}:{} is already imported with the same sha256; nothing to do",
            r.name, r.version
        ),
    }
    Ok(())
}

/// Lists imported images.
pub fn list(state_dir: &Path, json: bool) -> anyhow::Result<()> {
    let (_, db) = super::open_state(state_dir)?;
    let images = db.images()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&images)?);
        return Ok(());
    }
    print_images(&images, "outpostd");
    Ok(())
}

/// The image table; `cli` names the command that imports, for the hint
/// when there are none.
pub fn print_images(images: &[crate::db::ImageRecord], cli: &str) {
    if images.is_empty() {
        println!("no images imported (import one with: {cli} image import <archive>)");
        return;
    }
    println!(
        "{:<20} {:<10} {:<16} {:>10}",
        "NAME", "VERSION", "SHA256", "SIZE"
    );
    for i in images {
        println!(
            "{:<20} {:<10} {:<16} {:>7} KiB",
            i.name,
            i.version,
            &i.sha256[..16.min(i.sha256.len())],
            i.bytes / 1024
        );
    }
}

/// Removes an image unless it is in use.
pub fn remove(state_dir: &Path, name: &str, version: &str) -> anyhow::Result<()> {
    let (st, mut db) = super::open_state(state_dir)?;
    ImageStore::new(&st).remove(&mut db, name, version)?;
    println!("removed {name}:{version}");
    Ok(())
}
