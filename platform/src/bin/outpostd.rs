//! `outpostd`: the Outpost sensor daemon and its local commands.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use outpost_platform::commands::{self, run::RunArgs};
use outpost_platform::observability::{self, LogFormat};

#[derive(Parser)]
#[command(name = "outpostd", version, about = "Outpost sensor daemon")]
struct Cli {
    /// State directory (database, images, containers, storage, logs).
    #[arg(
        long,
        global = true,
        env = "OUTPOST_STATE_DIR",
        default_value = "/var/lib/outpost"
    )]
    state_dir: PathBuf,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon (SIGHUP re-reads the sensor file; SIGTERM exits and
    /// leaves instruments running unless --stop-on-exit).
    Run(RunArgs),
    /// Manage images.
    Image {
        #[command(subcommand)]
        command: ImageCmd,
    },
    /// Show the instruments' states.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Validate a sensor file without applying it.
    Check { sensor_file: PathBuf },
    /// Print the events in the sensor's EVENTS stream.
    Events(commands::events::EventsArgs),
    /// Ask an instrument to delete what is older than a period.
    Retention(commands::retention::RetentionArgs),
    /// Print an instrument's console log.
    Logs { instrument: String },
    /// Delete a removed instrument's persistent storage and logs.
    Purge { instrument: String },
    /// Internal: start one container with liblxc and print its init PID
    /// (run by the daemon as a short-lived helper process).
    #[command(hide = true)]
    StartContainer {
        #[arg(long)]
        lxcpath: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Verify and import an image archive.
    Import {
        archive: PathBuf,
        /// Expected sha256 (default: read <archive>.sha256).
        #[arg(long)]
        sha256: Option<String>,
    },
    /// List imported images.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove an image (refused while in use).
    Rm { name: String, version: String },
}

fn main() {
    let cli = Cli::parse();
    let daemon = matches!(cli.command, Cmd::Run(_));
    if !daemon {
        outpost_platform::runtime::ffi::default_sigpipe();
    }
    observability::init(cli.log_format, if daemon { "info" } else { "warn" });
    let sd = cli.state_dir;
    let res = match cli.command {
        Cmd::Run(args) => commands::run::run(&sd, args),
        Cmd::Image { command } => match command {
            ImageCmd::Import { archive, sha256 } => {
                commands::image::import(&sd, &archive, sha256.as_deref())
            }
            ImageCmd::List { json } => commands::image::list(&sd, json),
            ImageCmd::Rm { name, version } => commands::image::remove(&sd, &name, &version),
        },
        Cmd::Status { json } => commands::status::status(&sd, json),
        Cmd::Check { sensor_file } => commands::check::check(&sd, &sensor_file),
        Cmd::Events(args) => commands::events::events(&sd, args),
        Cmd::Retention(args) => commands::retention::retention(&sd, args),
        Cmd::Logs { instrument } => commands::instrument::logs(&sd, &instrument),
        Cmd::Purge { instrument } => commands::instrument::purge(&sd, &instrument),
        Cmd::StartContainer {
            lxcpath,
            name,
            argv,
        } => commands::start_container(&lxcpath, &name, &argv),
    };
    if let Err(e) = res {
        eprintln!("outpostd: error: {e:#}");
        std::process::exit(1);
    }
}
