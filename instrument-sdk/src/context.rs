//! [`Context`]: an instrument's handle to the bus and to its storage.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use async_nats::{Client, ConnectOptions, Event, ServerError};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use outpost_protocol::envelope::{EnvelopeError, kind_problem, schema_problem};
use outpost_protocol::messages::{RpcError, schema};
use outpost_protocol::{Envelope, subjects};
use serde::Serialize;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::env::Env;
use crate::error::SdkError;
use crate::publisher::{EventStats, Item, Publisher};
use crate::violations::{Op, Violations};

/// How long after a round trip a refusal is still waited for.
const REFUSAL_GRACE: Duration = Duration::from_millis(50);

/// Connection facts, for health details.
#[derive(Debug, Default)]
struct Link {
    connected: AtomicBool,
    reconnects: AtomicU64,
}

struct Inner {
    env: Env,
    client: Client,
    publisher: Publisher,
    violations: Arc<Violations>,
    link: Arc<Link>,
    shutdown: watch::Sender<bool>,
    config_version: AtomicU64,
}

/// An instrument's handle to the platform; cheap to clone.
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

/// Back-off between reconnect attempts: 25 ms doubling to 2 s (the first
/// attempts are quick: at start the platform may still be opening the
/// instrument's proxy).
fn reconnect_delay(attempts: usize) -> Duration {
    let exp = attempts.saturating_sub(1).min(7) as u32;
    Duration::from_millis(25 * 2u64.pow(exp)).min(Duration::from_secs(2))
}

impl Context {
    /// Connects to the bus described by `env`. Returns at once: the
    /// connection is made (and remade) in the background, and what is
    /// published meanwhile is buffered.
    pub async fn connect(env: Env) -> Result<Context, SdkError> {
        let seed =
            std::fs::read_to_string(&env.nkey_file).map_err(|source| SdkError::Credentials {
                path: env.nkey_file.display().to_string(),
                source,
            })?;
        let violations = Arc::new(Violations::default());
        let link = Arc::new(Link::default());
        let (v, l, name) = (violations.clone(), link.clone(), env.instrument.clone());
        let client = ConnectOptions::with_nkey(seed.trim().to_string())
            .name(&env.instrument)
            .custom_inbox_prefix(subjects::inbox_prefix(&env.instrument))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(reconnect_delay)
            .event_callback(move |event| {
                let (v, l, name) = (v.clone(), l.clone(), name.clone());
                async move {
                    match event {
                        Event::Connected => {
                            if l.connected.swap(true, Ordering::Relaxed) {
                                return;
                            }
                            l.reconnects.fetch_add(1, Ordering::Relaxed);
                            info!(instrument = %name, "connected to the bus");
                        }
                        Event::Disconnected => {
                            l.connected.store(false, Ordering::Relaxed);
                            warn!(instrument = %name, "lost the bus; reconnecting (events are buffered)");
                        }
                        // Repeats every attempt while the bus is away.
                        Event::ClientError(e) => debug!(instrument = %name, "bus: {e}"),
                        Event::ServerError(ServerError::Other(text)) => {
                            warn!(instrument = %name, "bus refused: {text}");
                            v.record(&text);
                        }
                        other => info!(instrument = %name, "bus: {other}"),
                    }
                }
            })
            .connect(env.nats_url.as_str())
            .await
            .map_err(|e| SdkError::Connect {
                url: env.nats_url.clone(),
                detail: e.to_string(),
            })?;
        let mut js = async_nats::jetstream::new(client.clone());
        js.set_timeout(Duration::from_secs(3));
        let publisher = Publisher::start(js, env.event_buffer);
        let (shutdown, _) = watch::channel(false);
        Ok(Context {
            inner: Arc::new(Inner {
                env,
                client,
                publisher,
                violations,
                link,
                shutdown,
                config_version: AtomicU64::new(0),
            }),
        })
    }

    /// This instrument's name.
    pub fn instrument(&self) -> &str {
        &self.inner.env.instrument
    }

    /// The sensor's name.
    pub fn sensor(&self) -> &str {
        &self.inner.env.sensor
    }

    /// Persistent storage (kept across restarts and upgrades).
    pub fn persistent_dir(&self) -> &Path {
        &self.inner.env.persistent_dir
    }

    /// Transient storage (empty at every start).
    pub fn transient_dir(&self) -> &Path {
        &self.inner.env.transient_dir
    }

