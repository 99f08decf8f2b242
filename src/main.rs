use clap::Parser;

use hubfs::cli::{Cli, Command};

/// Limits glibc to two malloc arenas: with one per busy thread (the default), freed block buffers
/// scattered over many arenas stay resident and the daemon's RSS drifts above the cache cap.
fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> std::process::ExitCode {
    tune_allocator();
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
