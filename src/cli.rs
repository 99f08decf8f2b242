//! The command line (clap).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{parse_duration, parse_mode, parse_size};

/// hubfs: the Hugging Face Hub as a read-only filesystem.
///
/// Paths under the mount: /<org>/<repo>@<rev>/<path> for models, /datasets/<org>/<repo>@<rev>/...
/// and /spaces/<org>/<repo>@<rev>/... . <rev> is a branch, tag or commit sha (percent-encode a
/// `/`: @refs%2Fpr%2F1); no @<rev> means @main. Reads become HTTP range requests held in a
/// memory-only cache: nothing is written to local disk.
#[derive(Parser, Debug)]
#[command(name = "hubfs", version, about, long_about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
// Parsed once per run: the size of the mount variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Mount the Hub (or, with --repo, one repo or folder) at MOUNTPOINT. Returns once the mount
    /// answers, the daemon serving it in the background (exit status 0), or with the reason it
    /// could not mount (non-zero). With --foreground it serves in the foreground until
    /// SIGINT/SIGTERM or an external unmount, then unmounts cleanly.
    #[command(after_help = MOUNT_AFTER_HELP)]
    Mount(MountArgs),
    /// Unmount the hubfs mount at MOUNTPOINT (umount as root, fusermount3 -u otherwise); its
    /// daemon then exits. Fails, changing nothing, if MOUNTPOINT is not a hubfs mount.
    Unmount(UnmountArgs),
    /// Print the mount path of a repo, e.g. `hubfs path meta-llama/Llama-2-7b` prints
    /// /mnt/hf/meta-llama/Llama-2-7b@main.
    Path(PathArgs),
    /// Say whether a hubfs mount is up at MOUNTPOINT and print its counters (JSON). Exit status 0
    /// when mounted, 1 when not.
    Status(StatusArgs),
}

/// The kind of repo, for `hubfs path`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepoKind {
    /// A model: /<org>/<repo>@<rev>.
    Model,
    /// A dataset: /datasets/<org>/<repo>@<rev>.
    Dataset,
    /// A space: /spaces/<org>/<repo>@<rev>.
    Space,
}

impl RepoKind {
    /// The Hub's repo type of this `--type` / `--repo-type` value.
    pub fn repo_type(self) -> crate::hub::RepoType {
        match self {
            RepoKind::Model => crate::hub::RepoType::Model,
            RepoKind::Dataset => crate::hub::RepoType::Dataset,
            RepoKind::Space => crate::hub::RepoType::Space,
        }
    }
}

/// Options of `hubfs path`.
#[derive(clap::Args, Debug, Clone)]
pub struct PathArgs {
    /// The repo id, `org/name`.
    pub repo_id: String,
    /// Branch, tag or commit sha.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Model, dataset or space.
    #[arg(long = "type", value_enum, default_value = "model")]
    pub repo_type: RepoKind,
    /// Where hubfs is mounted.
    #[arg(long, default_value = "/mnt/hf")]
    pub mount: PathBuf,
    /// Print the path pinned to the commit the revision resolves to now (asks the mount, else the
    /// Hub), so a long job reads one commit even across restarts.
    #[arg(long)]
    pub pin: bool,
    /// The Hub's base URL for --pin when the mount is not up. Default: env HF_ENDPOINT, else
    /// https://huggingface.co.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
}

/// What `hubfs mount --help` says after the flags: the `-o` options.
const MOUNT_AFTER_HELP: &str = "\
Mount options (-o OPT[,OPT...], as in fstab; may be repeated):
  Each flag as an option named with '_': cache_size=1GiB, read_timeout=10s, repo=org/name@rev,
  repo_type=dataset, subfolder=PATH, file_mode=0440, dir_mode=0550, log_file=PATH, uid=N, gid=N,
  endpoint=URL, token_file=PATH, ca_bundle=PATH, revision_ttl=DUR, max_connections=N,
  fuse_threads=N, metrics_addr=ADDR; allow_other, debug.
  Accepted and ignored (the mount is always ro,nosuid,nodev,noatime,default_permissions): ro,
  defaults, auto, noauto, user, nouser, users, _netdev, nofail, dev, nodev, suid, nosuid, exec,
  noexec, atime, noatime, relatime, async, sync, default_permissions, x-*.
  rw is accepted with a warning (writes still fail with EROFS). Anything else is refused.

Examples:
  hubfs mount /mnt/hf
  hubfs mount --repo openai-community/gpt2@main /models/gpt2
  hubfs mount --repo acme/corpus --repo-type dataset --subfolder data/train /data/train
  hubfs mount -o ro,allow_other,cache_size=1GiB --log-file /var/log/hubfs.log /mnt/hf
  hubfs unmount /mnt/hf";

/// Options of `hubfs unmount`.
#[derive(clap::Args, Debug, Clone)]
pub struct UnmountArgs {
    /// Where hubfs is mounted.
    pub mountpoint: PathBuf,
    /// Detach the mount now even if files in it are open (umount -l / fusermount3 -u -z); it goes
    /// away when they are closed.
    #[arg(short = 'l', long)]
    pub lazy: bool,
}

