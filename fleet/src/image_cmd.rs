//! `outpost-fleet image push|list|show`.

use std::path::PathBuf;

use clap::Subcommand;
use outpost_fleet::client::ApiClient;
use outpost_fleet::images::ImageRecord;

#[derive(Subcommand)]
pub enum ImageCmd {
    /// Uploads an image archive; sensors whose desired state names it
    /// fetch it from the fleet.
    Push {
        archive: PathBuf,
        #[command(flatten)]
        conn: crate::Conn,
    },
    /// The images the fleet distributes.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: crate::Conn,
    },
    /// One image, with its manifest.
    Show {
        name: String,
        version: String,
        #[command(flatten)]
        conn: crate::Conn,
    },
}

impl ImageCmd {
    pub fn conn(&self) -> &crate::Conn {
        match self {
            ImageCmd::Push { conn, .. }
            | ImageCmd::List { conn, .. }
            | ImageCmd::Show { conn, .. } => conn,
        }
    }

    pub async fn run(self, c: ApiClient) -> anyhow::Result<()> {
        match self {
            ImageCmd::Push { archive, .. } => {
                let size = std::fs::metadata(&archive)
                    .map(|m| m.len())
                    .unwrap_or_default();
                eprintln!("uploading {} ({size} bytes) …", archive.display());
                let up: serde_json::Value = c.post_file("/api/v1/images", &archive).await?;
                let img: ImageRecord = serde_json::from_value(up["image"].clone())?;
                let what = if up["new"] == true {
                    "uploaded"
                } else {
                    "already at the fleet"
                };
                println!(
                    "image {} {} {what} (sha256 {}, {} bytes)",
                    img.name, img.version, img.sha256, img.size
                );
            }
            ImageCmd::List { json, .. } => {
                let list: Vec<ImageRecord> = c.get("/api/v1/images").await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&list)?);
                    return Ok(());
                }
                println!("{:<20} {:<12} {:>12}  SHA256", "IMAGE", "VERSION", "BYTES");
                for i in list {
                    println!(
                        "{:<20} {:<12} {:>12}  {}",
                        i.name, i.version, i.size, i.sha256
                    );
                }
            }
            ImageCmd::Show { name, version, .. } => {
                let i: ImageRecord = c.get(&format!("/api/v1/images/{name}/{version}")).await?;
                println!("{}", serde_json::to_string_pretty(&i)?);
            }
        }
        Ok(())
    }
}
