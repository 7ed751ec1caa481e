//! `outpostctl check`: validates a sensor file exactly as the daemon does
//! when it loads one (see [`crate::validate`]), without changing anything
//! and without outpostd. On the sensor (its state directory exists) it
//! also checks the file against the imported images and that the host
//! interfaces it binds exist; elsewhere it says what it could not check.

use std::path::Path;

use anyhow::Context;
use outpost_protocol::SensorSpec;

use crate::images::ImageStore;
use crate::network::{self, Record};
use crate::paths::StateDir;
use crate::validate;

pub fn check(state_dir: &Path, file: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read sensor file {}", file.display()))?;
    let spec = SensorSpec::parse_valid(&text)
        .map_err(|e| anyhow::anyhow!("sensor file {}: {e}", file.display()))?;
    let Some(st) = existing_state(state_dir) else {
        println!(
            "note: no outpostd state directory at {}: images and host interfaces were not checked (fix: run check on the sensor, with the --state-dir outpostd uses)",
            state_dir.display()
        );
        println!(
            "sensor file {} is valid on its own: sensor {}, {} instruments",
            file.display(),
            spec.sensor.name,
            spec.instruments.len()
        );
        return Ok(());
    };
    let db = crate::db::Db::open(&st.db())?;
    let store = ImageStore::new(&st);
    let checked = validate::against_images(&spec, |i, v| {
        store.get(&db, i, v).map(|m| m.map(|(_, m)| m))
    })?;
    for n in checked.notes() {
        println!("{n}");
    }
    let mut problems = checked.problems;
    let held: Vec<Record> = db
        .bindings(None)?
        .into_iter()
        .filter_map(|(_, _, body)| serde_json::from_str(&body).ok())
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut bound = 0;
    for ins in &spec.instruments {
        bound += ins.interfaces.len();
        let missing = rt
            .block_on(network::check::missing_host_interfaces(
                &ins.name,
                &ins.interfaces,
                &held,
            ))
            .map_err(|e| anyhow::anyhow!("cannot read the host's interfaces: {e}"))?;
        problems.extend(missing);
    }
    if !problems.is_empty() {
        anyhow::bail!("sensor file {}:\n{}", file.display(), problems.join("\n"));
    }
    println!(
        "sensor file {} is valid: sensor {}, {} instruments; {} interface bindings checked against this host's interfaces",
        file.display(),
        spec.sensor.name,
        spec.instruments.len(),
        bound
    );
    Ok(())
}

/// The state directory at `root` if it holds a state database. Never
/// creates one: a mistyped `--state-dir` gets a note, not a new sensor.
fn existing_state(root: &Path) -> Option<StateDir> {
    let st = StateDir::new(root);
    st.db().is_file().then_some(st)
}
