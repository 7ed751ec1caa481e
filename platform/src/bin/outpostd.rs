//! `outpostd`: the Outpost sensor daemon. Operators use `outpostctl`,
//! which talks to `outpostd run` over D-Bus.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use outpost_platform::observability::{self, LogFormat};
use outpost_platform::run::{self, RunArgs};

#[derive(Parser)]
#[command(
    name = "outpostd",
    version,
    about = "Outpost sensor daemon (operate it with outpostctl)"
)]
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

fn main() {
    let cli = Cli::parse();
    let daemon = matches!(cli.command, Cmd::Run(_));
    if !daemon {
        // The helper prints to the daemon's pipe: a closed pipe ends it.
        outpost_platform::runtime::ffi::default_sigpipe();
    }
    observability::init(cli.log_format, if daemon { "info" } else { "warn" });
    let res = match cli.command {
        Cmd::Run(args) => run::run(&cli.state_dir, args),
        Cmd::StartContainer {
            lxcpath,
            name,
            argv,
        } => run::start_container(&lxcpath, &name, &argv),
    };
    if let Err(e) = res {
        eprintln!("outpostd: error: {e:#}");
        std::process::exit(1);
    }
}
