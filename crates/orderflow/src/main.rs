//! `orderflow`: runs the platform (every role, or one) and its operational commands.
//!
//! `cli.rs` declares the command line, `config.rs` layers the settings, and `commands/` holds one module per
//! command.

mod cli;
mod commands;
mod config;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if let cli::Command::Completions { shell } = cli.command {
        clap_complete::generate(
            shell,
            &mut <cli::Cli as clap::CommandFactory>::command(),
            "orderflow",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    let settings = match config::load(cli.config.as_deref(), &cli.overrides) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // Before the async runtime: the OTLP exporter runs on threads of its own.
    let _tracing = match orderflow_telemetry::init(&cli.log, cli.log_format.into(), &settings.tracing) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: tracing: {:#}", anyhow::Error::new(e));
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(commands::run(cli.command, settings));
    // A blocking call abandoned to a wedged Kafka client (the consumer runtime bounds its transaction calls
    // and gives up on them) would otherwise hold the exit for good.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    // The edge: the whole error chain is printed once, on one line.
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
