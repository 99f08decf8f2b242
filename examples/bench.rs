//! The hubfs benchmark (see docs/benchmarks.md). It starts the fake Hub in-process with traffic
//! shaping, mounts it with the release `hubfs` binary, and measures side by side on the same bytes:
//! the parallel-HTTP limit, cold and warm sequential reads, a sharded safetensors load through the
//! mount against huggingface_hub's HfFileSystem and hf_hub_download, random reads, and the daemon's
//! peak RSS and disk writes. It prints a markdown table. It is a program, not a timed test.
//!
//!     cargo build --release --workspace
//!     cargo run --release --example bench -- --large-mb 1024 --shard-mb 128

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use fakehub::{FakeHub, FakeHubOptions, Fixtures, Listener, RepoType, Shaping};
use hubfs::hub::http::{HttpConfig, HttpHub};
use hubfs::hub::{FileRef, HubClient, RepoId};

#[derive(Parser, Debug)]
struct Args {
    /// Size of the large file read sequentially and randomly, MiB.
    #[arg(long, default_value_t = 1024)]
    large_mb: u64,
    /// Shards of the safetensors model.
    #[arg(long, default_value_t = 4)]
    shards: usize,
    /// Size of each shard, MiB.
    #[arg(long, default_value_t = 128)]
    shard_mb: u64,
    /// Per-connection bandwidth of the shaped profile, MB/s (1e6 bytes).
    #[arg(long, default_value_t = 50.0)]
    bandwidth_mbps: f64,
    /// Added latency of the shaped profile, ms.
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// Profiles to run: shaped, unshaped.
    #[arg(long, default_value = "shaped,unshaped")]
    profiles: String,
    /// The hubfs binary.
    #[arg(long, default_value = "target/release/hubfs")]
    bin: PathBuf,
    /// Python with safetensors and huggingface_hub (the test venv).
    #[arg(long, default_value = ".venv/bin/python")]
    python: PathBuf,
    /// Skip the Python loader comparison.
    #[arg(long)]
    no_python: bool,
    /// Parallel connections for the limit and for hubfs (--max-connections).
    #[arg(long, default_value_t = 16)]
    connections: usize,
}

const MIB: u64 = 1 << 20;

struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
}

impl Daemon {
    fn start(bin: &Path, endpoint: &str, cache: &str) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("hubfs-bench-")
            .tempdir()
            .unwrap();
        let child = Command::new(bin)
            .args([
                "mount",
                dir.path().to_str().unwrap(),
                "--endpoint",
                endpoint,
                "--cache-size",
                cache,
            ])
            .env("HUBFS_LOG", "warn")
            .env("HOME", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start hubfs (build it with cargo build --release)");
        let t = Instant::now();
        while !dir.path().join("datasets").is_dir() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "mount did not come up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon { child, dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn status_kb(&self, key: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    fn peak_rss_mib(&self) -> f64 {
        self.status_kb("VmHWM:") as f64 / 1024.0
    }

    fn write_bytes(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/io", self.child.id())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("write_bytes: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(u64::MAX)
    }

    fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

fn read_all(p: &Path, buf_size: usize) -> u64 {
    let mut f = std::fs::File::open(p).unwrap();
    let mut buf = vec![0u8; buf_size];
    let mut n = 0;
    loop {
        let k = f.read(&mut buf).unwrap();
        if k == 0 {
            return n;
        }
        n += k as u64;
    }
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

/// Bytes the fake Hub served in 206 responses since the last clear.
fn served_bytes(hub: &FakeHub) -> u64 {
    hub.requests()
        .iter()
        .filter(|r| r.status == 206 && matches!(r.listener, Listener::Cdn | Listener::Hub))
        .filter_map(|r| {
            let (a, b) = r
                .range
                .as_deref()?
                .strip_prefix("bytes=")?
                .split_once('-')?;
            Some(b.parse::<u64>().ok()? - a.parse::<u64>().ok()? + 1)
        })
        .sum()
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

struct Row(String, String, String);

fn main() {
    let args = Args::parse();
    let large = args.large_mb * MIB;
    let fixtures = Fixtures::empty()
        .with_large_file("bench/large", "large.bin", large)
        .with_sharded_model("bench/sharded", args.shards, args.shard_mb * MIB);
    let repo = fixtures.repo(RepoType::Model, "bench/large").unwrap();
    let commit = repo.refs["main"].clone();
    let data = repo.file_at("main", "large.bin").unwrap().clone();
    let hub = FakeHub::start(fixtures, FakeHubOptions::default()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let machine = format!(
        "{} cores, {} GiB RAM, kernel {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok()))
            .map_or(0, |k| k / 1024 / 1024),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "# hubfs benchmark\n\nmachine: {machine}; large file {} MiB; model {} x {} MiB shards\n",
        args.large_mb, args.shards, args.shard_mb
    );

    for profile in args.profiles.split(',') {
        let shaping = match profile {
            "shaped" => Shaping {
                bytes_per_sec: Some((args.bandwidth_mbps * 1e6) as u64),
                latency: Duration::from_millis(args.latency_ms),
                ..Default::default()
            },
            "unshaped" => Shaping::default(),
            other => panic!("unknown profile {other}"),
        };
        hub.set_shaping(shaping.clone());
        let mut rows: Vec<Row> = Vec::new();
        let mut rss: Vec<(String, f64)> = Vec::new();
        let mut wrote: Vec<(String, u64)> = Vec::new();

        // 1. The limit: parallel range requests straight from the fake Hub into memory.
        let limit = rt.block_on(async {
            let mut cfg = HttpConfig::new(&hub.endpoint());
            cfg.max_connections = args.connections;
            let client = Arc::new(HttpHub::new(cfg).unwrap());
            let file = Arc::new(FileRef {
                repo: RepoId::new(hubfs::hub::RepoType::Model, "bench", "large"),
                commit: commit.clone(),
                path: "large.bin".into(),
                size: large,
                etag: data.sha256_hex(),
            });
            let part = 8 * MIB;
            let next = Arc::new(AtomicU64::new(0));
            let t = Instant::now();
            let tasks: Vec<_> = (0..args.connections)
                .map(|_| {
                    let (client, file, next) = (client.clone(), file.clone(), next.clone());
                    tokio::spawn(async move {
                        loop {
                            let off = next.fetch_add(part, Ordering::SeqCst);
                            if off >= large {
                                break;
                            }
                            let len = part.min(large - off);
                            client.read_range(&file, off, len, len).await.unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            mbps(large, t.elapsed())
        });
        rows.push(Row(
            "parallel HTTP range fetch (the limit)".into(),
            format!("{limit:.0} MB/s"),
            "1.00".into(),
        ));

        // 2. cat through the mount, cold then warm; tmpfs for the warm comparison.
        let d = Daemon::start(&args.bin, &hub.endpoint(), "512MiB");
        let p = d.path("bench/large@main/large.bin");
        hub.clear_requests();
        let t = Instant::now();
        let n = read_all(&p, MIB as usize);
        let cold = mbps(n, t.elapsed());
        let fetched = served_bytes(&hub);
        // Warm: the best of two re-reads (the page cache serves them).
        let mut warm: f64 = 0.0;
        for _ in 0..2 {
            let t = Instant::now();
            read_all(&p, MIB as usize);
            warm = warm.max(mbps(n, t.elapsed()));
        }
        rss.push(("cat".into(), d.peak_rss_mib()));
        wrote.push(("cat".into(), d.write_bytes()));
        d.stop();
        let shm = PathBuf::from("/dev/shm/hubfs-bench-tmpfs");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&shm).unwrap();
            let mut off = 0;
            while off < large {
                let chunk = data.read_at(off, (8 * MIB).min(large - off) as usize);
                f.write_all(&chunk).unwrap();
                off += chunk.len() as u64;
            }
        }
        let mut tmpfs: f64 = 0.0;
        for _ in 0..3 {
            let t = Instant::now();
            read_all(&shm, MIB as usize);
            tmpfs = tmpfs.max(mbps(large, t.elapsed()));
        }
        let _ = std::fs::remove_file(&shm);
        rows.push(Row(
            "cat through the mount, cold".into(),
            format!("{cold:.0} MB/s"),
            format!("{:.2}", cold / limit),
        ));
        rows.push(Row(
            "bytes fetched / bytes read, sequential".into(),
            format!("{:.3}", fetched as f64 / n as f64),
            String::new(),
        ));
        rows.push(Row(
            "cat through the mount, warm".into(),
            format!("{warm:.0} MB/s"),
            format!("{:.2} of tmpfs ({tmpfs:.0} MB/s)", warm / tmpfs),
        ));

        // 3. The sharded safetensors load three ways.
        if !args.no_python {
            let mut secs = std::collections::BTreeMap::new();
            for mode in ["mount", "hffs", "download"] {
                let d =
                    (mode == "mount").then(|| Daemon::start(&args.bin, &hub.endpoint(), "512MiB"));
                let home = tempfile::tempdir().unwrap();
                let mut cmd = Command::new(&args.python);
                cmd.args([
                    "bench/loaders.py",
                    "--mode",
                    mode,
                    "--repo",
                    "bench/sharded",
                    "--shards",
                    &args.shards.to_string(),
                ])
                .env("HF_ENDPOINT", hub.endpoint())
                .env("HF_HOME", home.path())
                .env("HF_HUB_DISABLE_XET", "1")
                .env("HF_HUB_DISABLE_TELEMETRY", "1");
                if let Some(d) = &d {
                    cmd.args(["--mount", d.dir.path().to_str().unwrap()]);
                }
                let out = cmd.output().expect("run python");
                assert!(
                    out.status.success(),
                    "{mode}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                secs.insert(mode, v["seconds"].as_f64().unwrap());
                if let Some(d) = d {
                    rss.push(("safetensors load".into(), d.peak_rss_mib()));
                    wrote.push(("safetensors load".into(), d.write_bytes()));
                    d.stop();
                }
            }
            let model_bytes = args.shards as u64 * args.shard_mb * MIB;
            for (mode, label) in [
                ("mount", "safetensors load_file via hubfs"),
                ("hffs", "HfFileSystem read + load"),
                ("download", "hf_hub_download + load_file"),
            ] {
                rows.push(Row(
                    format!("sharded model: {label}"),
                    format!(
                        "{:.2} s ({:.0} MB/s)",
                        secs[mode],
                        mbps(model_bytes, Duration::from_secs_f64(secs[mode]))
                    ),
                    if mode == "mount" {
                        String::new()
                    } else {
                        format!("hubfs {:.1}x faster", secs[mode] / secs["mount"])
                    },
                ));
            }
        }

        // 4. Random reads, each size on a fresh (cold) mount.
        for (size, count) in [(4096usize, 300), (MIB as usize, 100)] {
            use std::os::unix::fs::FileExt;
            let d = Daemon::start(&args.bin, &hub.endpoint(), "512MiB");
            let p = d.path("bench/large@main/large.bin");
            let f = std::fs::File::open(&p).unwrap();
            hub.clear_requests();
            let mut x: u64 = 0x2545F4914F6CDD1D ^ size as u64;
            let mut lat = Vec::new();
            let mut buf = vec![0u8; size];
            for _ in 0..count {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let off = x % (large - size as u64);
                let t = Instant::now();
                f.read_exact_at(&mut buf, off).unwrap();
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            let ratio = served_bytes(&hub) as f64 / (size * count) as f64;
            rows.push(Row(
                format!(
                    "random {} reads: p50 / p90 / p99",
                    if size == 4096 { "4 KiB" } else { "1 MiB" }
                ),
                format!(
                    "{:.1} / {:.1} / {:.1} ms",
                    percentile(&mut lat, 0.5),
                    percentile(&mut lat, 0.9),
                    percentile(&mut lat, 0.99)
                ),
                format!("{ratio:.1} bytes fetched per byte read"),
            ));
            drop(f);
            rss.push((format!("random {size} B"), d.peak_rss_mib()));
            wrote.push((format!("random {size} B"), d.write_bytes()));
            d.stop();
        }

        // 5. Eight parallel readers of the large file with a 256 MiB cache.
        let d = Daemon::start(&args.bin, &hub.endpoint(), "256MiB");
        let p = d.path("bench/large@main/large.bin");
        let t = Instant::now();
        let readers: Vec<_> = (0..8)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || read_all(&p, MIB as usize))
            })
            .collect();
        let total: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        let par = mbps(total, t.elapsed());
        let rss8 = d.peak_rss_mib();
        wrote.push(("8 readers".into(), d.write_bytes()));
        d.stop();
        rows.push(Row(
            "8 parallel readers, --cache-size 256MiB".into(),
            format!("{par:.0} MB/s read, peak RSS {rss8:.0} MiB"),
            format!(
                "RSS limit 320 MiB: {}",
                if rss8 <= 320.0 { "met" } else { "MISSED" }
            ),
        ));
        let max_rss = rss.iter().map(|r| r.1).fold(0.0, f64::max);
        let each: Vec<String> = rss.iter().map(|(k, v)| format!("{k} {v:.0}")).collect();
        rows.push(Row(
            "daemon peak RSS, --cache-size 512MiB (MiB, per run)".into(),
            each.join(", "),
            format!(
                "limit 576 MiB: {}",
                if max_rss <= 576.0 { "met" } else { "MISSED" }
            ),
        ));
        let total_written: u64 = wrote.iter().map(|w| w.1).sum();
        let each: Vec<String> = wrote.iter().map(|(k, v)| format!("{k} {v}")).collect();
        rows.push(Row(
            "daemon bytes written to disk (per run)".into(),
            each.join(", "),
            if total_written == 0 {
                "met".into()
            } else {
                "MISSED".into()
            },
        ));

        let shaping_desc = match &shaping.bytes_per_sec {
            Some(b) => format!(
                "{} MB/s per connection, +{} ms latency",
                *b as f64 / 1e6,
                shaping.latency.as_millis()
            ),
            None => "unshaped loopback".into(),
        };
        println!("## {profile}: {shaping_desc}\n\n| measure | result | ratio / target |\n| --- | --- | --- |");
        for Row(a, b, c) in rows {
            println!("| {a} | {b} | {c} |");
        }
        println!();
    }
}
