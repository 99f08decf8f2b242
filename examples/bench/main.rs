//! The hubfs benchmark (see docs/benchmarks.md). It starts the fake Hub in-process, shaped like a
//! CDN (a rate cap per connection, a long-tailed latency, optionally stalled responses) or not,
//! mounts it with the release `hubfs` binary, and measures side by side in one run: the limits
//! (16 parallel range requests with hubfs's HTTP client and with curl), cold sequential reads at
//! several cache sizes with the requests in flight taken from the fake Hub's own log, the same
//! with 2% of responses stalled, sharded safetensors loads against snapshot_download and
//! HfFileSystem, access patterns (a pyarrow column projection, parallel and random readers), and
//! the daemon's memory, disk writes and CPU per GiB next to curl's. It prints markdown tables.
//!
//!     cargo build --release --workspace --examples
//!     target/release/examples/bench --large-mb 1024

mod daemon;
mod limits;
mod python;
mod reads;
mod table;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use fakehub::trace::InFlight;
use fakehub::{FakeHub, FakeHubOptions, FileData, Fixtures, RepoType, Shaping, SlowKind};
use hubfs::hub::{FileRef, RepoId};

use daemon::{Cpu, Daemon};
use limits::{cdn_url, curl_ranges, have_curl, http_limit, CurlRun};
use python::Python;
use reads::{parallel, percentile, random_preads, read_span, served, Served};
use table::{ratio, Table};

#[derive(Parser, Debug)]
struct Args {
    /// Size of the large file read sequentially, in parallel and randomly, MiB.
    #[arg(long, default_value_t = 1024)]
    large_mb: u64,
    /// Sharded safetensors models, as SHARDSxMB (MB = 1e6 bytes per shard), comma-separated.
    #[arg(long, default_value = "4x50,2x256")]
    models: String,
    /// Per-connection bandwidth of the shaped profile, MB/s (1e6 bytes).
    #[arg(long, default_value_t = 50.0)]
    bandwidth_mbps: f64,
    /// Median added latency of the shaped profile, ms.
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// Log-normal spread of the shaped latency (0.7: p90 2.5x, p99 5.1x the median).
    #[arg(long, default_value_t = 0.7)]
    latency_sigma: f64,
    /// Seed of the fake Hub's latency and stall draws (reseeded before every run).
    #[arg(long, default_value_t = 1)]
    shaping_seed: u64,
    /// Fraction of byte-range responses stalled in the stall run.
    #[arg(long, default_value_t = 0.02)]
    stall_fraction: f64,
    /// How long a stalled response pauses, ms.
    #[arg(long, default_value_t = 2000)]
    stall_ms: u64,
    /// --cache-size of the stall run.
    #[arg(long, default_value = "256MiB")]
    stall_cache: String,
    /// --cache-size values of the cold sequential reads, comma-separated.
    #[arg(long, default_value = "128MiB,256MiB,512MiB")]
    cache_sizes: String,
    /// --cache-size of the sharded loads and the access patterns.
    #[arg(long, default_value = "256MiB")]
    cache_size: String,
    /// Profiles to run: shaped, unshaped.
    #[arg(long, default_value = "shaped,unshaped")]
    profiles: String,
    /// Sections to run: limit, cold, stall, load, patterns, cpu.
    #[arg(long, default_value = "limit,cold,stall,load,patterns,cpu")]
    sections: String,
    /// The hubfs binary (point two runs at two builds for an A/B comparison).
    #[arg(long, default_value = "target/release/hubfs")]
    bin: PathBuf,
    /// Python with safetensors, huggingface_hub and pyarrow (the test venv).
    #[arg(long, default_value = ".venv/bin/python")]
    python: PathBuf,
    /// Skip everything that needs Python (the loads and the parquet projection).
    #[arg(long)]
    no_python: bool,
    /// Parallel connections for the limits and for hubfs (--max-connections).
    #[arg(long, default_value_t = 16)]
    connections: usize,
}

const MIB: u64 = 1 << 20;
const LARGE_REPO: &str = "bench/large";
const PATTERNS_REPO: &str = "bench/patterns";
const PARQUET: &str = "table.parquet";

