//! `fakehub`: serve or export the fake Hugging Face Hub fixtures.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use fakehub::{FakeHub, FakeHubOptions, FaultKind, Faults, FileData, Fixtures, Shaping, SlowKind};

#[derive(Parser, Debug)]
#[command(
    name = "fakehub",
    about = "A fake Hugging Face Hub for tests and offline tries"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve the standard fixtures (plus extras) until SIGINT/SIGTERM. The request log is at
    /// GET <HUB>/_fakehub/requests (JSON; POST <HUB>/_fakehub/requests/clear empties it).
    Serve {
        /// Hub port (0 = any free port).
        #[arg(long, default_value_t = 0)]
        hub_port: u16,
        /// CDN port (0 = any free port).
        #[arg(long, default_value_t = 0)]
        cdn_port: u16,
        /// Tree listing page size.
        #[arg(long, default_value_t = 1000)]
        page_size: usize,
        /// Expiry of signed CDN URLs, in seconds.
        #[arg(long, default_value_t = 3600)]
        redirect_ttl_secs: u64,
        #[command(flatten)]
        shaping: ShapingArgs,
        #[command(flatten)]
        faults: FaultArgs,
        #[command(flatten)]
        extras: Extras,
    },
    /// Write every ref of every repo as DIR/<models|datasets|spaces>/<org>/<name>@<ref>/<path>.
    Export {
        /// Target directory.
        dir: PathBuf,
        #[command(flatten)]
        extras: Extras,
    },
}

#[derive(Args, Debug)]
struct ShapingArgs {
    /// Cap on each response body's rate, in megabytes (1e6 bytes) per second; unlimited if unset.
    #[arg(long, value_name = "F")]
    bandwidth_mbps: Option<f64>,
    /// Latency added before every response's headers, in milliseconds (the median when
    /// --latency-sigma is set).
    #[arg(long, value_name = "N", default_value_t = 0)]
    latency_ms: u64,
    /// Log-normal spread of the latency (0 = constant). p90 = median × e^(1.28 σ), p99 = median ×
    /// e^(2.33 σ): 0.7 gives 2.5x and 5.1x the median.
    #[arg(long, value_name = "SIGMA", default_value_t = 0.0)]
    latency_sigma: f64,
    /// Fraction in [0,1] of byte-range responses (206/200 bodies of ranged GETs) made slow.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    slow_fraction: f64,
    /// What a slow response does: stall (pause once mid-body) or crawl (the whole body at the
    /// rate cap divided by --crawl-factor; needs --bandwidth-mbps).
    #[arg(long, value_name = "KIND", default_value = "stall")]
    slow_kind: SlowKind,
    /// How long a stalled response pauses, in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 2000)]
    stall_ms: u64,
    /// A crawling response gets the rate cap divided by this.
    #[arg(long, value_name = "F", default_value_t = 10.0)]
    crawl_factor: f64,
    /// Seed of the latency and slow-response draws.
    #[arg(long, value_name = "N", default_value_t = 0)]
    shaping_seed: u64,
}

impl ShapingArgs {
    fn shaping(&self) -> Result<Shaping, String> {
        let bytes_per_sec = match self.bandwidth_mbps {
            None => None,
            Some(f) if f.is_finite() && f * 1e6 >= 1.0 => Some((f * 1e6).round() as u64),
            Some(f) => return Err(format!("--bandwidth-mbps {f}: must be a positive rate")),
        };
        if !(self.latency_sigma.is_finite() && self.latency_sigma >= 0.0) {
            return Err(format!(
                "--latency-sigma {}: must be 0 or more",
                self.latency_sigma
            ));
        }
        if !(0.0..=1.0).contains(&self.slow_fraction) {
            return Err(format!(
                "--slow-fraction {}: must be in [0,1]",
                self.slow_fraction
            ));
        }
        if !(self.crawl_factor.is_finite() && self.crawl_factor >= 1.0) {
            return Err(format!(
                "--crawl-factor {}: must be 1 or more",
                self.crawl_factor
            ));
        }
        Ok(Shaping {
            bytes_per_sec,
            latency: std::time::Duration::from_millis(self.latency_ms),
            latency_sigma: self.latency_sigma,
            slow_fraction: self.slow_fraction,
            slow_kind: self.slow_kind,
            stall: std::time::Duration::from_millis(self.stall_ms),
            crawl_factor: self.crawl_factor,
            seed: self.shaping_seed,
        })
    }
}

#[derive(Args, Debug)]
struct FaultArgs {
    /// Probability in [0,1] that a ranged byte request (/resolve/, /api/resolve-cache/, CDN) gets
    /// a fault.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    fault_rate: f64,
    /// Comma-separated fault kinds to draw from: 500, 503, 429[:SECS], reset, cut, stall[:MS],
    /// range, full, expired, commit (default: all of them).
    #[arg(long, value_name = "KINDS", value_delimiter = ',')]
    fault_kinds: Vec<FaultKind>,
    /// Seed of the deterministic fault draw.
    #[arg(long, value_name = "N", default_value_t = 0)]
    fault_seed: u64,
    /// Also fault API requests (repo info, revision, tree, ...) with the 5xx/429/reset kinds.
    #[arg(long)]
    fault_include_api: bool,
}

