//! The fleet section: a real `outpost-fleet` with its embedded hub, driven
//! by a sensor simulator that speaks the link protocol (no containers).
//!
//! - 10,000 sensors × 5 instruments heartbeating every 10 s. `--enrolled`
//!   of them (2,000 by default) enroll for real, each with its own key,
//!   credentials and NATS connection; the rest share 8 connections with the
//!   fleet's service credentials (only the hub's own permission checks are
//!   skipped for them). Fleet and hub CPU and RSS, against the same fleet
//!   idle with every sensor registered.
//! - Event ingest through the link protocol (batches of 500, acked once
//!   stored), against a raw JetStream publish loop (500 in flight) on the
//!   same hub with the same events.
//! - One config change pushed to 1,000 sensors through the API until every
//!   rollout is `applied`, against a raw request to each of the same 1,000
//!   sensors answered on the same connections.
//! - Time from a sensor's last heartbeat to `offline`, against the
//!   threshold (3 missed heartbeats).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use futures::StreamExt;
use outpost_fleet::client::ApiClient;
use outpost_protocol::fleet::{self as proto, Backlog, Heartbeat, InstrumentSummary};
use outpost_tests::fleet::Fleet;

use crate::{ms, row};

const INSTRUMENTS: usize = 5;
const EVERY: Duration = Duration::from_secs(10);

/// CPU seconds and RSS (MiB) of a process, from /proc.
fn usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // After the name: state is field 3, utime 14, stime 15 (1-based).
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0;
    (cpu, rss)
}

/// The hub nats-server the fleet started (its child).
fn hub_pid(fleet: u32) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{fleet}/task/{fleet}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .find(|p: &u32| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim().starts_with("nats-server"))
        })
}

/// CPU (% of one core) and RSS of the fleet and its hub over `window`.
async fn measure(fleet: u32, hub: u32, window: Duration) -> [(f64, f64); 2] {
    let (f0, h0) = (usage(fleet), usage(hub));
    tokio::time::sleep(window).await;
    let (f1, h1) = (usage(fleet), usage(hub));
    let pct = |a: f64, b: f64| (b - a) / window.as_secs_f64() * 100.0;
    [(pct(f0.0, f1.0), f1.1), (pct(h0.0, h1.0), h1.1)]
}

fn heartbeat(sensor: &str, seq: u64) -> Vec<u8> {
    let instruments = (0..INSTRUMENTS)
        .map(|i| InstrumentSummary {
            name: format!("ins{i}"),
            image: "example".into(),
            version: "0.1.0".into(),
            state: "running".into(),
            health: "ok".into(),
            health_message: String::new(),
            restarts: 0,
            config_desired: Some(1),
            config_applied: Some(1),
            interfaces: BTreeMap::new(),
        })
        .collect();
    let hb = Heartbeat {
        sensor: sensor.to_string(),
        at_ms: 0,
        seq,
        desired_version: Some(1),
        fleet_managed: true,
        fleet_version: None,
        drift: None,
        instruments,
        backlog: Backlog::default(),
        platform_version: "bench".into(),
    };
    serde_json::to_vec(&hb).expect("serializes")
}

/// A simulated sensor: its name and the connection it speaks on.
struct Sim {
    name: String,
    conn: async_nats::Client,
    /// Cleared to make it go silent.
    alive: Arc<AtomicBool>,
}

async fn connect(
    url: &str,
    ca: &std::path::Path,
    creds: &str,
    inbox: Option<String>,
) -> async_nats::Client {
    let mut o = async_nats::ConnectOptions::new()
        .credentials(creds)
        .expect("creds")
        .add_root_certificates(ca.to_path_buf())
        .require_tls(true)
        .connection_timeout(Duration::from_secs(20));
    if let Some(p) = inbox {
        o = o.custom_inbox_prefix(p);
    }
    o.connect(url).await.expect("connect to the hub")
}

