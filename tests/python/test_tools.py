"""Ordinary command-line tools (cp -r, rsync -a, sha256sum, python -m json.tool) reading through a
hubfs mount of the fake Hub; every result is compared with `fakehub export` (the source).

A missing tool (rsync, sha256sum, cp) is a failure (a skip with HUBFS_ALLOW_SKIP=1 outside CI)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from filehash import sha256

SHARDED = "acme/sharded@main"
TINY_MAIN = "acme/tiny-gpt2@main"
CORPUS = "datasets/acme/corpus@main"
TOOL_TIMEOUT_S = 120


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _skip_allowed() -> bool:
    """A missing prerequisite is a failure unless HUBFS_ALLOW_SKIP=1 asks for a skip (never in CI)."""
    return os.environ.get("HUBFS_ALLOW_SKIP") == "1" and not _in_ci()


def require_tool(name: str, package: str) -> str:
    """The tool's path; a missing tool fails the test (skips with HUBFS_ALLOW_SKIP=1 outside CI)."""
    path = shutil.which(name)
    if path is None:
        msg = f"`{name}` not found on PATH (apt-get install {package})"
        if not _skip_allowed():
            pytest.fail(f"{msg} (a test that cannot run fails; HUBFS_ALLOW_SKIP=1 skips it outside CI)", pytrace=False)
        pytest.skip(msg)
    return path


def run(cmd: list, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, timeout=TOOL_TIMEOUT_S, **kw)
    assert r.returncode == 0, (
        f"{cmd} exited with {r.returncode}\nstdout: {r.stdout[-2000:]!r}\nstderr: {r.stderr[-4000:]!r}"
    )
    return r


def listing(root: Path) -> tuple[dict[str, int], set[str]]:
    """({relative file path: size}, {relative dir path}) of everything under root (no symlinks
    expected: a symlink or other special file is reported as a failure)."""
    files, dirs = {}, set()
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        for name in dirnames:
            p = d / name
            assert not p.is_symlink(), f"unexpected symlink {p}"
            dirs.add(p.relative_to(root).as_posix())
        for name in filenames:
            p = d / name
            assert p.is_file() and not p.is_symlink(), f"not a regular file: {p}"
            files[p.relative_to(root).as_posix()] = p.stat().st_size
    return files, dirs


def assert_same_tree(copy: Path, export: Path) -> int:
    """The copy has exactly the export's files and dirs, with the same sizes and bytes.
    Returns the number of files compared."""
    got_files, got_dirs = listing(copy)
    want_files, want_dirs = listing(export)
    assert want_files, f"empty export {export}"
    missing = sorted(set(want_files) - set(got_files))
    extra = sorted(set(got_files) - set(want_files))
    assert not missing and not extra, f"missing {missing[:20]} extra {extra[:20]}"
    assert got_dirs == want_dirs
    wrong_size = [(r, got_files[r], want_files[r]) for r in sorted(want_files) if got_files[r] != want_files[r]]
    assert not wrong_size, f"sizes differ (path, copy, export): {wrong_size[:20]}"
    for rel in sorted(want_files):
        assert (copy / rel).read_bytes() == (export / rel).read_bytes(), rel
    return len(want_files)


# ---------------------------------------------------------------- cp -r, rsync -a


@pytest.mark.parametrize("repo", [SHARDED, CORPUS])
def test_cp_r_whole_repo(hub, tmp_path, repo):
    cp = require_tool("cp", "coreutils")
    src, dst = hub.mount_repo(repo), tmp_path / "copy"
    run([cp, "-r", "--", str(src), str(dst)])
    n = assert_same_tree(dst, hub.export_repo(repo))
    if repo == CORPUS:
        # The fixture really has what this test is about.
        export = hub.export_repo(repo)
        assert n >= 1200, n
        assert (dst / "empty.txt").stat().st_size == 0
        assert (export / "empty.txt").stat().st_size == 0
        odd = [p for p in listing(export)[0] if " " in p and not p.isascii()]
        assert odd, "no non-ASCII name with spaces in the corpus export"
        for rel in odd:
            assert (dst / rel).read_bytes() == (export / rel).read_bytes(), rel


def test_rsync_a_tiny_gpt2(hub, tmp_path):
    rsync = require_tool("rsync", "rsync")
    src, dst = hub.mount_repo(TINY_MAIN), tmp_path / "copy"
    # Trailing slash: the contents of src into dst.
    r = run([rsync, "-a", "--stats", f"{src}/", f"{dst}/"])
    assert_same_tree(dst, hub.export_repo(TINY_MAIN))
    # rsync really transferred the files (a second run with checksums would find nothing to do).
    r2 = run([rsync, "-a", "-c", "--itemize-changes", f"{src}/", f"{dst}/"])
    assert r2.stdout.strip() == b"", f"second rsync -c found differences:\n{r2.stdout!r}\n{r.stdout!r}"


# ---------------------------------------------------------------- sha256sum, json.tool


def test_sha256sum_every_file_of_sharded(hub):
    sha256sum = require_tool("sha256sum", "coreutils")
    src, export = hub.mount_repo(SHARDED), hub.export_repo(SHARDED)
    names = sorted(listing(export)[0])
    assert len(names) >= 5 and all("/" not in n and "\\" not in n and "\n" not in n for n in names)
    r = run([sha256sum, "--", *names], cwd=src)
    got = {}
    for line in r.stdout.decode().splitlines():
        digest, name = line.split(None, 1)
        got[name.lstrip("*").lstrip(" ")] = digest
    # sha256sum's output format is "<digest>  <name>": the name is the rest of the line.
    assert sorted(got) == names, r.stdout
    want = {n: sha256(export / n) for n in names}
    assert got == want


def test_python_json_tool_on_index(hub):
    rel = "model.safetensors.index.json"
    src = hub.mount_repo(SHARDED) / rel
    r = run([sys.executable, "-m", "json.tool", str(src)])
    with open(hub.export_repo(SHARDED) / rel, "rb") as f:
        want = json.load(f)
    assert want["weight_map"], "the exported index has no weight_map"
    assert json.loads(r.stdout) == want
