use clap::Parser;

use hubfs::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    hubfs::mount::init_tracing();
    match cli.command {
        Command::Mount(args) => match hubfs::mount::run(args) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("hubfs: {e}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}
