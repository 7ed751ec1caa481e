//! `outpostctl`: the operator's CLI. A thin client of outpostd's D-Bus API
//! (see [`crate::dbus`]); only `check` works offline, from the state
//! directory's images.
//!
//! Every read command takes `--format table|json` (JSON field names are
//! stable). Failures exit non-zero with a message that names the problem
//! and the fix: 69 outpostd unreachable, 77 not allowed, 65 invalid input,
//! 66 no such instrument or version, 75 refused because a fleet manages
//! the sensor, 70 anything else.

mod check;
mod config;
mod fleet;
mod image;
mod retention;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::dbus::StatusReport;
use crate::dbus::client::{self, CallError, SensorProxy};
use config::ConfigCmd;
use fleet::FleetCmd;
use image::ImageCmd;
use retention::RetentionCmd;

#[derive(Parser)]
#[command(
    name = "outpostctl",
    version,
    about = "Operate a sensor: talks to outpostd over D-Bus (org.outpost.Sensor1)"
)]
pub struct Cli {
    /// The bus outpostd serves on: "system", or an address such as
    /// unix:path=/run/outpost/bus.
    #[arg(long, global = true, env = "OUTPOST_BUS", default_value = "system")]
    pub bus: String,
    /// Output of read commands.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// The daemon, the desired state and every instrument.
    Status {
        /// Print it again at every change (JSON: one line per change).
        #[arg(long)]
        watch: bool,
    },
    /// Every instrument: state, health, image, applied/desired config.
    Instruments,
    /// The desired-state versions, newest first: who made each and why.
    History {
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// An instrument's config: show, history, diff, set, edit, rollback.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Stops an instrument's container and starts it again.
    Restart { name: String },
    /// Images: import, list, rm.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Deletes a removed instrument's persistent storage, logs and host
    /// ids (refused while it is in the desired state).
    Purge { name: String },
    /// Retention: `status`, `run NAME [--older-than 7d]` (asks the
    /// instrument to delete what is older than its period, checks, and
    /// says the verdict), `history [NAME]`.
    #[command(subcommand)]
    Retention(RetentionCmd),
    /// The sensor's fleet: `enroll URL --token T --fingerprint F`, `status`.
    #[command(subcommand)]
    Fleet(FleetCmd),
    /// The sensor's events (EVENTS stream), oldest first.
    Events {
        /// Keep printing new ones.
        #[arg(short, long)]
        follow: bool,
        #[arg(long)]
        instrument: Option<String>,
        /// Only this kind ("escape", "health", …).
        #[arg(long)]
        kind: Option<String>,
        /// Start at this stream sequence (each JSON event has its `seq`).
        #[arg(long, default_value_t = 0)]
        since: u64,
    },
    /// An instrument's console log (stdout and stderr).
    Logs {
        name: String,
        /// How much of the end to show first, in bytes.
        #[arg(long, default_value_t = 64 << 10)]
        bytes: u64,
        /// Keep printing what it writes.
        #[arg(short, long)]
        follow: bool,
    },
    /// Runs an instrument again (enabled = true in the desired state).
    Start {
        name: String,
        #[arg(long = "override")]
        force: bool,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Stops an instrument and keeps it stopped (enabled = false).
    Stop {
        name: String,
        #[arg(long = "override")]
        force: bool,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Applies a sensor file as the new desired state (validated as a
    /// whole first; nothing changes if any of it is wrong).
    Apply {
        file: PathBuf,
        /// Make the change on a fleet-managed sensor anyway; it is
        /// recorded as drift.
        #[arg(long = "override")]
        force: bool,
        /// Why, kept with the version.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Checks a sensor file without outpostd: alone and against the images
    /// imported in the state directory.
    Check {
        file: PathBuf,
        #[arg(long, default_value = "/var/lib/outpost")]
        state_dir: PathBuf,
    },
}

/// Runs `outpostctl`.
pub fn main(cli: Cli) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("outpostctl: cannot start the async runtime: {e}");
            return ExitCode::from(70);
        }
    };
    match cli.cmd {
        Cmd::Check { file, state_dir } => match check::check(&state_dir, &file) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("outpostctl: {e:#}");
                ExitCode::from(65)
            }
        },
        cmd => match rt.block_on(call(&cli.bus, cli.format, cmd)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("outpostctl: {e}");
                e.exit_code()
            }
        },
    }
}

