"""Fixtures of the Python tests: a fake Hub (`fakehub serve`), its exported fixtures
(`fakehub export`, the source of truth) and a real `hubfs mount` of the fake Hub (`hub`, one per
session); and factories for tests that need their own server or a fresh mount with other options
(`serve_fakehub`, per module, whose request log is read through the admin endpoints; and
`mount_hubfs`, per test).

Binaries: env HUBFS_BIN / FAKEHUB_BIN, else <repo>/target/debug/{hubfs,fakehub}
(`cargo build --workspace`). Needs root and /dev/fuse; without them the tests fail (they are
skipped only with HUBFS_ALLOW_SKIP=1, and never under CI=true).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MOUNT_TIMEOUT_S = 20.0
SERVE_TIMEOUT_S = 20.0
EXIT_TIMEOUT_S = 15.0


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _skip_allowed() -> bool:
    """A missing prerequisite is a failure unless HUBFS_ALLOW_SKIP=1 asks for a skip (never in CI)."""
    return os.environ.get("HUBFS_ALLOW_SKIP") == "1" and not _in_ci()


def _unavailable(msg: str):
    """Skip locally; fail under CI, where a missing prerequisite must never pass silently."""
    if not _skip_allowed():
        pytest.fail(f"{msg} (a test that cannot run fails; HUBFS_ALLOW_SKIP=1 skips it outside CI)", pytrace=False)
    pytest.skip(msg)


def _binary(env_var: str, name: str) -> Path:
    p = os.environ.get(env_var)
    path = Path(p) if p else REPO_ROOT / "target" / "debug" / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"{name} binary not found at {path}: run `cargo build --workspace` in {REPO_ROOT} "
            f"(or set {env_var})",
            pytrace=False,
        )
    return path


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "<no log>"


def _clean_env(home: Path) -> dict:
    """A minimal environment: no HF_TOKEN/HF_HOME/etc. leaks in, HOME is empty (no token file)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"),
        "HOME": str(home),
        "RUST_BACKTRACE": "1",
    }
    if "HUBFS_LOG" in os.environ:
        env["HUBFS_LOG"] = os.environ["HUBFS_LOG"]
    return env


def _check_fuse() -> None:
    if not os.path.exists("/dev/fuse"):
        _unavailable("/dev/fuse is missing: FUSE is not available here")
    if os.geteuid() != 0:
        _unavailable("the hubfs mount tests need root")
    if shutil.which("fusermount3") is None and shutil.which("fusermount") is None:
        _unavailable("fusermount3 not found (apt-get install fuse3)")


def _stop(proc: subprocess.Popen, timeout: float) -> int | None:
    """SIGTERM, then wait up to `timeout`; returns the exit code or None if it did not exit."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _wait_for_hub_line(serve: subprocess.Popen, serve_out: Path, serve_err: Path) -> str:
    """The endpoint from `fakehub serve`'s `HUB <url>` line, once it is printed."""
    deadline = time.monotonic() + SERVE_TIMEOUT_S
    while True:
        for line in serve_out.read_text(errors="replace").splitlines():
            if line.startswith("HUB "):
                return line.split(None, 1)[1].strip()
        if serve.poll() is not None:
            pytest.fail(
                f"fakehub serve exited with {serve.returncode} before printing its HUB line\n"
                f"stdout: {_tail(serve_out)}\nstderr: {_tail(serve_err)}",
                pytrace=False,
            )
        if time.monotonic() > deadline:
            pytest.fail(
                f"fakehub serve printed no HUB line within {SERVE_TIMEOUT_S}s\n"
                f"stdout: {_tail(serve_out)}\nstderr: {_tail(serve_err)}",
                pytrace=False,
            )
        time.sleep(0.05)


def _serve(fakehub_bin: Path, args: list[str], base: Path, env: dict, procs: list) -> str:
    """Starts `fakehub serve ARGS` (appended to `procs`) and returns its Hub endpoint. stdout goes
    to a file under `base` (never a pipe that could fill up and block it)."""
    serve_out = base / "fakehub.out"
    serve_err = base / "fakehub.err"
    with open(serve_out, "wb") as out, open(serve_err, "wb") as err:
        serve = subprocess.Popen(
            [str(fakehub_bin), "serve", *args], stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env
        )
    procs.append(serve)
    return _wait_for_hub_line(serve, serve_out, serve_err)


