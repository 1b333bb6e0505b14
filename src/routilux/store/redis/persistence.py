"""Whether the Redis a cluster stores everything in keeps it across a restart.

In a cluster Redis *is* the store: flows, job records, checkpoints, acknowledged posts and every
job's events. A Redis with neither AOF nor RDB snapshots forgets all of it when it restarts, and a
2xx the servers sent (a job started, a post accepted) is then a promise nobody keeps. Nothing in
the servers can make Redis durable, so at start-up each cluster server looks (``CONFIG GET``) and
says so in its log when Redis would lose acknowledged writes:

- ``appendonly yes`` with ``appendfsync always`` or ``everysec``: durable (``everysec`` loses at
  most about a second of writes if the *machine* crashes; a Redis process crash loses nothing).
  Nothing is logged.
- ``appendonly yes`` with ``appendfsync no``: the kernel decides when to write; a machine crash
  can lose ~30 s. Warned.
- RDB snapshots only (``save`` set, no AOF): everything since the last snapshot is lost on any
  Redis restart. Warned.
- neither: a Redis restart loses everything. Warned.
- ``CONFIG`` refused (renamed or disabled, as managed Redis services often do, or an ACL without
  ``+config``): it could not check, and says so.

A warning, not a refusal: a test or a throw-away cluster may run on a cache-only Redis on purpose.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

import redis.asyncio as aioredis
import redis.exceptions

log = logging.getLogger("routilux.store.redis")

#: AOF fsync policies that keep acknowledged writes across a Redis restart and (within a second
#: for ``everysec``) a machine crash.
DURABLE_FSYNC: Final = frozenset({"always", "everysec"})


@dataclass(frozen=True)
class Persistence:
    """What ``CONFIG GET`` said of Redis' persistence (``None``: not known)."""

    appendonly: bool | None
    appendfsync: str | None
    save: str | None
    refused: str | None = None  # why CONFIG GET could not be used

    @property
    def problem(self) -> str | None:
        """Why acknowledged writes may not survive a Redis restart, or None when they do."""
        if self.refused is not None:
            return (f"could not check whether Redis persists its data (CONFIG GET refused: {self.refused}); "
                    "make sure it runs with AOF (appendonly yes, appendfsync everysec or always), or "
                    "a Redis restart loses acknowledged jobs and posts")
        if self.appendonly:
            if self.appendfsync in DURABLE_FSYNC:
                return None
            return (f"Redis runs with AOF but appendfsync {self.appendfsync}: a machine crash can lose "
                    "acknowledged jobs and posts; use appendfsync everysec (or always)")
        if self.save:
            return (f"Redis has no AOF, only RDB snapshots (save {self.save!r}): a Redis restart loses "
                    "every acknowledged job and post since the last snapshot; run it with appendonly yes "
                    "(see deploy/redis.conf)")
        return ("Redis has no persistence (appendonly no, no save points): a Redis restart loses every "
                "flow, job and acknowledged post; run it with appendonly yes (see deploy/redis.conf)")


async def read_persistence(client: aioredis.Redis) -> Persistence:
    """Redis' persistence settings, from ``CONFIG GET`` (one parameter per call: Redis 6 takes
    one pattern). A refusal is recorded in ``refused``; a lost connection raises."""
    values: dict[str, str] = {}
    try:
        for name in ("appendonly", "appendfsync", "save"):
            found = await client.config_get(name)
            if name in found:
                values[name] = str(found[name])
    except redis.exceptions.ResponseError as exc:  # unknown or renamed command, ACL NOPERM
        return Persistence(None, None, None, refused=str(exc) or type(exc).__name__)
    appendonly = values.get("appendonly")
    return Persistence(
        appendonly=None if appendonly is None else appendonly.lower() == "yes",
        appendfsync=values.get("appendfsync"),
        save=values.get("save"),
    )


async def warn_without_persistence(client: aioredis.Redis, location: str) -> Persistence | None:
    """Log a warning when Redis at ``location`` would lose acknowledged writes on a restart (or
    when that cannot be checked); what was found, or None if Redis could not be asked at all."""
    try:
        found = await read_persistence(client)
    except (redis.exceptions.RedisError, OSError) as exc:
        log.warning("could not check whether Redis at %s persists its data: %s", location, exc)
        return None
    problem = found.problem
    if problem is not None:
        log.warning("%s (Redis at %s)", problem, location)
    return found
