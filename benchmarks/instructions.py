"""Instructions per checkout+return on the hot path, counted by callgrind.

Timings on a shared 2-core machine drift by tens of percent from run to run; the number of
instructions the interpreter executes for one checkout and return does not. Each case runs a
loop of checkouts of an in-memory client twice under ``valgrind --tool=callgrind`` (with
``N`` and ``2N`` iterations) and reports the difference divided by ``N``, which cancels the
interpreter's start-up and the pool's construction::

    python -m benchmarks.instructions [--n 2000] [--case sync_acquire ...] [--root CHECKOUT]

Needs ``valgrind`` (Debian package ``valgrind``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_SETUP = """
import asyncio, sys
sys.path.insert(0, {root!r})
from pooled_clients.backends.base import ClientBackend
from pooled_clients.pool import Pool, PoolSettings

class Client:
    pass

class Backend(ClientBackend[Client]):
    def create(self) -> Client:
        return Client()

pool = Pool("bench", Backend("bench", {{}}), PoolSettings(min_size=0, max_size=4))
pool.release(pool.acquire())
n = {n}

from pooled_clients.aio import AsyncClientBackend, AsyncPool

class AsyncBackend(AsyncClientBackend[Client]):
    async def create(self) -> Client:
        return Client()

apool = AsyncPool("abench", AsyncBackend("abench", {{}}), PoolSettings(min_size=0, max_size=4))
"""

#: name -> the loop body run ``n`` times (after ``_SETUP``).
CASES: dict[str, str] = {
    "sync_acquire": """
acquire, release = pool.acquire, pool.release
for _ in range(n):
    release(acquire())
""",
    "sync_connection": """
connection = pool.connection
for _ in range(n):
    with connection():
        pass
""",
    "async_acquire": """
async def main():
    aacquire, arelease = pool.aacquire, pool.arelease
    for _ in range(n):
        await arelease(await aacquire())
asyncio.run(main())
""",
    "asyncpool_acquire": """
async def main():
    aacquire, arelease = apool.aacquire, apool.arelease
    await arelease(await aacquire())
    for _ in range(n):
        await arelease(await aacquire())
asyncio.run(main())
""",
    "asyncpool_connection": """
async def main():
    aconnection = apool.aconnection
    async with aconnection():
        pass
    for _ in range(n):
        async with aconnection():
            pass
asyncio.run(main())
""",
    "async_connection": """
async def main():
    aconnection = pool.aconnection
    for _ in range(n):
        async with aconnection():
            pass
asyncio.run(main())
""",
}


def _count(body: str, n: int, workdir: Path, root: Path = ROOT) -> int:
    script = workdir / "loop.py"
    script.write_text(_SETUP.format(root=str(root), n=n) + body)
    out = workdir / "callgrind.out"
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
         str(script)],
        check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    summary = re.search(r"^(?:summary|totals):\s+(\d+)", out.read_text(), re.MULTILINE)
    if summary is None:
        raise RuntimeError("callgrind wrote no totals")
    return int(summary.group(1))


def measure(case: str, n: int, root: Path = ROOT) -> float:
    """Instructions per iteration of ``case``, with pooled_clients imported from ``root``."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        once = _count(CASES[case], n, workdir, root)
        twice = _count(CASES[case], 2 * n, workdir, root)
    return (twice - once) / n


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--case", action="append", choices=sorted(CASES))
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="the checkout to import pooled_clients from (another revision)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    for case in args.case or list(CASES):
        print(f"{case:20s} {measure(case, args.n, args.root):10.0f} instructions per "
              "checkout+return", flush=True)


if __name__ == "__main__":
    main()
