"""Loads a sharded safetensors model three ways and prints JSON timings, for examples/bench.

  mount:    safe_open each shard through a hubfs mount, get_tensor for every key
  hffs:     huggingface_hub HfFileSystem reads each shard, then safetensors.numpy.load (every
            tensor; safe_open needs a path)
  download: snapshot_download of the shards into an empty cache dir, then safe_open each and
            get_tensor for every key

HF_ENDPOINT must point at the fake Hub before huggingface_hub is imported (it reads it once).
"""

import argparse
import json
import os
import sys
import tempfile
import time


def load_every_tensor(path: str) -> tuple[int, int]:
    """(tensors, bytes) of every tensor of the shard at `path`, read with safe_open."""
    from safetensors import safe_open

    tensors = 0
    total = 0
    with safe_open(path, framework="np") as f:
        for k in f.keys():
            total += f.get_tensor(k).nbytes
            tensors += 1
    return tensors, total


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["mount", "hffs", "download"], required=True)
    p.add_argument("--repo", required=True)
    p.add_argument("--mount")
    p.add_argument("--shards", type=int, required=True)
    a = p.parse_args()
    names = [f"model-{i:05d}-of-{a.shards:05d}.safetensors" for i in range(1, a.shards + 1)]

    t0 = time.perf_counter()
    total = 0
    tensors = 0
    if a.mode == "mount":
        for n in names:
            k, b = load_every_tensor(os.path.join(a.mount, a.repo + "@main", n))
            tensors += k
            total += b
    elif a.mode == "hffs":
        from huggingface_hub import HfFileSystem
        from safetensors.numpy import load

        fs = HfFileSystem()
        for n in names:
            with fs.open(f"{a.repo}/{n}", "rb") as f:
                d = load(f.read())
            tensors += len(d)
            total += sum(v.nbytes for v in d.values())
    else:
        from huggingface_hub import snapshot_download

        with tempfile.TemporaryDirectory(prefix="hubfs-bench-dl-") as cache:
            folder = snapshot_download(a.repo, cache_dir=cache, allow_patterns=["*.safetensors", "*.json"])
            for n in names:
                k, b = load_every_tensor(os.path.join(folder, n))
                tensors += k
                total += b
    dt = time.perf_counter() - t0
    json.dump({"mode": a.mode, "seconds": dt, "tensor_bytes": total, "tensors": tensors}, sys.stdout)


if __name__ == "__main__":
    main()