pub fn run(sensors: usize, enrolled: usize) {
    println!(
        "\n== fleet ({sensors} sensors × {INSTRUMENTS} instruments, heartbeat every {EVERY:?}; {enrolled} enrolled with their own credentials and connections)"
    );
    // 2,000+ connections from here and at the hub.
    let _ =
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 65536, 65536);
    let fleet = Fleet::start_quiet("10s", &[]);
    let pid = fleet.pid().expect("fleet runs");
    let hub = hub_pid(pid).expect("the fleet's hub nats-server");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let token = std::fs::read_to_string(fleet.state.join("admin.token")).unwrap();
        let api = Arc::new(ApiClient::new(&fleet.url, &fleet.ca(), &token).unwrap());
        let hub_url = fleet.hub_url();
        let ca = fleet.ca();

        // Register every sensor; enroll some for real.
        let t = Instant::now();
        let names: Vec<String> = (0..sensors).map(|i| format!("sim-{i:05}")).collect();
        let tokens: Vec<String> = futures::stream::iter(names.clone())
            .map(|n| {
                let api = api.clone();
                async move {
                    let e: serde_json::Value = api
                        .post("/api/v1/sensors", &serde_json::json!({ "name": n }))
                        .await
                        .expect("sensor add");
                    e["token"].as_str().unwrap().to_string()
                }
            })
            .buffered(16)
            .collect()
            .await;
        let added = t.elapsed();
        let t = Instant::now();
        let creds: Vec<String> = futures::stream::iter(tokens.into_iter().take(enrolled))
            .map(|token| {
                let api = api.clone();
                async move {
                    let key = nkeys::KeyPair::new_user();
                    let req = serde_json::json!({
                        "token": token, "public_key": key.public_key(), "hostname": "bench",
                    });
                    let a: serde_json::Value = api.post("/api/v1/enroll", &req).await.expect("enroll");
                    outpost_protocol::files::nats_creds(
                        a["user_jwt"].as_str().unwrap(),
                        &key.seed().unwrap(),
                    )
                }
            })
            .buffered(16)
            .collect()
            .await;
        let enrolling = t.elapsed();
        println!(
            "registered {sensors} sensors in {:.1} s ({:.0}/s); enrolled {enrolled} in {:.1} s ({:.0}/s)",
            added.as_secs_f64(),
            sensors as f64 / added.as_secs_f64(),
            enrolling.as_secs_f64(),
            enrolled as f64 / enrolling.as_secs_f64()
        );

        let idle = measure(pid, hub, Duration::from_secs(15)).await;

        // Connections: one per enrolled sensor, 8 shared by the others.
        let t = Instant::now();
        let mut sims = Vec::with_capacity(sensors);
        let own: Vec<async_nats::Client> = futures::stream::iter(creds.iter().zip(&names))
            .map(|(c, n)| connect(&hub_url, &ca, c, Some(proto::inbox_prefix(n))))
            .buffered(32)
            .collect()
            .await;
        let service = fleet.service_creds();
        let mut shared = Vec::new();
        for _ in 0..8 {
            shared.push(connect(&hub_url, &ca, &service, None).await);
        }
        for (i, n) in names.iter().enumerate() {
            let conn = own.get(i).cloned().unwrap_or_else(|| shared[i % 8].clone());
            sims.push(Sim {
                name: n.clone(),
                conn,
                alive: Arc::new(AtomicBool::new(true)),
            });
        }
        println!(
            "{} NATS connections ({} with a sensor's own credentials) up in {:.1} s",
            own.len() + shared.len(),
            own.len(),
            t.elapsed().as_secs_f64()
        );

        // Heartbeats, spread evenly over the period.
        let sent = Arc::new(AtomicU64::new(0));
        let last_beat: Arc<Vec<AtomicU64>> = Arc::new((0..sensors).map(|_| AtomicU64::new(0)).collect());
        let t0 = Instant::now();
        for (i, s) in sims.iter().enumerate() {
            let (name, conn, alive) = (s.name.clone(), s.conn.clone(), s.alive.clone());
            let (sent, last_beat) = (sent.clone(), last_beat.clone());
            let offset = EVERY.mul_f64(i as f64 / sensors as f64);
            tokio::spawn(async move {
                tokio::time::sleep(offset).await;
                let mut tick = tokio::time::interval(EVERY);
                let mut seq = 0;
                loop {
                    tick.tick().await;
                    if !alive.load(Ordering::Relaxed) {
                        return;
                    }
                    seq += 1;
                    let body = heartbeat(&name, seq);
                    if conn.publish(proto::heartbeat(&name), body.into()).await.is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                        last_beat[i].store(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
                    }
                }
            });
        }
        // Warm up: a first heartbeat from everyone (health history, index).
        tokio::time::sleep(EVERY * 2).await;
        let before = sent.load(Ordering::Relaxed);
        let window = Duration::from_secs(30);
        let busy = measure(pid, hub, window).await;
        let rate = (sent.load(Ordering::Relaxed) - before) as f64 / window.as_secs_f64();
        println!("{:<52} {:>9} {:>9}", "", "CPU %", "RSS MiB");
        println!("{:<52} {:>9.1} {:>9.0}", "outpost-fleet, idle (baseline)", idle[0].0, idle[0].1);
        println!("{:<52} {:>9.1} {:>9.0}", format!("outpost-fleet, {rate:.0} heartbeats/s"), busy[0].0, busy[0].1);
        println!("{:<52} {:>9.1} {:>9.0}", "hub nats-server, idle (baseline)", idle[1].0, idle[1].1);
        println!("{:<52} {:>9.1} {:>9.0}", format!("hub nats-server, {rate:.0} heartbeats/s"), busy[1].0, busy[1].1);

        // Offline: ten sensors go silent, under the load.
        let silent: Vec<usize> = (0..10).map(|k| k * (enrolled.max(10) / 10)).collect();
        for &i in &silent {
            sims[i].alive.store(false, Ordering::Relaxed);
        }
        let mut delays = Vec::new();
        let deadline = Instant::now() + EVERY * 8;
        let mut left: Vec<usize> = silent.clone();
        while !left.is_empty() && Instant::now() < deadline {
            let mut still = Vec::new();
            for &i in &left {
                let v: serde_json::Value = api
                    .get(&format!("/api/v1/sensors/{}", sims[i].name))
                    .await
                    .expect("sensor show");
                if v["online"] == "offline" {
                    let last = last_beat[i].load(Ordering::Relaxed) as f64;
                    delays.push(t0.elapsed().as_millis() as f64 - last);
                } else {
                    still.push(i);
                }
            }
            left = still;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!("\n{:<52} {:>9} {:>9}", "", "p50", "p99");
        row("last heartbeat → offline (ms, ±200 ms polling)", &delays, "ms");
        row("threshold: 3 missed heartbeats (baseline)", &[ms(EVERY * 3)], "ms");

        ingest(&api, &hub_url, &ca, &creds[0], &names[0], &service).await;
        push(&api, &sims[..1000.min(enrolled)], shared[0].clone()).await;
    });
}

