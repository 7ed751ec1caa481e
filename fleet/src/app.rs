//! `outpost-fleet run`: the hub (embedded or given), the fleet's
//! connection to it, heartbeat intake and the HTTPS API, composed around
//! one shutdown token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tracing::{info, warn};

use crate::api::{self, AppState};
use crate::auth::{Role, Tokens};
use crate::hub::keys::FleetKeys;
use crate::hub::server::{self, NodeConfig};
use crate::hub::{Hub, HubAddr};
use crate::presence;
use crate::shutdown::Shutdown;
use crate::tls::TlsFiles;

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub state: PathBuf,
    /// HTTPS API address.
    pub listen: SocketAddr,
    /// The embedded hub's client address (when `nats_urls` is empty).
    pub hub_listen: SocketAddr,
    /// An existing hub cluster instead of the embedded one.
    pub nats_urls: Vec<String>,
    /// What sensors are told to connect to (default: derived).
    pub advertise: Vec<String>,
    /// Names and addresses on the generated certificate.
    pub names: Vec<String>,
    pub replicas: usize,
    pub heartbeat_every: Duration,
    pub enroll_ttl: Duration,
    pub nats_server: Option<PathBuf>,
    /// How long events are kept, and JetStream's duplicate window.
    pub events: crate::ingest::EventsPolicy,
    /// How long a rollout waits for the sensor's answer.
    pub rollout_timeout: Duration,
}

/// Files in the state directory the CLI reads.
pub mod files {
    use std::path::{Path, PathBuf};
    pub fn admin_token(state: &Path) -> PathBuf {
        state.join("admin.token")
    }
    pub fn api_url(state: &Path) -> PathBuf {
        state.join("api.url")
    }
    pub fn tls_dir(state: &Path) -> PathBuf {
        state.join("tls")
    }
    pub fn keys_dir(state: &Path) -> PathBuf {
        state.join("keys")
    }
}

fn create_private_dir(p: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .with_context(|| format!("cannot create {}", p.display()))
}

/// The fleet's keys and certificate in `state`, made if missing; the
/// certificate names `names` and the loopback names.
fn keys_and_tls(state: &Path, names: &[String]) -> anyhow::Result<(FleetKeys, TlsFiles)> {
    create_private_dir(state)?;
    let keys = FleetKeys::load_or_make(&files::keys_dir(state))?;
    let mut names = names.to_vec();
    for n in ["127.0.0.1", "::1", "localhost"] {
        if !names.iter().any(|x| x == n) {
            names.push(n.to_string());
        }
    }
    let tls = TlsFiles::ensure(&files::tls_dir(state), &names)?;
    Ok((keys, tls))
}

/// `outpost-fleet hub-config`: one cluster node's nats-server
/// configuration, trusting this fleet.
pub fn hub_node_config(
    state: &Path,
    node: &str,
    listen: &str,
    cluster_listen: &str,
    routes: Vec<String>,
    dir: &Path,
    names: &[String],
) -> anyhow::Result<String> {
    let (keys, tls) = keys_and_tls(state, names)?;
    create_private_dir(dir)?;
    Ok(server::config_text(
        &NodeConfig {
            name: node,
            listen,
            tls: &tls,
            dir,
            cluster: Some((cluster_listen, routes)),
        },
        &keys,
    ))
}

