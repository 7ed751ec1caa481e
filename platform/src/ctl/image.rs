//! `outpostctl image …` and `outpostctl logs`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use futures::StreamExt;

use super::{Format, Session};
use crate::db::ImageRecord;
use crate::dbus::client::CallError;

#[derive(Subcommand)]
pub enum ImageCmd {
    /// Imports an image archive (opened by outpostctl, so only one this user
    /// can read): its sha256 is checked before anything is unpacked.
    Import {
        archive: PathBuf,
        /// The published sha256 (default: the <archive>.sha256 file).
        #[arg(long)]
        sha256: Option<String>,
    },
    /// Every imported image.
    List,
    /// Removes an image; refused while the desired state uses it.
    Rm { name: String, version: String },
}

impl Session {
    pub(super) async fn image(&self, cmd: ImageCmd, format: Format) -> Result<(), CallError> {
        match cmd {
            ImageCmd::Import { archive, sha256 } => {
                let archive = std::path::absolute(&archive)
                    .map_err(|e| CallError::Invalid(format!("{}: {e}", archive.display())))?;
                let sha256 = match sha256 {
                    Some(h) => h,
                    None => {
                        let side = PathBuf::from(format!("{}.sha256", archive.display()));
                        std::fs::read_to_string(&side).map_err(|e| {
                            CallError::Invalid(format!(
                                "no --sha256 given and {} cannot be read: {e} (fix: pass \
                                 --sha256 with the image's published hash)",
                                side.display()
                            ))
                        })?
                    }
                };
                let path = archive.display().to_string();
                // outpostd reads the archive through this descriptor: only
                // what this user can open.
                let file = std::fs::File::open(&archive).map_err(|e| {
                    CallError::Invalid(format!(
                        "cannot open {path}: {e} (fix: give the path of an image archive you can read)"
                    ))
                })?;
                // Progress comes as signals while the call runs.
                let mut progress = self
                    .proxy
                    .receive_import_progress()
                    .await
                    .map_err(|e| self.err(e))?;
                let show = async {
                    while let Some(sig) = progress.next().await {
                        let Ok(a) = sig.args() else { continue };
                        if a.path != path {
                            continue;
                        }
                        match a.phase {
                            "verifying" => {
                                let pct = (a.done * 100).checked_div(a.total).unwrap_or(100);
                                eprintln!("verifying sha256: {pct}%");
                            }
                            _ => eprintln!("unpacking: {} entries, {} MiB", a.total, a.done >> 20),
                        }
                    }
                    // The stream ended with the connection: the call's
                    // answer says what happened.
                    std::future::pending::<()>().await
                };
                let call =
                    self.proxy
                        .import_image(zbus::zvariant::Fd::from(&file), &path, sha256.trim());
                let res = tokio::select! {
                    r = call => r,
                    () = show => unreachable!("show never ends"),
                };
                let (json, new) = res.map_err(|e| self.err(e))?;
                let rec: ImageRecord = serde_json::from_str(&json).map_err(|e| {
                    CallError::Failed(format!("an answer outpostctl cannot read: {e}"))
                })?;
                if new {
                    println!(
                        "imported {}:{} (sha256 {})",
                        rec.name, rec.version, rec.sha256
                    );
                } else {
                    println!(
                        "{}:{} is already imported with the same sha256; nothing to do",
                        rec.name, rec.version
                    );
                }
            }
            ImageCmd::List => {
                let json = self.proxy.images().await.map_err(|e| self.err(e))?;
                let images: Vec<ImageRecord> = serde_json::from_str(&json).map_err(|e| {
                    CallError::Failed(format!("an answer outpostctl cannot read: {e}"))
                })?;
                if format == Format::Json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&images).expect("serializes")
                    );
                    return Ok(());
                }
                print_images(&images);
            }
            ImageCmd::Rm { name, version } => {
                self.proxy
                    .remove_image(&name, &version)
                    .await
                    .map_err(|e| self.err(e))?;
                println!("removed {name}:{version}");
            }
        }
        Ok(())
    }

    /// The console log; with `follow`, then what is written, until ^C.
    pub(super) async fn logs(&self, name: &str, bytes: u64, follow: bool) -> Result<(), CallError> {
        let mut offset = -(bytes.min(i64::MAX as u64) as i64);
        loop {
            let (text, next) = self
                .proxy
                .logs(name, offset)
                .await
                .map_err(|e| self.err(e))?;
            print!("{text}");
            let more = next > offset.max(0) && !text.is_empty();
            offset = next;
            if more {
                continue;
            }
            if !follow {
                return Ok(());
            }
            use std::io::Write;
            let _ = std::io::stdout().flush();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The image table.
fn print_images(images: &[ImageRecord]) {
    if images.is_empty() {
        println!("no images imported (import one with: outpostctl image import <archive>)");
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