/// MB/s (1e6 bytes) of `bytes` in `d`.
pub fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

/// The large file's path under a mount.
fn large_rel() -> String {
    format!("{LARGE_REPO}@main/large.bin")
}

/// A sharded model of the fixtures: repo id, shard count, bytes per shard.
struct Model {
    repo: String,
    shards: usize,
    shard_mb: u64,
}

fn parse_models(s: &str) -> Vec<Model> {
    s.split(',')
        .filter(|m| !m.trim().is_empty())
        .map(|m| {
            let (n, mb) = m
                .trim()
                .split_once('x')
                .expect("--models entries look like 4x50");
            let shards: usize = n.parse().expect("shard count");
            let shard_mb: u64 = mb.parse().expect("shard MB");
            Model {
                repo: format!("bench/sharded-{shards}x{shard_mb}"),
                shards,
                shard_mb,
            }
        })
        .collect()
}

/// Everything a profile's runs share.
struct Bench {
    args: Args,
    hub: FakeHub,
    rt: tokio::runtime::Runtime,
    large: u64,
    large_ref: FileRef,
    large_data: FileData,
    models: Vec<Model>,
    /// The parquet source file, when Python runs.
    parquet: Option<PathBuf>,
    python: Option<Python>,
    sections: Vec<String>,
    curl: bool,
}

impl Bench {
    fn has(&self, section: &str) -> bool {
        self.sections.iter().any(|s| s == section)
    }

    fn mount(&self, cache: &str) -> Daemon {
        Daemon::start(
            &self.args.bin,
            &self.hub.endpoint(),
            cache,
            self.args.connections,
        )
    }

    fn large_path(&self, d: &Daemon) -> PathBuf {
        d.path(&large_rel())
    }

    /// Reseeds the fake Hub's shaping (each run starts from the same draws) and forgets its log.
    fn reset(&self, shaping: &Shaping) {
        self.hub.set_shaping(shaping.clone());
        self.hub.clear_requests();
    }
}

/// One cold sequential read of the large file on a fresh mount.
struct ColdRun {
    mbps: f64,
    read: u64,
    served: Served,
    rss: String,
    cpu: Cpu,
    stalled: usize,
}

/// What one measurement on a fresh mount gave.
struct Fresh<R> {
    out: R,
    served: Served,
    cpu: Cpu,
    rss: String,
}

/// Runs `f` on `rel` under a fresh mount with `--cache-size cache`, after the file's lookup and
/// with the fake Hub reseeded and its log cleared; returns what `f` returned, what the fake Hub
/// served, the daemon's CPU during `f` and its peak RSS. The daemon's disk writes go to `writes`
/// under `label`.
fn on_fresh_mount<R>(
    b: &Bench,
    shaping: &Shaping,
    cache: &str,
    rel: &str,
    (label, writes): (String, &mut Vec<(String, u64)>),
    f: impl FnOnce(&std::path::Path) -> R,
) -> Fresh<R> {
    let d = b.mount(cache);
    let p = d.path(rel);
    std::fs::metadata(&p).expect("stat the file through the mount");
    b.reset(shaping);
    let cpu0 = d.cpu();
    let out = f(&p);
    let cpu = d.cpu().since(cpu0);
    let served = served(&b.hub);
    let rss = d.rss_verdict();
    writes.push((label, d.write_bytes()));
    d.stop();
    Fresh {
        out,
        served,
        cpu,
        rss,
    }
}

fn cold_run(b: &Bench, shaping: &Shaping, cache: &str, writes: &mut Vec<(String, u64)>) -> ColdRun {
    let run = on_fresh_mount(
        b,
        shaping,
        cache,
        &large_rel(),
        (format!("cold {cache}"), writes),
        |p| {
            let t = Instant::now();
            (read_span(p, 0, b.large, MIB as usize), t.elapsed())
        },
    );
    let (read, elapsed) = run.out;
    ColdRun {
        mbps: mbps(read, elapsed),
        read,
        served: run.served,
        rss: run.rss,
        cpu: run.cpu,
        stalled: b.hub.requests().iter().filter(|r| r.slow.is_some()).count(),
    }
}

