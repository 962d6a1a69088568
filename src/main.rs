//! The `herald` binary: parse the command line, set up logging, run the command, map its
//! outcome to the exit code.

use std::process::ExitCode;

use clap::Parser;
use herald::cli::{self, Cli, Outcome};
use herald::telemetry::{self, LogFormat};

fn main() -> ExitCode {
    herald::install_crypto();
    let cli = Cli::parse();
    // `run` sets up logging itself, once its config says how.
    if !matches!(cli.command, cli::Command::Run { .. }) {
        telemetry::init("info", cli.log_format.unwrap_or(LogFormat::Text));
    }
    match cli::run(cli) {
        Outcome::Ok => ExitCode::SUCCESS,
        Outcome::Invalid => ExitCode::from(1),
        Outcome::Failed => ExitCode::from(3),
    }
}
