"""Storage Buckets: huggingface_hub's own bucket client pointed at the fake Hub (so what the fake
serves is what the official client parses, HUB_PROTOCOL.md §12), and safetensors and pyarrow
reading checkpoints from a bucket through a hubfs mount, compared with the source files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import HfApi, HfFileSystem
from safetensors.numpy import load_file, save_file

BUCKET = "acme/ckpt"


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A training run's bucket: two checkpoint steps, a parquet shard, logs (and `logs_x`, which
    the raw prefix `logs` also matches)."""
    src = tmp_path_factory.mktemp("bucket-source")
    rng = np.random.default_rng(15)
    for step in (100, 200):
        d = src / "checkpoints" / f"step_{step}"
        d.mkdir(parents=True)
        save_file(
            {
                "embed.weight": rng.standard_normal((512, 256), dtype=np.float32),
                "layer.0.weight": rng.standard_normal((256, 1024), dtype=np.float32),
                "layer.0.bias": rng.standard_normal((1024,), dtype=np.float32),
                "step": np.array([step], dtype=np.int64),
            },
            str(d / "model.safetensors"),
        )
    (src / "data").mkdir()
    table = pa.table(
        {
            "id": pa.array(np.arange(50_000, dtype=np.int64)),
            "x": pa.array(rng.standard_normal(50_000)),
            "label": pa.array([f"row-{i % 97}" for i in range(50_000)]),
        }
    )
    pq.write_table(table, src / "data" / "train.parquet", row_group_size=10_000)
    (src / "logs").mkdir()
    (src / "logs" / "run.txt").write_text("step 100 loss 1.0\nstep 200 loss 0.5\n")
    (src / "logs_x").mkdir()
    (src / "logs_x" / "other.txt").write_text("not under logs/\n")
    return src


@pytest.fixture(scope="module")
def fakehub(serve_fakehub, source):
    return serve_fakehub("--bucket-folder", str(source), "--bucket", BUCKET)


def _files(src: Path) -> dict[str, int]:
    return {p.relative_to(src).as_posix(): p.stat().st_size for p in src.rglob("*") if p.is_file()}


def test_huggingface_hub_bucket_client_parses_what_the_fake_hub_serves(fakehub, source):
    api = HfApi(endpoint=fakehub.endpoint, token=False)
    files = _files(source)

    info = api.bucket_info(BUCKET)
    assert info.id == BUCKET and info.private is False
    assert info.total_files == len(files) and info.size == sum(files.values())
    assert [b.id for b in api.list_buckets("acme")] == [BUCKET]

    every = list(api.list_bucket_tree(BUCKET, recursive=True))
    assert {f.path: f.size for f in every} == files
    assert all(len(f.xet_hash) == 64 and f.mtime is not None for f in every)
    root = {(type(e).__name__, e.path) for e in api.list_bucket_tree(BUCKET, recursive=False)}
    assert root == {
        ("BucketFolder", "checkpoints"),
        ("BucketFolder", "data"),
        ("BucketFolder", "logs"),
        ("BucketFolder", "logs_x"),
    }
    # The prefix is a raw key prefix: `logs` also matches `logs_x/...`.
    under_logs = {e.path for e in api.list_bucket_tree(BUCKET, prefix="logs", recursive=True)}
    assert under_logs == {"logs/run.txt", "logs_x/other.txt"}

    wanted = ["data/train.parquet", "logs/run.txt", "missing.bin"]
    got = {f.path: f for f in api.get_bucket_paths_info(BUCKET, wanted)}
    assert set(got) == {"data/train.parquet", "logs/run.txt"}, "missing paths are left out"
    by_path = {f.path: f for f in every}
    assert got["logs/run.txt"].xet_hash == by_path["logs/run.txt"].xet_hash

    meta = api.get_bucket_file_metadata(bucket_id=BUCKET, remote_path="data/train.parquet")
    assert meta.size == files["data/train.parquet"]
    assert meta.xet_file_data.file_hash == by_path["data/train.parquet"].xet_hash


def test_hffilesystem_reads_bucket_files_whole_and_ranged(fakehub, source):
    fs = HfFileSystem(endpoint=fakehub.endpoint, token=False)
    want = (source / "data" / "train.parquet").read_bytes()
    with fs.open(f"hf://buckets/{BUCKET}/data/train.parquet", "rb") as f:
        assert f.read() == want
    fakehub.clear_requests()
    with fs.open(f"hf://buckets/{BUCKET}/data/train.parquet", "rb", block_size=4096) as f:
        f.seek(100_000)
        assert f.read(1000) == want[100_000:101_000]
    cdn = [r for r in fakehub.settled_requests() if r["listener"] == "cdn"]
    assert [r["range"].split("-")[0] for r in cdn] == ["bytes=100000"], cdn
    assert sum(r["body_bytes"] for r in cdn) <= 2 * 4096 + 1000
    assert sorted(fs.ls(f"hf://buckets/{BUCKET}/logs", detail=False)) == [f"buckets/{BUCKET}/logs/run.txt"]


def test_safetensors_and_pyarrow_read_checkpoints_from_a_bucket_through_the_mount(
    fakehub, source, mount_hubfs
):
    mnt = mount_hubfs(fakehub.endpoint)
    bucket = mnt / "buckets" / BUCKET
    assert sorted(p.name for p in bucket.iterdir()) == ["checkpoints", "data", "logs", "logs_x"]
    assert [p.name for p in (bucket / "logs").iterdir()] == ["run.txt"]
    for step in (100, 200):
        rel = f"checkpoints/step_{step}/model.safetensors"
        got, want = load_file(str(bucket / rel)), load_file(str(source / rel))
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=f"{rel}:{k}")
        assert (bucket / rel).read_bytes() == (source / rel).read_bytes()
    got = pq.read_table(bucket / "data" / "train.parquet")
    assert got.equals(pq.read_table(source / "data" / "train.parquet"))
    # One row group alone, as a loader reads a shard of a dataset.
    pf = pq.ParquetFile(bucket / "data" / "train.parquet")
    assert pf.metadata.num_row_groups == 5
    assert pf.read_row_group(3).equals(pq.ParquetFile(source / "data" / "train.parquet").read_row_group(3))
    assert (bucket / "logs" / "run.txt").read_text() == (source / "logs" / "run.txt").read_text()