/// Issue 10's targets for one clean cold run: the ratio to the limit (≥ 0.8 at 128 MiB or less,
/// else ≥ 0.9), mean in flight ≥ 14 of 16 (scaled to the connections), none in flight < 2%,
/// fetched/read ≤ 1.05.
fn cold_targets(cache: &str, r: &ColdRun, limit: Option<f64>, connections: usize) -> Vec<String> {
    let small = daemon::parse_size(cache).is_some_and(|c| c <= 128 * MIB);
    let min = if small { 0.8 } else { 0.9 };
    let mut out = Vec::new();
    if let Some(l) = limit {
        out.push(format!(
            "{cache} ≥ {min}x the limit: {}",
            target_cell(r.mbps / l, min)
        ));
    }
    if let Some(f) = &r.served.in_flight {
        let want = connections as f64 * 14.0 / 16.0;
        out.push(format!(
            "{cache} mean in flight ≥ {want:.0}: {}",
            target_cell(f.mean, want)
        ));
        out.push(format!(
            "{cache} none in flight < 2%: {:.1}% ({})",
            f.idle_fraction * 100.0,
            verdict(f.idle_fraction < 0.02)
        ));
    }
    let x = r.served.bytes as f64 / r.read as f64;
    out.push(format!(
        "{cache} fetched/read ≤ 1.05: {x:.3} ({})",
        verdict(x <= 1.05)
    ));
    out
}

fn depth_cells(f: Option<&InFlight>, connections: usize) -> [String; 3] {
    match f {
        Some(f) => [
            format!("{:.1} of {connections}", f.mean),
            format!("{} / {} / {}", f.p10, f.p50, f.p90),
            format!("{:.1}%", f.idle_fraction * 100.0),
        ],
        None => ["-".into(), "-".into(), "-".into()],
    }
}

