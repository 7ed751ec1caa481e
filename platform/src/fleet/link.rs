//! The link to the fleet's hub: outbound only, TLS with the hub CA from
//! enrollment, the sensor's own credentials, reconnecting forever with
//! back-off; a heartbeat with the sensor's summary every
//! `heartbeat_every`. Its state is watched by the local status, so the
//! sensor never looks fine while its fleet cannot hear it.

use std::sync::Arc;
use std::time::Duration;

use outpost_protocol::fleet::{self as proto, Backlog, Heartbeat, InstrumentSummary, LinkState};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

use super::{LinkConfig, LinkFiles};
use crate::daemon::{Handle, Snapshot};
use crate::db::now_ms;
use crate::messaging::shared::SharedBus;
use crate::shutdown::Shutdown;

/// The link as the local status shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkStatus {
    pub state: LinkState,
    /// The sensor's name at the fleet.
    pub sensor: Option<String>,
    pub fleet_url: Option<String>,
    /// The hub server it is (or was last) connected to.
    pub hub: Option<String>,
    /// Since when it is in this state (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Why, in words.
    pub detail: String,
    pub heartbeats_sent: u64,
    pub last_heartbeat_ms: Option<i64>,
    /// Events the fleet stored since the link started, and re-sent ones
    /// it had already.
    #[serde(default)]
    pub events_forwarded: u64,
    #[serde(default)]
    pub events_already_stored: u64,
    /// What the fleet has not received yet.
    pub backlog: Backlog,
}

/// The running link: its status, and a way to start it after enrolling.
#[derive(Clone)]
pub struct Link {
    status: watch::Receiver<LinkStatus>,
    wake: Arc<Notify>,
    resend: Arc<std::sync::Mutex<Option<Resend>>>,
}

/// A request to forward again from a local sequence, and its answer.
struct Resend {
    from: u64,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

impl Link {
    pub fn status(&self) -> LinkStatus {
        self.status.borrow().clone()
    }

    pub fn watch(&self) -> watch::Receiver<LinkStatus> {
        self.status.clone()
    }

    /// Re-reads the link's files (after an enrollment) and reconnects.
    pub fn restart(&self) {
        self.wake.notify_one();
    }