/// A connection to outpostd and the bus it is on (for messages).
pub(crate) struct Session {
    proxy: SensorProxy<'static>,
    bus: String,
}

impl Session {
    fn err(&self, e: zbus::Error) -> CallError {
        CallError::from_zbus(e, &self.bus)
    }

    async fn status(&self) -> Result<StatusReport, CallError> {
        let json = self.proxy.status().await.map_err(|e| self.err(e))?;
        serde_json::from_str(&json)
            .map_err(|e| CallError::Failed(format!("an answer outpostctl cannot read: {e}")))
    }

    async fn set_enabled(
        &self,
        name: &str,
        on: bool,
        force: bool,
        reason: Option<String>,
    ) -> Result<(), CallError> {
        let verb = if on { "start" } else { "stop" };
        let reason = reason.unwrap_or_else(|| format!("outpostctl {verb} {name}"));
        let (version, changed) = self
            .proxy
            .set_enabled(name, on, force, &reason)
            .await
            .map_err(|e| self.err(e))?;
        match (changed, on) {
            (true, true) => println!("{name}: enabled (desired state version {version}); starting"),
            (true, false) => {
                println!("{name}: disabled (desired state version {version}); stopping")
            }
            (false, true) => println!("{name}: already enabled"),
            (false, false) => println!("{name}: already disabled"),
        }
        Ok(())
    }
}

