"""Cluster memberships for the tests of leases, ownership and fencing: a short lease, so a node
that stops renewing is lost within a fraction of a second."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from routilux.bus import EventBus
from routilux.cluster.nodes import ClusterMembership
from routilux.store.redis import RedisStore

LEASE = 0.3


def member(client: aioredis.Redis, store: RedisStore, prefix: str, node: str, **options: Any) -> ClusterMembership:
    """Node ``node`` of the cluster under ``prefix``, on its own bus, with the short :data:`LEASE`."""
    return ClusterMembership(client, store, EventBus(), node_id=node, prefix=prefix, lease_seconds=LEASE, **options)
