"""Real loaders (safetensors, numpy, tokenizers, transformers) reading through a hubfs mount of
the fake Hub; every value is compared with the same read from `fakehub export` (the source)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from conftest import MOUNT_SHAPES
from filehash import sha256

SHARDED = "acme/sharded"  # no @rev: main
TINY_MAIN = "acme/tiny-gpt2@main"
TINY_V1 = "acme/tiny-gpt2@v1.0"
SHARDS = [f"model-{i:05}-of-00003.safetensors" for i in (1, 2, 3)]
SENTENCES = [
    "the quick brown fox jumps over the lazy dog .",
    "hello world , the hub is a fake test",
    "mount read only file model data set",
    "unknown words like zebra map to unk , the sun and the moon",
]


ALL_REPOS = [
    SHARDED,
    TINY_MAIN,
    TINY_V1,
    "acme/tiny-gpt2",
    "acme/tiny-gpt2@refs%2Fpr%2F1",
    "datasets/acme/corpus",
    "spaces/acme/demo@main",
]


@pytest.fixture(scope="module", params=MOUNT_SHAPES)
def hub(request, hub, shaped_hub):
    """Every loader check runs on each mount shape: the repo under a whole-Hub mount, the repo as
    a one-repo mount (`hubfs mount --repo`), and a copy of it as a subfolder mount (`--repo
    acme/nest --subfolder ...`)."""
    return shaped_hub(request.param, ALL_REPOS)


def assert_same_tensors(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    assert want, "the source has no tensors"
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        assert got[k].shape == want[k].shape, k
        assert np.array_equal(got[k], want[k]), k


def tree(root: Path) -> dict[str, Path]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            out[p.relative_to(root).as_posix()] = p
    return out


# ---------------------------------------------------------------- safetensors


@pytest.mark.parametrize("shard", SHARDS)
def test_safetensors_load_file_each_shard(hub, shard):
    got = load_file(hub.mount_repo(SHARDED) / shard)
    want = load_file(hub.export_repo(SHARDED) / shard)
    assert len(want) == 2
    assert_same_tensors(got, want)


def test_safetensors_safe_open_slices(hub):
    shard = SHARDS[1]
    with safe_open(str(hub.mount_repo(SHARDED) / shard), framework="numpy") as fm, \
         safe_open(str(hub.export_repo(SHARDED) / shard), framework="numpy") as fe:
        assert sorted(fm.keys()) == sorted(fe.keys())
        assert fm.metadata() == fe.metadata()
        for key in fe.keys():
            sm, se = fm.get_slice(key), fe.get_slice(key)
            assert sm.get_shape() == se.get_shape()
            assert sm.get_dtype() == se.get_dtype()
            rows, cols = se.get_shape()
            for sl in [
                (slice(0, 1), slice(None)),
                (slice(rows // 2, rows // 2 + 7), slice(3, 100)),
                (slice(rows - 3, rows), slice(cols - 5, cols)),
                (slice(10, 400), slice(0, cols)),
            ]:
                a, b = sm[sl], se[sl]
                assert a.shape == b.shape and a.size > 0
                assert np.array_equal(a, b), (key, sl)
            # The whole tensor, through safe_open's mmap.
            assert np.array_equal(fm.get_tensor(key), fe.get_tensor(key)), key


def test_safetensors_index_maps_every_tensor_to_its_shard(hub):
    index_m = json.loads((hub.mount_repo(SHARDED) / "model.safetensors.index.json").read_text())
    index_e = json.loads((hub.export_repo(SHARDED) / "model.safetensors.index.json").read_text())
    assert index_m == index_e
    weight_map = index_m["weight_map"]
    assert set(weight_map.values()) == set(SHARDS)
    total = 0
    with contextlib.ExitStack() as stack:
        handles = {
            shard: stack.enter_context(safe_open(str(hub.mount_repo(SHARDED) / shard), framework="numpy"))
            for shard in SHARDS
        }
        sources = {shard: load_file(hub.export_repo(SHARDED) / shard) for shard in SHARDS}
        for name, shard in sorted(weight_map.items()):
            assert name in handles[shard].keys(), (name, shard)
            t, want = handles[shard].get_tensor(name), sources[shard][name]
            assert t.dtype == want.dtype and t.shape == want.shape
            assert np.array_equal(t, want), name
            total += t.nbytes
    assert total == index_m["metadata"]["total_size"]


def test_tiny_gpt2_main_and_v1_differ_and_match_their_export(hub):
    got_main = load_file(hub.mount_repo(TINY_MAIN) / "model.safetensors")
    got_v1 = load_file(hub.mount_repo(TINY_V1) / "model.safetensors")
    assert_same_tensors(got_main, load_file(hub.export_repo(TINY_MAIN) / "model.safetensors"))
    assert_same_tensors(got_v1, load_file(hub.export_repo(TINY_V1) / "model.safetensors"))
    assert sorted(got_main) == sorted(got_v1)
    assert not np.array_equal(got_main["wte.weight"], got_v1["wte.weight"])
    # No @rev means main.
    assert_same_tensors(load_file(hub.mount_repo("acme/tiny-gpt2") / "model.safetensors"), got_main)


# ---------------------------------------------------------------- tokenizers


@pytest.mark.parametrize("repo", [TINY_MAIN, SHARDED])
def test_tokenizers_from_file(hub, repo):
    tm = Tokenizer.from_file(str(hub.mount_repo(repo) / "tokenizer.json"))
    te = Tokenizer.from_file(str(hub.export_repo(repo) / "tokenizer.json"))
    assert tm.get_vocab() == te.get_vocab()
    for s in SENTENCES:
        em, ee = tm.encode(s), te.encode(s)
        assert em.ids == ee.ids, s
        assert em.tokens == ee.tokens, s
        assert len(ee.ids) > 3
    # Unknown words map to [UNK] (id 0), known words to non-zero ids.
    ids = tm.encode(SENTENCES[3]).ids
    assert 0 in ids and any(i != 0 for i in ids)


# ---------------------------------------------------------------- transformers (subprocess)

TRANSFORMERS_SCRIPT = r"""
import json, sys
from transformers import AutoConfig, AutoTokenizer

