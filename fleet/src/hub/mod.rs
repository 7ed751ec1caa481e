//! The hub: the NATS system the fleet's state lives in (KV buckets for
//! the sensor registry, enrollment tokens, presence and API tokens), and
//! the fleet's connections to it.

pub mod jwt;
pub mod keys;
pub mod mirror;
pub mod server;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use tracing::{info, warn};

use keys::FleetKeys;
use mirror::Mirror;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(
        "cannot reach the hub at {urls}: {why} (fix: check --nats-url, the hub's CA and that the hub runs)"
    )]
    Connect { urls: String, why: String },
    #[error("hub bucket {bucket}: {why}")]
    Bucket { bucket: String, why: String },
    #[error("hub {what}: {why}")]
    Op { what: String, why: String },
    #[error("the hub refused the fleet account's update: {0}")]
    ClaimsUpdate(String),
}

/// How to reach the hub.
#[derive(Debug, Clone)]
pub struct HubAddr {
    pub urls: Vec<String>,
    pub ca: PathBuf,
    /// JetStream replicas for the fleet's buckets and streams (3 on a
    /// 3-node cluster).
    pub replicas: usize,
}

/// The fleet's connection to its hub and its buckets.
#[derive(Clone)]
pub struct Hub {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    sys: async_nats::Client,
    pub keys: Arc<FleetKeys>,
    pub sensors: kv::Store,
    pub tokens: kv::Store,
    pub presence: kv::Store,
    pub api_tokens: kv::Store,
    pub rollouts: kv::Store,
    /// The image catalog (`<name>/<version>`).
    pub images: kv::Store,
    /// Local indexes of the buckets the hot paths read.
    pub index: Indexes,
}

/// This instance's indexes of the registry, presence and rollouts.
#[derive(Clone)]
pub struct Indexes {
    pub sensors: Mirror<crate::registry::SensorRecord>,
    pub presence: Mirror<crate::presence::Presence>,
    pub rollouts: Mirror<crate::desired::Rollout>,
    pub images: Mirror<crate::images::ImageRecord>,
}

async fn connect_as(
    addr: &HubAddr,
    creds: &str,
    name: &str,
) -> Result<async_nats::Client, HubError> {
    let urls = addr.urls.join(",");
    let err = |why: String| HubError::Connect {
        urls: urls.clone(),
        why,
    };
    let opts = async_nats::ConnectOptions::new()
        .credentials(creds)
        .map_err(|e| err(e.to_string()))?
        .add_root_certificates(addr.ca.clone())
        .require_tls(true)
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5));
    let addrs: Vec<async_nats::ServerAddr> = addr
        .urls
        .iter()
        .map(|u| u.parse())
        .collect::<Result<_, _>>()
        .map_err(|e: std::io::Error| err(e.to_string()))?;
    let client = opts.connect(addrs).await.map_err(|e| err(e.to_string()))?;
    // `retry_on_initial_connect` returns at once; wait until it is up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while client.connection_state() != async_nats::connection::State::Connected {
        if tokio::time::Instant::now() > deadline {
            return Err(err("not connected after 30 s".into()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(client)
}

impl Hub {
    /// Connects as the fleet's service user and a system user, makes the
    /// buckets that are missing, and pushes the fleet account's current
    /// revocations (a hub node that was down catches up).
    pub async fn connect(addr: &HubAddr, keys: Arc<FleetKeys>) -> Result<Hub, HubError> {
        let client = connect_as(addr, &keys.service_creds(), "outpost-fleet").await?;
        let sys = connect_as(addr, &keys.system_creds(), "outpost-fleet-sys").await?;
        let js = jetstream::new(client.clone());
        let sensors = retry(|| bucket(&js, "sensors", 5, addr.replicas)).await?;
        let presence = retry(|| bucket(&js, "presence", 1, addr.replicas)).await?;
        let rollouts = retry(|| bucket(&js, "rollouts", 5, addr.replicas)).await?;
        let images = retry(|| bucket(&js, "images", 1, addr.replicas)).await?;
        let index = Indexes {
            sensors: Mirror::start(&js, sensors.clone(), "sensors").await?,
            presence: Mirror::start(&js, presence.clone(), "presence").await?,
            rollouts: Mirror::start(&js, rollouts.clone(), "rollouts").await?,
            images: Mirror::start(&js, images.clone(), "images").await?,
        };
        let hub = Hub {
            sensors,
            tokens: retry(|| bucket(&js, "enroll_tokens", 1, addr.replicas)).await?,
            presence,
            api_tokens: retry(|| bucket(&js, "api_tokens", 1, addr.replicas)).await?,
            rollouts,
            images,
            index,
            client,
            js,
            sys,
            keys,
        };
        retry(|| hub.push_account()).await?;
        Ok(hub)
    }

    /// Rebuilds the fleet account's JWT from the registry (every revoked
    /// sensor key) and sends it to the hub, which applies it at once:
    /// connections of revoked users are closed.
    pub async fn push_account(&self) -> Result<(), HubError> {
        let revoked = self.revocations().await?;
        let jwt = self.keys.account_jwt(&revoked);
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            self.sys
                .request("$SYS.REQ.CLAIMS.UPDATE", Bytes::from(jwt.into_bytes())),
        )
        .await
        .map_err(|_| HubError::ClaimsUpdate("no answer within 10 s".into()))?
        .map_err(|e| HubError::ClaimsUpdate(e.to_string()))?;
        let v: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap_or_default();
        if let Some(e) = v.get("error") {
            return Err(HubError::ClaimsUpdate(e.to_string()));
        }
        info!(revoked = revoked.len(), "fleet account pushed to the hub");
        Ok(())
    }

    async fn revocations(&self) -> Result<BTreeMap<String, i64>, HubError> {
        let mut out = BTreeMap::new();
        for s in crate::registry::all_sensors(self).await? {
            if let (Some(key), Some(at)) = (&s.public_key, s.revoked_at_ms) {
                // Every JWT issued up to the revocation, with a margin
                // for a fleet instance whose clock is a little behind.
                out.insert(key.clone(), at / 1000 + 5);
            }
        }
        Ok(out)
    }

    /// Waits until the hub answers (used after starting it).
    pub async fn ping(&self) -> bool {
        match tokio::time::timeout(Duration::from_secs(5), self.client.flush()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                warn!("hub flush failed: {e}");
                false
            }
            Err(_) => false,
        }
    }
}

