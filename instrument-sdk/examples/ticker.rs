//! The crate-doc example as a program: publishes a `tick` event every
//! `interval_secs` (from its config).
//!
//! Run it against a real nats-server outside a container with:
//! `OUTPOST_INSTRUMENT=ticker OUTPOST_SENSOR=dev OUTPOST_NATS_URL=nats://127.0.0.1:4222
//!  OUTPOST_NATS_NKEY=ticker.nkey OUTPOST_PERSISTENT_DIR=/tmp/ticker
//!  cargo run -p instrument-sdk --example ticker`

use std::sync::Mutex;

use instrument_sdk::{BoxError, Context, Health, Instrument};
use serde::Deserialize;

#[derive(Deserialize)]
struct Config {
    interval_secs: u64,
}

struct Ticker {
    interval: Mutex<u64>,
}

impl Instrument for Ticker {
    type Config = Config;

    async fn run(&self, ctx: Context) -> Result<(), BoxError> {
        let mut n = 0u64;
        while !ctx.is_shutting_down() {
            n += 1;
            ctx.publish("tick", "ticker.tick/1", &serde_json::json!({ "n": n }))?;
            let secs = *self.interval.lock().unwrap();
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(secs.max(1))) => {}
                _ = ctx.shutdown() => {}
            }
        }
        Ok(())
    }

    async fn health(&self, _ctx: &Context) -> Health {
        Health::ok("ticking")
    }

    async fn configure(&self, _ctx: &Context, _version: u64, c: Config) -> Result<(), String> {
        if c.interval_secs == 0 {
            return Err("interval_secs must be at least 1".into());
        }
        *self.interval.lock().unwrap() = c.interval_secs;
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    instrument_sdk::run(Ticker {
        interval: Mutex::new(1),
    })
}