/// Options of `hubfs status`.
#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    /// Where hubfs is mounted.
    #[arg(default_value = "/mnt/hf")]
    pub mountpoint: PathBuf,
}

/// Options of `hubfs mount`.
#[derive(clap::Args, Debug, Clone)]
pub struct MountArgs {
    /// An existing, empty directory to mount on.
    pub mountpoint: PathBuf,

    /// The Hub's base URL. Default: env HF_ENDPOINT, else https://huggingface.co.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,

    /// Read the token from this file instead of the usual places (env HF_TOKEN, then the file at
    /// env HF_TOKEN_PATH, then $HF_HOME/token, HF_HOME defaulting to ~/.cache/huggingface). The
    /// token is sent only to the endpoint's host, never to the CDN, and never logged. A token
    /// file is re-read when it changes (checked every 5 s, and at once after a 401), so a rotated
    /// token is used without a remount; HF_TOKEN stays fixed.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// A PEM file of CA certificates to trust besides the built-in and system roots (a mirror or
    /// proxy with an internal CA). SSL_CERT_FILE and REQUESTS_CA_BUNDLE are added too when set.
    #[arg(long, value_name = "PATH")]
    pub ca_bundle: Option<PathBuf>,

    /// Memory for cached file blocks (a hard cap; nothing is cached on disk). Units K, M, G
    /// (powers of 1024).
    #[arg(long, value_name = "SIZE", default_value = "512MiB", value_parser = parse_size)]
    pub cache_size: u64,

    /// Memory for metadata: cached folder listing pages plus the inodes the kernel holds (on top
    /// of --cache-size). Pages are evicted, least recently used first, to stay within it.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub metadata_size: u64,

    /// A branch or tag directory (m@main) is re-resolved to its current commit only after nothing
    /// under it was used for this long, so a running load always reads one commit.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub revision_ttl: Duration,

    /// Listings and attributes under /buckets are used this long; then bucket info is asked
    /// whether the bucket changed (its updatedAt), and only a changed bucket is listed again. A
    /// new open after this long sees an overwritten object's new content.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub bucket_ttl: Duration,

    /// Mount one Storage Bucket (NS/NAME) at MOUNTPOINT instead of the whole Hub: its objects
    /// appear at MOUNTPOINT/<path>.
    #[arg(long, value_name = "NS/NAME")]
    pub bucket: Option<String>,

    /// Let users other than the one mounting access the mount (needs user_allow_other in
    /// /etc/fuse.conf when not mounting as root). Off by default.
    #[arg(long)]
    pub allow_other: bool,

    /// Deadline for each Hub request to answer, and for a response body to make progress.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub read_timeout: Duration,

    /// Owner of all files (default: the mounting user).
    #[arg(long)]
    pub uid: Option<u32>,

    /// Group of all files (default: the mounting user's group).
    #[arg(long)]
    pub gid: Option<u32>,

    /// Most HTTP range requests in flight at once (parallel connections to the Hub/CDN).
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub max_connections: usize,

    /// Serve the counters as Prometheus text at http://ADDR/metrics (loopback addresses only).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// FUSE worker threads reading requests from the kernel (network work runs on async tasks).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub fuse_threads: usize,

    /// Mount one repo instead of the whole Hub: org/name, optionally @revision (a branch, tag or
    /// sha; a `/` in it may stay raw: acme/m@refs/pr/1) and a datasets/ or spaces/ prefix. The
    /// mount's root is that repo at the commit the revision resolves to when mounting, pinned
    /// for the life of the mount (remount to follow a branch).
    #[arg(long, value_name = "ORG/NAME[@REV]", conflicts_with = "bucket")]
    pub repo: Option<String>,

    /// The type of the --repo (default: model, or what its datasets/ or spaces/ prefix says).
    #[arg(long, value_enum, requires = "repo")]
    pub repo_type: Option<RepoKind>,

    /// With --repo or --bucket: mount only this folder of the repo (it must be a folder at the
    /// commit) or of the bucket.
    #[arg(long, value_name = "PATH")]
    pub subfolder: Option<String>,

    /// Stay in the foreground (logs on stderr) instead of returning once the mount answers.
    /// systemd units use it.
    #[arg(short = 'f', long)]
    pub foreground: bool,

    /// Debug logs: hubfs's own at debug level, other crates at info (HUBFS_LOG=hubfs=debug,info).
    /// HUBFS_LOG, when set, wins.
    #[arg(long)]
    pub debug: bool,

    /// Append the logs to this file instead of stderr. Without it a daemon in the background
    /// logs nothing (its errors before the mount answers are still printed by `hubfs mount`).
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,

    /// Permission bits of every file, octal. Read and execute bits only: write bits, setuid,
    /// setgid and sticky are refused.
    #[arg(long, value_name = "OCTAL", default_value = "0444", value_parser = parse_mode)]
    pub file_mode: u16,

    /// Permission bits of every directory, octal. Read and execute bits only, as --file-mode.
    #[arg(long, value_name = "OCTAL", default_value = "0555", value_parser = parse_mode)]
    pub dir_mode: u16,
}
