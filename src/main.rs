use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

use hubfs::cli::{Cli, Command, MountArgs};

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
    let cli = Cli::parse();
    hubfs::mount::init_tracing();
    match cli.command {
        Command::Mount(args) => match hubfs::mount::run(args, || {}) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
        Command::Path(args) => match hubfs::ops::path_command(&args) {
            Ok(p) => {
                println!("{}", p.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Status(args) => {
            let (up, text) = hubfs::ops::status_command(&args.mountpoint);
            print!("{text}");
            if up {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Run by mount(8) for fstab lines of type `fuse.hubfs`:
/// `mount.fuse.hubfs SOURCE MOUNTPOINT [-o OPTIONS] [-f] [-n] [-s] [-v]`. It detaches once the
/// mount answers (mount(8) waits for it), unless `-f`.
fn mount_helper(argv: &[OsString]) -> ExitCode {
    let strs: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let (foreground, args) = match hubfs::config::helper_args(&strs[1..]) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("mount.fuse.hubfs: {e}");
            return ExitCode::from(1);
        }
    };
    let args = match Cli::try_parse_from(&args) {
        Ok(Cli {
            command: Command::Mount(m),
        }) => m,
        Ok(_) => return ExitCode::from(1),
        Err(e) => {
            eprintln!("mount.fuse.hubfs: {e}");
            return ExitCode::from(1);
        }
    };
    hubfs::mount::init_tracing();
    if foreground {
        return match hubfs::mount::run(args, || {}) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        };
    }
    detach_and_run(args)
}

/// Forks: the child serves the mount; the parent exits 0 once the child says the mount answers,
/// or 1 if the child dies first.
fn detach_and_run(args: MountArgs) -> ExitCode {
    use std::io::{Read, Write};
    let (read_end, write_end) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => return fail(format!("pipe: {e}")),
    };
    // SAFETY: no other thread exists yet (the runtime starts in the child).
    match unsafe { nix::unistd::fork() } {
        Err(e) => fail(format!("fork: {e}")),
        Ok(nix::unistd::ForkResult::Parent { .. }) => {
            drop(write_end);
            let mut f = std::fs::File::from(read_end);
            let mut b = [0u8; 1];
            match f.read(&mut b) {
                Ok(1) => ExitCode::SUCCESS,
                _ => ExitCode::from(1),
            }
        }
        Ok(nix::unistd::ForkResult::Child) => {
            drop(read_end);
            let _ = nix::unistd::setsid();
            if let Ok(null) = std::fs::File::open("/dev/null") {
                use std::os::fd::AsRawFd;
                // SAFETY: dup2 onto stdin/stdout of this process.
                unsafe {
                    libc::dup2(null.as_raw_fd(), 0);
                    libc::dup2(null.as_raw_fd(), 1);
                }
            }
            let mut ready = Some(std::fs::File::from(write_end));
            let r = hubfs::mount::run(args, || {
                if let Some(mut f) = ready.take() {
                    let _ = f.write_all(b"1");
                }
            });
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
    }
}
