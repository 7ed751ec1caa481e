//! The one envelope every message payload travels in:
//! `{v, id, ts, sensor, instrument, kind, schema, payload}`.
//!
//! - `v`: envelope version ([`ENVELOPE_VERSION`]);
//! - `id`: a ULID, unique per message (also the JetStream message id, so a
//!   re-sent event is stored once);
//! - `ts`: RFC 3339 UTC time of sending;
//! - `sensor`, `instrument`: who sent it (`instrument` is `outpostd` for the
//!   platform);
//! - `kind`: one subject token, e.g. `escape`;
//! - `schema`: `<name>/<version>` naming the payload's shape, so a receiver
//!   can check it knows it;
//! - `payload`: any JSON.
//!
//! [`Envelope::decode`] parses and validates; it never panics on any input
//! (see the `envelope` fuzz target).

use std::time::SystemTime;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::names;

/// The envelope version this crate writes and reads.
pub const ENVELOPE_VERSION: u32 = 1;

/// A message envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub v: u32,
    pub id: String,
    pub ts: String,
    pub sensor: String,
    pub instrument: String,
    pub kind: String,
    pub schema: String,
    pub payload: serde_json::Value,
}

/// Why bytes are not a valid envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not a JSON envelope: {0}")]
    Json(String),
    #[error("envelope field {field}: {problem}")]
    Field {
        field: &'static str,
        problem: String,
    },
    #[error("payload does not match schema {schema}: {problem}")]
    Payload { schema: String, problem: String },
}

fn field(field: &'static str, problem: impl Into<String>) -> EnvelopeError {
    EnvelopeError::Field {
        field,
        problem: problem.into(),
    }
}

/// Whether `s` is a ULID in canonical form (26 Crockford base32 chars).
pub fn is_ulid(s: &str) -> bool {
    const ALPHABET: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    s.len() == 26 && s.chars().all(|c| ALPHABET.contains(c)) && s.as_bytes()[0] <= b'7'
}

/// Why `kind` is not a valid event kind, or `None`.
pub fn kind_problem(kind: &str) -> Option<String> {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    if kind.is_empty() || kind.len() > 64 {
        Some(format!("{kind:?} must be 1 to 64 characters"))
    } else if !kind.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        || !kind.chars().all(ok)
    {
        Some(format!(
            "{kind:?} must be one subject token: lowercase letters, digits, '-' and '_'"
        ))
    } else {
        None
    }
}

/// Why `schema` is not `<name>/<version>`, or `None`.
pub fn schema_problem(schema: &str) -> Option<String> {
    let Some((name, version)) = schema.split_once('/') else {
        return Some(format!(
            "{schema:?} is not <name>/<version>, e.g. beacon.escape/1"
        ));
    };
    let name_ok = !name.is_empty()
        && name.len() <= 96
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    let version_ok =
        !version.is_empty() && version.len() <= 9 && version.chars().all(|c| c.is_ascii_digit());
    if name_ok && version_ok {
        None
    } else {
        Some(format!(
            "{schema:?} is not <name>/<version>, e.g. beacon.escape/1"
        ))
    }
}

impl Envelope {
    /// A new envelope; `id` is a fresh ULID and `ts` the sending time, both
    /// supplied by the caller (this crate does no I/O and keeps no clock).
    pub fn new(
        id: String,
        ts: SystemTime,
        sensor: &str,
        instrument: &str,
        kind: &str,
        schema: &str,
        payload: serde_json::Value,
    ) -> Envelope {
        Envelope {
            v: ENVELOPE_VERSION,
            id,
            ts: humantime::format_rfc3339_millis(ts).to_string(),
            sensor: sensor.into(),
            instrument: instrument.into(),
            kind: kind.into(),
            schema: schema.into(),
            payload,
        }
    }

