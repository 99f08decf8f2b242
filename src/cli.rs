//! The command line (clap).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{parse_duration, parse_size};

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
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Mount the Hub at MOUNTPOINT and serve it in the foreground until SIGINT/SIGTERM (or an
    /// external umount), then unmount cleanly.
    Mount(MountArgs),
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

    /// With --bucket: show only this folder of the bucket at MOUNTPOINT.
    #[arg(long, value_name = "PATH", requires = "bucket")]
    pub subfolder: Option<String>,

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
}
