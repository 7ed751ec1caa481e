//! [`run`] and the [`Instrument`] trait: the process contract.

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::service::ServiceExt;
use bytes::Bytes;
use futures::StreamExt;
use outpost_protocol::Envelope;
use outpost_protocol::messages::{
    ArtifactNotice, ConfigReply, ConfigRequest, HealthReply, HealthStatus, RetentionReply,
    RetentionRequest, schema,
};
use outpost_protocol::subjects;
use serde::de::DeserializeOwned;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::context::Context;
use crate::env::Env;
use crate::error::BoxError;
use crate::storage;

/// How long the main loop gets to return after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(8);
/// How long buffered events get to reach the bus at exit.
const FLUSH_GRACE: Duration = Duration::from_secs(5);

/// An instrument's answer to a health request.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub status: HealthStatus,
    pub message: String,
    pub details: serde_json::Value,
}

impl Health {
    pub fn ok(message: impl Into<String>) -> Health {
        Health::new(HealthStatus::Ok, message)
    }
    pub fn degraded(message: impl Into<String>) -> Health {
        Health::new(HealthStatus::Degraded, message)
    }
    pub fn failed(message: impl Into<String>) -> Health {
        Health::new(HealthStatus::Failed, message)
    }
    fn new(status: HealthStatus, message: impl Into<String>) -> Health {
        Health {
            status,
            message: message.into(),
            details: serde_json::Value::Object(Default::default()),
        }
    }
    /// Adds details (a JSON object) to the reply.
    pub fn with_details(mut self, details: serde_json::Value) -> Health {
        self.details = details;
        self
    }
}

/// What an instrument implements. Handlers take `&self` and may run while
/// [`Instrument::run`] runs, so keep state behind locks or atomics.
pub trait Instrument: Send + Sync + Sized + 'static {
    /// The config body, checked by serde before [`Instrument::configure`].
    type Config: DeserializeOwned + Send + 'static;

    /// The instrument's work. Return when [`Context::shutdown`] resolves;
    /// an error ends the process with a failure status.
    fn run(&self, ctx: Context) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Answers a health request.
    fn health(&self, ctx: &Context) -> impl Future<Output = Health> + Send {
        let _ = ctx;
        async { Health::ok("running") }
    }

    /// Applies config version `version`, or rejects it with a reason (then
    /// the previous config must stay in force).
    fn configure(
        &self,
        ctx: &Context,
        version: u64,
        config: Self::Config,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// Deletes what is older than `cutoff`. The default deletes files
    /// older than the cutoff under the persistent directory and reports
    /// when the oldest file left was modified. An override should report
    /// `oldest_remaining` too: the platform compares it with the cutoff
    /// (and walks the persistent directory itself); anything older left is
    /// a `retention-violated` event.
    fn retention(
        &self,
        ctx: &Context,
        cutoff: SystemTime,
    ) -> impl Future<Output = RetentionReply> + Send {
        let dir = ctx.persistent_dir().to_path_buf();
        async move {
            tokio::task::spawn_blocking(move || storage::delete_older_than(&dir, cutoff))
                .await
                .unwrap_or_default()
        }
    }

    /// A verified artifact was installed for the instrument.
    fn artifact(&self, ctx: &Context, notice: ArtifactNotice) -> impl Future<Output = ()> + Send {
        let _ = ctx;
        async move {
            info!(artifact = %notice.name, version = %notice.version, path = %notice.path, "artifact installed");
        }
    }
}

/// Runs `instrument` under the platform: logging to stdout, the bus
/// connection, the handlers, SIGTERM. Returns the process exit code.
pub fn run<I: Instrument>(instrument: I) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OUTPOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stdout)
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(instrument)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn reply_bytes<T: serde::Serialize>(ctx: &Context, kind: &str, schema: &str, payload: &T) -> Bytes {
    Bytes::from(ctx.envelope(kind, schema, payload).encode())
}

