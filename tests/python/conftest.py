"""Fixtures of the Python loader tests: a fake Hub (`fakehub serve`), its exported fixtures
(`fakehub export`, the source of truth) and a real `hubfs mount` of the fake Hub.

Binaries: env HUBFS_BIN / FAKEHUB_BIN, else <repo>/target/debug/{hubfs,fakehub}
(`cargo build --workspace`). Needs root and /dev/fuse; without them the tests are skipped,
except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MOUNT_TIMEOUT_S = 20.0
SERVE_TIMEOUT_S = 20.0
EXIT_TIMEOUT_S = 15.0


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _unavailable(msg: str):
    """Skip locally; fail under CI, where a missing prerequisite must never pass silently."""
    if _in_ci():
        pytest.fail(f"{msg} (CI=true: failing instead of skipping)", pytrace=False)
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

    # 1. The fake Hub. stdout goes to a file (never a pipe that could fill up and block it).
    serve_out = base / "fakehub.out"
    serve_err = base / "fakehub.err"
    with open(serve_out, "wb") as out, open(serve_err, "wb") as err:
        serve = subprocess.Popen(
            [str(fakehub_bin), "serve"], stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env
        )
    procs = [serve]
    mounted_at: Path | None = None
    try:
        endpoint = None
        deadline = time.monotonic() + SERVE_TIMEOUT_S
        while endpoint is None:
            for line in serve_out.read_text(errors="replace").splitlines():
                if line.startswith("HUB "):
                    endpoint = line.split(None, 1)[1].strip()
            if endpoint:
                break
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
        with open(hubfs_log, "wb") as log:
            mount = subprocess.Popen(
                [str(hubfs_bin), "mount", str(mnt), "--endpoint", endpoint],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )
        procs.append(mount)
        mounted_at = mnt
        deadline = time.monotonic() + MOUNT_TIMEOUT_S
        while True:
            if mount.poll() is not None:
                pytest.fail(
                    f"hubfs mount exited with {mount.returncode} before the mount answered\n"
                    f"log: {_tail(hubfs_log)}",
                    pytrace=False,
                )
            try:
                if os.path.ismount(mnt) and os.path.isdir(mnt / "datasets"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the hubfs mount did not answer within {MOUNT_TIMEOUT_S}s\nlog: {_tail(hubfs_log)}",
                    pytrace=False,
                )
            time.sleep(0.05)

        yield Hub(mount=mnt, export=export, endpoint=endpoint)

        # 4. Clean unmount on SIGTERM: exit code 0 and the mountpoint is gone.
        rc = _stop(mount, EXIT_TIMEOUT_S)
        assert rc is not None, (
            f"hubfs did not exit within {EXIT_TIMEOUT_S}s of SIGTERM\nlog: {_tail(hubfs_log)}"
        )
        assert rc == 0, f"hubfs exited with {rc} after SIGTERM\nlog: {_tail(hubfs_log)}"
        assert not os.path.ismount(mnt), f"{mnt} is still a mount after hubfs exited\nlog: {_tail(hubfs_log)}"
        mounted_at = None
    finally:
        # Last resort (also after a failed assertion above): kill everything, lazy-unmount.
        for p in reversed(procs):
            if _stop(p, 5) is None:
                _kill(p)
        if mounted_at is not None and os.path.ismount(mounted_at):
            for cmd in (["fusermount3", "-u", "-z", str(mounted_at)], ["umount", "-l", str(mounted_at)]):
                if shutil.which(cmd[0]):
                    subprocess.run(cmd, capture_output=True, timeout=10)
                if not os.path.ismount(mounted_at):
                    break
