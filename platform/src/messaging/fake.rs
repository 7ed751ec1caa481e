//! A recording fake [`BusControl`] for the daemon's unit tests: instruments
//! that answer as the test says, and every request and event recorded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use outpost_protocol::messages::{
    ConfigReply, ConfigRequest, HealthReply, HealthStatus, RetentionReply, RetentionRequest,
};

use super::bus::BusError;
use super::control::BusControl;

/// How the fake instruments answer.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Health replies are `ok`; `false`: no reply (a timeout).
    pub healthy: bool,
    /// Config versions from this one on are rejected.
    pub reject_from: Option<u64>,
    /// `None`: retention requests time out.
    pub retention: Option<RetentionReply>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            healthy: true,
            reject_from: None,
            retention: Some(RetentionReply::default()),
        }
    }
}

/// The fake; clones share their state.
#[derive(Clone, Default)]
pub struct FakeBus {
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    behaviour: Behaviour,
    /// The config version each instrument applied.
    applied: std::collections::BTreeMap<String, u64>,
    /// "config <instrument> <version>", "retention <instrument>", in order.
    requests: Vec<String>,
    /// (kind, payload) of every platform event.
    events: Vec<(String, serde_json::Value)>,
    artifacts: Vec<(String, outpost_protocol::messages::ArtifactNotice)>,
}

impl FakeBus {
    pub fn set(&self, b: Behaviour) {
        self.inner.lock().unwrap().behaviour = b;
    }

    /// Makes an instrument report `version` as applied (as an adopted one
    /// would).
    pub fn set_applied(&self, instrument: &str, version: u64) {
        self.inner
            .lock()
            .unwrap()
            .applied
            .insert(instrument.into(), version);
    }

    /// Config and retention requests so far.
    pub fn requests(&self) -> Vec<String> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// The platform events published so far.
    pub fn events(&self) -> Vec<(String, serde_json::Value)> {
        self.inner.lock().unwrap().events.clone()
    }
}

fn timeout(subject: String, timeout: Duration) -> BusError {
    BusError::Timeout { subject, timeout }
}

impl BusControl for FakeBus {
    fn ask_health<'a>(
        &'a self,
        instrument: &'a str,
        t: Duration,
    ) -> BoxFuture<'a, Result<HealthReply, BusError>> {
        Box::pin(async move {
            let (healthy, applied) = {
                let s = self.inner.lock().unwrap();
                (s.behaviour.healthy, s.applied.get(instrument).copied())
            };
            if !healthy {
                tokio::time::sleep(t).await;
                return Err(timeout(format!("outpost.i.{instrument}.health"), t));
            }
            Ok(HealthReply {
                status: HealthStatus::Ok,
                message: "fine".into(),
                details: serde_json::Value::Null,
                config_version: Some(applied.unwrap_or(0)),
            })
        })
    }

    fn push_config<'a>(
        &'a self,
        instrument: &'a str,
        req: &'a ConfigRequest,
        _t: Duration,
    ) -> BoxFuture<'a, Result<ConfigReply, BusError>> {
        Box::pin(async move {
            let mut s = self.inner.lock().unwrap();
            s.requests
                .push(format!("config {instrument} {}", req.version));
            if s.behaviour.reject_from.is_some_and(|v| req.version >= v) {
                return Ok(ConfigReply {
                    version: req.version,
                    applied: false,
                    reason: Some("not this one".into()),
                });
            }
            s.applied.insert(instrument.into(), req.version);
            Ok(ConfigReply {
                version: req.version,
                applied: true,
                reason: None,
            })
        })
    }

    fn ask_retention<'a>(
        &'a self,
        instrument: &'a str,
        _req: &'a RetentionRequest,
        t: Duration,
    ) -> BoxFuture<'a, Result<RetentionReply, BusError>> {
        Box::pin(async move {
            let reply = {
                let mut s = self.inner.lock().unwrap();
                s.requests.push(format!("retention {instrument}"));
                s.behaviour.retention.clone()
            };
            match reply {
                Some(r) => Ok(r),
                None => Err(timeout(format!("outpost.i.{instrument}.retention"), t)),
            }
        })
    }

    fn publish_event<'a>(
        &'a self,
        kind: &'a str,
        _schema: &'a str,
        payload: serde_json::Value,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            self.inner
                .lock()
                .unwrap()
                .events
                .push((kind.to_string(), payload));
            Ok(())
        })
    }

    fn notify_artifact<'a>(
        &'a self,
        instrument: &'a str,
        notice: &'a outpost_protocol::messages::ArtifactNotice,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            self.inner
                .lock()
                .unwrap()
                .artifacts
                .push((instrument.to_string(), notice.clone()));
            Ok(())
        })
    }
}
