//! `outpostd` subcommands, one module each.

pub mod check;
pub mod events;
pub mod image;
pub mod instrument;
pub mod retention;
pub mod run;
pub mod status;

/// `outpostd start-container`: the helper process that starts one
/// container with liblxc (see `runtime::lxc::LxcRuntime`).
pub fn start_container(lxcpath: &Path, name: &str, argv: &[String]) -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    let pid = crate::runtime::lxc::start_here(lxcpath, name, argv).map_err(anyhow::Error::msg)?;
    println!("init-pid {pid}");
    println!("liblxc-start-ms {:.1}", t0.elapsed().as_secs_f64() * 1e3);
    Ok(())
}

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::db::Db;
use crate::paths::StateDir;

/// Opens the state database, creating the state directory if needed.
pub fn open_state(root: &Path) -> anyhow::Result<(StateDir, Db)> {
    std::fs::create_dir_all(root)
        .with_context(|| format!("cannot create state directory {}", root.display()))?;
    let st = StateDir::new(root);
    let db = Db::open(&st.db())?;
    Ok((st, db))
}

/// Where a static `outpost-init` is looked for when `--init` is not given.
pub fn default_init_candidates() -> Vec<PathBuf> {
    let mut c = Vec::new();
    if let Ok(p) = std::env::var("OUTPOST_INIT") {
        c.push(PathBuf::from(p));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        c.push(dir.join("outpost-init"));
    }
    c.push(PathBuf::from("/usr/lib/outpost/outpost-init"));
    c
}