async fn serve<I: Instrument>(instrument: I) -> Result<(), BoxError> {
    let env = Env::from_environment()?;
    let version = std::env::var("OUTPOST_IMAGE")
        .ok()
        .and_then(|i| i.split_once(':').map(|(_, v)| v.to_string()))
        .unwrap_or_else(|| "0.0.0".into());
    let ctx = Context::connect(env).await?;
    let name = ctx.instrument().to_string();
    info!(instrument = %name, sensor = %ctx.sensor(), "instrument starting");

    let service = ctx
        .client()
        .service_builder()
        .description(format!("Outpost instrument {name}"))
        .start(name.clone(), version)
        .await
        .map_err(|e| format!("cannot register service {name}: {e}"))?;
    let inst = Arc::new(instrument);

    let mut health = service
        .endpoint_builder()
        .name("health")
        .add(subjects::health(&name))
        .await
        .map_err(|e| format!("cannot serve {}: {e}", subjects::health(&name)))?;
    let (i, c) = (inst.clone(), ctx.clone());
    tokio::spawn(async move {
        while let Some(req) = health.next().await {
            let h = i.health(&c).await;
            let mut details = match h.details {
                serde_json::Value::Object(m) => m,
                serde_json::Value::Null => Default::default(),
                other => [("value".to_string(), other)].into_iter().collect(),
            };
            details.insert(
                "sdk".into(),
                serde_json::json!({
                    "events": c.event_stats(),
                    "connections": c.connections(),
                    "config_version": c.config_version(),
                }),
            );
            let reply = HealthReply {
                status: h.status,
                message: h.message,
                details: serde_json::Value::Object(details),
                config_version: Some(c.config_version()),
            };
            let _ = req
                .respond(Ok(reply_bytes(&c, "health", schema::HEALTH_REPLY, &reply)))
                .await;
        }
    });

    let mut config = service
        .endpoint_builder()
        .name("config")
        .add(subjects::config(&name))
        .await
        .map_err(|e| format!("cannot serve {}: {e}", subjects::config(&name)))?;
    let (i, c) = (inst.clone(), ctx.clone());
    tokio::spawn(async move {
        while let Some(req) = config.next().await {
            let reply = apply_config(&*i, &c, &req.message.payload).await;
            let _ = req
                .respond(Ok(reply_bytes(&c, "config", schema::CONFIG_REPLY, &reply)))
                .await;
        }
    });

    let mut retention = service
        .endpoint_builder()
        .name("retention")
        .add(subjects::retention(&name))
        .await
        .map_err(|e| format!("cannot serve {}: {e}", subjects::retention(&name)))?;
    let (i, c) = (inst.clone(), ctx.clone());
    tokio::spawn(async move {
        while let Some(req) = retention.next().await {
            let reply = match Envelope::decode(&req.message.payload)
                .map_err(|e| e.to_string())
                .and_then(|e| {
                    e.payload_as::<RetentionRequest>(schema::RETENTION_REQUEST)
                        .map_err(|e| e.to_string())
                })
                .and_then(|r| {
                    humantime::parse_rfc3339(&r.cutoff)
                        .map_err(|e| format!("cutoff {:?}: {e}", r.cutoff))
                }) {
                Ok(cutoff) => i.retention(&c, cutoff).await,
                Err(e) => RetentionReply {
                    errors: vec![format!("bad retention request: {e}")],
                    ..Default::default()
                },
            };
            let _ = req
                .respond(Ok(reply_bytes(
                    &c,
                    "retention",
                    schema::RETENTION_REPLY,
                    &reply,
                )))
                .await;
        }
    });

    let mut artifacts = ctx
        .subscribe_raw(&subjects::artifact(&name))
        .await
        .map_err(|e| format!("cannot listen for artifacts: {e}"))?;
    let (i, c) = (inst.clone(), ctx.clone());
    tokio::spawn(async move {
        while let Some(msg) = artifacts.next().await {
            match Envelope::decode(&msg.payload)
                .and_then(|e| e.payload_as::<ArtifactNotice>(schema::ARTIFACT))
            {
                Ok(notice) => i.artifact(&c, notice).await,
                Err(e) => warn!("ignoring an artifact notice: {e}"),
            }
        }
    });

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (i, c) = (inst.clone(), ctx.clone());
    let mut main = tokio::spawn(async move { i.run(c).await });
    let result = tokio::select! {
        r = &mut main => r,
        _ = term.recv() => {
            info!("SIGTERM received; stopping");
            ctx.trigger_shutdown();
            stop_main(&mut main).await
        }
        _ = int.recv() => {
            info!("SIGINT received; stopping");
            ctx.trigger_shutdown();
            stop_main(&mut main).await
        }
    };
    if !ctx.flush_events(FLUSH_GRACE).await {
        warn!(
            "{} events were still buffered at exit",
            ctx.event_stats().queued
        );
    }
    // Neither may hold up the exit when the bus is away.
    let _ = tokio::time::timeout(Duration::from_secs(1), service.stop()).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), ctx.client().flush()).await;
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("instrument {name} failed: {e}").into()),
        Err(e) => Err(format!("instrument {name} panicked: {e}").into()),
    }
}

async fn stop_main(
    main: &mut tokio::task::JoinHandle<Result<(), BoxError>>,
) -> Result<Result<(), BoxError>, tokio::task::JoinError> {
    match tokio::time::timeout(STOP_GRACE, &mut *main).await {
        Ok(r) => r,
        Err(_) => {
            warn!("the main loop did not return within {STOP_GRACE:?} of SIGTERM");
            main.abort();
            Ok(Ok(()))
        }
    }
}

/// Decodes a config request, checks its body against `I::Config`, and
/// hands it to the instrument.
async fn apply_config<I: Instrument>(i: &I, ctx: &Context, payload: &[u8]) -> ConfigReply {
    let req = match Envelope::decode(payload)
        .and_then(|e| e.payload_as::<ConfigRequest>(schema::CONFIG_REQUEST))
    {
        Ok(r) => r,
        Err(e) => {
            return ConfigReply {
                version: 0,
                applied: false,
                reason: Some(format!("bad config request: {e}")),
            };
        }
    };
    let version = req.version;
    // The platform repeats a push it got no answer to in time; the version
    // already in force is not applied twice.
    if version != 0 && ctx.config_version() == version {
        return ConfigReply {
            version,
            applied: true,
            reason: None,
        };
    }
    let typed: I::Config = match serde_json::from_value(req.config) {
        Ok(c) => c,
        Err(e) => {
            return ConfigReply {
                version,
                applied: false,
                reason: Some(format!(
                    "config does not fit what the instrument expects: {e}"
                )),
            };
        }
    };
    match i.configure(ctx, version, typed).await {
        Ok(()) => {
            ctx.set_config_version(version);
            info!(version, "config applied");
            ConfigReply {
                version,
                applied: true,
                reason: None,
            }
        }
        Err(reason) => {
            warn!(version, "config rejected: {reason}");
            ConfigReply {
                version,
                applied: false,
                reason: Some(reason),
            }
        }
    }
}