    /// Forwards every local event from sequence `from` on again (the
    /// fleet drops what it has).
    pub async fn resend(&self, from: u64) -> Result<(), String> {
        if self.status().state == LinkState::None {
            return Err("this sensor is not enrolled in a fleet".into());
        }
        let (done, answer) = tokio::sync::oneshot::channel();
        *self.resend.lock().expect("lock") = Some(Resend { from, done });
        self.wake.notify_one();
        answer
            .await
            .unwrap_or_else(|_| Err("outpostd is stopping".into()))
    }
}

/// Starts the link task for the state in `files`.
pub fn spawn(files: LinkFiles, handle: Handle, bus: SharedBus, shutdown: Shutdown) -> Link {
    let (tx, rx) = watch::channel(LinkStatus::default());
    let wake = Arc::new(Notify::new());
    let w = wake.clone();
    let resend: Arc<std::sync::Mutex<Option<Resend>>> = Arc::default();
    let r = resend.clone();
    tokio::spawn(async move {
        loop {
            // The forwarder is stopped here: a re-send can start.
            let asked = r.lock().expect("lock").take();
            if let Some(Resend { from, done }) = asked {
                let res = super::forward::reset(&bus, from).await;
                info!(
                    from,
                    ok = res.is_ok(),
                    "fleet link: events to be forwarded again"
                );
                let _ = done.send(res);
            }
            let cfg = match files.load() {
                Ok(Some(c)) => c,
                Ok(None) => {
                    tx.send_replace(LinkStatus::default());
                    tokio::select! {
                        _ = w.notified() => continue,
                        _ = shutdown.triggered() => return,
                    }
                }
                Err(e) => {
                    warn!("fleet link: {e}");
                    tx.send_replace(LinkStatus {
                        state: LinkState::Down,
                        since_ms: Some(now_ms()),
                        detail: e.to_string(),
                        ..LinkStatus::default()
                    });
                    tokio::select! {
                        _ = w.notified() => continue,
                        _ = tokio::time::sleep(Duration::from_secs(30)) => continue,
                        _ = shutdown.triggered() => return,
                    }
                }
            };
            tokio::select! {
                _ = run(&files, &cfg, &tx, &handle, &bus) => {}
                _ = w.notified() => { info!("fleet link: enrollment changed; reconnecting"); }
                _ = shutdown.triggered() => return,
            }
        }
    });
    Link {
        status: rx,
        wake,
        resend,
    }
}

fn set(tx: &watch::Sender<LinkStatus>, state: LinkState, detail: String) {
    tx.send_modify(|s| {
        if s.state != state {
            s.since_ms = Some(now_ms());
        }
        s.state = state;
        s.detail = detail;
    });
}

fn refused(tx: &watch::Sender<LinkStatus>, why: &str) {
    let already = tx.borrow().state == LinkState::Refused;
    if !already {
        warn!("fleet link: the hub refused this sensor ({why})");
    }
    set(
        tx,
        LinkState::Refused,
        format!(
            "the hub refused this sensor's credentials ({why}): revoked at the fleet? retrying              (fix: ask the fleet's operator; a revoked sensor enrolls again under a new name)"
        ),
    );
}

/// One connection's life: connect (retrying forever), then heartbeats.
async fn run(
    files: &LinkFiles,
    cfg: &LinkConfig,
    tx: &watch::Sender<LinkStatus>,
    handle: &Handle,
    bus: &SharedBus,
) {
    tx.send_replace(LinkStatus {
        state: LinkState::Connecting,
        sensor: Some(cfg.sensor.clone()),
        fleet_url: Some(cfg.fleet_url.clone()),
        since_ms: Some(now_ms()),
        detail: format!("connecting to {}", cfg.hub_urls.join(", ")),
        ..LinkStatus::default()
    });
    let events = tx.clone();
    let opts = match async_nats::ConnectOptions::with_credentials_file(files.creds()).await {
        Ok(o) => o,
        Err(e) => {
            set(
                tx,
                LinkState::Down,
                format!("cannot read {}: {e}", files.creds().display()),
            );
            return std::future::pending().await;
        }
    };
    let opts = opts
        .add_root_certificates(files.ca())
        .require_tls(true)
        .custom_inbox_prefix(proto::inbox_prefix(&cfg.sensor))
        .name(format!("outpostd {}", cfg.sensor))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(10))
        .reconnect_delay_callback(|attempts| {
            // 0.5 s doubling to 30 s.
            let d = Duration::from_millis(500) * 2u32.saturating_pow(attempts.min(6) as u32);
            d.min(Duration::from_secs(30))
        })
        .event_callback(move |ev| {
            let tx = events.clone();
            async move {
                use async_nats::Event;
                match ev {
                    Event::Connected => set(&tx, LinkState::Up, "connected".into()),
                    Event::Disconnected => {
                        set(&tx, LinkState::Down, "disconnected; reconnecting".into())
                    }
                    Event::ServerError(async_nats::ServerError::AuthorizationViolation) => {
                        refused(&tx, "authorization violation")
                    }
                    Event::ServerError(async_nats::ServerError::Other(e))
                        if e.to_ascii_lowercase().contains("revoked") =>
                    {
                        refused(&tx, &e)
                    }
                    Event::ClientError(async_nats::ClientError::Other(e))
                        if e.contains("authorization violation") =>
                    {
                        refused(&tx, &e)
                    }
                    Event::ServerError(e) => debug!("fleet link: hub says {e}"),
                    other => debug!("fleet link: {other}"),
                }
            }
        });
    let urls: Vec<async_nats::ServerAddr> =
        cfg.hub_urls.iter().filter_map(|u| u.parse().ok()).collect();
    let client = match opts.connect(urls).await {
        Ok(c) => c,
        Err(e) => {
            set(tx, LinkState::Down, format!("cannot connect: {e}"));
            return std::future::pending().await;
        }
    };
    let counters = Arc::new(super::forward::Counters::default());
    let forwarder = tokio::spawn(super::forward::run(
        bus.clone(),
        client.clone(),
        cfg.sensor.clone(),
        counters.clone(),
    ));
    // Stops forwarding when this connection's life ends.
    let _forwarder = AbortOnDrop(forwarder);
    let _desired = AbortOnDrop(tokio::spawn(take_desired(
        client.clone(),
        cfg.sensor.clone(),
        handle.clone(),
        files.clone(),
    )));
    let _confirm = AbortOnDrop(tokio::spawn(watch_pending(
        client.clone(),
        cfg.sensor.clone(),
        handle.clone(),
        files.clone(),
        tx.subscribe(),
    )));
    let mut seq = 0u64;
    let mut tick = tokio::time::interval(cfg.heartbeat_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let backlog = super::forward::backlog(bus, &counters).await;
        tx.send_modify(|s| {
            s.backlog = backlog.clone();
            s.events_forwarded = counters
                .forwarded
                .load(std::sync::atomic::Ordering::Relaxed);
            s.events_already_stored = counters
                .already_stored
                .load(std::sync::atomic::Ordering::Relaxed);
        });
        if client.connection_state() != async_nats::connection::State::Connected {
            continue;
        }
        seq += 1;
        let snap = handle.status();
        let mut hb = heartbeat(&cfg.sensor, seq, &snap, backlog);
        hb.fleet_version = super::desired::last(files);
        hb.drift = snap.drift.clone();
        let body = serde_json::to_vec(&hb).expect("serializes");
        let sent = async {
            client
                .publish(proto::heartbeat(&cfg.sensor), body.into())
                .await?;
            client.flush().await?;
            Ok::<_, async_nats::Error>(())
        };
        match tokio::time::timeout(Duration::from_secs(5), sent).await {
            Ok(Ok(())) => tx.send_modify(|s| {
                s.heartbeats_sent += 1;
                s.last_heartbeat_ms = Some(now_ms());
                let info = client.server_info();
                s.hub = Some(format!("{}:{}", info.host, info.port));
            }),
            Ok(Err(e)) => debug!("fleet link: heartbeat not sent: {e}"),
            Err(_) => debug!("fleet link: heartbeat not flushed within 5 s"),
        }
    }
}

