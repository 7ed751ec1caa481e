//! Building an image from `images/<name>/`.
//!
//! Steps, each printed as it starts:
//! 1. read and validate `manifest.toml` and `image.toml`;
//! 2. build the listed workspace binaries statically
//!    (`-C target-feature=+crt-static`, host target), or take them from a
//!    folder of prebuilt binaries;
//! 3. check every binary is static;
//! 4. assemble the rootfs on the base tree;
//! 5. pack the archive and its sha256.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use outpost_protocol::Manifest;

use crate::base::{self, Base};
use crate::pack::{Packed, pack};
use crate::recipe::Recipe;
use crate::{elf, unpack};

/// A build failure, with the step and the fix in its text.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

impl From<String> for BuildError {
    fn from(s: String) -> Self {
        BuildError(s)
    }
}

/// What to build and how.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// `images/<name>/`, holding `manifest.toml` and `image.toml`.
    pub image_dir: PathBuf,
    /// Where the archive and its `.sha256` go.
    pub out_dir: PathBuf,
    pub base: Base,
    /// Take binaries from this folder instead of building them.
    pub prebuilt: Option<PathBuf>,
    /// The workspace to build in (found from the current directory if
    /// `None`).
    pub workspace: Option<PathBuf>,
}

/// Builds the image; `say` receives progress lines.
pub fn build(opts: &BuildOptions, say: &mut dyn FnMut(&str)) -> Result<Packed, BuildError> {
    let dir = &opts.image_dir;
    say(&format!("[1/5] reading {}", dir.display()));
    let mpath = dir.join("manifest.toml");
    let text =
        fs::read_to_string(&mpath).map_err(|e| format!("cannot read {}: {e}", mpath.display()))?;
    let manifest = Manifest::parse_valid(&text).map_err(|e| format!("{}: {e}", mpath.display()))?;
    let recipe = Recipe::load(dir)?;

    let bins: BTreeMap<String, PathBuf> = match &opts.prebuilt {
        Some(p) => {
            say(&format!("[2/5] taking binaries from {}", p.display()));
            recipe
                .binaries
                .iter()
                .map(|b| (b.bin.clone(), p.join(&b.bin)))
                .collect()
        }
        None => {
            say(&format!(
                "[2/5] building {} binaries statically",
                recipe.binaries.len()
            ));
            cargo_build_static(&recipe, opts.workspace.as_deref(), say)?
        }
    };

    say("[3/5] checking binaries are static");
    for b in &recipe.binaries {
        let p = bins
            .get(&b.bin)
            .ok_or_else(|| format!("cargo did not produce binary {:?}", b.bin))?;
        elf::check_static(p)?;
    }

    say("[4/5] assembling rootfs");
    fs::create_dir_all(&opts.out_dir)
        .map_err(|e| format!("cannot create {}: {e}", opts.out_dir.display()))?;
    let work = opts
        .out_dir
        .join(format!(".build-{}-{}", manifest.name, std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let result = assemble(opts, &recipe, &bins, &manifest, &work, say);
    let packed = result.and_then(|rootfs| {
        say("[5/5] packing");
        pack(&rootfs, &manifest, &opts.out_dir)
            .map_err(|e| BuildError(format!("cannot write the archive: {e}")))
    });
    let _ = fs::remove_dir_all(&work);
    let packed = packed?;
    say(&format!(
        "built {} ({} entries)\nsha256 {}",
        packed.archive.display(),
        packed.entries,
        packed.sha256
    ));
    Ok(packed)
}

fn assemble(
    opts: &BuildOptions,
    recipe: &Recipe,
    bins: &BTreeMap<String, PathBuf>,
    manifest: &Manifest,
    work: &Path,
    say: &mut dyn FnMut(&str),
) -> Result<PathBuf, BuildError> {
    base::populate(&opts.base, work, say)?;
    let rootfs = work.join("rootfs");
    for b in &recipe.binaries {
        let dest = place(&rootfs, &b.path)?;
        fs::copy(&bins[&b.bin], &dest)
            .map_err(|e| format!("cannot copy {} into the image: {e}", b.bin))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        say(&format!("  + {} -> {}", b.bin, b.path));
    }
    for f in &recipe.files {
        let dest = place(&rootfs, &f.path)?;
        let src = opts.image_dir.join(&f.source);
        fs::copy(&src, &dest).map_err(|e| format!("cannot copy {}: {e}", src.display()))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(f.mode_bits()?))
            .map_err(|e| e.to_string())?;
        say(&format!("  + {} -> {}", f.source, f.path));
    }
    if unpack::resolve_in_root(&rootfs, &manifest.entrypoint[0]).is_none() {
        return Err(BuildError(format!(
            "entrypoint {} is not in the image (fix: add it as a [[binary]] in image.toml)",
            manifest.entrypoint[0]
        )));
    }
    Ok(rootfs)
}

/// Creates the parent directories of `path` inside `rootfs` (refusing to go
/// through links) and returns the host path for it.
fn place(rootfs: &Path, path: &str) -> Result<PathBuf, BuildError> {
    let rel = path.trim_start_matches('/');
    let dest = rootfs.join(rel);
    let mut p = rootfs.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        p.push(part);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(BuildError(format!(
                    "cannot place {path}: {} is not a directory in the base tree",
                    p.display()
                )));
            }
            Err(_) => fs::create_dir(&p).map_err(|e| e.to_string())?,
        }
    }
    if let Ok(m) = fs::symlink_metadata(&dest)
        && !m.is_file()
    {
        // A busybox applet link of the same name: the binary wins.
        fs::remove_file(&dest).map_err(|e| e.to_string())?;
    }
    Ok(dest)
}

/// The host's target triple, from `rustc -vV`.
pub fn host_triple() -> Result<String, BuildError> {
    let out = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()
        .map_err(|e| format!("cannot run rustc -vV: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .ok_or_else(|| BuildError("rustc -vV printed no host triple".into()))
}

/// Runs `cargo build --release --target <host>` with `+crt-static` for the
/// recipe's binaries and returns where cargo put each one.
fn cargo_build_static(
    recipe: &Recipe,
    workspace: Option<&Path>,
    say: &mut dyn FnMut(&str),
) -> Result<BTreeMap<String, PathBuf>, BuildError> {
    let triple = host_triple()?;
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "--release", "--target", &triple])
        .args(["--message-format", "json-render-diagnostics"]);
    for b in &recipe.binaries {
        cmd.args(["-p", &b.package, "--bin", &b.bin]);
    }
    if let Some(ws) = workspace {
        cmd.current_dir(ws);
    }
    // With an explicit --target, RUSTFLAGS reach only the target's units,
    // not build scripts or proc macros (which cannot be static).
    cmd.env(
        "RUSTFLAGS",
        "-C target-feature=+crt-static -C strip=debuginfo",
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    say(&format!(
        "  cargo build --release --target {triple} (crt-static)"
    ));
    let mut child = cmd.spawn().map_err(|e| format!("cannot run cargo: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let mut found = BTreeMap::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| e.to_string())?;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact"
            && let Some(exe) = v["executable"].as_str()
            && let Some(name) = v["target"]["name"].as_str()
        {
            found.insert(name.to_string(), PathBuf::from(exe));
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(BuildError(format!(
            "cargo build failed ({status}); see its messages above"
        )));
    }
    Ok(found)
}
