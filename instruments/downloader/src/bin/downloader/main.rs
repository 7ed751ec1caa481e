//! `downloader`: the downloader instrument on the SDK. It checks each
//! configured resource every `every`, keeps what verifies in
//! `/var/lib/instrument/downloader`, and says what happened:
//!
//! - `artifact-fetched` `{resource, version, sha256, length, path}` for a
//!   new verified version (`path` is relative to its persistent storage;
//!   the platform copies the file from there and verifies it again);
//! - `artifact-refused` `{resource, reason, detail}` for one that did not
//!   verify (`reason`: hash, signature, unknown-key, rollback, expired,
//!   too-large, too-slow, redirect, metadata).
//!
//! Health: per resource the last check, its outcome, the version and the
//! next check; `degraded` while a resource's last check failed or was
//! refused, naming it and why.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use instrument_sdk::{BoxError, Context, Health, Instrument};
use outpost_downloader::config::Config;
use outpost_downloader::fetch::Client;
use outpost_downloader::store::Store;
use outpost_downloader::{Outcome, check};
use serde::Serialize;
use tracing::{info, warn};

/// What the last check of a resource found.
#[derive(Debug, Clone, Serialize)]
struct Status {
    last_check: String,
    outcome: &'static str,
    detail: String,
    version: Option<String>,
    next_check: String,
    /// Checks in a row that failed or were refused.
    failing: u32,
}

struct Downloader {
    cfg: Mutex<Arc<Config>>,
    wake: tokio::sync::Notify,
    status: Mutex<BTreeMap<String, Status>>,
}

fn when(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Downloader {
    fn store(ctx: &Context) -> Result<Store, String> {
        Store::new(&ctx.persistent_dir().join("downloader"))
    }

    /// Checks `r` once and says what happened.
    async fn check_one(
        &self,
        ctx: &Context,
        client: Result<&Client, &String>,
        r: &outpost_downloader::config::Resource,
        store: &Store,
    ) {
        let now = SystemTime::now();
        let outcome = match client {
            Ok(c) => check(r, c, store, now).await,
            Err(e) => Outcome::Failed(e.clone()),
        };
        let prev = self.status.lock().expect("status").get(&r.name).cloned();
        let failing = prev.as_ref().map_or(0, |p| p.failing);
        let (label, detail, version, failing) = match &outcome {
            Outcome::Fetched {
                version,
                sha256,
                length,
                path,
                signed,
            } => {
                info!(resource = %r.name, %version, %sha256, "artifact fetched and verified");
                let rel = |p: &std::path::Path| {
                    p.strip_prefix(ctx.persistent_dir())
                        .unwrap_or(p)
                        .display()
                        .to_string()
                };
                let _ = ctx.publish(
                    "artifact-fetched",
                    "downloader.artifact-fetched/1",
                    &serde_json::json!({
                        "resource": r.name, "version": version, "sha256": sha256,
                        "length": length, "path": rel(path),
                        "metadata": signed.as_ref().map(|(m, _)| rel(m)),
                        "signature": signed.as_ref().map(|(_, s)| rel(s)),
                    }),
                );
                (
                    "fetched",
                    format!("version {version} verified"),
                    Some(version.clone()),
                    0,
                )
            }
            Outcome::Unchanged { version } => {
                ("unchanged", "nothing new".into(), version.clone(), 0)
            }
            Outcome::Refused(why) => {
                warn!(resource = %r.name, reason = why.kind(), "artifact refused: {why}");
                let _ = ctx.publish(
                    "artifact-refused",
                    "downloader.artifact-refused/1",
                    &serde_json::json!({
                        "resource": r.name, "reason": why.kind(), "detail": why.to_string(),
                    }),
                );
                let version = prev.as_ref().and_then(|p| p.version.clone());
                (
                    "refused",
                    format!("{}: {why}", why.kind()),
                    version,
                    failing + 1,
                )
            }
            Outcome::Failed(why) => {
                warn!(resource = %r.name, "check failed: {why}");
                let version = prev.as_ref().and_then(|p| p.version.clone());
                ("failed", why.clone(), version, failing + 1)
            }
        };
        let version = version.or_else(|| store.state(&r.name).current.map(|c| c.version));
        self.status.lock().expect("status").insert(
            r.name.clone(),
            Status {
                last_check: when(now),
                outcome: label,
                detail,
                version,
                next_check: when(now + r.every),
                failing,
            },
        );
    }
}

impl Instrument for Downloader {
    type Config = Config;

    async fn run(&self, ctx: Context) -> Result<(), BoxError> {
        let store = Self::store(&ctx)?;
        let mut due: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
        let mut clients: BTreeMap<String, Result<Client, String>> = BTreeMap::new();
        loop {
            let cfg = self.cfg.lock().expect("config").clone();
            let now = tokio::time::Instant::now();
            // Resources no longer configured are forgotten.
            due.retain(|n, _| cfg.resources.iter().any(|r| &r.name == n));
            self.status
                .lock()
                .expect("status")
                .retain(|n, _| cfg.resources.iter().any(|r| &r.name == n));
            for r in &cfg.resources {
                let at = *due.entry(r.name.clone()).or_insert(now);
                if at <= now {
                    // One client per resource while the config holds.
                    let client = clients
                        .entry(r.name.clone())
                        .or_insert_with(|| Client::new(&cfg, r));
                    self.check_one(&ctx, client.as_ref(), r, &store).await;
                    due.insert(r.name.clone(), tokio::time::Instant::now() + r.every);
                }
            }
            let next = due
                .values()
                .min()
                .copied()
                .unwrap_or(now + Duration::from_secs(3600));
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = self.wake.notified() => {
                    // A new config: check everything at once.
                    due.clear();
                    clients.clear();
                }
                _ = ctx.shutdown() => return Ok(()),
            }
        }
    }

    async fn health(&self, _ctx: &Context) -> Health {
        let status = self.status.lock().expect("status").clone();
        let bad: Vec<String> = status
            .iter()
            .filter(|(_, s)| s.failing > 0)
            .map(|(n, s)| format!("{n}: {} ({})", s.outcome, s.detail))
            .collect();
        let details = serde_json::to_value(&status).unwrap_or_default();
        let h = if bad.is_empty() {
            Health::ok(format!("{} resources up to date", status.len()))
        } else {
            Health::degraded(bad.join("; "))
        };
        h.with_details(details)
    }

    async fn configure(&self, _ctx: &Context, version: u64, config: Config) -> Result<(), String> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        info!(
            version,
            resources = config.resources.len(),
            "config applied"
        );
        *self.cfg.lock().expect("config") = Arc::new(config);
        self.wake.notify_one();
        Ok(())
    }
}

fn main() -> ExitCode {
    instrument_sdk::run(Downloader {
        cfg: Mutex::new(Arc::new(Config::default())),
        wake: tokio::sync::Notify::new(),
        status: Mutex::new(BTreeMap::new()),
    })
}
