use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use hubfs::cli::{Cli, Command, MountArgs};
use hubfs::daemon::Forked;

/// How long `hubfs mount` waits for its daemon to say the mount answers.
const MOUNT_WAIT: Duration = Duration::from_secs(90);

/// Limits glibc to two malloc arenas: with one per busy thread (the default), freed block buffers
/// scattered over many arenas stay resident and the daemon's RSS drifts above the cache cap.
fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    tracing::error!("{e}");
    eprintln!("hubfs: {e}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    tune_allocator();
    let argv: Vec<OsString> = std::env::args_os().collect();
    let invoked_as = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("hubfs")
        .to_owned();
    if invoked_as.starts_with("mount.") {
        return mount_helper(&argv);
    }
    // `-o OPTS` of `hubfs mount` become the flags they stand for (only on a UTF-8 command line;
    // any other is parsed as it is).
    let argv: Vec<OsString> = match argv
        .iter()
        .map(|a| a.clone().into_string())
        .collect::<Result<Vec<String>, _>>()
    {
        Ok(strs) => match hubfs::config::expand_mount_options(&strs) {
            Ok(v) => v.into_iter().map(OsString::from).collect(),
            Err(e) => {
                eprintln!("hubfs: {e}");
                return ExitCode::from(2);
            }
        },
        Err(_) => argv,
    };
    let cli = Cli::parse_from(argv);
    match cli.command {
        Command::Mount(args) => mount_command(args),
        Command::Unmount(args) => {
            hubfs::mount::init_tracing(false);
            match hubfs::commands::unmount_command(&args.mountpoint, args.lazy) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Command::Path(args) => {
            hubfs::mount::init_tracing(false);
            match hubfs::commands::path_command(&args) {
                Ok(p) => {
                    println!("{}", p.display());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Status(args) => {
            hubfs::mount::init_tracing(false);
            let (up, text) = hubfs::commands::status_command(&args.mountpoint);
            print!("{text}");
            if up {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `hubfs mount`: in the foreground with `--foreground`; otherwise forks (before any thread
/// exists), and this process exits 0 once the daemon says the mount answers, or 1 with its
/// reason.
fn mount_command(mut args: MountArgs) -> ExitCode {
    // The daemon works from `/`: relative paths are made absolute first.
    for p in [
        Some(&mut args.mountpoint),
        args.token_file.as_mut(),
        args.ca_bundle.as_mut(),
        args.log_file.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        if let Ok(abs) = std::path::absolute(&*p) {
            *p = abs;
        }
    }
    if args.foreground {
        if let Some(log) = &args.log_file {
            if let Err(e) = hubfs::daemon::redirect_stderr(log) {
                eprintln!("hubfs: {e}");
                return ExitCode::FAILURE;
            }
        }
        hubfs::mount::init_tracing(args.debug);
        return match hubfs::mount::run(args, || {}) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        };
    }
    match hubfs::daemon::fork(args.log_file.as_deref(), MOUNT_WAIT) {
        Err(e) => fail(e),
        Ok(Forked::Parent(Ok(()))) => ExitCode::SUCCESS,
        Ok(Forked::Parent(Err(why))) => {
            eprintln!("hubfs: {why}");
            ExitCode::FAILURE
        }
        Ok(Forked::Child(mut readiness)) => {
            hubfs::mount::init_tracing(args.debug);
            let result = hubfs::mount::run(args, || readiness.ready());
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    readiness.failed(&e.to_string());
                    tracing::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Run by mount(8) for fstab lines of type `fuse.hubfs`:
/// `mount.fuse.hubfs SOURCE MOUNTPOINT [-o OPTIONS] [-f] [-n] [-s] [-v]`. SOURCE `hubfs` mounts
/// the Hub, any other is the repo to mount. It detaches once the mount answers (mount(8) waits
/// for it), unless `-f`.
fn mount_helper(argv: &[OsString]) -> ExitCode {
    let strs: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let (_foreground, args) = match hubfs::config::helper_args(&strs[1..]) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("mount.fuse.hubfs: {e}");
            return ExitCode::from(1);
        }
    };
    match Cli::try_parse_from(&args) {
        Ok(Cli {
            command: Command::Mount(m),
        }) => mount_command(m),
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("mount.fuse.hubfs: {e}");
            ExitCode::from(1)
        }
    }
}