/// Settles a version applied with `confirm-within`, every second: kept
/// once a heartbeat got through, rolled back at its deadline otherwise.
async fn watch_pending(
    client: async_nats::Client,
    sensor: String,
    handle: Handle,
    files: LinkFiles,
    status: watch::Receiver<LinkStatus>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if super::desired::pending(&files).is_none() {
            continue;
        }
        let last = status.borrow().last_heartbeat_ms;
        if let Some(ack) = super::desired::settle_pending(&handle, &files, last).await {
            let body = serde_json::to_vec(&ack).expect("serializes");
            if let Err(e) = client
                .publish(proto::desired_ack(&sensor), body.into())
                .await
            {
                debug!("fleet link: ack not sent: {e}");
            }
        }
    }
}

/// Takes desired-state pushes and answers each with its outcome.
async fn take_desired(
    client: async_nats::Client,
    sensor: String,
    handle: Handle,
    files: LinkFiles,
) {
    use futures::StreamExt;
    let mut sub = match client.subscribe(proto::desired_push(&sensor)).await {
        Ok(s) => s,
        Err(e) => {
            warn!("fleet link: cannot take desired state: {e}");
            return;
        }
    };
    let mut complain = outpost_protocol::ratelimit::RateLimited::new(3, Duration::from_secs(60));
    while let Some(msg) = sub.next().await {
        let push: proto::DesiredPush = match serde_json::from_slice(&msg.payload) {
            Ok(p) => p,
            Err(e) => {
                warn!("fleet link: a desired-state push that does not parse: {e}");
                continue;
            }
        };
        let ack = if !push.images.is_empty() && super::desired::is_new(&files, push.version) {
            let state = crate::paths::StateDir::new(files.dir.parent().unwrap_or(&files.dir));
            match super::images::ensure(&client, &sensor, &push.images, &state, &handle).await {
                Ok(()) => super::desired::apply(push, &handle, &files).await,
                Err(super::images::FetchError::Refused(why)) => {
                    warn!(
                        fleet_version = push.version,
                        "desired state from the fleet refused: {why}"
                    );
                    Some(super::desired::reject(&files, push.version, vec![why]))
                }
                Err(super::images::FetchError::NotYet(why)) => {
                    if complain.allow(std::time::Instant::now()).is_some() {
                        warn!(
                            fleet_version = push.version,
                            "images not fetched yet: {why}"
                        );
                    }
                    None
                }
            }
        } else {
            super::desired::apply(push, &handle, &files).await
        };
        if let Some(ack) = ack {
            let body = serde_json::to_vec(&ack).expect("serializes");
            if let Err(e) = client
                .publish(proto::desired_ack(&sensor), body.into())
                .await
            {
                debug!("fleet link: ack not sent: {e}");
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The sensor's summary for a heartbeat.
pub fn heartbeat(sensor: &str, seq: u64, snap: &Snapshot, backlog: Backlog) -> Heartbeat {
    Heartbeat {
        sensor: sensor.to_string(),
        at_ms: now_ms(),
        seq,
        desired_version: snap.desired_version,
        fleet_managed: snap.fleet_managed,
        fleet_version: None,
        drift: None,
        instruments: snap
            .instruments
            .iter()
            .map(|i| InstrumentSummary {
                name: i.name.clone(),
                image: i.image.clone(),
                version: i.version.clone(),
                state: i.state.to_string(),
                health: i.health.clone(),
                health_message: i.health_message.clone(),
                restarts: i.restarts,
                config_desired: i.config_version,
                config_applied: i.config_applied,
                interfaces: Default::default(),
            })
            .collect(),
        backlog,
        platform_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}
