//! `outpost-image`: builds and checks Outpost images.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use outpost_image::base::Base;
use outpost_image::builder::{BuildOptions, build};
use outpost_image::hash::parse_sha256;

#[derive(Parser)]
#[command(
    name = "outpost-image",
    version,
    about = "Build and check Outpost instrument images"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build images/<name>/ into <out>/<name>-<version>.tar.gz and .sha256.
    Build {
        /// The image folder (holding manifest.toml and image.toml).
        image_dir: PathBuf,
        /// Where to write the archive.
        #[arg(long, default_value = "target/images")]
        out: PathBuf,
        /// Static busybox for the default base.
        #[arg(long, default_value = "/bin/busybox")]
        busybox: PathBuf,
        /// Use this Alpine minirootfs tarball as the base instead.
        #[arg(long, requires = "alpine_sha256")]
        alpine: Option<PathBuf>,
        /// The pinned sha256 of the --alpine tarball.
        #[arg(long)]
        alpine_sha256: Option<String>,
        /// Take the binaries from this folder instead of building them.
        #[arg(long)]
        prebuilt: Option<PathBuf>,
    },
    /// Verify an archive as outpostd would on import, and show its manifest.
    Verify {
        archive: PathBuf,
        /// Expected sha256 (default: read <archive>.sha256).
        #[arg(long)]
        sha256: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Build {
            image_dir,
            out,
            busybox,
            alpine,
            alpine_sha256,
            prebuilt,
        } => {
            let base = match (alpine, alpine_sha256) {
                (Some(tarball), Some(h)) => Base::Alpine {
                    tarball,
                    sha256: parse_sha256(&h).map_err(anyhow::Error::msg)?,
                },
                (None, None) => Base::Busybox(busybox),
                _ => bail!("--alpine and --alpine-sha256 go together"),
            };
            let opts = BuildOptions {
                image_dir,
                out_dir: out,
                base,
                prebuilt,
                workspace: None,
            };
            build(&opts, &mut |line| eprintln!("{line}"))?;
        }
        Cmd::Verify { archive, sha256 } => {
            let expected = match sha256 {
                Some(h) => h,
                None => {
                    let side = PathBuf::from(format!("{}.sha256", archive.display()));
                    std::fs::read_to_string(&side).with_context(|| {
                        format!("no --sha256 given and cannot read {}", side.display())
                    })?
                }
            };
            let expected = parse_sha256(&expected).map_err(anyhow::Error::msg)?;
            let tmp = std::env::temp_dir().join(format!("outpost-verify-{}", std::process::id()));
            let res = outpost_image::unpack(&archive, &expected, &tmp, Default::default(), |_| {});
            let _ = std::fs::remove_dir_all(&tmp);
            let u = res?;
            println!(
                "{} {}: ok, sha256 {}, {} entries, {} bytes\n\n{}",
                u.manifest.name, u.manifest.version, u.sha256, u.entries, u.bytes, u.manifest_text
            );
        }
    }
    Ok(())
}
