"""Access patterns through a fresh hubfs mount (`--cache-size 256MiB`) of a fake Hub serving a
generated folder: a pyarrow column projection, 4 sequential readers of one file, and random 4 KiB
and 1 MiB preads. Each reads the right bytes, and each is held to the bytes the fake Hub's own
request log (`GET /_fakehub/requests`) says it served for that file, against issue 10's targets:

* a parquet column projection fetches <= 1.5x the bytes of the column chunks it needs;
* 4 parallel sequential readers (a quarter each, 1 MiB reads) fetch <= 1.05x the file;
* random 4 KiB preads fetch <= 16x, random 1 MiB preads <= 1.5x, the bytes they read.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from filehash import sha256

# The parquet layout is shared with the benchmark (bench/patterns.py), so both measure the same.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import patterns  # noqa: E402

REPO = "acme/patterns"
CACHE = "256MiB"
MIB = 1 << 20

PARQUET = "table.parquet"
PARQUET_MAX = 1.5

BLOB = "blob.bin"
BLOB_BYTES = 512 * MIB  # twice the cache: read-ahead must not be evicted before it is read
READERS = 4
READERS_MAX = 1.05
RANDOM_CASES = [(4096, 300, 16.0), (MIB, 64, 1.5)]  # (read size, reads, max fetched per read)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """The folder the fake Hub serves as REPO: table.parquet and blob.bin (deterministic)."""
    d = tmp_path_factory.mktemp("patterns-src")
    patterns.write_parquet(d / PARQUET)
    (d / BLOB).write_bytes(np.random.default_rng(4).bytes(BLOB_BYTES))
    return d


@pytest.fixture(scope="module")
def fakehub(serve_fakehub, source):
    return serve_fakehub("--folder", str(source), "--repo", REPO)


@pytest.fixture
def mounted(fakehub, mount_hubfs) -> Path:
    """REPO@main on a fresh mount (a cold cache, an empty page cache)."""
    return mount_hubfs(fakehub.endpoint, "--cache-size", CACHE) / f"{REPO}@main"


def is_byte_range(r: dict) -> bool:
    """A ranged GET answered with bytes (as fakehub::trace::is_byte_range)."""
    return r["method"] == "GET" and (r["status"] == 206 or (r["status"] == 200 and r["range"] is not None))


def fetched_bytes(fakehub, src: Path) -> int:
    """Body bytes the fake Hub served for `src`'s content (its CDN object, named by its sha256)
    since the log was cleared, once nothing is in flight."""
    oid = sha256(src)
    return sum(
        r["body_bytes"] for r in fakehub.settled_requests() if is_byte_range(r) and oid in r["path"]
    )


def test_parquet_column_projection_fetches_about_the_chunks_it_needs(fakehub, mounted, source):
    src = source / PARQUET
    md = pq.ParquetFile(src).metadata
    assert (md.num_row_groups, md.num_columns) == (patterns.ROW_GROUPS, patterns.COLUMNS)
    chunk = md.row_group(0).column(0).total_compressed_size
    assert 0.45e6 < chunk < 0.6e6, chunk
    os.stat(mounted / PARQUET)
    fakehub.clear_requests()
    got = pq.read_table(mounted / PARQUET, columns=patterns.SELECTED)
    want = pq.read_table(src, columns=patterns.SELECTED)
    assert got.equals(want)
    fetched = fetched_bytes(fakehub, src)
    needed = patterns.needed_bytes(src, patterns.SELECTED)
    ratio = fetched / needed
    assert ratio <= PARQUET_MAX, (
        f"column projection fetched {fetched / 1e6:.1f} MB for {needed / 1e6:.1f} MB needed "
        f"({ratio:.2f}x; target <= {PARQUET_MAX}x) of a {src.stat().st_size / 1e6:.1f} MB file"
    )


def _read_range_digest(path: Path, start: int, end: int, size: int) -> str:
    """sha256 of [start, end) of `path`, read with `size`-byte preads in order."""
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        off = start
        while off < end:
            b = os.pread(fd, min(size, end - off), off)
            assert b, f"early EOF at {off}"
            h.update(b)
            off += len(b)
    finally:
        os.close(fd)
    return h.hexdigest()


def test_four_sequential_readers_of_one_file_fetch_it_about_once(fakehub, mounted, source):
    src = source / BLOB
    quarter = BLOB_BYTES // READERS
    spans = [(i * quarter, (i + 1) * quarter) for i in range(READERS)]
    os.stat(mounted / BLOB)
    fakehub.clear_requests()
    with ThreadPoolExecutor(READERS) as pool:
        got = list(pool.map(lambda s: _read_range_digest(mounted / BLOB, s[0], s[1], MIB), spans))
    want = [_read_range_digest(src, a, b, 8 * MIB) for a, b in spans]
    assert got == want
    fetched = fetched_bytes(fakehub, src)
    ratio = fetched / BLOB_BYTES
    assert ratio <= READERS_MAX, (
        f"{READERS} sequential readers fetched {fetched / MIB:.0f} MiB for a {BLOB_BYTES // MIB} MiB "
        f"file ({ratio:.3f}x; target <= {READERS_MAX}x)"
    )


@pytest.mark.parametrize("size,count,limit", RANDOM_CASES, ids=["4KiB", "1MiB"])
def test_random_preads_fetch_a_bounded_multiple_of_what_they_read(fakehub, mounted, source, size, count, limit):
    src = source / BLOB
    rng = random.Random(size)
    offsets = [rng.randrange(0, BLOB_BYTES - size) for _ in range(count)]
    fd = os.open(mounted / BLOB, os.O_RDONLY)
    fakehub.clear_requests()
    try:
        got = [os.pread(fd, size, off) for off in offsets]
    finally:
        os.close(fd)
    with open(src, "rb") as f:
        for off, b in zip(offsets, got):
            f.seek(off)
            assert b == f.read(size), f"bytes at {off}"
    fetched = fetched_bytes(fakehub, src)
    ratio = fetched / (size * count)
    assert ratio <= limit, (
        f"{count} random {size} B preads fetched {fetched / MIB:.1f} MiB for {size * count / MIB:.1f} MiB "
        f"read ({ratio:.1f}x; target <= {limit}x)"
    )
