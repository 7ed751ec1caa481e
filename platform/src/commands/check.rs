//! `outpostd check`: validates a sensor file, against the imported images
//! where they are present, without changing anything.

use std::path::Path;

use anyhow::Context;
use outpost_protocol::SensorSpec;

use crate::images::ImageStore;

pub fn check(state_dir: &Path, file: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read sensor file {}", file.display()))?;
    let spec = SensorSpec::parse_valid(&text)
        .map_err(|e| anyhow::anyhow!("sensor file {}: {e}", file.display()))?;
    let (st, db) = super::open_state(state_dir)?;
    let store = ImageStore::new(&st);
    let mut problems = Vec::new();
    for ins in &spec.instruments {
        match store.get(&db, &ins.image, &ins.version)? {
            Some((_, m)) => {
                if let Err(e) = SensorSpec::validate_against(ins, &m) {
                    problems.push(e.to_string());
                }
            }
            None => println!(
                "note: image {}:{} of instrument {} is not imported yet; its config is not checked",
                ins.image, ins.version, ins.name
            ),
        }
    }
    if !problems.is_empty() {
        anyhow::bail!("sensor file {}:\n{}", file.display(), problems.join("\n"));
    }
    println!(
        "sensor file {} is valid: sensor {}, {} instruments",
        file.display(),
        spec.sensor.name,
        spec.instruments.len()
    );
    Ok(())
}
