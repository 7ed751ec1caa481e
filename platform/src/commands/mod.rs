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
    let pid = crate::runtime::lxc::start_here(lxcpath, name, argv)?;
    println!("init-pid {pid}");
    println!("liblxc-start-ms {:.1}", t0.elapsed().as_secs_f64() * 1e3);
    Ok(())
}

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::db::Db;
use crate::paths::StateDir;

/// Opens an existing state directory and its database. Commands that only
/// read or act on what a daemon made never create one: a mistyped
/// `--state-dir` gets an error, not a new empty sensor.
pub fn open_state(root: &Path) -> anyhow::Result<(StateDir, Db)> {
    let st = existing_state(root)?;
    let db = Db::open(&st.db())?;
    Ok((st, db))
}

/// The state directory at `root` if it holds a state database.
pub fn existing_state(root: &Path) -> anyhow::Result<StateDir> {
    let st = StateDir::new(root);
    if !root.is_dir() {
        anyhow::bail!(
            "state directory {} does not exist (fix: pass the --state-dir outpostd runs with, or start outpostd run once)",
            root.display()
        );
    }
    if !st.db().is_file() {
        anyhow::bail!(
            "{} is not an outpostd state directory: it has no {} (fix: pass the --state-dir outpostd runs with)",
            root.display(),
            st.db().display()
        );
    }
    Ok(st)
}

/// Opens the state directory, creating it (and its database) if needed:
/// only for commands that store something, such as `image import`.
pub fn create_state(root: &Path) -> anyhow::Result<(StateDir, Db)> {
    crate::paths::create_private_dir(root)
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