fn histogram(f: &InFlight) -> String {
    f.depth_fraction
        .iter()
        .enumerate()
        .filter(|(_, x)| **x >= 0.0005)
        .map(|(d, x)| format!("{d}: {:.1}%", x * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `x.xx (met)` when `x ≥ min`, else `x.xx (MISSED)`.
fn target_cell(x: f64, min: f64) -> String {
    format!("{x:.2} ({})", verdict(x >= min))
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn profile_shaping(b: &Bench, profile: &str) -> (Shaping, String) {
    let a = &b.args;
    match profile {
        "shaped" => {
            let s = Shaping {
                bytes_per_sec: Some((a.bandwidth_mbps * 1e6) as u64),
                latency: Duration::from_millis(a.latency_ms),
                latency_sigma: a.latency_sigma,
                seed: a.shaping_seed,
                ..Default::default()
            };
            let m = a.latency_ms as f64;
            let desc = format!(
                "{} MB/s per connection, +{} ms median latency (log-normal σ {}: p90 {:.0} ms, \
                 p99 {:.0} ms)",
                a.bandwidth_mbps,
                a.latency_ms,
                a.latency_sigma,
                m * (1.2816 * a.latency_sigma).exp(),
                m * (2.3263 * a.latency_sigma).exp()
            );
            (s, desc)
        }
        "unshaped" => (
            Shaping {
                seed: a.shaping_seed,
                ..Default::default()
            },
            "unshaped loopback".into(),
        ),
        other => panic!("unknown profile {other} (expected shaped or unshaped)"),
    }
}

/// The limits of this profile: (16-connection HTTP client MB/s, 16 parallel curls).
fn limits_section(b: &Bench, shaping: &Shaping, t: &mut Table) -> (Option<f64>, Option<CurlRun>) {
    if !b.has("limit") && !b.has("cpu") {
        return (None, None);
    }
    let n = b.args.connections;
    b.reset(shaping);
    let http = http_limit(&b.rt, &b.hub.endpoint(), b.large_ref.clone(), n);
    t.row(vec![
        format!("{n}-connection HTTP range fetch (hubfs's client, 8 MiB parts)"),
        format!("{http:.0}"),
        "-".into(),
    ]);
    let curl = b.curl.then(|| {
        b.reset(shaping);
        let url = cdn_url(&format!(
            "{}/{LARGE_REPO}/resolve/main/large.bin",
            b.hub.endpoint()
        ))?;
        curl_ranges(&url, b.large, n as u64)
    });
    let curl = curl.flatten();
    if let Some(c) = &curl {
        t.row(vec![
            format!("{n} parallel `curl -r` ranges of the CDN URL"),
            format!("{:.0}", c.mbps),
            c.cpu.per_gib(c.bytes),
        ]);
    }
    (Some(http), curl)
}

fn run_profile(b: &Bench, profile: &str) {
    let (shaping, desc) = profile_shaping(b, profile);
    let n = b.args.connections;
    println!("## {profile}: {desc}\n");
    let mut writes: Vec<(String, u64)> = Vec::new();

    let mut lim = Table::new(
        format!(
            "Limits: {} MiB straight from the fake Hub into memory",
            b.large >> 20
        ),
        &["measure", "MB/s", "client CPU s/GiB"],
    );
    let (http, curl16) = limits_section(b, &shaping, &mut lim);
    let limit = curl16.as_ref().map(|c| c.mbps).or(http);
    lim.print();

    let mut cold = Table::new(
        format!(
            "Cold sequential read of {} MiB (1 MiB reads), --max-connections {n}; ratio to the {} \
             limit; requests in flight from the fake Hub's log",
            b.large >> 20,
            if curl16.is_some() { "curl" } else { "HTTP" }
        ),
        &[
            "run",
            "MB/s",
            "ratio to the limit",
            "fetched / read",
            "in flight (mean)",
            "depth p10 / p50 / p90",
            "none in flight",
            "peak RSS MiB",
            "daemon CPU s/GiB",
        ],
    );
    let mut hist: Vec<String> = Vec::new();
    let mut cpu_rows: Vec<(String, Cpu, u64)> = Vec::new();
    let mut clean: BTreeMap<String, f64> = BTreeMap::new();
    let mut targets: Vec<String> = Vec::new();
    let mut add_cold = |label: String, r: &ColdRun, ratio_cell: String, cold: &mut Table| {
        let [mean, pct, idle] = depth_cells(r.served.in_flight.as_ref(), n);
        cold.row(vec![
            label.clone(),
            format!("{:.0}", r.mbps),
            ratio_cell,
            format!("{:.3}", r.served.bytes as f64 / r.read as f64),
            mean,
            pct,
            idle,
            r.rss.clone(),
            r.cpu.per_gib(r.read),
        ]);
        if let Some(f) = &r.served.in_flight {
            hist.push(format!("- {label}: {}", histogram(f)));
        }
        cpu_rows.push((format!("daemon, cold read, {label}"), r.cpu, r.read));
    };
    if b.has("cold") {
        for cache in b.args.cache_sizes.split(',').map(str::trim) {
            let r = cold_run(b, &shaping, cache, &mut writes);
            clean.insert(cache.to_string(), r.mbps);
            targets.extend(cold_targets(cache, &r, limit, n));
            let cell = ratio(r.mbps, limit);
            add_cold(format!("--cache-size {cache}"), &r, cell, &mut cold);
        }
    }
    if b.has("stall") {
        let stalled = Shaping {
            slow_fraction: b.args.stall_fraction,
            slow_kind: SlowKind::Stall,
            stall: Duration::from_millis(b.args.stall_ms),
            ..shaping.clone()
        };
        let cache = b.args.stall_cache.as_str();
        let r = cold_run(b, &stalled, cache, &mut writes);
        if let Some(c) = clean.get(cache) {
            targets.push(format!(
                "stalled ≥ 0.8x the clean run: {}",
                target_cell(r.mbps / c, 0.8)
            ));
        }
        let cell = format!(
            "{}; {} of the clean run",
            ratio(r.mbps, limit),
            ratio(r.mbps, clean.get(cache).copied())
        );
        let label = format!(
            "--cache-size {cache}, {}% of responses stalled {} s ({} stalled)",
            b.args.stall_fraction * 100.0,
            b.args.stall_ms as f64 / 1000.0,
            r.stalled
        );
        add_cold(label, &r, cell, &mut cold);
    }
    cold.print();
    if !targets.is_empty() {
        println!(
            "Issue 10 targets (meant for the shaped profile): {}.\n",
            targets.join("; ")
        );
    }
    if !hist.is_empty() {
        println!("Time at each depth (requests in flight: share of the read's span):\n");
        println!("{}\n", hist.join("\n"));
    }

    load_section(b, &shaping, &mut writes);
    patterns_section(b, &shaping, &mut writes, &mut cpu_rows);
    cpu_section(b, &shaping, curl16.as_ref(), &cpu_rows);

    let total: u64 = writes.iter().map(|w| w.1).sum();
    if !writes.is_empty() {
        let each: Vec<String> = writes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "Daemon bytes written to disk: {} ({}).\n",
            each.join(", "),
            verdict(total == 0)
        );
    }
}

fn load_section(b: &Bench, shaping: &Shaping, writes: &mut Vec<(String, u64)>) {
    let Some(py) = b.python.as_ref().filter(|_| b.has("load")) else {
        return;
    };
    let cache = &b.args.cache_size;
    let mut t = Table::new(
        format!(
            "Sharded safetensors load: safe_open + get_tensor of every tensor; mount \
             --cache-size {cache}"
        ),
        &[
            "model",
            "through the mount",
            "snapshot_download, then load",
            "HfFileSystem read + load",
            "download time ÷ mount time (target ≥ 1.5)",
            "HfFileSystem time ÷ mount time (target ≥ 4)",
            "peak RSS MiB",
            "daemon disk writes",
        ],
    );
    for m in &b.models {
        b.reset(shaping);
        let d = b.mount(cache);
        let mount = py.load("mount", &m.repo, m.shards, Some(d.mountpoint()));
        let (rss, wrote) = (d.rss_verdict(), d.write_bytes());
        writes.push((format!("load {}x{} MB", m.shards, m.shard_mb), wrote));
        d.stop();
        b.reset(shaping);
        let download = py.load("download", &m.repo, m.shards, None);
        b.reset(shaping);
        let hffs = py.load("hffs", &m.repo, m.shards, None);
        t.row(vec![
            format!("{} x {} MB", m.shards, m.shard_mb),
            format!("{mount:.2} s"),
            format!("{download:.2} s"),
            format!("{hffs:.2} s"),
            target_cell(download / mount, 1.5),
            target_cell(hffs / mount, 4.0),
            rss,
            format!("{wrote} ({})", verdict(wrote == 0)),
        ]);
    }
    t.print();
}

fn patterns_section(
    b: &Bench,
    shaping: &Shaping,
    writes: &mut Vec<(String, u64)>,
    cpu_rows: &mut Vec<(String, Cpu, u64)>,
) {
    if !b.has("patterns") {
        return;
    }
    let cache = b.args.cache_size.clone();
    let mut t = Table::new(
        format!("Access patterns, --cache-size {cache}, fresh mount each"),
        &[
            "pattern",
            "result",
            "fetched per byte needed / read",
            "target",
            "peak RSS MiB",
        ],
    );
    let fetched_row = |label: String, result: String, fetched: u64, used: u64, max: f64| {
        let x = fetched as f64 / used as f64;
        vec![
            label,
            result,
            format!(
                "{x:.2} ({:.1} of {:.1} MB)",
                fetched as f64 / 1e6,
                used as f64 / 1e6
            ),
            format!("≤ {max}: {}", verdict(x <= max)),
        ]
    };
    if let (Some(py), Some(src)) = (&b.python, &b.parquet) {
        let rel = format!("{PATTERNS_REPO}@main/{PARQUET}");
        let r = on_fresh_mount(b, shaping, &cache, &rel, ("parquet".into(), writes), |p| {
            py.read_parquet(p, src)
        });
        let (secs, needed) = r.out;
        let size = std::fs::metadata(src).map_or(0, |m| m.len());
        let mut row = fetched_row(
            format!(
                "pyarrow read_table, 2 of 20 columns ({:.0} MB file)",
                size as f64 / 1e6
            ),
            format!("{secs:.2} s"),
            r.served.bytes,
            needed,
            1.5,
        );
        row.push(r.rss);
        t.row(row);
    }
    let large = large_rel();
    let r = on_fresh_mount(
        b,
        shaping,
        &cache,
        &large,
        ("4 readers".into(), writes),
        |p| parallel(p, b.large, 4, true),
    );
    let (read, elapsed) = r.out;
    let mut row = fetched_row(
        "4 parallel sequential readers, a quarter each (1 MiB reads)".into(),
        format!("{:.0} MB/s", mbps(read, elapsed)),
        r.served.bytes,
        read,
        1.05,
    );
    row.push(r.rss);
    t.row(row);
    for (size, count, max) in [(4096usize, 300usize, 16.0), (MIB as usize, 100, 1.5)] {
        let label = (format!("random {size} B"), &mut *writes);
        let mut r = on_fresh_mount(b, shaping, &cache, &large, label, |p| {
            random_preads(p, b.large, size, count)
        });
        let lat = &mut r.out;
        let mut row = fetched_row(
            format!(
                "{count} random {} preads: p50 / p90 / p99",
                if size == 4096 { "4 KiB" } else { "1 MiB" }
            ),
            format!(
                "{:.1} / {:.1} / {:.1} ms",
                percentile(lat, 0.5),
                percentile(lat, 0.9),
                percentile(lat, 0.99)
            ),
            r.served.bytes,
            (size * count) as u64,
            max,
        );
        row.push(r.rss);
        t.row(row);
    }
    let r = on_fresh_mount(
        b,
        shaping,
        &cache,
        &large,
        ("8 readers".into(), writes),
        |p| parallel(p, b.large, 8, false),
    );
    let (read, elapsed) = r.out;
    t.row(vec![
        "8 parallel readers of the whole file".into(),
        format!("{:.0} MB/s read", mbps(read, elapsed)),
        format!(
            "{:.3} per byte of the file",
            r.served.bytes as f64 / b.large as f64
        ),
        String::new(),
        r.rss,
    ]);
    cpu_rows.push((
        "daemon, 8 parallel readers (per GiB the readers got)".into(),
        r.cpu,
        read,
    ));
    t.row(warm_row(b, shaping, &cache, writes));
    t.print();
}

/// A warm re-read (the page cache serves it) against the same bytes read from tmpfs.
fn warm_row(
    b: &Bench,
    shaping: &Shaping,
    cache: &str,
    writes: &mut Vec<(String, u64)>,
) -> Vec<String> {
    let d = b.mount(cache);
    let p = b.large_path(&d);
    b.reset(shaping);
    read_span(&p, 0, b.large, MIB as usize);
    let best_of = |p: &std::path::Path| {
        (0..2)
            .map(|_| {
                let t = Instant::now();
                mbps(read_span(p, 0, b.large, MIB as usize), t.elapsed())
            })
            .fold(0.0, f64::max)
    };
    let warm = best_of(&p);
    writes.push(("warm".into(), d.write_bytes()));
    let rss = d.rss_verdict();
    d.stop();
    let shm = PathBuf::from("/dev/shm/hubfs-bench-tmpfs");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&shm).expect("tmpfs file");
        let mut off = 0;
        while off < b.large {
            let chunk = b
                .large_data
                .read_at(off, (8 * MIB).min(b.large - off) as usize);
            f.write_all(&chunk).expect("write tmpfs");
            off += chunk.len() as u64;
        }
    }
    let tmpfs = best_of(&shm);
    let _ = std::fs::remove_file(&shm);
    vec![
        "warm re-read (page cache), best of 2".into(),
        format!("{warm:.0} MB/s"),
        format!("{} of tmpfs ({tmpfs:.0} MB/s)", ratio(warm, Some(tmpfs))),
        format!("≥ 0.8 of tmpfs: {}", verdict(warm >= 0.8 * tmpfs)),
        rss,
    ]
}

fn cpu_section(
    b: &Bench,
    shaping: &Shaping,
    curl16: Option<&CurlRun>,
    rows: &[(String, Cpu, u64)],
) {
    if !b.has("cpu") {
        return;
    }
    let mut t = Table::new(
        "CPU seconds per GiB served (issue 11): the daemon's threads vs curl, same bytes, same \
         server",
        &[
            "who",
            "CPU s/GiB (user + sys)",
            "ratio to curl (one connection if run, else the parallel ranges)",
        ],
    );
    // One curl for the whole file: the receive cost of the bytes (only unshaped: a capped
    // connection would take size / cap).
    let single = (b.curl && shaping.bytes_per_sec.is_none())
        .then(|| {
            b.reset(shaping);
            let url = cdn_url(&format!(
                "{}/{LARGE_REPO}/resolve/main/large.bin",
                b.hub.endpoint()
            ))?;
            curl_ranges(&url, b.large, 1)
        })
        .flatten();
    let per_gib = |c: &Cpu, bytes: u64| c.total() / (bytes as f64 / (1u64 << 30) as f64);
    let base = single.as_ref().or(curl16).map(|c| per_gib(&c.cpu, c.bytes));
    for (label, cpu, bytes) in rows {
        t.row(vec![
            label.clone(),
            cpu.per_gib(*bytes),
            ratio(per_gib(cpu, *bytes), base),
        ]);
    }
    if let Some(c) = curl16 {
        t.row(vec![
            format!("{} parallel `curl -r`", b.args.connections),
            c.cpu.per_gib(c.bytes),
            ratio(per_gib(&c.cpu, c.bytes), base),
        ]);
    }
    if let Some(c) = &single {
        t.row(vec![
            format!("`curl -o /dev/null`, one connection ({:.0} MB/s)", c.mbps),
            c.cpu.per_gib(c.bytes),
            ratio(per_gib(&c.cpu, c.bytes), base),
        ]);
    }
    t.print();
}

fn command_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine() -> String {
    let gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map_or(0, |k| k / 1024 / 1024);
    format!(
        "{} cores, {gib} GiB RAM, kernel {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    )
}

fn main() {
    let args = Args::parse();
    let large = args.large_mb * MIB;
    let models = parse_models(&args.models);
    let sections: Vec<String> = args.sections.split(',').map(|s| s.trim().into()).collect();
    let want_python = !args.no_python && sections.iter().any(|s| s == "load" || s == "patterns");
    let parquet_dir = tempfile::tempdir().expect("temp dir");
    let mut fixtures = Fixtures::empty().with_large_file(LARGE_REPO, "large.bin", large);
    for m in &models {
        fixtures = fixtures.with_sharded_model(&m.repo, m.shards, m.shard_mb * 1_000_000);
    }
    let mut parquet = None;
    if want_python && sections.iter().any(|s| s == "patterns") {
        let maker = Python {
            python: args.python.clone(),
            endpoint: String::new(),
        };
        let src = parquet_dir.path().join(PARQUET);
        maker.make_parquet(&src);
        fixtures = fixtures
            .with_folder(PATTERNS_REPO, parquet_dir.path())
            .expect("serve the parquet folder");
        parquet = Some(src);
    }
    let repo = fixtures
        .repo(RepoType::Model, LARGE_REPO)
        .expect("large repo");
    let large_data = repo
        .file_at("main", "large.bin")
        .expect("large.bin")
        .clone();
    let large_ref = FileRef {
        repo: RepoId::new(hubfs::hub::RepoType::Model, "bench", "large"),
        commit: repo.refs["main"].clone(),
        path: "large.bin".into(),
        size: large,
        etag: large_data.sha256_hex(),
    };
    let hub = FakeHub::start(fixtures, FakeHubOptions::default()).expect("start the fake Hub");
    let python = want_python.then(|| Python {
        python: args.python.clone(),
        endpoint: hub.endpoint(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let curl = have_curl();
    println!(
        "# hubfs benchmark\n\n{} (commit {}), {}; hubfs binary {}; large file {} MiB; models {}; \
         {}\n",
        command_line("date", &["-u", "+%Y-%m-%d"]),
        command_line("git", &["rev-parse", "--short", "HEAD"]),
        machine(),
        args.bin.display(),
        args.large_mb,
        args.models,
        if curl {
            "curl found"
        } else {
            "no curl: HTTP limit only"
        }
    );
    let b = Bench {
        hub,
        rt,
        large,
        large_ref,
        large_data,
        models,
        parquet,
        python,
        sections,
        curl,
        args,
    };
    for profile in b.args.profiles.split(',').map(str::trim) {
        run_profile(&b, profile);
    }
}
