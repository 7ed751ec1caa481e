//! The platform's own connection to the bus.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, stream};
use async_nats::{Client, ConnectOptions};
use bytes::Bytes;
use outpost_protocol::subjects::{
    self, EVENTS_ALL, EVENTS_STREAM, PLATFORM, PLATFORM_INBOX_PREFIX,
};
use outpost_protocol::{Envelope, envelope::EnvelopeError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

/// A failed exchange with an instrument or the server, naming the subject.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to nats-server at {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error("{subject}: no reply within {timeout:?}")]
    Timeout { subject: String, timeout: Duration },
    #[error("{subject}: nothing is listening (the instrument has not connected)")]
    NoResponders { subject: String },
    #[error("{subject}: {detail}")]
    Other { subject: String, detail: String },
    #[error("{subject}: bad reply: {source}")]
    BadReply {
        subject: String,
        source: EnvelopeError,
    },
}

/// Limits of the `EVENTS` stream.
#[derive(Debug, Clone, Copy)]
pub struct EventsLimits {
    pub max_bytes: i64,
    pub max_age: Duration,
}

/// How long a one-shot client keeps retrying a refused login or a lost
/// connection. nats-server (2.9, Debian 12) refuses nkey logins that race
/// a config reload with "authorization violation" (measured: 308 of 500
/// connects while reloading every 30 ms), and outpostd reloads whenever
/// instruments change, or restarts the server when instruments come or go.
const LOGIN_RETRY: Duration = Duration::from_secs(5);

/// Connects a one-shot platform client (a command, a test) to the sensor's
/// nats-server on `port`. Unlike [`Bus::connect`] it gives up after a few
/// seconds when nothing listens, but rides out a reload or restart.
pub async fn connect_platform_client(
    port: u16,
    seed: &str,
    name: &str,
) -> Result<Client, BusError> {
    let url = format!("nats://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + LOGIN_RETRY;
    loop {
        let attempt = ConnectOptions::with_nkey(seed.trim().to_string())
            .name(name)
            .custom_inbox_prefix(PLATFORM_INBOX_PREFIX)
            .connect(url.as_str())
            .await;
        match attempt {
            Ok(c) => return Ok(c),
            Err(e)
                if matches!(
                    e.kind(),
                    async_nats::ConnectErrorKind::AuthorizationViolation
                        | async_nats::ConnectErrorKind::Io
                ) && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                return Err(BusError::Connect {
                    url,
                    detail: e.to_string(),
                });
            }
        }
    }
}

/// The platform's client.
#[derive(Clone)]
pub struct Bus {
    client: Client,
    js: jetstream::Context,
    sensor: String,
}

impl Bus {
    /// Connects as the platform; keeps reconnecting in the background.
    pub async fn connect(port: u16, seed: String, sensor: &str) -> Result<Bus, BusError> {
        let url = format!("nats://127.0.0.1:{port}");
        let client = ConnectOptions::with_nkey(seed)
            .name("outpostd")
            .custom_inbox_prefix(PLATFORM_INBOX_PREFIX)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(|n| Duration::from_millis(100 * (n as u64).min(20)))
            .event_callback(|e| async move {
                match e {
                    async_nats::Event::Connected => info!("platform connected to the bus"),
                    async_nats::Event::Disconnected => warn!("platform lost the bus; reconnecting"),
                    other => info!("bus: {other}"),
                }
            })
            .connect(url.as_str())
            .await
            .map_err(|e| BusError::Connect {
                url: url.clone(),
                detail: e.to_string(),
            })?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(Duration::from_secs(3));
        Ok(Bus {
            client,
            js,
            sensor: sensor.to_string(),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Creates the `EVENTS` stream, or updates its limits.
    pub async fn ensure_events_stream(&self, limits: EventsLimits) -> Result<(), BusError> {
        let config = stream::Config {
            name: EVENTS_STREAM.into(),
            subjects: vec![EVENTS_ALL.into()],
            max_bytes: limits.max_bytes,
            max_age: limits.max_age,
            duplicate_window: Duration::from_secs(120),
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        };
        self.js
            .create_or_update_stream(config)
            .await
            .map(|_| ())
            .map_err(|e| BusError::Other {
                subject: format!("stream {EVENTS_STREAM}"),
                detail: e.to_string(),
            })
    }

    /// An envelope from the platform.
    pub fn envelope<T: Serialize>(&self, kind: &str, schema: &str, payload: &T) -> Envelope {
        Envelope::new(
            ulid::Ulid::new().to_string(),
            SystemTime::now(),
            &self.sensor,
            PLATFORM,
            kind,
            schema,
            serde_json::to_value(payload).unwrap_or_default(),
        )
    }

    /// Sends `payload` (schema `schema`) to `subject` and decodes the reply
    /// of schema `reply_schema`.
    pub async fn request<T: Serialize, R: DeserializeOwned>(
        &self,
        subject: &str,
        kind: &str,
        schema: &str,
        payload: &T,
        reply_schema: &str,
        timeout: Duration,
    ) -> Result<R, BusError> {
        let body = Bytes::from(self.envelope(kind, schema, payload).encode());
        let req = async_nats::Request::new()
            .payload(body)
            .timeout(Some(timeout));
        let msg = self
            .client
            .send_request(subject.to_string(), req)
            .await
            .map_err(|e| match e.kind() {
                async_nats::RequestErrorKind::TimedOut => BusError::Timeout {
                    subject: subject.into(),
                    timeout,
                },
                async_nats::RequestErrorKind::NoResponders => BusError::NoResponders {
                    subject: subject.into(),
                },
                _ => BusError::Other {
                    subject: subject.into(),
                    detail: e.to_string(),
                },
            })?;
        Envelope::decode(&msg.payload)
            .and_then(|e| e.payload_as::<R>(reply_schema))
            .map_err(|source| BusError::BadReply {
                subject: subject.into(),
                source,
            })
    }

    /// Publishes a platform event `outpost.events.outpostd.<kind>` into
    /// `EVENTS` and waits for it to be stored.
    pub async fn publish_event<T: Serialize>(
        &self,
        kind: &str,
        schema: &str,
        payload: &T,
    ) -> Result<(), BusError> {
        let env = self.envelope(kind, schema, payload);
        let subject = subjects::event(PLATFORM, kind);
        let ack = self
            .js
            .send_publish(
                subject.clone(),
                jetstream::message::PublishMessage::build()
                    .payload(Bytes::from(env.encode()))
                    .message_id(&env.id),
            )
            .await
            .map_err(|e| BusError::Other {
                subject: subject.clone(),
                detail: e.to_string(),
            })?;
        ack.await.map(|_| ()).map_err(|e| BusError::Other {
            subject,
            detail: e.to_string(),
        })
    }
}