dirs, sentences = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = {}
for d in dirs:
    cfg = AutoConfig.from_pretrained(d).to_dict()
    for k in ("_name_or_path", "transformers_version"):
        cfg.pop(k, None)
    tok = AutoTokenizer.from_pretrained(d)
    out[d] = {
        "config": cfg,
        "tokenizer_class": type(tok).__name__,
        "ids": [tok(s)["input_ids"] for s in sentences],
    }
print("RESULT " + json.dumps(out, sort_keys=True))
"""

TRANSFORMERS_REPOS = [TINY_MAIN, TINY_V1, SHARDED]


@pytest.fixture(scope="module")
def transformers_results(hub, tmp_path_factory):
    """One subprocess loads config and tokenizer of every repo from the mount and the export.
    HF_HUB_OFFLINE=1 is in its environment before transformers is imported."""
    home = tmp_path_factory.mktemp("tf-home")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "HF_HOME": str(home / "hf"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    dirs = []
    for repo in TRANSFORMERS_REPOS:
        dirs += [str(hub.mount_repo(repo)), str(hub.export_repo(repo))]
    r = subprocess.run(
        [sys.executable, "-c", TRANSFORMERS_SCRIPT, json.dumps(dirs), json.dumps(SENTENCES)],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert r.returncode == 0, f"transformers subprocess failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    line = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    assert line, f"no RESULT line:\n{r.stdout}\n{r.stderr}"
    return json.loads(line[-1][len("RESULT "):])


@pytest.mark.parametrize("repo", TRANSFORMERS_REPOS)
def test_transformers_autoconfig(hub, transformers_results, repo):
    got = transformers_results[str(hub.mount_repo(repo))]["config"]
    want = transformers_results[str(hub.export_repo(repo))]["config"]
    assert got == want
    assert got["model_type"] == "gpt2" and got["n_embd"] == 32
    # The revision is really the one asked for: only main's config has hubfs_version.
    assert got.get("hubfs_version") == (None if repo == TINY_V1 or repo == SHARDED else 2)


@pytest.mark.parametrize("repo", TRANSFORMERS_REPOS)
def test_transformers_autotokenizer(hub, transformers_results, repo):
    got = transformers_results[str(hub.mount_repo(repo))]
    want = transformers_results[str(hub.export_repo(repo))]
    assert got["tokenizer_class"] == want["tokenizer_class"]
    assert got["ids"] == want["ids"]
    # And the same ids as the tokenizers library on the source file.
    te = Tokenizer.from_file(str(hub.export_repo(repo) / "tokenizer.json"))
    assert got["ids"] == [te.encode(s).ids for s in SENTENCES]


# ---------------------------------------------------------------- numpy memmap, whole trees


@pytest.mark.parametrize("shard", [SHARDS[0], SHARDS[2]])
def test_numpy_memmap_shard(hub, shard):
    src = (hub.export_repo(SHARDED) / shard).read_bytes()
    mm = np.memmap(hub.mount_repo(SHARDED) / shard, mode="r")
    try:
        assert mm.shape == (len(src),)
        want = np.frombuffer(src, dtype=np.uint8)
        assert np.array_equal(mm, want)
        # Random-ish windows, read out of order.
        for off in (len(src) - 4096, 12345, 0, len(src) // 2 + 1):
            assert bytes(mm[off:off + 4096]) == src[off:off + 4096], off
    finally:
        del mm


@pytest.mark.parametrize("repo", [r for r in ALL_REPOS if r != "acme/tiny-gpt2"])
def test_sha256_of_every_file(hub, repo):
    got, want = tree(hub.mount_repo(repo)), tree(hub.export_repo(repo))
    assert want, f"empty export for {repo}"
    assert sorted(got) == sorted(want)
    for rel in sorted(want):
        assert os.path.getsize(got[rel]) == os.path.getsize(want[rel]), rel
        assert sha256(got[rel]) == sha256(want[rel]), rel