fn events(n: u64, from: u64) -> Vec<proto::ForwardedEvent> {
    (from..from + n)
        .map(|seq| {
            let env = serde_json::json!({
                "v": 1, "id": format!("{seq:026}"), "ts": "2026-11-28T00:00:00Z",
                "sensor": "bench", "instrument": "ins0", "kind": "tick",
                "schema": "example.tick/1", "payload": { "n": seq, "pad": "x".repeat(200) },
            });
            proto::ForwardedEvent {
                seq,
                subject: "outpost.events.ins0.tick".into(),
                data: base64::engine::general_purpose::STANDARD.encode(env.to_string()),
            }
        })
        .collect()
}

/// Events through the link protocol against raw JetStream publishes.
async fn ingest(
    api: &ApiClient,
    url: &str,
    ca: &std::path::Path,
    creds: &str,
    sensor: &str,
    service: &str,
) {
    const N: u64 = 100_000;
    let c = connect(url, ca, creds, Some(proto::inbox_prefix(sensor))).await;
    let t = Instant::now();
    let mut seq = 1;
    while seq <= N {
        let batch = proto::EventBatch {
            events: events(500, seq),
        };
        let body = serde_json::to_vec(&batch).unwrap();
        let r = c
            .request(proto::events_in(sensor), body.into())
            .await
            .expect("batch answered");
        let ack: proto::BatchAck = serde_json::from_slice(&r.payload).unwrap();
        assert!(ack.error.is_none(), "{ack:?}");
        seq += 500;
    }
    let link = N as f64 / t.elapsed().as_secs_f64();

    // The same events, published straight to a stream on the same hub.
    let s = connect(url, ca, service, None).await;
    let js = async_nats::jetstream::new(s);
    let _ = js.delete_stream("BENCH_RAW").await;
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "BENCH_RAW".into(),
            subjects: vec!["bench.raw.>".into()],
            ..Default::default()
        })
        .await
        .expect("bench stream");
    let payloads: Vec<bytes::Bytes> = events(N, 1)
        .into_iter()
        .map(|e| {
            base64::engine::general_purpose::STANDARD
                .decode(e.data)
                .unwrap()
                .into()
        })
        .collect();
    let t = Instant::now();
    for chunk in payloads.chunks(500) {
        let mut acks = Vec::with_capacity(500);
        for p in chunk {
            acks.push(
                js.publish("bench.raw.ins0.tick", p.clone())
                    .await
                    .expect("publish"),
            );
        }
        for a in acks {
            a.await.expect("stored");
        }
    }
    let raw = N as f64 / t.elapsed().as_secs_f64();
    drop(stream);
    let _ = js.delete_stream("BENCH_RAW").await;
    // Every event is at the fleet, once.
    let last: proto::BatchAck = {
        let batch = proto::EventBatch {
            events: events(1, N),
        };
        let r = c
            .request(
                proto::events_in(sensor),
                serde_json::to_vec(&batch).unwrap().into(),
            )
            .await
            .expect("answered");
        serde_json::from_slice(&r.payload).unwrap()
    };
    assert_eq!((last.upto, last.duplicates), (N, 1), "{last:?}");
    let _ = api;
    println!("\n{:<52} {:>9}", "", "events/s");
    println!(
        "{:<52} {:>9.0}",
        "ingest through the link (batches of 500, acked)", link
    );
    println!(
        "{:<52} {:>9.0}",
        "raw JetStream publish, 500 in flight (baseline)", raw
    );
}

