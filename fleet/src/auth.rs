//! API bearer tokens: `ofa_<id>_<secret>`, stored in the hub's
//! `api_tokens` bucket by id with an argon2 hash of the secret, each with
//! a role. A verified token is remembered (by its sha256) for a minute,
//! so argon2 runs once per token and minute, not per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::hub::{Hub, HubError, now_ms};

/// What a token may do; each role may do what the ones before it may.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("role {s:?} is not one of viewer, operator, admin")),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        })
    }
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

impl Principal {
    /// Refuses what `role` may not do.
    pub fn needs(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "token {:?} has role {}, this needs {role} (fix: use a token with that role)",
                self.name, self.role
            )))
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenRecord {
    name: String,
    role: Role,
    hash: String,
    created_at_ms: i64,
    created_by: String,
}

/// Verifies bearer tokens against the hub, with a short cache.
#[derive(Clone)]
pub struct Tokens {
    hub: Hub,
    cache: Arc<Mutex<Verified>>,
}

/// Tokens verified lately, by their sha256, with when.
type Verified = HashMap<[u8; 32], (Principal, Instant)>;

const CACHE_FOR: Duration = Duration::from_secs(60);

fn hash_secret(secret: &str) -> String {
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16 bytes make a salt");
    argon2::Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .expect("argon2 hashes")
        .to_string()
}

impl Tokens {
    pub fn new(hub: Hub) -> Tokens {
        Tokens {
            hub,
            cache: Arc::default(),
        }
    }

    /// Makes a token; its text is shown once, only its hash is stored.
    pub async fn create(&self, name: &str, role: Role, by: &str) -> Result<String, HubError> {
        let mut id = [0u8; 6];
        let mut secret = [0u8; 24];
        rand::fill(&mut id);
        rand::fill(&mut secret);
        let (id, secret) = (hex::encode(id), hex::encode(secret));
        let rec = TokenRecord {
            name: name.to_string(),
            role,
            hash: hash_secret(&secret),
            created_at_ms: now_ms(),
            created_by: by.to_string(),
        };
        self.hub
            .api_tokens
            .create(
                &id,
                Bytes::from(serde_json::to_vec(&rec).expect("serializes")),
            )
            .await
            .map_err(|e| HubError::Op {
                what: "storing an API token".into(),
                why: e.to_string(),
            })?;
        Ok(format!("ofa_{id}_{secret}"))
    }

    /// Whether any token exists (the first run makes an admin token).
    pub async fn any(&self) -> Result<bool, HubError> {
        let mut keys = self.hub.api_tokens.keys().await.map_err(|e| HubError::Op {
            what: "listing API tokens".into(),
            why: e.to_string(),
        })?;
        Ok(keys.next().await.is_some())
    }

    /// Who the `Authorization` header's bearer token belongs to.
    pub async fn verify(&self, header: Option<&str>) -> Result<Principal, ApiError> {
        let missing = || {
            ApiError::Unauthorized(
                "no bearer token (fix: send `Authorization: Bearer ofa_…`; `outpost-fleet token add` makes one)"
                    .into(),
            )
        };
        let bad = || ApiError::Unauthorized("the bearer token is not valid at this fleet".into());
        let token = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(missing)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((p, at)) = self.cache.lock().expect("lock").get(&digest)
            && at.elapsed() < CACHE_FOR
        {
            return Ok(p.clone());
        }
        let (id, secret) = token
            .strip_prefix("ofa_")
            .and_then(|t| t.split_once('_'))
            .ok_or_else(bad)?;
        if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let rec = self
            .hub
            .api_tokens
            .get(id)
            .await
            .map_err(|e| {
                ApiError::Hub(HubError::Op {
                    what: "reading API tokens".into(),
                    why: e.to_string(),
                })
            })?
            .ok_or_else(bad)?;
        let rec: TokenRecord = serde_json::from_slice(&rec).map_err(|_| bad())?;
        let secret = secret.to_string();
        let hash = rec.hash.clone();
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|h| {
                argon2::Argon2::default()
                    .verify_password(secret.as_bytes(), &h)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        if !ok {
            return Err(bad());
        }
        let p = Principal {
            name: rec.name,
            role: rec.role,
        };
        let mut cache = self.cache.lock().expect("lock");
        cache.retain(|_, (_, at)| at.elapsed() < CACHE_FOR);
        cache.insert(digest, (p.clone(), Instant::now()));
        Ok(p)
    }
}