    /// Encodes to JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serializes")
    }

    /// Parses and validates.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        let e: Envelope =
            serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Json(e.to_string()))?;
        e.validate()?;
        Ok(e)
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        if self.v != ENVELOPE_VERSION {
            return Err(field(
                "v",
                format!("version {} is not the supported {ENVELOPE_VERSION}", self.v),
            ));
        }
        if !is_ulid(&self.id) {
            return Err(field("id", format!("{:?} is not a ULID", self.id)));
        }
        if humantime::parse_rfc3339(&self.ts).is_err() {
            return Err(field(
                "ts",
                format!("{:?} is not an RFC 3339 UTC time", self.ts),
            ));
        }
        if let Some(p) = names::name_problem(&self.sensor) {
            return Err(field("sensor", p));
        }
        if let Some(p) = names::name_problem(&self.instrument) {
            return Err(field("instrument", p));
        }
        if let Some(p) = kind_problem(&self.kind) {
            return Err(field("kind", p));
        }
        if let Some(p) = schema_problem(&self.schema) {
            return Err(field("schema", p));
        }
        Ok(())
    }

    /// The sending time.
    pub fn time(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339(&self.ts).ok()
    }

    /// The payload as `T`, if the schema is `schema`.
    pub fn payload_as<T: DeserializeOwned>(&self, schema: &str) -> Result<T, EnvelopeError> {
        if self.schema != schema {
            return Err(EnvelopeError::Payload {
                schema: schema.into(),
                problem: format!("the envelope says {}", self.schema),
            });
        }
        serde_json::from_value(self.payload.clone()).map_err(|e| EnvelopeError::Payload {
            schema: schema.into(),
            problem: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn sample() -> Envelope {
        Envelope::new(
            "01JD6Z8W0000000000000000AB".into(),
            UNIX_EPOCH + Duration::from_millis(1_764_000_000_123),
            "lab-1",
            "beacon",
            "escape",
            "beacon.escape/1",
            serde_json::json!({"channel": "tcp"}),
        )
    }

    #[test]
    fn round_trip() {
        let e = sample();
        assert_eq!(e.ts, "2025-11-24T16:00:00.123Z");
        let back = Envelope::decode(&e.encode()).unwrap();
        assert_eq!(back, e);
        assert_eq!(
            back.time(),
            Some(UNIX_EPOCH + Duration::from_millis(1_764_000_000_123))
        );
    }

    #[test]
    fn each_field_is_checked() {
        let bad = |f: &dyn Fn(&mut Envelope), name: &str| {
            let mut e = sample();
            f(&mut e);
            match Envelope::decode(&e.encode()) {
                Err(EnvelopeError::Field { field, .. }) => assert_eq!(field, name),
                other => panic!("{name}: {other:?}"),
            }
        };
        bad(&|e| e.v = 2, "v");
        bad(&|e| e.id = "not-a-ulid".into(), "id");
        bad(&|e| e.id = "81JD6Z8W0000000000000000AB".into(), "id");
        bad(&|e| e.ts = "yesterday".into(), "ts");
        bad(&|e| e.sensor = "Lab".into(), "sensor");
        bad(&|e| e.instrument = "".into(), "instrument");
        bad(&|e| e.kind = "a.b".into(), "kind");
        bad(&|e| e.kind = "*".into(), "kind");
        bad(&|e| e.schema = "beacon.escape".into(), "schema");
        bad(&|e| e.schema = "beacon.escape/v1".into(), "schema");
    }

    #[test]
    fn unknown_fields_and_garbage_are_refused() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().encode()).unwrap();
        v["extra"] = 1.into();
        assert!(matches!(
            Envelope::decode(v.to_string().as_bytes()),
            Err(EnvelopeError::Json(_))
        ));
        assert!(Envelope::decode(b"\xff\x00").is_err());
        assert!(Envelope::decode(b"[]").is_err());
    }

    #[test]
    fn typed_payload() {
        #[derive(Deserialize)]
        struct Escape {
            channel: String,
        }
        let e = sample();
        assert_eq!(
            e.payload_as::<Escape>("beacon.escape/1").unwrap().channel,
            "tcp"
        );
        assert!(e.payload_as::<Escape>("other/1").is_err());
    }
}