pub async fn run(cfg: RunConfig, shutdown: Shutdown) -> anyhow::Result<()> {
    let (keys, tls) = keys_and_tls(&cfg.state, &cfg.names)?;
    let keys = Arc::new(keys);
    let fingerprint = tls.fingerprint()?;

    let mut tasks = Vec::new();
    let (urls, advertise) = if cfg.nats_urls.is_empty() {
        let dir = cfg.state.join("hub");
        create_private_dir(&dir)?;
        let listen = cfg.hub_listen.to_string();
        let text = server::config_text(
            &NodeConfig {
                name: "outpost-hub",
                listen: &listen,
                tls: &tls,
                dir: &dir,
                cluster: None,
            },
            &keys,
        );
        let conf = dir.join("hub.conf");
        std::fs::write(&conf, text).with_context(|| format!("cannot write {}", conf.display()))?;
        let binary = cfg
            .nats_server
            .clone()
            .unwrap_or_else(|| PathBuf::from("nats-server"));
        tasks.push(server::supervise(binary, conf, shutdown.clone())?);
        let port = cfg.hub_listen.port();
        let local = format!("tls://127.0.0.1:{port}");
        let adv = if cfg.advertise.is_empty() {
            let host = cfg
                .names
                .first()
                .cloned()
                .unwrap_or_else(|| "127.0.0.1".into());
            vec![format!("tls://{host}:{port}")]
        } else {
            cfg.advertise.clone()
        };
        (vec![local], adv)
    } else {
        let adv = if cfg.advertise.is_empty() {
            cfg.nats_urls.clone()
        } else {
            cfg.advertise.clone()
        };
        (cfg.nats_urls.clone(), adv)
    };
    let addr = HubAddr {
        urls,
        ca: tls.ca.clone(),
        replicas: cfg.replicas,
    };
    let hub = Hub::connect(&addr, keys.clone()).await?;
    info!(urls = ?addr.urls, "connected to the hub");

    let tokens = Tokens::new(hub.clone());
    bootstrap_admin(&cfg.state, &tokens).await?;

    let desired = crate::hub::retry(|| crate::desired::ensure_stream(&hub, cfg.replicas)).await?;
    let image_dir = cfg.state.join("images");
    let images = crate::hub::retry(|| {
        crate::images::Images::open(&hub, cfg.replicas, &image_dir, desired.clone())
    })
    .await?;
    tasks.push(tokio::spawn(images.clone().serve(shutdown.clone())));
    tasks.push(tokio::spawn(presence::ingest(
        hub.clone(),
        desired.clone(),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(crate::desired::take_acks(
        hub.clone(),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(presence::watch_offline(
        hub.clone(),
        cfg.heartbeat_every,
        shutdown.clone(),
    )));
    let events =
        crate::hub::retry(|| crate::ingest::ensure_stream(&hub, cfg.events, cfg.replicas)).await?;
    // Health history is kept as long as events.
    let kept = events.clone().info().await.map(|i| i.config.max_age).ok();
    let health = crate::hub::retry(|| {
        crate::health::ensure_stream(
            &hub,
            kept.unwrap_or(crate::ingest::DEFAULT_RETENTION),
            cfg.replicas,
        )
    })
    .await?;
    let counters = Arc::new(crate::metrics::Counters::default());
    let checker = Arc::new(crate::signals::Checker::new(
        hub.clone(),
        images.clone(),
        desired.clone(),
    ));
    tasks.push(tokio::spawn(crate::ingest::run(
        hub.clone(),
        events.clone(),
        counters.clone(),
        checker.clone(),
        shutdown.clone(),
    )));

    let state = AppState {
        hub: hub.clone(),
        tokens,
        fingerprint: fingerprint.clone(),
        hub_urls: advertise,
        hub_ca_pem: std::fs::read_to_string(&tls.ca)
            .with_context(|| format!("cannot read {}", tls.ca.display()))?,
        heartbeat_every: cfg.heartbeat_every,
        enroll_ttl: cfg.enroll_ttl,
        events,
        desired,
        health,
        images,
        checker,
        rollout_timeout: cfg.rollout_timeout,
        counters,
    };
    let app = api::router(state);
    let rustls = axum_server::tls_rustls::RustlsConfig::from_config(tls.server_config()?);
    let handle = axum_server::Handle::new();
    let std_listener = std::net::TcpListener::bind(cfg.listen).with_context(|| {
        format!(
            "cannot listen on {} (fix: choose another --listen)",
            cfg.listen
        )
    })?;
    std_listener.set_nonblocking(true)?;
    let bound = std_listener.local_addr()?;
    let url = format!("https://{}", display_addr(bound));
    std::fs::write(files::api_url(&cfg.state), &url)?;
    info!(%url, %fingerprint, "outpost-fleet serves");
    println!("outpost-fleet serves {url} (certificate {fingerprint})");
    let h = handle.clone();
    let sd = shutdown.clone();
    tokio::spawn(async move {
        sd.cancelled().await;
        h.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    let served = axum_server::from_tcp_rustls(std_listener, rustls)
        .handle(handle)
        .serve(app.into_make_service())
        .await;
    shutdown.cancel();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
    }
    served.context("the HTTPS server failed")
}

fn display_addr(a: SocketAddr) -> String {
    if a.ip().is_unspecified() {
        format!("127.0.0.1:{}", a.port())
    } else {
        a.to_string()
    }
}

/// On a fleet's first run, an admin token is made and written to
/// `<state>/admin.token` (mode 0600), so the CLI works at once.
async fn bootstrap_admin(state: &Path, tokens: &Tokens) -> anyhow::Result<()> {
    // A bucket just made on a cluster may not answer for a moment.
    if crate::hub::retry(|| tokens.any()).await? {
        return Ok(());
    }
    let token = tokens.create("admin", Role::Admin, "first run").await?;
    let path = files::admin_token(state);
    crate::tls::write_private(&path, format!("{token}\n").as_bytes())?;
    warn!(path = %path.display(), "made the first admin API token");
    Ok(())
}
