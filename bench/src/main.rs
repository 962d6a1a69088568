//! herald-bench: the load generator of `bench/run.sh` (fan-out runs, HTTP request rates) and
//! the writer of BENCHMARKS.md's tables and plot from the results it recorded.

mod fanout;
mod httpload;
mod procstat;
mod proto;
mod report;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "herald-bench",
    about = "Benchmarks herald against reference servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Connect clients, publish in paced phases, record deliveries, loss, latency, CPU, RSS.
    Fanout(fanout::Args),
    /// Closed-loop POSTs to one URL: requests/s and latency.
    Http(httpload::Args),
    /// Write the tables into BENCHMARKS.md and the SVG plot from a results file.
    Report(report::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herald-bench: starting the runtime: {e}");
            return std::process::ExitCode::from(3);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Fanout(args) => fanout::run(args).await,
            Command::Http(args) => httpload::run(args).await,
            Command::Report(args) => report::run(args),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald-bench: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
