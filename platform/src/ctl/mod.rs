//! `outpostctl`: the operator's CLI. A thin client of outpostd's D-Bus API
//! (see [`crate::dbus`]); only `check` works offline, from the state
//! directory's images.
//!
//! Every read command takes `--format table|json` (JSON field names are
//! stable). Failures exit non-zero with a message that names the problem
//! and the fix: 69 outpostd unreachable, 77 not allowed, 65 invalid input,
//! 75 refused because a fleet manages the sensor, 70 anything else.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::dbus::StatusReport;
use crate::dbus::client::{self, CallError};

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
    Status,
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
        Cmd::Check { file, state_dir } => match crate::commands::check::check(&state_dir, &file) {
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

async fn call(bus: &str, format: Format, cmd: Cmd) -> Result<(), CallError> {
    let proxy = client::connect(bus).await?;
    let zerr = |e| CallError::from_zbus(e, bus);
    match cmd {
        Cmd::Status => {
            let json = proxy.status().await.map_err(zerr)?;
            let report: StatusReport = serde_json::from_str(&json)
                .map_err(|e| CallError::Failed(format!("an answer outpostctl cannot read: {e}")))?;
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("serializes")
                ),
                Format::Table => crate::commands::status::print_table(
                    Some(report.daemon_pid),
                    &report.snapshot,
                    &[],
                ),
            }
        }
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
            let (version, changed) = proxy
                .apply(&text, &label, force, &reason)
                .await
                .map_err(zerr)?;
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
