//! `outpostctl`: see `outpost_platform::ctl`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    outpost_platform::ctl::main(outpost_platform::ctl::Cli::parse())
}
