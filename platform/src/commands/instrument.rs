//! `outpostd logs` and `outpostd purge`.

use std::io::Write;
use std::path::Path;

use anyhow::bail;

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
    for dir in [st.persist(name), st.logs(name)] {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
            removed.push(dir.display().to_string());
        }
    }
    if removed.is_empty() {
        println!("instrument {name} has no stored data");
    } else {
        println!("purged {}", removed.join(", "));
    }
    Ok(())
}
