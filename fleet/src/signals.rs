//! Signals validated: an image's manifest may declare the JSON Schema of
//! each event kind's payload (`[events.<kind>] schema = …`). The fleet
//! checks every event a sensor forwards against the schema of the image
//! its instrument runs (as the sensor's last heartbeat says), stores it
//! either way, marks an invalid one (header `Outpost-Invalid`, shown as
//! `invalid` by the API) and counts it per sensor and instrument.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::hub::Hub;
use crate::images::Images;

/// The header that marks a stored event whose payload does not match.
pub const HDR_INVALID: &str = "Outpost-Invalid";

type Key = (String, String, String);

/// Checks events against their images' schemas, with compiled schemas
/// cached (an image's manifest never changes).
pub struct Checker {
    hub: Hub,
    images: Images,
    /// The hub's `FLEET_DESIRED` stream.
    desired: async_nats::jetstream::stream::Stream,
    schemas: Mutex<HashMap<Key, Option<Arc<jsonschema::Validator>>>>,
    /// Invalid events stored by this instance, per (sensor, instrument).
    pub invalid: Mutex<BTreeMap<(String, String), u64>>,
}

impl Checker {
    pub fn new(
        hub: Hub,
        images: Images,
        desired: async_nats::jetstream::stream::Stream,
    ) -> Checker {
        Checker {
            hub,
            images,
            desired,
            schemas: Mutex::default(),
            invalid: Mutex::default(),
        }
    }

    /// The image `instrument` of `sensor` runs: as its last heartbeat
    /// says, else as its newest desired version at the fleet says (an
    /// instrument's first events may come before a heartbeat shows it).
    async fn image_of(&self, sensor: &str, instrument: &str) -> Option<(String, String)> {
        if let Some((p, _)) = self.hub.index.presence.get(sensor)
            && let Some(i) = p
                .heartbeat
                .instruments
                .iter()
                .find(|i| i.name == instrument)
        {
            return Some((i.image.clone(), i.version.clone()));
        }
        let (v, _) = crate::desired::latest(&self.desired, sensor).await.ok()??;
        let spec = outpost_protocol::SensorSpec::parse(&v.toml).ok()?;
        let i = spec
            .instruments
            .into_iter()
            .find(|i| i.name == instrument)?;
        Some((i.image, i.version))
    }

    fn schema(&self, image: &str, version: &str, kind: &str) -> Option<Arc<jsonschema::Validator>> {
        let key = (image.to_string(), version.to_string(), kind.to_string());
        if let Some(v) = self.schemas.lock().expect("schemas").get(&key) {
            return v.clone();
        }
        // Not cached while the fleet does not have the image: it may be
        // uploaded later.
        let m = self.images.manifest(image, version)?;
        let v = m.event_validator(kind).map(Arc::new);
        self.schemas.lock().expect("schemas").insert(key, v.clone());
        v
    }

    /// For each event of a batch from `sensor` (its local subject and
    /// bytes): why it does not match its schema, or `None` when it does or
    /// there is no schema to check it against. Each instrument's image is
    /// looked up once per batch.
    pub async fn check_batch(&self, sensor: &str, events: &[(&str, &[u8])]) -> Vec<Option<String>> {
        let mut images: HashMap<&str, Option<(String, String)>> = HashMap::new();
        let mut out = Vec::with_capacity(events.len());
        for (subject, data) in events {
            let Some((instrument, kind)) = outpost_protocol::subjects::parse_event(subject) else {
                out.push(None);
                continue;
            };
            if !images.contains_key(instrument) {
                let found = self.image_of(sensor, instrument).await;
                images.insert(instrument, found);
            }
            let problem = match &images[instrument] {
                Some((image, version)) => {
                    self.check(sensor, instrument, image, version, kind, data)
                }
                None => None,
            };
            out.push(problem);
        }
        out
    }

    fn check(
        &self,
        sensor: &str,
        instrument: &str,
        image: &str,
        version: &str,
        kind: &str,
        data: &[u8],
    ) -> Option<String> {
        let schema = self.schema(image, version, kind)?;
        let problem = match serde_json::from_slice::<serde_json::Value>(data) {
            Err(e) => format!("not a JSON envelope: {e}"),
            Ok(env) => {
                let errors: Vec<String> = schema
                    .iter_errors(&env["payload"])
                    .take(3)
                    .map(|e| format!("payload{}: {e}", e.instance_path()))
                    .collect();
                if errors.is_empty() {
                    return None;
                }
                errors.join("; ")
            }
        };
        *self
            .invalid
            .lock()
            .expect("invalid")
            .entry((sensor.to_string(), instrument.to_string()))
            .or_default() += 1;
        Some(format!(
            "does not match the schema of {kind} in image {image} {version}: {}",
            problem
                .chars()
                .take(400)
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect::<String>()
        ))
    }
}
