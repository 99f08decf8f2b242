//! The Python side of the benchmark: `bench/loaders.py` (a sharded safetensors load three ways)
//! and `bench/patterns.py` (the parquet column projection), each printing one JSON object.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// A Python interpreter with safetensors, huggingface_hub and pyarrow, pointed at a fake Hub.
pub struct Python {
    /// The interpreter (the test venv).
    pub python: PathBuf,
    /// HF_ENDPOINT for huggingface_hub.
    pub endpoint: String,
}

impl Python {
    fn run(&self, args: &[&str]) -> Value {
        let home = tempfile::tempdir().expect("temp HF_HOME");
        let out = Command::new(&self.python)
            .args(args)
            .env("HF_ENDPOINT", &self.endpoint)
            .env("HF_HOME", home.path())
            .env("HF_HUB_DISABLE_XET", "1")
            .env("HF_HUB_DISABLE_TELEMETRY", "1")
            .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON from the Python script")
    }

    /// Seconds to load every tensor of `repo` (`shards` shards) in `mode`: `mount` (through
    /// `mount`), `hffs` or `download`.
    pub fn load(&self, mode: &str, repo: &str, shards: usize, mount: Option<&Path>) -> f64 {
        let shards = shards.to_string();
        let mut args = vec![
            "bench/loaders.py",
            "--mode",
            mode,
            "--repo",
            repo,
            "--shards",
            &shards,
        ];
        let m;
        if let Some(p) = mount {
            m = p.to_string_lossy().into_owned();
            args.extend(["--mount", &m]);
        }
        self.run(&args)["seconds"].as_f64().expect("seconds")
    }

    /// Writes the benchmark's parquet file to `out`.
    pub fn make_parquet(&self, out: &Path) {
        self.run(&["bench/patterns.py", "make", "--out", &out.to_string_lossy()]);
    }

    /// Reads the parquet projection at `path` (checked against `source`): (seconds, bytes the
    /// projection needs).
    pub fn read_parquet(&self, path: &Path, source: &Path) -> (f64, u64) {
        let v = self.run(&[
            "bench/patterns.py",
            "read",
            "--path",
            &path.to_string_lossy(),
            "--source",
            &source.to_string_lossy(),
        ]);
        (
            v["seconds"].as_f64().expect("seconds"),
            v["needed_bytes"].as_u64().expect("needed_bytes"),
        )
    }
}
