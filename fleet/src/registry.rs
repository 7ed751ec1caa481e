//! The sensor registry and enrollment, kept in the hub's KV buckets so
//! every fleet instance sees the same: `sensors` (one record per name),
//! `enroll_tokens` (by the token's sha256; a token is used by a
//! compare-and-set, so it works once even with two instances).

use std::time::Duration;

use bytes::Bytes;
use outpost_protocol::fleet::{EnrollRequest, EnrollResponse, sensor_name_problem};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::hub::{Hub, HubError, now_ms};

/// A sensor the fleet knows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SensorRecord {
    pub name: String,
    pub added_at_ms: i64,
    pub added_by: String,
    /// The sensor's NATS user key, once enrolled.
    pub public_key: Option<String>,
    pub enrolled_at_ms: Option<i64>,
    /// What the sensor called itself when it enrolled.
    pub hostname: Option<String>,
    pub revoked_at_ms: Option<i64>,
    pub revoked_by: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenRecord {
    sensor: String,
    expires_at_ms: i64,
    used_at_ms: Option<i64>,
}

/// A new sensor's one-time enrollment token.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Enrollment {
    pub sensor: String,
    pub token: String,
    pub expires_at_ms: i64,
    /// The fleet's certificate pin, for `outpostctl fleet enroll --fingerprint`.
    pub fingerprint: String,
}

fn bucket_err(what: &str) -> impl FnOnce(String) -> ApiError + '_ {
    move |why| {
        ApiError::Hub(HubError::Op {
            what: what.to_string(),
            why,
        })
    }
}

