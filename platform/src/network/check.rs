//! Whether the host interfaces a sensor spec binds exist, for `outpostd
//! check` on the sensor. Read-only: it changes nothing on the host.

use std::collections::BTreeMap;

use outpost_protocol::bindings::Binding;
use outpost_protocol::manifest::InterfaceType;

use super::Record;
use super::nl::{self, NlResult};

/// The host interfaces `bindings` of `instrument` need that do not exist.
/// An interface the instrument holds now (a `phy` moved into it, per its
/// undo records in `held`) is not on the host and is not a problem.
pub async fn missing_host_interfaces(
    instrument: &str,
    bindings: &BTreeMap<String, Binding>,
    held: &[Record],
) -> NlResult<Vec<String>> {
    let h = nl::host()?;
    let mut out = Vec::new();
    for (role, b) in bindings {
        let mut need: Vec<(&str, &str)> = Vec::new();
        match b.kind {
            InterfaceType::Phy => need.extend(b.device.as_deref().map(|d| ("device", d))),
            InterfaceType::Bridge => {
                if !b.create {
                    need.extend(b.bridge.as_deref().map(|d| ("bridge", d)));
                }
                need.extend(b.enslave.as_deref().map(|d| ("enslave", d)));
            }
            InterfaceType::Macvlan => need.extend(b.parent.as_deref().map(|d| ("parent", d))),
            InterfaceType::Mirror => need.extend(b.source.as_deref().map(|d| ("source", d))),
        }
        for (field, dev) in need {
            let held_now = held.iter().any(|r| {
                r.instrument == instrument
                    && r.binding.kind == InterfaceType::Phy
                    && r.binding.device.as_deref() == Some(dev)
            });
            if held_now || nl::link(&h, dev).await?.is_some() {
                continue;
            }
            out.push(format!(
                "instrument {instrument:?}: interfaces.{role}.{field}: host interface {dev} does not exist on this sensor (fix: create it, or name an existing interface)"
            ));
        }
    }
    Ok(out)
}
