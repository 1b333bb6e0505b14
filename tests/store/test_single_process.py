"""One process per store: a SQLite store already served by one process refuses a second, with a
message that says which file, who holds it and what to do; the lock dies with its process.

Other processes are real child processes (``python -c``) holding a store open until told to
stop; every wait on them is bounded and every child is killed on the way out.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from routilux.store import SQLiteStore, StoreError
from routilux.store.errors import StoreInUseError
from tests.support.stores import held, job

#: A child that opens the store named by argv[1], says "open" (or the error's code and message)
#: and keeps it open until its stdin closes.
HOLDER = textwrap.dedent(
    """
    import sys, anyio
    from routilux.store import open_store
    from routilux.store.errors import StoreError

    async def main() -> None:
        try:
            async with open_store(sys.argv[1]) as store:
                print("open", flush=True)
                await anyio.to_thread.run_sync(sys.stdin.read)
        except StoreError as exc:
            print(exc.code, exc.message, flush=True)
            sys.exit(1)

    anyio.run(main)
    """
)


@contextmanager
def holder(location: str, **env: str) -> Iterator[subprocess.Popen[str]]:
    """A child process holding ``location`` open (its first line of output read already)."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, location],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env},
    )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(10)
        for stream in (child.stdin, child.stdout):
            assert stream is not None
            stream.close()


def first_line(child: subprocess.Popen[str], timeout: float = 15.0) -> str:
    """The child's first line of output ("" if it exited silently), waiting at most ``timeout``."""
    assert child.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise AssertionError(f"no output from the child within {timeout}s")
    return child.stdout.readline().strip()


async def test_a_second_open_of_one_file_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    async with held(SQLiteStore(path)) as first:
        with pytest.raises(StoreInUseError) as refused:
            async with held(SQLiteStore(path)):
                pass
        message = str(refused.value)
        assert str(path) in message and f"{path}.lock" in message
        assert f"process {os.getpid()}" in message
        assert "gunicorn -w 1 -k routilux.api.worker.UvicornWorker" in message
        assert refused.value.to_dict() | {"message": ""} == {
            "error": "store_in_use", "message": "", "location": str(path), "holder_pid": os.getpid()
        }
        await first.put_job(job("still-mine"))  # the first store is untouched by the refusal
    async with held(SQLiteStore(path)) as again:
        assert await again.get_job("still-mine") is not None


async def test_another_name_for_the_same_file_is_refused_too(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    real = tmp_path / "data" / "r.db"
    (tmp_path / "alias.db").symlink_to(real)
    async with held(SQLiteStore(real)):
        with pytest.raises(StoreInUseError):
            async with held(SQLiteStore(tmp_path / "alias.db")):
                pass
        with pytest.raises(StoreInUseError):
            async with held(SQLiteStore(tmp_path / "data" / ".." / "data" / "r.db")):
                pass


async def test_a_store_held_by_another_process_names_that_process(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with holder(str(path)) as child:
        assert first_line(child) == "open"
        with pytest.raises(StoreInUseError, match=f"in use by process {child.pid} "):
            async with held(SQLiteStore(path)):
                pass


async def test_the_lock_dies_with_its_process_however_it_dies(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with holder(str(path)) as child:
        assert first_line(child) == "open"
        child.kill()  # SIGKILL: no close, no clean-up; the lock file stays behind
        child.wait(10)
    assert Path(f"{path}.lock").exists()
    async with held(SQLiteStore(path)) as store:
        await store.put_job(job("after-the-crash"))


async def test_a_refused_store_leaves_the_database_alone(tmp_path: Path) -> None:
    """The lock is taken before the schema is created or migrated: a refused process writes
    nothing (a server would otherwise also mark the other's running jobs interrupted)."""
    path = tmp_path / "r.db"
    with holder(str(path)) as child:
        assert first_line(child) == "open"
        before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
        with pytest.raises(StoreInUseError):
            async with held(SQLiteStore(path)):
                pass
        assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


async def test_a_missing_directory_is_still_a_clear_error_not_a_lock_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "r.db"
    with pytest.raises(StoreError, match="does not exist") as caught:
        async with held(SQLiteStore(path)):
            pass
    assert not isinstance(caught.value, StoreInUseError)


# -- :memory: ----------------------------------------------------------------------------------
async def test_in_memory_stores_of_plain_processes_do_not_lock() -> None:
    """Two in-memory stores in one process, and in a child of this process, all coexist:
    independent servers started from one shell each have their own data, which is fine."""
    async with held(SQLiteStore(":memory:")), held(SQLiteStore(":memory:")):
        with holder(":memory:") as child:
            assert first_line(child) == "open"


@pytest.mark.parametrize("location", [":memory:", "memory://"], ids=["sqlite in memory", "memory store"])
def test_in_memory_stores_of_two_workers_of_one_server_refuse_the_second(location: str) -> None:
    """Children that look like gunicorn workers (gunicorn's arbiter sets ``SERVER_SOFTWARE``
    before forking them), started by one parent — this test — share one lock: the first opens,
    the second is refused, with a message saying why; once the first is gone a new one opens."""
    gunicorn = {"SERVER_SOFTWARE": "gunicorn/27.0.1"}
    with holder(location, **gunicorn) as first:
        assert first_line(first) == "open"
        with holder(location, **gunicorn) as second:
            line = first_line(second)
            assert second.wait(10) == 1
        assert line.startswith(f"store_in_use ROUTILUX_DB={location} keeps its data inside one process"), line
        assert f"the first is process {first.pid}" in line
        assert "gunicorn -w 1" in line
    with holder(location, **gunicorn) as replacement:  # a restarted worker replaces a dead one
        assert first_line(replacement) == "open"
    memory_lock_of(os.getpid()).unlink()  # it was there; and /tmp is not ours to litter


def memory_lock_of(parent: int) -> Path:
    """Where the workers of server ``parent`` lock an in-memory store (routilux.store.single_process)."""
    return Path(tempfile.gettempdir()) / f"routilux-{os.getuid()}-memory-{parent}.lock"