fn token_key(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

/// Every sensor record.
pub async fn all_sensors(hub: &Hub) -> Result<Vec<SensorRecord>, HubError> {
    let mut out: Vec<SensorRecord> = hub
        .index
        .sensors
        .all()
        .into_iter()
        .map(|(_, r, _)| r)
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// One sensor's record and its revision.
pub async fn sensor(hub: &Hub, name: &str) -> Result<(SensorRecord, u64), ApiError> {
    if sensor_name_problem(name).is_some() {
        return Err(ApiError::NotFound(format!("sensor {name:?}")));
    }
    let e = hub
        .sensors
        .entry(name)
        .await
        .map_err(|e| bucket_err("reading the sensor registry")(e.to_string()))?;
    match e {
        Some(e) if e.operation == async_nats::jetstream::kv::Operation::Put => {
            let r = serde_json::from_slice(&e.value)
                .map_err(|e| bucket_err("reading a sensor record")(e.to_string()))?;
            Ok((r, e.revision))
        }
        _ => Err(ApiError::NotFound(format!("sensor {name:?}"))),
    }
}

/// Adds a sensor and issues its enrollment token. A name is taken once.
pub async fn add_sensor(
    hub: &Hub,
    name: &str,
    by: &str,
    ttl: Duration,
    fingerprint: &str,
) -> Result<Enrollment, ApiError> {
    if let Some(p) = sensor_name_problem(name) {
        return Err(ApiError::field(
            "name",
            format!("sensor name {p}"),
            "use lowercase letters, digits and '-', starting with a letter, at most 48 bytes",
        ));
    }
    let rec = SensorRecord {
        name: name.to_string(),
        added_at_ms: now_ms(),
        added_by: by.to_string(),
        public_key: None,
        enrolled_at_ms: None,
        hostname: None,
        revoked_at_ms: None,
        revoked_by: None,
    };
    let body = Bytes::from(serde_json::to_vec(&rec).expect("serializes"));
    match hub.sensors.create(name, body).await {
        Ok(rev) => hub.index.sensors.note(name, rec, rev),
        Err(e) => {
            if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists {
                return Err(ApiError::Conflict(format!(
                    "sensor {name:?} exists already; a name is taken once (fix: choose another name)"
                )));
            }
            return Err(bucket_err("adding a sensor")(e.to_string()));
        }
    }
    issue_token(hub, name, ttl, fingerprint).await
}

/// A new enrollment token for a sensor that has not enrolled yet (the
/// first one expired or was lost).
pub async fn reissue_token(
    hub: &Hub,
    name: &str,
    ttl: Duration,
    fingerprint: &str,
) -> Result<Enrollment, ApiError> {
    let (rec, _) = sensor(hub, name).await?;
    if rec.revoked_at_ms.is_some() {
        return Err(ApiError::Conflict(format!(
            "sensor {name:?} is revoked; a revoked name is not enrolled again (fix: add the sensor under a new name)"
        )));
    }
    if rec.public_key.is_some() {
        return Err(ApiError::Conflict(format!(
            "sensor {name:?} has enrolled already (fix: revoke it and add it under a new name to enroll another machine)"
        )));
    }
    issue_token(hub, name, ttl, fingerprint).await
}

async fn issue_token(
    hub: &Hub,
    name: &str,
    ttl: Duration,
    fingerprint: &str,
) -> Result<Enrollment, ApiError> {
    let mut raw = [0u8; 24];
    rand::fill(&mut raw);
    let token = format!("oet_{}", hex::encode(raw));
    let expires_at_ms = now_ms() + ttl.as_millis() as i64;
    let rec = TokenRecord {
        sensor: name.to_string(),
        expires_at_ms,
        used_at_ms: None,
    };
    hub.tokens
        .put(
            token_key(&token),
            Bytes::from(serde_json::to_vec(&rec).expect("serializes")),
        )
        .await
        .map_err(|e| bucket_err("storing an enrollment token")(e.to_string()))?;
    Ok(Enrollment {
        sensor: name.to_string(),
        token,
        expires_at_ms,
        fingerprint: fingerprint.to_string(),
    })
}

/// A sensor trades its token and public key for credentials.
pub async fn enroll(
    hub: &Hub,
    req: &EnrollRequest,
    hub_urls: Vec<String>,
    hub_ca_pem: String,
    heartbeat_every: Duration,
) -> Result<EnrollResponse, ApiError> {
    let pk = req.public_key.trim();
    if !pk.starts_with('U') || nkeys::KeyPair::from_public_key(pk).is_err() {
        return Err(ApiError::field(
            "public_key",
            "is not a NATS user public key (U…)",
            "send the public half of a key made with nkeys (outpostctl fleet enroll does this)",
        ));
    }
    let refused = |why: &str| {
        ApiError::Unauthorized(format!(
            "enrollment token {why} (fix: ask the fleet's operator for a new one: outpost-fleet sensor token NAME)"
        ))
    };
    let key = token_key(&req.token);
    let entry = hub
        .tokens
        .entry(&key)
        .await
        .map_err(|e| bucket_err("reading enrollment tokens")(e.to_string()))?;
    let Some(entry) = entry.filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put)
    else {
        return Err(refused("is unknown to this fleet"));
    };
    let mut tok: TokenRecord = serde_json::from_slice(&entry.value)
        .map_err(|e| bucket_err("reading an enrollment token")(e.to_string()))?;
    if tok.used_at_ms.is_some() {
        return Err(refused("was used already; a token works once"));
    }
    if tok.expires_at_ms <= now_ms() {
        return Err(refused("has expired"));
    }
    tok.used_at_ms = Some(now_ms());
    // Compare-and-set: of two enrollments with one token, one wins.
    if hub
        .tokens
        .update(
            &key,
            Bytes::from(serde_json::to_vec(&tok).expect("serializes")),
            entry.revision,
        )
        .await
        .is_err()
    {
        return Err(refused("was used already; a token works once"));
    }
    let (mut rec, rev) = sensor(hub, &tok.sensor).await?;
    if rec.revoked_at_ms.is_some() {
        return Err(refused("is for a revoked sensor"));
    }
    if rec.public_key.is_some() {
        return Err(ApiError::Conflict(format!(
            "sensor {:?} has enrolled already",
            rec.name
        )));
    }
    rec.public_key = Some(pk.to_string());
    rec.enrolled_at_ms = Some(now_ms());
    rec.hostname = Some(req.hostname.chars().take(255).collect());
    let rev = hub
        .sensors
        .update(
            &rec.name,
            Bytes::from(serde_json::to_vec(&rec).expect("serializes")),
            rev,
        )
        .await
        .map_err(|e| bucket_err("recording an enrollment")(e.to_string()))?;
    hub.index.sensors.note(&rec.name, rec.clone(), rev);
    Ok(EnrollResponse {
        user_jwt: hub.keys.sensor_jwt(&rec.name, pk),
        sensor: rec.name,
        hub_urls,
        hub_ca_pem,
        heartbeat_every,
    })
}

/// Revokes a sensor: its credentials stop working at the hub within
/// seconds and its link is cut.
pub async fn revoke(hub: &Hub, name: &str, by: &str) -> Result<SensorRecord, ApiError> {
    loop {
        let (mut rec, rev) = sensor(hub, name).await?;
        if rec.revoked_at_ms.is_some() {
            return Ok(rec);
        }
        rec.revoked_at_ms = Some(now_ms());
        rec.revoked_by = Some(by.to_string());
        let body = Bytes::from(serde_json::to_vec(&rec).expect("serializes"));
        if let Ok(rev) = hub.sensors.update(name, body, rev).await {
            hub.index.sensors.note(name, rec.clone(), rev);
            hub.push_account().await.map_err(ApiError::Hub)?;
            return Ok(rec);
        }
        // Changed under us by another instance: read it again.
    }
}