    /// The NATS client, for what the SDK does not cover.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The config version applied last (0 before the first).
    pub fn config_version(&self) -> u64 {
        self.inner.config_version.load(Ordering::Relaxed)
    }

    pub(crate) fn set_config_version(&self, v: u64) {
        self.inner.config_version.store(v, Ordering::Relaxed);
    }

    /// Whether the bus connection is up now.
    pub fn is_connected(&self) -> bool {
        self.inner.link.connected.load(Ordering::Relaxed)
    }

    /// Connections made so far (1 after the first).
    pub fn connections(&self) -> u64 {
        self.inner.link.reconnects.load(Ordering::Relaxed)
    }

    /// Resolves when the instrument is asked to stop (SIGTERM).
    pub async fn shutdown(&self) {
        let mut rx = self.inner.shutdown.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Whether the instrument is asked to stop.
    pub fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    pub(crate) fn trigger_shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// An envelope from this instrument.
    pub fn envelope<T: Serialize>(&self, kind: &str, schema: &str, payload: &T) -> Envelope {
        Envelope::new(
            ulid::Ulid::new().to_string(),
            SystemTime::now(),
            self.sensor(),
            self.instrument(),
            kind,
            schema,
            serde_json::to_value(payload).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Publishes an event `outpost.events.<self>.<kind>` with a payload of
    /// schema `schema` (`<name>/<version>`). It is queued and returns at
    /// once; it reaches the `EVENTS` stream exactly once, also across bus
    /// outages. Fails only on an invalid kind or schema, or when the
    /// buffer is full (the event is then dropped and counted).
    pub fn publish<T: Serialize>(
        &self,
        kind: &str,
        schema: &str,
        payload: &T,
    ) -> Result<(), SdkError> {
        if let Some(problem) = kind_problem(kind).or_else(|| schema_problem(schema)) {
            return Err(SdkError::InvalidEvent {
                kind: kind.into(),
                schema: schema.into(),
                problem,
            });
        }
        let env = self.envelope(kind, schema, payload);
        self.inner.publisher.try_publish(Item {
            subject: subjects::event(self.instrument(), kind),
            id: env.id.clone(),
            body: Bytes::from(env.encode()),
        })
    }

    /// Counters of the event buffer.
    pub fn event_stats(&self) -> EventStats {
        self.inner.publisher.stats()
    }

    /// Waits until every published event is stored, up to `timeout`.
    pub async fn flush_events(&self, timeout: Duration) -> bool {
        self.inner.publisher.flush(timeout).await
    }

    /// A round trip through the server, then a short wait for a refusal of
    /// `op` on `subject` sent since `since`.
    async fn confirm(&self, op: Op, subject: &str, since: Instant) -> Result<(), SdkError> {
        let inbox = self.inner.client.new_inbox();
        if let Ok(mut echo) = self.inner.client.subscribe(inbox.clone()).await {
            let _ = self.inner.client.publish(inbox, Bytes::new()).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), echo.next()).await;
        }
        if self
            .inner
            .violations
            .wait_refused(op, subject, since, REFUSAL_GRACE)
            .await
        {
            return Err(self.denied(op, subject));
        }
        Ok(())
    }

    fn denied(&self, op: Op, subject: &str) -> SdkError {
        SdkError::PermissionDenied {
            instrument: self.instrument().into(),
            op: op.verb(),
            subject: subject.into(),
        }
    }

    /// Publishes raw bytes to any subject and waits for the server to have
    /// seen it: a refused publish is [`SdkError::PermissionDenied`].
    pub async fn publish_raw(&self, subject: &str, payload: Bytes) -> Result<(), SdkError> {
        let since = Instant::now();
        self.inner
            .client
            .publish(subject.to_string(), payload)
            .await
            .map_err(|e| SdkError::Bus {
                subject: subject.into(),
                detail: e.to_string(),
            })?;
        self.confirm(Op::Publish, subject, since).await
    }

    /// Subscribes to any subject; a refused subscription is
    /// [`SdkError::PermissionDenied`].
    pub async fn subscribe_raw(&self, subject: &str) -> Result<async_nats::Subscriber, SdkError> {
        let since = Instant::now();
        let sub = self
            .inner
            .client
            .subscribe(subject.to_string())
            .await
            .map_err(|e| SdkError::Bus {
                subject: subject.into(),
                detail: e.to_string(),
            })?;
        self.confirm(Op::Subscribe, subject, since).await?;
        Ok(sub)
    }

    /// Sends a request and waits up to `timeout` for the reply. A refused
    /// publish is [`SdkError::PermissionDenied`].
    pub async fn request_raw(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<async_nats::Message, SdkError> {
        let since = Instant::now();
        let req = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(timeout));
        let fut = self.inner.client.send_request(subject.to_string(), req);
        tokio::select! {
            res = fut => res.map_err(|e| match e.kind() {
                async_nats::RequestErrorKind::TimedOut => {
                    if self.inner.violations.refused(Op::Publish, subject, since) {
                        self.denied(Op::Publish, subject)
                    } else {
                        SdkError::Timeout { subject: subject.into(), timeout }
                    }
                }
                async_nats::RequestErrorKind::NoResponders => SdkError::NoResponders { subject: subject.into() },
                _ => SdkError::Bus { subject: subject.into(), detail: e.to_string() },
            }),
            true = self.inner.violations.wait_refused(Op::Publish, subject, since, timeout) => {
                Err(self.denied(Op::Publish, subject))
            }
        }
    }

    /// Calls method `method` of peer `peer` (the manifest must allow it)
    /// with a payload of schema `schema`, and returns the reply envelope.
    pub async fn call<T: Serialize>(
        &self,
        peer: &str,
        method: &str,
        schema: &str,
        payload: &T,
        timeout: Duration,
    ) -> Result<Envelope, SdkError> {
        let subject = subjects::rpc(peer, method);
        let env = self.envelope("rpc", schema, payload);
        let msg = self
            .request_raw(&subject, Bytes::from(env.encode()), timeout)
            .await?;
        let reply = Envelope::decode(&msg.payload).map_err(|e| SdkError::BadReply {
            subject: subject.clone(),
            detail: e.to_string(),
        })?;
        if reply.schema == schema::RPC_ERROR {
            let err: RpcError = reply.payload_as(schema::RPC_ERROR).unwrap_or(RpcError {
                error: "unknown error".into(),
            });
            return Err(SdkError::Remote {
                subject,
                error: err.error,
            });
        }
        Ok(reply)
    }

    /// Serves method `method` for allowed peers: each request envelope goes
    /// to `handler`, whose `Ok((schema, payload))` or `Err(text)` is sent
    /// back. Runs until the instrument stops.
    pub async fn serve<F, Fut>(&self, method: &str, handler: F) -> Result<(), SdkError>
    where
        F: Fn(Envelope) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(String, serde_json::Value), String>> + Send,
    {
        let subject = subjects::rpc(self.instrument(), method);
        let mut sub = self.subscribe_raw(&subject).await?;
        let ctx = self.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(reply_to) = msg.reply.clone() else {
                    continue;
                };
                let reply = match Envelope::decode(&msg.payload) {
                    Ok(req) => match handler(req).await {
                        Ok((schema, payload)) => ctx.envelope("rpc-reply", &schema, &payload),
                        Err(error) => {
                            ctx.envelope("rpc-reply", schema::RPC_ERROR, &RpcError { error })
                        }
                    },
                    Err(e) => ctx.envelope(
                        "rpc-reply",
                        schema::RPC_ERROR,
                        &RpcError {
                            error: format!("request is not a valid envelope: {e}"),
                        },
                    ),
                };
                let _ = ctx
                    .inner
                    .client
                    .publish(reply_to, Bytes::from(reply.encode()))
                    .await;
            }
        });
        Ok(())
    }

    /// The events of peer `peer` (the manifest must allow reading them).
    pub async fn subscribe_events(&self, peer: &str) -> Result<EventStream, SdkError> {
        let sub = self.subscribe_raw(&subjects::events_of(peer)).await?;
        Ok(EventStream { sub })
    }
}

/// Events of a peer, decoded; a message that is not a valid envelope comes
/// as an error (and the stream goes on).
pub struct EventStream {
    sub: async_nats::Subscriber,
}

impl Stream for EventStream {
    type Item = Result<Envelope, EnvelopeError>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        match self.sub.poll_next_unpin(cx) {
            Poll::Ready(Some(msg)) => Poll::Ready(Some(Envelope::decode(&msg.payload))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