/// This instance's share of what sensors send on a subject: every fleet
/// instance subscribes in one queue group, so each message reaches one.
pub struct Share {
    sub: async_nats::Subscriber,
    shutdown: crate::shutdown::Shutdown,
}

impl Share {
    /// The next message and the sensor its subject names (messages on a
    /// subject that names none are skipped); `None` once the fleet stops
    /// or the connection ends.
    pub async fn next(&mut self) -> Option<(String, async_nats::Message)> {
        use futures::StreamExt;
        loop {
            let msg = tokio::select! {
                m = self.sub.next() => m?,
                _ = self.shutdown.cancelled() => return None,
            };
            if let Some(sensor) = outpost_protocol::fleet::sensor_of(&msg.subject) {
                return Some((sensor.to_string(), msg));
            }
        }
    }
}

impl Hub {
    /// Takes this instance's share of `subject` until `shutdown`; `None`
    /// (said as a warning naming `what`) when the hub refuses.
    pub async fn share(
        &self,
        subject: &str,
        what: &str,
        shutdown: &crate::shutdown::Shutdown,
    ) -> Option<Share> {
        match self
            .client
            .queue_subscribe(subject.to_string(), "outpost-fleet".into())
            .await
        {
            Ok(sub) => Some(Share {
                sub,
                shutdown: shutdown.clone(),
            }),
            Err(e) => {
                warn!("cannot take {what}: {e}");
                None
            }
        }
    }
}

/// Retries `f` for up to a minute: a hub cluster that just started has
/// no JetStream leader yet ("JetStream system temporarily unavailable").
pub async fn retry<T, F, Fut>(mut f: F) -> Result<T, HubError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, HubError>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut wait = Duration::from_millis(200);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() < deadline => {
                warn!("hub not ready ({e}); trying again in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Opens KV bucket `name`, making its stream first when it is missing.
/// The stream is made here, as async-nats would make it, because
/// async-nats first asks for the account's info in a form nats-server
/// 2.9 (Debian 12's) does not answer.
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    history: i64,
    replicas: usize,
) -> Result<kv::Store, HubError> {
    let err = |why: String| HubError::Bucket {
        bucket: name.to_string(),
        why,
    };
    if let Ok(s) = js.get_key_value(name).await {
        return Ok(s);
    }
    let cfg = jetstream::stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: history,
        storage: jetstream::stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: replicas.max(1),
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    };
    if let Err(e) = js.create_stream(cfg).await {
        // Another fleet instance may have made it meanwhile.
        return js.get_key_value(name).await.map_err(|_| err(e.to_string()));
    }
    js.get_key_value(name).await.map_err(|e| err(e.to_string()))
}

/// Makes stream `cfg.name` or brings its configuration to `cfg`.
pub async fn stream(
    hub: &Hub,
    cfg: jetstream::stream::Config,
) -> Result<jetstream::stream::Stream, HubError> {
    let name = cfg.name.clone();
    let err = |e: &dyn std::fmt::Display| HubError::Op {
        what: format!("stream {name}"),
        why: e.to_string(),
    };
    hub.js
        .create_or_update_stream(cfg)
        .await
        .map_err(|e| err(&e))?;
    hub.js.get_stream(&name).await.map_err(|e| err(&e))
}

/// Every message on `filter` in stream `s` that parses as `T`, oldest
/// first (an ephemeral consumer, removed after).
pub async fn read_all<T: serde::de::DeserializeOwned>(
    s: &jetstream::stream::Stream,
    filter: String,
) -> Result<Vec<T>, String> {
    use async_nats::jetstream::consumer::{self, pull};
    use futures::StreamExt;
    let c = s
        .create_consumer(pull::Config {
            filter_subject: filter,
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            memory_storage: true,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    loop {
        let mut batch = c
            .fetch()
            .max_messages(500)
            .expires(Duration::from_millis(300))
            .messages()
            .await
            .map_err(|e| e.to_string())?;
        let (mut got, mut pending) = (0, 0);
        while let Some(m) = batch.next().await {
            let m = m.map_err(|e| e.to_string())?;
            got += 1;
            pending = m.info().map(|i| i.pending).unwrap_or(0);
            if let Ok(v) = serde_json::from_slice(&m.payload) {
                out.push(v);
            }
        }
        if got == 0 || pending == 0 {
            break;
        }
    }
    let _ = s.delete_consumer(c.cached_info().name.as_str()).await;
    Ok(out)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
