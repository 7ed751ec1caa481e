//! What the daemon asks of the bus, as a narrow trait: the seam between
//! its decisions (health, config delivery, retention, platform events) and
//! the real NATS client, so that those decisions get unit tests with a
//! recording fake (`messaging::fake`).

use std::time::Duration;

use futures::future::BoxFuture;
use outpost_protocol::messages::{
    ConfigReply, ConfigRequest, HealthReply, RetentionReply, RetentionRequest, schema,
};
use outpost_protocol::subjects;

use super::bus::{Bus, BusError};

/// The platform's requests to instruments and its own events.
pub trait BusControl: Send + Sync + 'static {
    /// Asks an instrument how it is.
    fn ask_health<'a>(
        &'a self,
        instrument: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<HealthReply, BusError>>;
    /// Sends an instrument a config version.
    fn push_config<'a>(
        &'a self,
        instrument: &'a str,
        req: &'a ConfigRequest,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ConfigReply, BusError>>;
    /// Asks an instrument to delete what is older than the cutoff.
    fn ask_retention<'a>(
        &'a self,
        instrument: &'a str,
        req: &'a RetentionRequest,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<RetentionReply, BusError>>;
    /// Publishes a platform event into `EVENTS` and waits until it is
    /// stored.
    fn publish_event<'a>(
        &'a self,
        kind: &'a str,
        schema: &'a str,
        payload: serde_json::Value,
    ) -> BoxFuture<'a, Result<(), BusError>>;
    /// Tells an instrument an artifact was installed for it.
    fn notify_artifact<'a>(
        &'a self,
        instrument: &'a str,
        notice: &'a outpost_protocol::messages::ArtifactNotice,
    ) -> BoxFuture<'a, Result<(), BusError>>;
}

impl BusControl for Bus {
    fn ask_health<'a>(
        &'a self,
        instrument: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<HealthReply, BusError>> {
        Box::pin(async move {
            self.request(
                &subjects::health(instrument),
                "health",
                schema::HEALTH_REQUEST,
                &serde_json::json!({}),
                schema::HEALTH_REPLY,
                timeout,
            )
            .await
        })
    }

    fn push_config<'a>(
        &'a self,
        instrument: &'a str,
        req: &'a ConfigRequest,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ConfigReply, BusError>> {
        Box::pin(async move {
            self.request(
                &subjects::config(instrument),
                "config",
                schema::CONFIG_REQUEST,
                req,
                schema::CONFIG_REPLY,
                timeout,
            )
            .await
        })
    }

    fn ask_retention<'a>(
        &'a self,
        instrument: &'a str,
        req: &'a RetentionRequest,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<RetentionReply, BusError>> {
        Box::pin(async move {
            self.request(
                &subjects::retention(instrument),
                "retention",
                schema::RETENTION_REQUEST,
                req,
                schema::RETENTION_REPLY,
                timeout,
            )
            .await
        })
    }

    fn publish_event<'a>(
        &'a self,
        kind: &'a str,
        schema: &'a str,
        payload: serde_json::Value,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move { Bus::publish_event(self, kind, schema, &payload).await })
    }

    fn notify_artifact<'a>(
        &'a self,
        instrument: &'a str,
        notice: &'a outpost_protocol::messages::ArtifactNotice,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let env = self.envelope("artifact", schema::ARTIFACT, notice);
            let subject = subjects::artifact(instrument);
            self.client()
                .publish(subject.clone(), env.encode().into())
                .await
                .map_err(|e| BusError::Other {
                    subject,
                    detail: e.to_string(),
                })
        })
    }
}