impl FaultArgs {
    fn faults(&self) -> Result<Faults, String> {
        if !(0.0..=1.0).contains(&self.fault_rate) {
            return Err(format!(
                "--fault-rate {}: must be in [0,1]",
                self.fault_rate
            ));
        }
        Ok(Faults {
            rate: self.fault_rate,
            kinds: if self.fault_kinds.is_empty() {
                FaultKind::all()
            } else {
                self.fault_kinds.clone()
            },
            seed: self.fault_seed,
            include_api: self.fault_include_api,
        })
    }
}

#[derive(Args, Debug)]
struct Extras {
    /// A local folder to serve as a model repo (pair each with --repo, in order).
    #[arg(long)]
    folder: Vec<PathBuf>,
    /// The repo id (org/name) for the matching --folder.
    #[arg(long)]
    repo: Vec<String>,
    /// Add a sharded safetensors model with this id.
    #[arg(long)]
    sharded_model: Option<String>,
    /// Number of shards for --sharded-model.
    #[arg(long, default_value_t = 4)]
    shards: usize,
    /// Approximate shard size in MiB for --sharded-model.
    #[arg(long, default_value_t = 64)]
    shard_mb: u64,
    /// Add a model with one large generated file, with this id.
    #[arg(long)]
    large_file: Option<String>,
    /// Size in MiB of --large-file.
    #[arg(long, default_value_t = 1024)]
    large_file_mb: u64,
    /// Path of the file inside --large-file's repo.
    #[arg(long, default_value = "large.bin")]
    large_file_path: String,
    /// A local folder to serve as a Storage Bucket (pair each with --bucket, in order).
    #[arg(long)]
    bucket_folder: Vec<PathBuf>,
    /// The bucket id (ns/name) for the matching --bucket-folder.
    #[arg(long)]
    bucket: Vec<String>,
    /// Add a dataset with this id of --many-folders folders of 1000 tiny files each plus `big/`
    /// of 200,000 (`Fixtures::with_many_files`).
    #[arg(long)]
    many_files: Option<String>,
    /// Folders of 1000 files in --many-files.
    #[arg(long, default_value_t = 1000)]
    many_folders: usize,
}

/// Every file under `dir`, by its `/`-separated path relative to `base`.
fn folder_files(base: &Path, dir: &Path, out: &mut Vec<(String, FileData)>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            folder_files(base, &p, out)?;
        } else if let Ok(rel) = p.strip_prefix(base) {
            let rel: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push((rel.join("/"), FileData::from_bytes(std::fs::read(&p)?)));
        }
    }
    Ok(())
}

/// Loads each --bucket-folder into its --bucket.
fn load_buckets(hub: &FakeHub, extras: &Extras) -> Result<(), String> {
    if extras.bucket_folder.len() != extras.bucket.len() {
        return Err("each --bucket-folder needs a matching --bucket".into());
    }
    for (dir, id) in extras.bucket_folder.iter().zip(&extras.bucket) {
        let mut files = Vec::new();
        folder_files(dir, dir, &mut files)
            .map_err(|e| format!("--bucket-folder {}: {e}", dir.display()))?;
        hub.create_bucket(id, false);
        for (k, d) in files {
            hub.put_bucket_object(id, &k, d);
        }
    }
    Ok(())
}

fn fixtures(extras: &Extras) -> Result<Fixtures, String> {
    if extras.folder.len() != extras.repo.len() {
        return Err("each --folder needs a matching --repo".into());
    }
    let mut fx = Fixtures::standard();
    for (dir, id) in extras.folder.iter().zip(&extras.repo) {
        fx = fx
            .with_folder(id, dir)
            .map_err(|e| format!("--folder {}: {e}", dir.display()))?;
    }
    if let Some(id) = &extras.sharded_model {
        fx = fx.with_sharded_model(id, extras.shards, extras.shard_mb << 20);
    }
    if let Some(id) = &extras.large_file {
        fx = fx.with_large_file(id, &extras.large_file_path, extras.large_file_mb << 20);
    }
    if let Some(id) = &extras.many_files {
        fx = fx.with_many_files(id, extras.many_folders, 1000, 200_000);
    }
    Ok(fx)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Serve {
            hub_port,
            cdn_port,
            page_size,
            redirect_ttl_secs,
            shaping,
            faults,
            extras,
        } => fixtures(&extras).and_then(|fx| {
            let shaping = shaping.shaping()?;
            let faults = faults.faults()?;
            let opts = FakeHubOptions {
                shaping,
                page_size,
                redirect_ttl: std::time::Duration::from_secs(redirect_ttl_secs),
                hub_addr: Some(SocketAddr::from(([127, 0, 0, 1], hub_port))),
                cdn_addr: Some(SocketAddr::from(([127, 0, 0, 1], cdn_port))),
                ..FakeHubOptions::default()
            };
            let hub = FakeHub::start(fx, opts).map_err(|e| format!("start: {e}"))?;
            hub.set_faults(faults);
            load_buckets(&hub, &extras)?;
            let mut out = std::io::stdout();
            let _ = writeln!(out, "HUB {}", hub.endpoint());
            let _ = writeln!(out, "CDN {}", hub.cdn_endpoint());
            let _ = out.flush();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("runtime: {e}"))?;
            rt.block_on(wait_for_signal());
            hub.stop();
            Ok(())
        }),
        Cmd::Export { dir, extras } => fixtures(&extras).and_then(|fx| {
            fx.export(&dir)
                .map_err(|e| format!("export {}: {e}", dir.display()))
        }),
    };
    if let Err(e) = result {
        eprintln!("fakehub: {e}");
        std::process::exit(1);
    }
}
