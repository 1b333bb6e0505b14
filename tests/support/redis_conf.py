"""A real ``redis-server`` run from a config file and/or extra options: ``deploy/redis.conf`` in the
rolling-deploy test, persistence variants in the start-up warning's test.

A subclass of :class:`tests.support.redis_server.RedisServer` (same port, URL, ``ping``, ``stop``),
only starting differently: the config file first (redis-server's rule), then the test machine's
port, address and directory, then ``options`` — later arguments override earlier ones.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.redis_server import RedisServer


class ConfiguredRedisServer(RedisServer):
    """``redis-server [conf] --port P --bind 127.0.0.1 --dir D [options]``. Without ``conf``,
    Redis' defaults (RDB snapshots, no AOF) apply, unless ``options`` change them."""

    def __init__(self, workdir: Path, *, conf: Path | None = None, options: tuple[str, ...] = ()) -> None:
        super().__init__(workdir)
        self.conf = conf
        self.options = options

    def arguments(self) -> list[str]:
        config = [str(self.conf)] if self.conf is not None else []
        return [*config, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir), *self.options]
