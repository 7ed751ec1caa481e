//! `example-instrument`: a small, honest instrument on the SDK.
//!
//! - At every start it appends one JSON line to
//!   `/var/lib/instrument/boots.jsonl` saying which boot this is and what it
//!   found in its transient storage (which must be empty: `/run/instrument`
//!   is a fresh tmpfs at every start), leaves a marker in
//!   `/run/instrument`, and publishes a `boot` event.
//! - It prints a heartbeat line every `heartbeat` (config, or
//!   `--heartbeat`, default 1s).
//! - Health: `ok` unless its config says `health = "degraded"` or
//!   `"failed"`; details carry the boot number and heartbeats.
//! - Config (`greeting`, `heartbeat`, `health`, `burst`): a `heartbeat`
//!   that is not a duration is rejected, and the previous config stays.
//!   `burst = N` publishes N `tick` events as fast as the SDK takes them,
//!   then a `burst-done` event with the time it took. SIGUSR1 starts a
//!   burst of 10,000 without going through the bus (the platform's test
//!   kills nats-server during one).
//! - Retention (config `retention`): `delete` (the SDK's default handler,
//!   the default), `keep` (deletes nothing and says so honestly), `lie`
//!   (deletes nothing and claims nothing is left) or `silent` (never
//!   answers). The platform's retention tests use the last three.
//! - `--exit-after DURATION --exit-code N` makes it end on its own, which
//!   the platform's restart tests use as a real crash.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use instrument_sdk::{BoxError, Context, Health, Instrument, RetentionReply, storage};
use serde::Deserialize;

/// Events in a burst started by SIGUSR1.
const SIGNAL_BURST: u64 = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    greeting: Option<String>,
    #[serde(default)]
    heartbeat: Option<String>,
    #[serde(default)]
    health: Option<String>,
    #[serde(default)]
    burst: Option<u64>,
    #[serde(default)]
    retention: Option<String>,
}

struct Settings {
    greeting: String,
    heartbeat: Duration,
    health: String,
    retention: String,
}

struct Example {
    settings: Mutex<Settings>,
    boot: AtomicU64,
    beats: AtomicU64,
    bursts: tokio::sync::mpsc::UnboundedSender<u64>,
    burst_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<u64>>>,
    exit_after: Option<(Duration, i32)>,
}

impl Instrument for Example {
    type Config = Config;

    async fn run(&self, ctx: Context) -> Result<(), BoxError> {
        let boot = record_boot(ctx.instrument(), ctx.persistent_dir(), ctx.transient_dir())?;
        self.boot.store(boot, Ordering::Relaxed);
        println!(
            "example-instrument {}: boot {boot} started",
            ctx.instrument()
        );
        ctx.publish(
            "boot",
            "example.boot/1",
            &serde_json::json!({ "boot": boot }),
        )?;

        if let Some((after, code)) = self.exit_after {
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                eprintln!("example-instrument: exiting with status {code} as asked");
                std::process::exit(code);
            });
        }
        let mut bursts = self
            .burst_rx
            .lock()
            .expect("lock")
            .take()
            .ok_or("run called twice")?;
        let c = ctx.clone();
        tokio::spawn(async move {
            while let Some(n) = bursts.recv().await {
                burst(&c, n).await;
            }
        });

        let mut usr1 =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
        loop {
            let beat = self.settings.lock().expect("lock").heartbeat;
            tokio::select! {
                _ = tokio::time::sleep(beat) => {
                    let n = self.beats.fetch_add(1, Ordering::Relaxed) + 1;
                    println!("heartbeat {n}");
                }
                _ = usr1.recv() => {
                    let _ = self.bursts.send(SIGNAL_BURST);
                }
                _ = ctx.shutdown() => break,
            }
        }
        println!(
            "example-instrument {}: SIGTERM received; stopping",
            ctx.instrument()
        );
        Ok(())
    }

    async fn health(&self, _ctx: &Context) -> Health {
        let s = self.settings.lock().expect("lock");
        let details = serde_json::json!({
            "boot": self.boot.load(Ordering::Relaxed),
            "heartbeats": self.beats.load(Ordering::Relaxed),
            "greeting": s.greeting,
        });
        let h = match s.health.as_str() {
            "degraded" => Health::degraded("degraded, as configured"),
            "failed" => Health::failed("failed, as configured"),
            _ => Health::ok(format!(
                "{} ({} heartbeats)",
                s.greeting,
                self.beats.load(Ordering::Relaxed)
            )),
        };
        h.with_details(details)
    }

    async fn retention(&self, ctx: &Context, cutoff: SystemTime) -> RetentionReply {
        let dir = ctx.persistent_dir().to_path_buf();
        let mode = self.retention_mode();
        println!("example-instrument: retention asked ({mode})");
        let cutoff = match mode.as_str() {
            "silent" => std::future::pending().await,
            "lie" => return RetentionReply::default(),
            // Nothing is older than the epoch: a walk that deletes nothing
            // and reports what is left.
            "keep" => SystemTime::UNIX_EPOCH,
            _ => cutoff,
        };
        tokio::task::spawn_blocking(move || storage::delete_older_than(&dir, cutoff))
            .await
            .unwrap_or_default()
    }

    async fn configure(&self, _ctx: &Context, version: u64, c: Config) -> Result<(), String> {
        let heartbeat = match &c.heartbeat {
            Some(h) => humantime::parse_duration(h).map_err(|e| {
                format!("heartbeat {h:?} is not a duration like 500ms, 2s or 1m ({e})")
            })?,
            None => self.settings.lock().expect("lock").heartbeat,
        };
        if heartbeat < Duration::from_millis(1) {
            return Err(format!("heartbeat {heartbeat:?} is shorter than 1ms"));
        }
        if let Some(h) = &c.health
            && !["ok", "degraded", "failed"].contains(&h.as_str())
        {
            return Err(format!("health {h:?} is not ok, degraded or failed"));
        }
        if let Some(r) = &c.retention
            && !["delete", "keep", "lie", "silent"].contains(&r.as_str())
        {
            return Err(format!(
                "retention {r:?} is not delete, keep, lie or silent"
            ));
        }
        {
            let mut s = self.settings.lock().expect("lock");
            s.heartbeat = heartbeat;
            s.greeting = c.greeting.unwrap_or_else(|| "hello".into());
            s.health = c.health.unwrap_or_else(|| "ok".into());
            s.retention = c.retention.unwrap_or_else(|| "delete".into());
        }
        println!("example-instrument: config version {version} applied");
        if let Some(n) = c.burst {
            let _ = self.bursts.send(n);
        }
        Ok(())
    }
}

