"""``scripts/bootstrap`` waits for another apt/dpkg run to release its locks, then goes on.

Bootstrap runs from a copy of the script in a scratch tree whose ``.venv`` is already in
place, with ``BOOTSTRAP_DRY_RUN=1`` (apt-get commands are printed, not run) and a ``PATH`` on
which ``wrk`` cannot be found, so it has a package to install and reaches apt-get.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
MISSING = "wrk"
HeldLock = tuple[Path, "Callable[[], None]"]

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(os.geteuid() != 0, reason="bootstrap installs system packages as root only"),
]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A checkout reduced to what bootstrap reads, with its virtualenv up to date."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(REPO_ROOT / "scripts" / "bootstrap", root / "scripts" / "bootstrap")
    pyproject = (REPO_ROOT / "pyproject.toml").read_bytes()
    (root / "pyproject.toml").write_bytes(pyproject)
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / ".venv" / "bin" / "python").symlink_to(sys.executable)
    (root / ".venv" / f".installed-{hashlib.sha256(pyproject).hexdigest()}").touch()
    return root


@pytest.fixture
def path_without_missing(tmp_path: Path) -> str:
    """``PATH`` with every directory holding ``wrk`` replaced by a copy without it."""
    dirs = []
    for number, entry in enumerate(os.environ["PATH"].split(os.pathsep)):
        source = Path(entry)
        if not (source / MISSING).exists():
            dirs.append(entry)
            continue
        farm = tmp_path / f"path{number}"
        farm.mkdir()
        for item in source.iterdir():
            if item.name != MISSING:
                (farm / item.name).symlink_to(item)
        dirs.append(str(farm))
    return os.pathsep.join(dirs)


def _lock_flock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _lock_fcntl(fd: int) -> None:
    # The kind of lock apt and dpkg take.
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


@pytest.fixture
def held_lock(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[HeldLock]:
    """A lock file locked by this process, and the function that releases it."""
    take: Callable[[int], None] = request.param
    lock = tmp_path / "lock-frontend"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o640)
    take(fd)
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            os.close(fd)
            released = True

    try:
        yield lock, release
    finally:
        release()


def _start(tree: Path, path: str, locks: list[Path], timeout: int) -> subprocess.Popen[str]:
    env = dict(os.environ, PATH=path, BOOTSTRAP_DRY_RUN="1",
               BOOTSTRAP_APT_LOCKS=" ".join(map(str, locks)),
               BOOTSTRAP_APT_LOCK_TIMEOUT=str(timeout))
    return subprocess.Popen([str(tree / "scripts" / "bootstrap")], cwd=tree, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _read_until(stream: IO[str], needle: str, seen: list[str]) -> str:
    """Read lines until one contains ``needle`` (the test's timeout bounds the wait)."""
    for line in stream:
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"bootstrap ended without printing {needle!r}:\n{''.join(seen)}")


LOCKS = [pytest.param(_lock_flock, id="flock"), pytest.param(_lock_fcntl, id="fcntl")]


@pytest.mark.parametrize("held_lock", LOCKS, indirect=True)
def test_bootstrap_waits_for_a_held_apt_lock_and_proceeds_when_released(
        tree: Path, path_without_missing: str, tmp_path: Path,
        held_lock: HeldLock) -> None:
    lock, release = held_lock
    free_lock = tmp_path / "lists-lock"
    free_lock.touch()
    proc = _start(tree, path_without_missing, [free_lock, lock], timeout=60)
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        waiting = _read_until(proc.stdout, "waiting for another apt/dpkg run", seen)
        assert str(lock) in waiting and f"pid {os.getpid()}" in waiting, waiting
        # Held lock: it must still be waiting (it re-checks every second), not installing.
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=2.5)
        release()
        _read_until(proc.stdout, "locks released", seen)
        _read_until(proc.stdout, "dry run: apt-get update", seen)
        install = _read_until(proc.stdout, "dry run: apt-get install", seen)
        assert MISSING in install, install
        assert proc.wait(timeout=30) == 0, "".join(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Nothing was printed as installed before the lock was released.
    before_release = "".join(seen[:seen.index(waiting) + 1])
    assert "dry run" not in before_release


@pytest.mark.parametrize("held_lock", [LOCKS[0]], indirect=True)
def test_bootstrap_gives_up_waiting_after_the_bound_and_tries_anyway(
        tree: Path, path_without_missing: str,
        held_lock: HeldLock) -> None:
    lock, _release = held_lock
    result = subprocess.run([str(tree / "scripts" / "bootstrap")], cwd=tree, timeout=40,
                            env=dict(os.environ, PATH=path_without_missing, BOOTSTRAP_DRY_RUN="1",
                                     BOOTSTRAP_APT_LOCKS=str(lock), BOOTSTRAP_APT_LOCK_TIMEOUT="1"),
                            stdin=subprocess.DEVNULL, capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"{lock} is still locked after 1s; trying anyway" in output
    install = [line for line in output.splitlines() if "dry run: apt-get install" in line]
    assert install and MISSING in install[0].split(), output