def _mount(hubfs_bin: Path, mnt: Path, endpoint: str, args: list[str], log_path: Path, env: dict) -> subprocess.Popen:
    """Starts `hubfs mount MNT --foreground --endpoint ENDPOINT ARGS` and waits until the mount answers."""
    with open(log_path, "wb") as log:
        mount = subprocess.Popen(
            [str(hubfs_bin), "mount", str(mnt), "--foreground", "--endpoint", endpoint, *args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
    deadline = time.monotonic() + MOUNT_TIMEOUT_S
    while True:
        if mount.poll() is not None:
            pytest.fail(
                f"hubfs mount exited with {mount.returncode} before the mount answered\n"
                f"log: {_tail(log_path)}",
                pytrace=False,
            )
        try:
            if os.path.ismount(mnt) and os.path.isdir(mnt / "datasets"):
                return mount
        except OSError:
            pass
        if time.monotonic() > deadline:
            _kill(mount)
            pytest.fail(
                f"the hubfs mount did not answer within {MOUNT_TIMEOUT_S}s\nlog: {_tail(log_path)}",
                pytrace=False,
            )
        time.sleep(0.05)


def _unmount_cleanly(mount: subprocess.Popen, mnt: Path, log_path: Path) -> None:
    """SIGTERM must unmount: exit code 0 and the mountpoint is gone."""
    rc = _stop(mount, EXIT_TIMEOUT_S)
    assert rc is not None, f"hubfs did not exit within {EXIT_TIMEOUT_S}s of SIGTERM\nlog: {_tail(log_path)}"
    assert rc == 0, f"hubfs exited with {rc} after SIGTERM\nlog: {_tail(log_path)}"
    assert not os.path.ismount(mnt), f"{mnt} is still a mount after hubfs exited\nlog: {_tail(log_path)}"


def _last_resort(procs: list, mounted_at: list) -> None:
    """Kills every process left (newest first) and lazy-unmounts what is still mounted (also after
    a failed assertion)."""
    for p in reversed(procs):
        if _stop(p, 5) is None:
            _kill(p)
    for mnt in mounted_at:
        if not os.path.ismount(mnt):
            continue
        for cmd in (["fusermount3", "-u", "-z", str(mnt)], ["umount", "-l", str(mnt)]):
            if shutil.which(cmd[0]):
                subprocess.run(cmd, capture_output=True, timeout=10)
            if not os.path.ismount(mnt):
                break


@dataclass(frozen=True)
class Hub:
    """The mounted fake Hub: `mount` is the hubfs mountpoint, `export` the exported fixtures."""

    mount: Path
    export: Path
    endpoint: str

    def mount_repo(self, rel: str) -> Path:
        """`acme/m@rev` or `datasets/acme/d@rev` under the mount."""
        return self.mount / rel

    def export_repo(self, rel: str) -> Path:
        """The export dir of the same repo: models under `models/`, `@main` when no rev given."""
        parts = rel.split("/")
        if parts[0] not in ("datasets", "spaces"):
            parts.insert(0, "models")
        if "@" not in parts[2]:
            parts[2] += "@main"
        return self.export.joinpath(*parts)

    def __iter__(self):  # (mount path, export path)
        return iter((self.mount, self.export))


@pytest.fixture(scope="session")
def hub(tmp_path_factory) -> Hub:
    _check_fuse()
    hubfs_bin = _binary("HUBFS_BIN", "hubfs")
    fakehub_bin = _binary("FAKEHUB_BIN", "fakehub")

    base = tmp_path_factory.mktemp("hubfs")
    home = base / "home"
    home.mkdir()
    env = _clean_env(home)
    procs: list = []
    mounted_at: list = []
    try:
        # 1. The fake Hub.
        endpoint = _serve(fakehub_bin, [], base, env, procs)

        # 2. The source of truth.
        export = base / "export"
        r = subprocess.run(
            [str(fakehub_bin), "export", str(export)],
            env=env, capture_output=True, text=True, timeout=120,
        )
        if r.returncode != 0:
            pytest.fail(f"fakehub export failed ({r.returncode}):\n{r.stdout}\n{r.stderr}", pytrace=False)

        # 3. The mount.
        mnt = base / "mnt"
        mnt.mkdir()
        hubfs_log = base / "hubfs.log"
        mounted_at.append(mnt)
        mount = _mount(hubfs_bin, mnt, endpoint, [], hubfs_log, env)
        procs.append(mount)

        yield Hub(mount=mnt, export=export, endpoint=endpoint)

        # 4. Clean unmount on SIGTERM.
        _unmount_cleanly(mount, mnt, hubfs_log)
    finally:
        _last_resort(procs, mounted_at)


class FakeHubProcess:
    """A running `fakehub serve`: its Hub endpoint and its request log (the admin endpoints)."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint

    def requests(self) -> list[dict]:
        """The request log (`GET /_fakehub/requests`): one dict per request, in arrival order."""
        with urllib.request.urlopen(f"{self.endpoint}/_fakehub/requests", timeout=30) as r:
            return json.load(r)

    def clear_requests(self) -> None:
        """Empties the request log (`POST /_fakehub/requests/clear`)."""
        req = urllib.request.Request(f"{self.endpoint}/_fakehub/requests/clear", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()

    def settled_requests(self, timeout: float = 60.0) -> list[dict]:
        """The log once no request is in flight (read-ahead started by a read that returned keeps
        going; its bytes count too)."""
        deadline = time.monotonic() + timeout
        while True:
            recs = self.requests()
            if all(r["end"] is not None for r in recs):
                return recs
            if time.monotonic() > deadline:
                pytest.fail(f"requests still in flight after {timeout}s", pytrace=False)
            time.sleep(0.1)


@pytest.fixture(scope="module")
def serve_fakehub(tmp_path_factory):
    """A factory: `serve_fakehub(*args)` starts `fakehub serve ARGS` (the standard fixtures plus
    whatever ARGS add) and returns a FakeHubProcess. Every server is stopped after the module."""
    fakehub_bin = _binary("FAKEHUB_BIN", "fakehub")
    procs: list = []

    def start(*args: str) -> FakeHubProcess:
        base = tmp_path_factory.mktemp("fakehub")
        home = base / "home"
        home.mkdir()
        return FakeHubProcess(_serve(fakehub_bin, list(args), base, _clean_env(home), procs))

    try:
        yield start
    finally:
        _last_resort(procs, [])


@pytest.fixture
def mount_hubfs(tmp_path_factory):
    """A factory: `mount_hubfs(endpoint, *args)` mounts hubfs over `endpoint` with extra mount
    ARGS (e.g. `--cache-size 256MiB`) and returns the mountpoint. Each mount must unmount cleanly
    on SIGTERM at the end of the test. Needs root and /dev/fuse (fails without them; skipped with
    HUBFS_ALLOW_SKIP=1 outside CI)."""
    _check_fuse()
    hubfs_bin = _binary("HUBFS_BIN", "hubfs")
    procs: list = []
    mounted: list = []

    def mount(endpoint: str, *args: str) -> Path:
        base = tmp_path_factory.mktemp("hubfs")
        home = base / "home"
        home.mkdir()
        mnt = base / "mnt"
        mnt.mkdir()
        log = base / "hubfs.log"
        mounted.append((mnt, log))
        procs.append(_mount(hubfs_bin, mnt, endpoint, list(args), log, _clean_env(home)))
        return mnt

    try:
        yield mount
        for p, (mnt, log) in zip(procs, mounted):
            _unmount_cleanly(p, mnt, log)
    finally:
        _last_resort(procs, [m for m, _ in mounted])


# ---------------------------------------------------------------- mount shapes

#: The shapes a repo can be mounted in: under a whole-Hub mount, as a one-repo mount
#: (`hubfs mount --repo`), or as a subfolder mount (`--repo ... --subfolder`).
MOUNT_SHAPES = ("whole-hub", "one-repo", "subfolder")


def _subfolder_of(rel: str) -> str:
    """Where a copy of the repo `rel` (`acme/m@rev`, `datasets/acme/d`) lives in the nest repo."""
    return "shapes/" + rel.replace("/", "__").replace("@", "_at_").replace("%", "_")


class ShapedHub:
    """The same `mount_repo` / `export_repo` as `Hub`, but each repo is its own mount: a one-repo
    mount of it (`hubfs mount --repo REL`), or a subfolder mount of its copy in the nest repo
    (`hubfs mount --repo acme/nest --subfolder shapes/...`). Each mount is made by the
    daemonizing `hubfs mount` (it returns 0 once the mount answers) and ended by `hubfs unmount`;
    at most `keep` stay mounted at once (the oldest is unmounted first)."""

    def __init__(self, shape: str, base: Hub, hubfs_bin: Path, endpoint: str, tmp_factory, keep: int = 4):
        self.shape, self.base, self.bin, self.endpoint = shape, base, hubfs_bin, endpoint
        self.tmp_factory, self.keep = tmp_factory, keep
        self.mounts: dict[str, Path] = {}

    def export_repo(self, rel: str) -> Path:
        return self.base.export_repo(rel)

    def _run(self, args: list[str], log: Path) -> subprocess.CompletedProcess:
        home = log.parent / "home"
        home.mkdir(exist_ok=True)
        return subprocess.run(
            [str(self.bin), *args], env=_clean_env(home), capture_output=True, text=True, timeout=120,
        )

    def _unmount(self, rel: str) -> None:
        mnt = self.mounts.pop(rel)
        r = self._run(["unmount", str(mnt)], mnt.parent / "hubfs.log")
        assert r.returncode == 0, f"hubfs unmount {mnt} failed:\n{r.stderr}\nlog: {_tail(mnt.parent / 'hubfs.log')}"
        assert not os.path.ismount(mnt), f"{mnt} still mounted after hubfs unmount"

    def mount_repo(self, rel: str) -> Path:
        if rel in self.mounts:
            return self.mounts[rel]
        while len(self.mounts) >= self.keep:
            self._unmount(next(iter(self.mounts)))
        base = self.tmp_factory.mktemp("shape")
        mnt = base / "mnt"
        mnt.mkdir()
        log = base / "hubfs.log"
        if self.shape == "one-repo":
            root = ["--repo", rel]
        else:
            root = ["--repo", "acme/nest", "--subfolder", _subfolder_of(rel)]
        r = self._run(
            ["mount", str(mnt), "--endpoint", self.endpoint, "--cache-size", "32MiB", *root,
             "--log-file", str(log)],
            log,
        )
        if r.returncode != 0 or not os.path.ismount(mnt):
            pytest.fail(
                f"hubfs mount {' '.join(root)} failed ({r.returncode}):\n{r.stderr}\nlog: {_tail(log)}",
                pytrace=False,
            )
        self.mounts[rel] = mnt
        return mnt

    def close(self) -> None:
        for rel in list(self.mounts):
            self._unmount(rel)


@pytest.fixture(scope="module")
def shaped_hub(hub, serve_fakehub, tmp_path_factory):
    """A factory: `shaped_hub(shape, rels)` gives a `Hub`-like object whose `mount_repo(rel)` is
    `rel` mounted in `shape` (one of MOUNT_SHAPES; `whole-hub` is the session's `hub`). For
    `subfolder`, the repos in `rels` are copied from the export into one folder served as the
    model repo `acme/nest` by a second fake Hub. Every mount is unmounted after the module."""
    hubfs_bin = _binary("HUBFS_BIN", "hubfs")
    made: list[ShapedHub] = []

    def make(shape: str, rels: list[str]):
        if shape == "whole-hub":
            return hub
        if shape == "one-repo":
            s = ShapedHub(shape, hub, hubfs_bin, hub.endpoint, tmp_path_factory)
        else:
            nest = tmp_path_factory.mktemp("nest")
            for rel in rels:
                shutil.copytree(hub.export_repo(rel), nest / _subfolder_of(rel))
            server = serve_fakehub("--folder", str(nest), "--repo", "acme/nest")
            s = ShapedHub(shape, hub, hubfs_bin, server.endpoint, tmp_path_factory)
        made.append(s)
        return s

    try:
        yield make
    finally:
        for s in made:
            try:
                s.close()
            finally:
                _last_resort([], list(s.mounts.values()))
