//! `outpostd logs` and `outpostd purge`.

use std::io::Write;
use std::path::Path;

use std::fs;

use anyhow::{Context, bail};

use crate::runtime::acl;

/// Prints an instrument's console log (the rotated part first).
pub fn logs(state_dir: &Path, name: &str) -> anyhow::Result<()> {
    let (st, _) = super::open_state(state_dir)?;
    let log = st.console_log(name);
    let old = log.with_extension("log.1");
    if !log.exists() && !old.exists() {
        bail!(
            "instrument {name} has no log under {} (has it ever started?)",
            st.logs(name).display()
        );
    }
    let mut out = std::io::stdout().lock();
    for p in [old, log] {
        if let Ok(b) = std::fs::read(&p) {
            out.write_all(&b)?;
        }
    }
    Ok(())
}

/// Deletes an instrument's persistent storage and logs. Refused while the
/// instrument is in the desired state or has a status.
pub fn purge(state_dir: &Path, name: &str) -> anyhow::Result<()> {
    if let Some(p) = outpost_protocol::names::name_problem(name) {
        bail!("instrument name {p}");
    }
    let (st, db) = super::open_state(state_dir)?;
    if let Some((_, spec)) = db.latest_desired()?
        && spec.instrument(name).is_some()
    {
        bail!(
            "instrument {name} is still in the desired state (fix: remove it from the sensor file, let outpostd remove it, then purge)"
        );
    }
    if db.status(name)?.is_some() {
        bail!(
            "instrument {name} still exists (fix: wait until outpostd has removed it, then purge)"
        );
    }
    let mut removed = Vec::new();
    let legacy = st.persist_legacy(name);
    for dir in [legacy, st.logs(name)] {
        if fs::symlink_metadata(&dir).is_ok() {
            fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
            removed.push(dir.display().to_string());
        }
    }
    let image = st.persist_image(name);
    if image.exists() {
        fs::remove_file(&image).with_context(|| format!("cannot remove {}", image.display()))?;
        removed.push(image.display().to_string());
    }
    // Its host ids are free again once nothing it owned is left.
    if let Some(ids) = db.ids(name)? {
        for dir in [st.root().to_path_buf(), st.instances(), st.lxcpath()] {
            if dir.exists() {
                acl::revoke(&dir, ids.base)
                    .with_context(|| format!("cannot update the ACL of {}", dir.display()))?;
            }
        }
        db.free_ids(name)?;
        removed.push(format!("host ids {}-{}", ids.base, ids.last()));
    }
    if removed.is_empty() {
        println!("instrument {name} has no stored data");
    } else {
        println!("purged {}", removed.join(", "));
    }
    Ok(())
}
