"""Loads a sharded safetensors model three ways and prints JSON timings, for examples/bench.rs.

  mount:    safetensors.numpy.load_file on each shard through a hubfs mount
  hffs:     huggingface_hub HfFileSystem reads each shard, then safetensors.numpy.load
  download: hf_hub_download of each shard into an empty cache dir, then load_file

HF_ENDPOINT must point at the fake Hub before huggingface_hub is imported (it reads it once).
"""

import argparse
import json
import os
import sys
import tempfile
import time


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["mount", "hffs", "download"], required=True)
    p.add_argument("--repo", required=True)
    p.add_argument("--mount")
    p.add_argument("--shards", type=int, required=True)
    a = p.parse_args()
    names = [f"model-{i:05d}-of-{a.shards:05d}.safetensors" for i in range(1, a.shards + 1)]
    from safetensors.numpy import load, load_file

    t0 = time.perf_counter()
    total = 0
    tensors = 0
    if a.mode == "mount":
        for n in names:
            d = load_file(os.path.join(a.mount, a.repo + "@main", n))
            tensors += len(d)
            total += sum(v.nbytes for v in d.values())
    elif a.mode == "hffs":
        from huggingface_hub import HfFileSystem

        fs = HfFileSystem()
        for n in names:
            with fs.open(f"{a.repo}/{n}", "rb") as f:
                d = load(f.read())
            tensors += len(d)
            total += sum(v.nbytes for v in d.values())
    else:
        from huggingface_hub import hf_hub_download

        with tempfile.TemporaryDirectory(prefix="hubfs-bench-dl-") as cache:
            for n in names:
                path = hf_hub_download(a.repo, n, cache_dir=cache)
                d = load_file(path)
                tensors += len(d)
                total += sum(v.nbytes for v in d.values())
    dt = time.perf_counter() - t0
    json.dump({"mode": a.mode, "seconds": dt, "tensor_bytes": total, "tensors": tensors}, sys.stdout)


if __name__ == "__main__":
    main()
