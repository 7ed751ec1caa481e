//! `outpost-fleet`: run a fleet, and manage its sensors and tokens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use outpost_fleet::api::{NewApiToken, SensorView};
use outpost_fleet::app::{self, RunConfig, files};
use outpost_fleet::auth::Role;
use outpost_fleet::client::ApiClient;
use outpost_fleet::registry::{Enrollment, SensorRecord};
use tracing_subscriber::EnvFilter;

mod image_cmd;

#[derive(Parser)]
#[command(name = "outpost-fleet", version, about = "Outpost's fleet manager")]
struct Cli {
    /// The fleet's state directory (keys, certificates, the embedded hub).
    #[arg(
        long,
        global = true,
        env = "OUTPOST_FLEET_STATE",
        default_value = "/var/lib/outpost-fleet"
    )]
    state: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs the fleet: its hub, heartbeat intake and the HTTPS API.
    Run(RunArgs),
    /// Sensors: add (prints a one-time enrollment token), list, show, revoke.
    #[command(subcommand)]
    Sensor(SensorCmd),
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Images the fleet distributes: push, list, show.
    #[command(subcommand)]
    Image(image_cmd::ImageCmd),
    /// How long the fleet keeps events; `--events 30days` changes it.
    Retention {
        #[arg(long)]
        events: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// An instrument's health history (every change of its health or state).
    Health {
        sensor: String,
        instrument: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        conn: Conn,
    },
    /// The fleet's Prometheus metrics, as `/metrics` serves them.
    Metrics {
        #[command(flatten)]
        conn: Conn,
    },
    /// A sensor's desired state: put a sensor file, show, history, rollout.
    #[command(subcommand)]
    Desired(DesiredCmd),
    /// Prints a nats-server configuration for one node of a hub cluster
    /// that trusts this fleet (its operator, accounts and certificate),
    /// for `outpost-fleet run --nats-url`.
    HubConfig {
        /// This node's name (unique in the cluster).
        #[arg(long)]
        node: String,
        /// Where the node listens for sensors and fleet instances.
        #[arg(long)]
        listen: String,
        /// Where it listens for the other nodes' routes.
        #[arg(long)]
        cluster_listen: String,
        /// Another node's route address (repeat), e.g. nats-route://10.0.0.2:6222.
        #[arg(long = "route")]
        routes: Vec<String>,
        /// The node's own directory (JetStream store, resolver).
        #[arg(long)]
        dir: PathBuf,
        /// Names and addresses for the certificate, if it is made now.
        #[arg(long = "name")]
        names: Vec<String>,
    },
    /// Stored events, oldest first (JSON lines, then the cursor to go on
    /// from on stderr).
    Events {
        #[arg(long)]
        sensor: Option<String>,
        #[arg(long)]
        instrument: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        /// Start after this cursor.
        #[arg(long)]
        after: Option<u64>,
        /// Only events whose payload does not match their image's schema.
        #[arg(long)]
        invalid: bool,
        /// At most this many (the API's pages are read until then).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Where the HTTPS API listens.
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Where the embedded hub listens for sensors.
    #[arg(long, default_value = "0.0.0.0:7422")]
    hub_listen: SocketAddr,
    /// Use this NATS cluster as the hub instead of starting one (repeat
    /// for each node).
    #[arg(long = "nats-url")]
    nats_urls: Vec<String>,
    /// The hub URL sensors are told to use (repeatable; default: derived).
    #[arg(long = "advertise")]
    advertise: Vec<String>,
    /// A DNS name or address for the generated certificate (repeatable;
    /// the first is also advertised to sensors).
    #[arg(long = "name")]
    names: Vec<String>,
    /// JetStream replicas for the fleet's state (3 on a 3-node cluster).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    heartbeat_every: Duration,
    /// How long a new enrollment token works.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    enroll_ttl: Duration,
    /// The nats-server binary for the embedded hub.
    #[arg(long)]
    nats_server: Option<PathBuf>,
    /// How long the fleet keeps events (the hub enforces it; a change
    /// applies to what is stored already). Default: what was set last
    /// (`outpost-fleet retention --events`), 90 days for a new fleet.
    #[arg(long, value_parser = humantime::parse_duration)]
    events_retention: Option<Duration>,
    /// JetStream's duplicate window for forwarded events (duplicates
    /// older than it are still dropped, by the sensor's sequence).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    duplicate_window: Duration,
    /// How long a rollout waits for the sensor's answer before it is
    /// `timed-out` (the fleet keeps pushing).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    rollout_timeout: Duration,
}

#[derive(clap::Args)]
pub struct Conn {
    /// The fleet's API (default: the one this state directory runs).
    #[arg(long, env = "OUTPOST_FLEET_URL")]
    url: Option<String>,
    /// An API token (default: the first admin token in the state directory).
    #[arg(long, env = "OUTPOST_FLEET_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The fleet's CA certificate (default: the state directory's).
    #[arg(long)]
    ca: Option<PathBuf>,
}

#[derive(Subcommand)]
enum SensorCmd {
    Add {
        name: String,
        /// How long the token works (default: the fleet's, 1h).
        #[arg(long)]
        ttl: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// A new token for a sensor that has not enrolled yet.
    Token {
        name: String,
        #[arg(long)]
        ttl: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    Show {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Cuts a sensor off: its credentials stop working within seconds.
    Revoke {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
enum DesiredCmd {
    /// Stores FILE (a sensor file) as the sensor's new version and pushes it.
    Put {
        sensor: String,
        file: PathBuf,
        #[arg(long, default_value = "")]
        reason: String,
        /// Keep it only if the sensor's link is healthy again within this
        /// (e.g. 2m); otherwise the sensor rolls back by itself.
        #[arg(long)]
        confirm_within: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// The newest version.
    Show {
        sensor: String,
        #[command(flatten)]
        conn: Conn,
    },
    History {
        sensor: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// A unified diff of versions A and B.
    Diff {
        sensor: String,
        a: u64,
        b: u64,
        #[command(flatten)]
        conn: Conn,
    },
    /// A new version with version N's sensor file, pushed.
    Rollback {
        sensor: String,
        version: u64,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// The rollout of the newest version.
    Rollout {
        sensor: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    Add {
        name: String,
        #[arg(long, value_parser = |s: &str| s.parse::<Role>())]
        role: Role,
        #[command(flatten)]
        conn: Conn,
    },
}

fn client(state: &std::path::Path, c: &Conn) -> anyhow::Result<ApiClient> {
    let url = match &c.url {
        Some(u) => u.clone(),
        None => std::fs::read_to_string(files::api_url(state))
            .with_context(|| {
                format!(
                    "no --url and no running fleet in {} (fix: give --url, or --state of the fleet)",
                    state.display()
                )
            })?
            .trim()
            .to_string(),
    };
    let token = match &c.token {
        Some(t) => t.clone(),
        None => std::fs::read_to_string(files::admin_token(state)).with_context(|| {
            format!(
                "no --token and no {} (fix: give --token or set OUTPOST_FLEET_TOKEN)",
                files::admin_token(state).display()
            )
        })?,
    };
    let ca =
        c.ca.clone()
            .unwrap_or_else(|| files::tls_dir(state).join("ca.pem"));
    ApiClient::new(&url, &ca, &token)
}

fn print_enrollment(e: &Enrollment, url: &str) {
    let expires = std::time::UNIX_EPOCH + Duration::from_millis(e.expires_at_ms as u64);
    println!("sensor:      {}", e.sensor);
    println!("token:       {}", e.token);
    println!(
        "expires:     {}",
        humantime::format_rfc3339_seconds(expires)
    );
    println!("fingerprint: {}", e.fingerprint);
    println!();
    println!("on the sensor:");
    println!(
        "  outpostctl fleet enroll {url} --token {} --fingerprint {}",
        e.token, e.fingerprint
    );
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match real_main().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outpost-fleet: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn real_main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("OUTPOST_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let state = cli.state;
    match cli.cmd {
        Cmd::Run(a) => {
            let shutdown = outpost_fleet::shutdown::Shutdown::new();
            let sd = shutdown.clone();
            tokio::spawn(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let mut term = signal(SignalKind::terminate()).expect("signal handler");
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                sd.cancel();
            });
            app::run(
                RunConfig {
                    state,
                    listen: a.listen,
                    hub_listen: a.hub_listen,
                    nats_urls: a.nats_urls,
                    advertise: a.advertise,
                    names: a.names,
                    replicas: a.replicas,
                    heartbeat_every: a.heartbeat_every,
                    enroll_ttl: a.enroll_ttl,
                    nats_server: a.nats_server,
                    rollout_timeout: a.rollout_timeout,
                    events: outpost_fleet::ingest::EventsPolicy {
                        retention: a.events_retention,
                        duplicate_window: a.duplicate_window,
                    },
                },
                shutdown,
            )
            .await
        }
        Cmd::Sensor(SensorCmd::Add { name, ttl, conn }) => {
            let c = client(&state, &conn)?;
            let e: Enrollment = c
                .post(
                    "/api/v1/sensors",
                    &serde_json::json!({ "name": name, "token_ttl": ttl }),
                )
                .await?;
            print_enrollment(&e, c.base());
            Ok(())
        }
        Cmd::Sensor(SensorCmd::Token { name, ttl, conn }) => {
            let c = client(&state, &conn)?;
            let e: Enrollment = c
                .post(
                    &format!("/api/v1/sensors/{name}/token"),
                    &serde_json::json!({ "token_ttl": ttl }),
                )
                .await?;
            print_enrollment(&e, c.base());
            Ok(())
        }
        Cmd::Sensor(SensorCmd::List { json, conn }) => {
            let list: Vec<SensorView> = client(&state, &conn)?.get("/api/v1/sensors").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            println!("{:<24} {:<10} DETAIL", "SENSOR", "ONLINE");
            for s in list {
                println!(
                    "{:<24} {:<10} {}",
                    s.record.name,
                    serde_json::to_value(&s.online)?.as_str().unwrap_or("?"),
                    s.online_detail
                );
            }
            Ok(())
        }
        Cmd::Sensor(SensorCmd::Show { name, conn }) => {
            let s: serde_json::Value = client(&state, &conn)?
                .get(&format!("/api/v1/sensors/{name}"))
                .await?;
            println!("{}", serde_json::to_string_pretty(&s)?);
            Ok(())
        }
        Cmd::Sensor(SensorCmd::Revoke { name, conn }) => {
            let r: SensorRecord = client(&state, &conn)?
                .post(
                    &format!("/api/v1/sensors/{name}/revoke"),
                    &serde_json::json!({}),
                )
                .await?;
            println!("sensor {} revoked", r.name);
            Ok(())
        }
        Cmd::HubConfig {
            node,
            listen,
            cluster_listen,
            routes,
            dir,
            names,
        } => {
            print!(
                "{}",
                app::hub_node_config(
                    &state,
                    &node,
                    &listen,
                    &cluster_listen,
                    routes,
                    &dir,
                    &names
                )?
            );
            Ok(())
        }
        Cmd::Events {
            sensor,
            instrument,
            kind,
            after,
            invalid,
            limit,
            conn,
        } => {
            let c = client(&state, &conn)?;
            let mut after = after;
            let mut left = limit;
            loop {
                let mut q = vec![format!("limit={}", left.min(1000))];
                for (k, v) in [
                    ("sensor", &sensor),
                    ("instrument", &instrument),
                    ("kind", &kind),
                ] {
                    if let Some(v) = v {
                        q.push(format!("{k}={v}"));
                    }
                }
                if let Some(a) = after {
                    q.push(format!("after={a}"));
                }
                if invalid {
                    q.push("invalid=true".into());
                }
                let page: outpost_fleet::events::EventPage =
                    c.get(&format!("/api/v1/events?{}", q.join("&"))).await?;
                for e in &page.events {
                    println!("{}", serde_json::to_string(e)?);
                }
                left = left.saturating_sub(page.events.len());
                after = page.next.or(after);
                if !page.more || left == 0 {
                    break;
                }
            }
            if let Some(a) = after {
                eprintln!("next: {a}");
            }
            Ok(())
        }
        Cmd::Retention { events, conn } => {
            let c = client(&state, &conn)?;
            let v: serde_json::Value = match events {
                Some(e) => {
                    c.put("/api/v1/retention", &serde_json::json!({ "events": e }))
                        .await?
                }
                None => c.get("/api/v1/retention").await?,
            };
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        Cmd::Health {
            sensor,
            instrument,
            limit,
            conn,
        } => {
            let v: serde_json::Value = client(&state, &conn)?
                .get(&format!(
                    "/api/v1/sensors/{sensor}/instruments/{instrument}/health?limit={limit}"
                ))
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        Cmd::Metrics { conn } => {
            print!("{}", client(&state, &conn)?.get_text("/metrics").await?);
            Ok(())
        }
        Cmd::Desired(DesiredCmd::Diff { sensor, a, b, conn }) => {
            let d: serde_json::Value = client(&state, &conn)?
                .get(&format!(
                    "/api/v1/sensors/{sensor}/desired/diff?a={a}&b={b}"
                ))
                .await?;
            print!("{}", d["diff"].as_str().unwrap_or_default());
            Ok(())
        }
        Cmd::Desired(DesiredCmd::Rollback {
            sensor,
            version,
            reason,
            conn,
        }) => {
            let v: serde_json::Value = client(&state, &conn)?
                .post(
                    &format!("/api/v1/sensors/{sensor}/desired/rollback"),
                    &serde_json::json!({ "version": version, "reason": reason }),
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        Cmd::Desired(d) => {
            let (path, conn, body) = match d {
                DesiredCmd::Put {
                    sensor,
                    file,
                    reason,
                    confirm_within,
                    conn,
                } => {
                    let toml = std::fs::read_to_string(&file)
                        .with_context(|| format!("cannot read {}", file.display()))?;
                    let body = serde_json::json!({
                        "toml": toml,
                        "reason": reason,
                        "confirm_within": confirm_within,
                    });
                    (
                        format!("/api/v1/sensors/{sensor}/desired"),
                        conn,
                        Some(body),
                    )
                }
                DesiredCmd::Show { sensor, conn } => {
                    (format!("/api/v1/sensors/{sensor}/desired"), conn, None)
                }
                DesiredCmd::History { sensor, conn } => (
                    format!("/api/v1/sensors/{sensor}/desired/history"),
                    conn,
                    None,
                ),
                DesiredCmd::Rollout { sensor, conn } => {
                    (format!("/api/v1/sensors/{sensor}/rollout"), conn, None)
                }
                DesiredCmd::Diff { .. } | DesiredCmd::Rollback { .. } => {
                    unreachable!("handled above")
                }
            };
            let c = client(&state, &conn)?;
            let v: serde_json::Value = match body {
                Some(b) => c.put(&path, &b).await?,
                None => c.get(&path).await?,
            };
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        Cmd::Image(i) => {
            let c = client(&state, i.conn())?;
            i.run(c).await
        }
        Cmd::Token(TokenCmd::Add { name, role, conn }) => {
            let t: NewApiToken = client(&state, &conn)?
                .post(
                    "/api/v1/tokens",
                    &serde_json::json!({ "name": name, "role": role }),
                )
                .await?;
            println!("{}", t.token);
            Ok(())
        }
    }
}
