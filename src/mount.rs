//! Wiring: tracing, token, runtime, Hub client, filesystem core and the FUSE session; clean
//! unmount on SIGINT/SIGTERM. The mountpoint checks are in `mountpoint`, the services beside the
//! mount (systemd notify, metrics, throughput log) in `service`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::cache::MemoryPlan;
use crate::cli::MountArgs;
use crate::config::{choose_endpoint, network_settings};
use crate::fs::{FsConfig, HubFs};
use crate::fuse::session::{fuse_config, tune_readahead};
use crate::fuse::FuseAdapter;
use crate::hub::auth::ProcessEnv;
use crate::hub::http::{HttpConfig, HttpHub};
use crate::hub::token::{find_credentials, Credentials, TOKEN_CHECK_INTERVAL};
use crate::hub::HubClient;
use crate::mountpoint::{check_mountpoint, MountpointError};
use crate::stats::Stats;

/// Why mounting failed, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The mountpoint cannot be mounted on.
    #[error(transparent)]
    Mountpoint(#[from] MountpointError),
    /// Bad settings or a failure to start.
    #[error("{0}")]
    Setup(String),
    /// The repo (folder) of a one-repo mount cannot be mounted.
    #[error("cannot mount {root}: {source}{}", source.hint().map(|h| format!(" ({h})")).unwrap_or_default())]
    Root {
        /// The root asked for (`acme/m@main, folder x`).
        root: String,
        /// Why.
        source: Box<crate::fs::FsError>,
    },
    /// The kernel refused the mount.
    #[error("mount failed at {path}: {source}")]
    Mount {
        /// The mountpoint.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Sets up logging from env `HUBFS_LOG` (RUST_LOG syntax), default `info` (`hubfs=debug,info`
/// with `debug`), to stderr.
pub fn init_tracing(debug: bool) {
    let default = if debug { "hubfs=debug,info" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HUBFS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&io::stderr()))
        .with_writer(io::stderr)
        .try_init();
}

/// How long a new mount may take to get the kernel's INIT.
const INIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Mounts `fs` at `mountpoint` in the background and returns once the kernel initialised the
/// session (the mount answers); dropping the session unmounts.
pub fn spawn<C: HubClient>(
    fs: Arc<HubFs<C>>,
    rt: tokio::runtime::Handle,
    mountpoint: &Path,
    allow_other: bool,
    threads: usize,
) -> Result<fuser::BackgroundSession, MountError> {
    check_mountpoint(mountpoint)?;
    let (tx, initialized) = std::sync::mpsc::sync_channel(1);
    let adapter = FuseAdapter::new(fs, rt).with_init_signal(tx);
    let session = fuser::spawn_mount(adapter, mountpoint, &fuse_config(allow_other, threads))
        .map_err(|source| MountError::Mount {
            path: mountpoint.to_owned(),
            source,
        })?;
    if initialized.recv_timeout(INIT_TIMEOUT).is_err() {
        return Err(MountError::Setup(format!(
            "the mount at {} did not answer within {} s (no FUSE INIT from the kernel)",
            mountpoint.display(),
            INIT_TIMEOUT.as_secs()
        )));
    }
    tune_readahead(mountpoint);
    Ok(session)
}

/// `hubfs mount`: runs until SIGINT/SIGTERM or an external unmount. `on_ready` is called once the
/// mount answers (systemd's READY=1, the mount helper's parent).
pub fn run(args: MountArgs, on_ready: impl FnOnce()) -> Result<(), MountError> {
    // A bad mountpoint is reported before anything asks the Hub.
    check_mountpoint(&args.mountpoint)?;
    let (endpoint, http) = http_config(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(4, |n| n.get().max(4)))
        .thread_name("hubfs-io")
        .enable_all()
        .build()
        .map_err(|e| MountError::Setup(format!("cannot start the runtime: {e}")))?;
    let stats = Arc::new(Stats::default());
    let hub = Arc::new(
        HttpHub::new(http)
            .map_err(|e| MountError::Setup(e.to_string()))?
            .with_stats(stats.clone()),
    );
    let cfg = fs_config(&args)?;
    let root = cfg.root.describe();
    let fs = Arc::new(HubFs::new(hub, cfg, stats));
    if let Some(commit) = rt
        .block_on(fs.resolve_root())
        .map_err(|source| MountError::Root {
            root: root.clone(),
            source: Box::new(source),
        })?
    {
        tracing::info!(%root, %commit, "the mount's root is this repo, pinned to this commit");
    }
    let fs_for_ops = fs.clone();
    let session = spawn(
        fs,
        rt.handle().clone(),
        &args.mountpoint,
        args.allow_other,
        args.fuse_threads,
    )?;
    tracing::info!(mountpoint = %args.mountpoint.display(), %endpoint, %root, cache_size = args.cache_size, "mounted");
    crate::fuse::log_request_size();
    if let Err(e) = crate::service::sd_notify("READY=1") {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
    on_ready();
    if let Some(addr) = args.metrics_addr {
        let fs = fs_for_ops.clone();
        rt.spawn(async move {
            if let Err(e) = crate::service::serve_metrics(addr, fs).await {
                tracing::error!(error = %e, "metrics endpoint stopped");
            }
        });
    }
    rt.spawn(crate::service::log_throughput(
        fs_for_ops.stats().clone(),
        Duration::from_secs(30),
    ));

    serve_until_stopped(rt, session)
}

/// The Hub client's settings from the flags and the environment (endpoint, token, CAs, proxies,
/// deadlines), each source logged; and the endpoint.
fn http_config(args: &MountArgs) -> Result<(String, HttpConfig), MountError> {
    let endpoint = choose_endpoint(
        args.endpoint.as_deref(),
        std::env::var("HF_ENDPOINT").ok().as_deref(),
    );
    let (credentials, token_source) = find_credentials(
        args.token_file.as_deref(),
        &ProcessEnv,
        TOKEN_CHECK_INTERVAL,
    )
    .map_err(|e| MountError::Setup(e.to_string()))?;
    match (&token_source, &credentials) {
        (Some(src), Credentials::File(_)) => {
            tracing::info!(source = %src, "using a Hub token (the file is re-read when it changes)")
        }
        (Some(src), _) => tracing::info!(source = %src, "using a Hub token"),
        (None, Credentials::File(f)) => tracing::info!(
            watching = %f.path().display(),
            "no Hub token found: public repos only until that file holds one"
        ),
        (None, _) => tracing::info!("no Hub token found: public repos only"),
    }
    let (ca_bundles, proxy) =
        network_settings(args.ca_bundle.as_deref(), &ProcessEnv).map_err(MountError::Setup)?;
    for b in &ca_bundles {
        tracing::info!(file = %b.display(), "trusting the CAs in this bundle too");
    }
    if !proxy.is_direct() {
        tracing::info!(proxies = %proxy.describe(), "using proxies from the environment");
    }
    let mut http = HttpConfig::new(&endpoint);
    http.credentials = credentials;
    http.ca_bundles = ca_bundles;
    http.proxy = proxy;
    // Attempts time out after a third of the no-progress deadline, so a hung connection is
    // retried (and a stalled body resumed) before the read as a whole gives up.
    http.request_timeout = (args.read_timeout / 3).max(Duration::from_secs(1));
    http.read_timeout = args.read_timeout;
    http.max_connections = args.max_connections.max(1);
    Ok((endpoint, http))
}

/// The core's settings from the flags: the memory plan of `--cache-size`, the root, modes,
/// owner and the read deadline.
fn fs_config(args: &MountArgs) -> Result<FsConfig, MountError> {
    // --cache-size bounds the daemon's data memory: the memory plan (cache::budget) divides it
    // into a reserve for transient buffers and the capacity of cached and in-flight blocks.
    let defaults = FsConfig::default();
    let min_capacity = 16 << 20;
    let plan = MemoryPlan::new(
        args.cache_size,
        defaults.block_size,
        args.max_connections.max(1),
        defaults.max_request_bytes,
    );
    if plan.capacity < min_capacity {
        return Err(MountError::Setup(format!(
            "--cache-size must be at least {}MiB (16 MiB for blocks plus the reserve for buffers)",
            (min_capacity + min_capacity / 7).div_ceil(1 << 20)
        )));
    }
    let mut cfg = FsConfig {
        revision_ttl: args.revision_ttl,
        bucket_ttl: args.bucket_ttl,
        cache_bytes: plan.capacity,
        metadata_bytes: args.metadata_size,
        connections: plan.connections,
        root: mount_root(args)?,
        file_mode: args.file_mode,
        dir_mode: args.dir_mode,
        read_deadline: args.read_timeout,
        ..defaults
    };
    // The kernel keeps up to MAX_BACKGROUND reads of one request size in flight for a reader;
    // read-ahead takes reads that far out of order as one stream.
    let in_flight_span =
        u64::from(crate::fuse::MAX_BACKGROUND) * u64::from(crate::fuse::readahead_to_ask());
    cfg.prefetch.max_backward = cfg.prefetch.max_backward.max(in_flight_span);
    cfg.prefetch.reorder_window = cfg.prefetch.reorder_window.max(in_flight_span);
    if let Some(u) = args.uid {
        cfg.uid = u;
    }
    if let Some(g) = args.gid {
        cfg.gid = g;
    }
    tracing::debug!(?plan, "memory plan");
    Ok(cfg)
}

/// Serves until SIGTERM, SIGINT or an external unmount, then unmounts and stops the runtime.
fn serve_until_stopped(
    rt: tokio::runtime::Runtime,
    session: fuser::BackgroundSession,
) -> Result<(), MountError> {
    let ended_by = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| MountError::Setup(format!("cannot handle SIGTERM: {e}")))?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(|e| MountError::Setup(format!("cannot handle SIGINT: {e}")))?;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = term.recv() => return Ok::<_, MountError>("SIGTERM"),
                _ = int.recv() => return Ok("SIGINT"),
                _ = tick.tick() => if session.guard.is_finished() { return Ok("external unmount") },
            }
        }
    })?;
    tracing::info!(reason = ended_by, "unmounting");
    let _ = crate::service::sd_notify("STOPPING=1");
    if ended_by == "external unmount" {
        let _ = session.join();
    } else if let Err(e) = session.umount_and_join() {
        tracing::warn!(error = %e, "unmount reported an error");
    }
    rt.shutdown_timeout(Duration::from_secs(2));
    tracing::info!("unmounted");
    Ok(())
}

/// The root `--repo`, `--repo-type` and `--subfolder` ask for.
fn mount_root(args: &MountArgs) -> Result<crate::fs::MountRoot, MountError> {
    if let Some(b) = &args.bucket {
        return crate::fs::MountRoot::parse_bucket(b, args.subfolder.as_deref())
            .map_err(MountError::Setup);
    }
    let Some(spec) = &args.repo else {
        if args.subfolder.is_some() {
            return Err(MountError::Setup(
                "--subfolder needs --repo or --bucket (the folder of which repo or bucket?)".into(),
            ));
        }
        return Ok(crate::fs::MountRoot::Hub);
    };
    let t = args.repo_type.map(crate::cli::RepoKind::repo_type);
    crate::fs::MountRoot::parse_repo(spec, t, args.subfolder.as_deref()).map_err(MountError::Setup)
}