/// One config change to each of `sims` until every rollout is applied.
async fn push(api: &Arc<ApiClient>, sims: &[Sim], svc: async_nats::Client) {
    let n = sims.len();
    // The simulated sensors answer pushes (and the baseline's requests).
    let mut tasks = Vec::new();
    for s in sims {
        let (name, conn) = (s.name.clone(), s.conn.clone());
        let mut pushes = conn.subscribe(proto::desired_push(&name)).await.unwrap();
        let mut pings = conn
            .subscribe(format!("{}.bench", proto::sensor_out(&name)))
            .await
            .unwrap();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(m) = pushes.next() => {
                        let p: proto::DesiredPush = serde_json::from_slice(&m.payload).unwrap();
                        let ack = proto::DesiredAck {
                            version: p.version,
                            outcome: proto::DesiredOutcome::Applied { local_version: p.version as i64 },
                            instruments: Default::default(),
                        };
                        let _ = conn.publish(proto::desired_ack(&name), serde_json::to_vec(&ack).unwrap().into()).await;
                    }
                    Some(m) = pings.next() => {
                        let _ = conn.publish(format!("{}.pong", proto::sensor_in(&name)), m.payload).await;
                    }
                    else => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = Instant::now();
    let answered: Vec<()> = futures::stream::iter(sims.iter().map(|s| s.name.clone()))
        .map(|name| {
            let api = api.clone();
            async move {
                let body = serde_json::json!({
                    "toml": format!("[sensor]\nname = \"{name}\"\n"),
                    "reason": "bench",
                });
                let _: serde_json::Value = api
                    .put(&format!("/api/v1/sensors/{name}/desired"), &body)
                    .await
                    .expect("desired put");
            }
        })
        .buffered(16)
        .collect()
        .await;
    let puts = t.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let m = api.get_text("/metrics").await.unwrap();
        let applied = m
            .lines()
            .find_map(|l| l.strip_prefix("outpost_fleet_rollouts{state=\"applied\"} "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if applied >= answered.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = t.elapsed();

    // Baseline: a message to each of the same sensors over the hub, and
    // every answer back, on the same connections.
    let t = Instant::now();
    let mut pongs = svc.subscribe("fleet.in.*.pong").await.unwrap();
    svc.flush().await.unwrap();
    for s in sims {
        svc.publish(
            format!("{}.bench", proto::sensor_out(&s.name)),
            "ping".into(),
        )
        .await
        .unwrap();
    }
    let mut got = 0;
    while got < n {
        match tokio::time::timeout(Duration::from_secs(30), pongs.next()).await {
            Ok(Some(_)) => got += 1,
            _ => break,
        }
    }
    let raw = t.elapsed();
    println!("\n{:<52} {:>9}", "", "ms");
    println!(
        "{:<52} {:>9.0}",
        format!("push to {n} sensors: every PUT answered"),
        ms(puts)
    );
    println!(
        "{:<52} {:>9.0}",
        format!("push to {n} sensors: every rollout applied"),
        ms(all)
    );
    println!(
        "{:<52} {:>9.0}",
        format!("raw message to {n} sensors, {got} answers (baseline)"),
        ms(raw)
    );
    for t in tasks {
        t.abort();
    }
}