impl Example {
    fn retention_mode(&self) -> String {
        self.settings.lock().expect("lock").retention.clone()
    }
}

/// Publishes `n` tick events as fast as the SDK queues them.
async fn burst(ctx: &Context, n: u64) {
    let t0 = Instant::now();
    let mut dropped = 0;
    for i in 1..=n {
        if ctx
            .publish(
                "tick",
                "example.tick/1",
                &serde_json::json!({ "n": i, "of": n }),
            )
            .is_err()
        {
            dropped += 1;
        }
        if i % 1000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let queued = t0.elapsed();
    let stored = ctx.flush_events(Duration::from_secs(120)).await;
    let elapsed = t0.elapsed();
    println!(
        "burst of {n} events: queued in {} ms, stored in {} ms (all stored: {stored}, dropped {dropped})",
        queued.as_millis(),
        elapsed.as_millis()
    );
    let _ = ctx.publish(
        "burst-done",
        "example.burst-done/1",
        &serde_json::json!({
            "count": n,
            "dropped": dropped,
            "queued_ms": queued.as_secs_f64() * 1e3,
            "stored_ms": elapsed.as_secs_f64() * 1e3,
        }),
    );
}

/// Counts this boot in persistent storage and notes what transient storage
/// held before this start.
fn record_boot(name: &str, persist: &Path, transient: &Path) -> std::io::Result<u64> {
    let log = persist.join("boots.jsonl");
    let previous = fs::read_to_string(&log)
        .map(|s| s.lines().count() as u64)
        .unwrap_or(0);
    let boot = previous + 1;
    let mut held: Vec<String> = fs::read_dir(transient)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    held.sort();
    let mut f = OpenOptions::new().create(true).append(true).open(&log)?;
    writeln!(
        f,
        "{}",
        serde_json::json!({ "boot": boot, "instrument": name, "transient_held": held })
    )?;
    f.sync_all()?;
    fs::write(transient.join(format!("boot-{boot}")), b"alive\n")?;
    Ok(boot)
}

fn parse_args() -> Result<(Duration, Option<(Duration, i32)>), String> {
    let mut heartbeat = Duration::from_secs(1);
    let mut exit_after = None;
    let mut exit_code = 1;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--heartbeat" => {
                heartbeat = humantime::parse_duration(&value()?).map_err(|e| e.to_string())?
            }
            "--exit-after" => {
                exit_after = Some(humantime::parse_duration(&value()?).map_err(|e| e.to_string())?)
            }
            "--exit-code" => {
                exit_code = value()?
                    .parse()
                    .map_err(|_| "--exit-code needs an integer".to_string())?
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok((heartbeat, exit_after.map(|d| (d, exit_code))))
}

fn main() -> std::process::ExitCode {
    let (heartbeat, exit_after) = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("example-instrument: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    instrument_sdk::run(Example {
        settings: Mutex::new(Settings {
            greeting: "hello".into(),
            heartbeat,
            health: "ok".into(),
            retention: "delete".into(),
        }),
        boot: AtomicU64::new(0),
        beats: AtomicU64::new(0),
        bursts: tx,
        burst_rx: Mutex::new(Some(rx)),
        exit_after,
    })
}