/// A time in milliseconds since the epoch, as RFC 3339 to the second.
pub(crate) fn when(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

async fn call(bus: &str, format: Format, cmd: Cmd) -> Result<(), CallError> {
    let s = Session {
        proxy: client::connect(bus).await?,
        bus: bus.to_string(),
    };
    match cmd {
        Cmd::Status { watch } => {
            // Subscribed before the first read, so no change is missed.
            let mut changes = if watch {
                Some(s.proxy.receive_changed().await.map_err(|e| s.err(e))?)
            } else {
                None
            };
            loop {
                let report = s.status().await?;
                match format {
                    Format::Json if watch => {
                        println!("{}", serde_json::to_string(&report).expect("serializes"))
                    }
                    Format::Json => println!(
                        "{}",
                        serde_json::to_string_pretty(&report).expect("serializes")
                    ),
                    Format::Table => {
                        if watch {
                            // Clear the screen, cursor home.
                            print!("\x1b[2J\x1b[H");
                        }
                        status::print_table(&report)
                    }
                }
                use std::io::Write;
                let _ = std::io::stdout().flush();
                let Some(ch) = changes.as_mut() else { break };
                use futures::StreamExt;
                if ch.next().await.is_none() {
                    return Err(CallError::Unreachable {
                        bus: s.bus.clone(),
                        detail: "the connection to outpostd ended".into(),
                    });
                }
            }
        }
        Cmd::Instruments => {
            let report = s.status().await?;
            if format == Format::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report.snapshot.instruments).expect("serializes")
                );
                return Ok(());
            }
            println!(
                "{:<20} {:<12} {:<10} {:<20} {:>8} {:>8}",
                "NAME", "STATE", "HEALTH", "IMAGE", "CONFIG", "RESTARTS"
            );
            for i in &report.snapshot.instruments {
                let config = match (i.config_applied, i.config_version) {
                    (_, None) => "-".to_string(),
                    (Some(a), Some(d)) => format!("{a}/{d}"),
                    (None, Some(d)) => format!("-/{d}"),
                };
                println!(
                    "{:<20} {:<12} {:<10} {:<20} {:>8} {:>8}",
                    i.name,
                    i.state,
                    i.health,
                    format!("{}:{}", i.image, i.version),
                    config,
                    i.restarts
                );
            }
        }
        Cmd::History { limit } => {
            let json = s.proxy.history(limit).await.map_err(|e| s.err(e))?;
            let h: Vec<crate::db::DesiredVersion> = serde_json::from_str(&json)
                .map_err(|e| CallError::Failed(format!("an answer outpostctl cannot read: {e}")))?;
            if format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&h).expect("serializes"));
                return Ok(());
            }
            println!(
                "{:>7}  {:<20} {:<6} {:<5} {:<24} REASON",
                "VERSION", "WHEN", "SOURCE", "DRIFT", "AUTHOR"
            );
            for v in h {
                println!(
                    "{:>7}  {:<20} {:<6} {:<5} {:<24} {}",
                    v.version,
                    when(v.created_at_ms),
                    v.source,
                    if v.drift { "yes" } else { "" },
                    v.author,
                    v.reason
                );
            }
        }
        Cmd::Config(c) => s.config(c, format).await?,
        Cmd::Purge { name } => {
            let removed = s.proxy.purge(&name).await.map_err(|e| s.err(e))?;
            if removed.is_empty() {
                println!("instrument {name} has no stored data");
            } else {
                println!("purged {}", removed.join(", "));
            }
        }
        Cmd::Retention(c) => s.retention(c, format).await?,
        Cmd::Fleet(c) => s.fleet(c, format).await?,
        Cmd::Image(c) => s.image(c, format).await?,
        Cmd::Logs {
            name,
            bytes,
            follow,
        } => s.logs(&name, bytes, follow).await?,
        Cmd::Events {
            follow,
            instrument,
            kind,
            since,
        } => {
            let mut next = since;
            loop {
                let asked = s
                    .proxy
                    .events(
                        next,
                        500,
                        instrument.as_deref().unwrap_or(""),
                        kind.as_deref().unwrap_or(""),
                    )
                    .await
                    .map_err(|e| s.err(e));
                let (json, after) = match asked {
                    Ok(answer) => answer,
                    // outpostd restarts its nats-server when instruments
                    // come or go, and cannot read the stream meanwhile: a
                    // follower asks again.
                    Err(e @ CallError::Failed(_)) if follow => {
                        eprintln!("outpostctl: {e}; asking again");
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let events: Vec<crate::dbus::events::Event> =
                    serde_json::from_str(&json).map_err(|e| {
                        CallError::Failed(format!("an answer outpostctl cannot read: {e}"))
                    })?;
                for ev in &events {
                    let e = &ev.envelope;
                    match format {
                        Format::Json => {
                            println!("{}", serde_json::to_string(ev).expect("serializes"))
                        }
                        Format::Table => println!(
                            "{}  {:<16} {:<14} {:<28} {}",
                            e.ts, e.instrument, e.kind, e.schema, e.payload
                        ),
                    }
                }
                let moved = after > next;
                next = after;
                if moved {
                    continue;
                }
                if !follow {
                    break;
                }
                use std::io::Write;
                let _ = std::io::stdout().flush();
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
        Cmd::Restart { name } => {
            s.proxy.restart(&name).await.map_err(|e| s.err(e))?;
            println!("{name}: restarted");
        }
        Cmd::Start {
            name,
            force,
            reason,
        } => s.set_enabled(&name, true, force, reason).await?,
        Cmd::Stop {
            name,
            force,
            reason,
        } => s.set_enabled(&name, false, force, reason).await?,
        Cmd::Apply {
            file,
            force,
            reason,
        } => {
            let text = std::fs::read_to_string(&file).map_err(|e| {
                CallError::Invalid(format!(
                    "cannot read {}: {e} (fix: give the path of a sensor file)",
                    file.display()
                ))
            })?;
            let reason = reason.unwrap_or_else(|| format!("outpostctl apply {}", file.display()));
            let label = format!("sensor file {}", file.display());
            let (version, changed) = s
                .proxy
                .apply(&text, &label, force, &reason)
                .await
                .map_err(|e| s.err(e))?;
            if changed {
                println!("applied: desired state version {version}");
            } else {
                println!("unchanged: it equals desired state version {version}");
            }
        }
        Cmd::Check { .. } => unreachable!("check runs offline"),
    }
    Ok(())
}
