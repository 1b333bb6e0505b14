"""One process per store: a second server on the same data refuses to start instead of giving
wrong answers.

The engine keeps live jobs in its process's memory; the store only records them. So a second
process serving from the same file (``gunicorn -w 4``, or a second server started by mistake)
would silently give wrong answers — and would mark the first one's running jobs as
interrupted while starting. :meth:`SQLiteStore.open` therefore takes an exclusive,
non-blocking ``flock`` on a sibling file, ``<db>.lock`` (next to the ``-wal`` and ``-shm``
files; the path is resolved first, so a symlink locks its target), before it touches the
database, and :meth:`SQLiteStore.close` releases it. A process that cannot take it gets
:class:`~routilux.store.errors.StoreInUseError`, naming the file, the holder's pid and what
to do. The lock is advisory and lives in the kernel: it goes with its process, however that
process dies, so a stale file never blocks a restart; the file itself is left in place (deleting
a lock file races with a process about to lock it). A separate file, not the database: on NFS
``flock`` is emulated with the same POSIX locks SQLite uses, and would collide with them.

``:memory:`` has no file to lock, and each process has its own database, so several workers
of one server would each answer from different data. A worker cannot see the worker count of
the server that started it, but it can see that it is a worker: gunicorn's arbiter puts
``SERVER_SOFTWARE=gunicorn/<version>`` in its environment before it forks workers, and
uvicorn (``--workers``, ``--reload``) and hypercorn start theirs with :mod:`multiprocessing`.
Such a process locks ``routilux-<uid>-memory-<parent pid>.lock`` in the temporary directory:
the first worker of a server gets it, a sibling is refused (a restarted worker replaces a
dead one, whose lock died with it). A plain process (``python -m routilux.api.main``, tests,
scripts) locks nothing, so independent in-memory servers started by one shell coexist.
When a worker is refused, gunicorn and uvicorn ``--workers`` both stop the whole server,
with the refusal in their log. Limits: a server that starts workers some other way is not
detected; and gunicorn's ``HUP`` reload starts the new worker while the old one still
finishes its requests and holds the store, so the new one is refused and gunicorn stops:
restart instead (``TERM``, wait, start).

Both stores use it: :class:`~routilux.store.sqlite.SQLiteStore` with its file's lock (or, for
``:memory:``, the per-server lock), :class:`~routilux.store.memory.MemoryStore` (``memory://``)
with the per-server lock, since its data too lives in one process.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import tempfile
from pathlib import Path
from typing import Final

from routilux.store.errors import StoreError, StoreInUseError

#: What the refusal tells an operator to do instead.
_ONE_WORKER: Final[str] = (
    "Run one server process per database: `gunicorn -w 1 -k routilux.api.worker.UvicornWorker "
    "routilux.api.main:app` (not -w 2 or more), or give each server its own ROUTILUX_DB; for several "
    "workers, run them as a cluster on Redis: set ROUTILUX_REDIS_URL (see the README)"
)


def _server_parent() -> int | None:
    """The pid of the server that started this process as one of its workers, else ``None``
    (see "One process per store" in the module docstring)."""
    if os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn/"):
        return os.getppid()
    if multiprocessing.parent_process() is not None:
        return os.getppid()
    return None


def _lock(path: Path) -> tuple[int | None, int | None]:
    """Take an exclusive ``flock`` on ``path`` without waiting: ``(descriptor, None)`` when taken
    (this process's pid is written into the file, for the next one's message), ``(None, pid of the
    holder or None)`` when another process holds it. ``OSError`` if the file cannot be opened."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        writable = True
    except PermissionError:  # someone else's lock file: locking needs no write access
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        writable = False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        return None, int(holder) if holder.isdigit() else None
    except BaseException:
        os.close(fd)
        raise
    if writable:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd, None


def _unlock(fd: int) -> None:
    # LOCK_UN first: a child forked meanwhile (without exec) shares the descriptor and must not
    # keep the store locked after this process let go of it.
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def claim_store(location: str, lock_path: Path | None) -> int | None:
    """Take the store's lock: ``lock_path`` for a store on a file; ``None`` for one that keeps its
    data in the process, which is locked per server only in a server's worker. Return the
    descriptor to hand to :func:`release_store` (``None``: nothing was locked); raise
    :class:`StoreInUseError` when another process holds it."""
    parent: int | None = None
    if lock_path is None:
        parent = _server_parent()
        if parent is None:
            return None
        lock_path = Path(tempfile.gettempdir()) / f"routilux-{os.getuid()}-memory-{parent}.lock"
    try:
        fd, holder = _lock(lock_path)
    except OSError as exc:
        message = f"cannot open the store at {location}: cannot open its lock file {lock_path}: {exc.strerror}"
        if not lock_path.parent.is_dir():
            message += f" (the directory {lock_path.parent} does not exist)"
        raise StoreError(message, location=location) from None
    if fd is not None:
        return fd
    by = f"process {holder}" if holder is not None else "another process"
    if parent is None:
        problem = (
            f"the store {location} is already in use by {by} (it holds {lock_path}): one "
            "SQLite store serves one process, because each process keeps its own live jobs, "
            "so a second one would silently give wrong answers"
        )
    else:
        problem = (
            f"ROUTILUX_DB={location} keeps its data inside one process, and this process is "
            f"a second worker started by process {parent} (the first is {by}): each worker "
            "would answer from its own, different data"
        )
    raise StoreInUseError(f"{problem}. {_ONE_WORKER}.", location=location, holder_pid=holder)


def release_store(fd: int) -> None:
    """Let go of a lock :func:`claim_store` took."""
    _unlock(fd)
