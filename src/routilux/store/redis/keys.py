"""Every Redis name Routilux uses — the shared store's keys, the cluster's keys and channels —
in one place, so a key is spelled once and its readers and writers cannot drift apart.

All of them start with a prefix (``"routilux"`` by default; ``p`` below). The Lua scripts build
per-job names in Redis from the same suffixes (:data:`LUA_SUFFIXES`, see
:mod:`routilux.store.redis.scripts`).

The shared store (:class:`~routilux.store.redis.store.RedisStore`)
    ==============================  ======  ==================================================
    key                             type    holds
    ==============================  ======  ==================================================
    ``p:flows``                     hash    flow_id → FlowRecord (msgspec JSON)
    ``p:flow_revisions``            hash    flow_id → its revision (decimal)
    ``p:runtimes``                  hash    runtime_id → RuntimeRecord (JSON)
    ``p:write_probe``               string  written by ``probe_writes`` (health) to see writes work
    ``p:job_records``               hash    job_id → JobRecord (JSON) *without* its ``state``
    ``p:job_states``                hash    job_id → the record's ``state`` (JSON)
    ``p:job_indexes``               hash    job_id → JSON ``[flow_id, status, runtime_id,
                                            -created_us, created_us, ended_us or ""]``: the
                                            index entries the job has now
    ``p:idx:all``                   zset    every job_id, score ``-created_us``
    ``p:idx:flow:<flow_id>``        zset    the jobs of one flow, same score
    ``p:idx:status:<status>``       zset    the jobs in one status, same score
    ``p:idx:runtime:<runtime_id>``  zset    the jobs of one runtime, same score
    ``p:idx:finished``              zset    terminal jobs, score ``ended_us`` (completed_at,
                                            else created_at)
    ``p:idx:active``                zset    non-terminal jobs, score ``created_us``
    ``p:idx:scratch``               zset    list_jobs' intersection, created and deleted inside
                                            one script (never visible)
    ``p:job:<job_id>``              stream  the job's events: id ``<seq>-0``, fields
                                            ``node``, ``event`` (the event's JSON)
    ``p:jobs``                      stream  ``job_start`` announcements: ``job_id``,
                                            ``flow_id``, ``node`` (``MAXLEN ~ 100000``)
    ``p:metrics``                   hash    job_id → the metrics blob of a finished job
    ``p:metrics:order``             zset    job_id, score = when it was stored (a counter)
    ``p:metrics:counter``           string  that counter (INCR)
    ``p:checkpoints``               hash    job_id → CheckpointRecord (msgspec JSON): a live
                                            job's last checkpoint
    ``p:posts:<job_id>``            hash    the job's post number (decimal) → the post's data
    ==============================  ======  ==================================================

A job's checkpoint and posts go when its record turns terminal (in the upsert script that moves
it to ``p:idx:finished``) and with the job (``delete_jobs``, ``prune_jobs``); writing either for
a job in ``p:idx:finished`` is refused by the writing script (see
:mod:`routilux.store.redis.scripts`).

The cluster (:mod:`routilux.cluster`)
    ==============================  ======  ==================================================
    ``p:nodes``                     hash    node id → NodeInfo (JSON): the nodes that joined
    ``p:lease:<node>``              string  a node's lease (expires unless renewed)
    ``p:owners``                    hash    job_id → Owner (JSON): which node runs the job
    ``p:node-jobs:<node>``          set     the jobs a node owns (for the reaper)
    ``p:reaping:<node>``            string  the lock of the one node reaping a dead node
    ``p:answer:<request id>``       string  a large answer to a forwarded request (short TTL)
    ``p:node:<node>``               pubsub  a node's own channel (requests, answers)
    ``p:changes``                   pubsub  change notices for every node
    ``routilux-ratelimit…``         (limits) shared rate-limit counters (their own prefix)
    ==============================  ======  ==================================================
"""

from __future__ import annotations

from typing import Final

import msgspec

from routilux.store.base import JobQuery

DEFAULT_PREFIX: Final = "routilux"


def fence_token(node_id: str) -> str:
    """How the owner entry (``p:owners``) of a job ``node_id`` runs starts: the store's write
    scripts compare it to fence off a node that no longer owns a job (``Owner`` in
    :mod:`routilux.cluster.nodes` puts ``node`` first for this)."""
    return '{"node":' + msgspec.json.encode(node_id).decode() + ","
#: The key prefix of the shared rate limits (``limits``' ``RedisStorage(key_prefix=...)``).
RATE_LIMIT_PREFIX: Final = "routilux-ratelimit"

#: The suffixes of the names the store's Lua scripts build from the prefix (the Lua table ``K``).
LUA_SUFFIXES: Final[dict[str, str]] = {
    "job_records": ":job_records",
    "job_states": ":job_states",
    "job_indexes": ":job_indexes",
    "idx_all": ":idx:all",
    "idx_flow": ":idx:flow:",
    "idx_status": ":idx:status:",
    "idx_runtime": ":idx:runtime:",
    "idx_finished": ":idx:finished",
    "idx_active": ":idx:active",
    "job": ":job:",
    "metrics": ":metrics",
    "metrics_order": ":metrics:order",
    "checkpoints": ":checkpoints",
    "posts": ":posts:",
    "owners": ":owners",
}
_S = LUA_SUFFIXES


class Keys:
    """Every Redis name under one ``prefix`` (see the module docstring)."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not prefix:
            raise ValueError("Redis keys need a non-empty prefix")
        self.prefix = prefix
        # -- the store --
        self.flows = f"{prefix}:flows"
        self.flow_revisions = f"{prefix}:flow_revisions"
        self.flow_keys = (self.flows, self.flow_revisions)
        self.runtimes = f"{prefix}:runtimes"
        self.write_probe = f"{prefix}:write_probe"
        self.records = prefix + _S["job_records"]
        self.states = prefix + _S["job_states"]
        self.job_indexes = prefix + _S["job_indexes"]
        self.all = prefix + _S["idx_all"]
        self.finished = prefix + _S["idx_finished"]
        self.active = prefix + _S["idx_active"]
        self.scratch = f"{prefix}:idx:scratch"
        self.announcements = f"{prefix}:jobs"
        self.metrics = prefix + _S["metrics"]
        self.metrics_keys = (self.metrics, prefix + _S["metrics_order"], f"{prefix}:metrics:counter")
        self.checkpoints = prefix + _S["checkpoints"]
        self._posts_head = prefix + _S["posts"]
        # -- the cluster --
        self.nodes = f"{prefix}:nodes"
        self.owners = prefix + _S["owners"]
        self.changes = f"{prefix}:changes"
        self._stream_head = prefix + _S["job"]

    def stream(self, job_id: str) -> str:
        """A job's event stream."""
        return self._stream_head + job_id

    def posts(self, job_id: str) -> str:
        """A job's posts."""
        return self._posts_head + job_id

    def job_of_stream(self, key: str) -> str:
        """The job whose event stream is ``key`` (the inverse of :meth:`stream`)."""
        return key[len(self._stream_head):]

    def indexes(self, query: JobQuery) -> list[str]:
        """The index keys a query reads: one per filter, or every job."""
        keys = [
            f"{self.prefix}{_S[name]}{value}"
            for name, value in (("idx_flow", query.flow_id), ("idx_status", query.status),
                                ("idx_runtime", query.runtime_id))
            if value is not None
        ]
        return keys or [self.all]

    def lease(self, node: str) -> str:
        return f"{self.prefix}:lease:{node}"

    def node_jobs(self, node: str) -> str:
        return f"{self.prefix}:node-jobs:{node}"

    def reaping(self, node: str) -> str:
        return f"{self.prefix}:reaping:{node}"

    def node_channel(self, node: str) -> str:
        return f"{self.prefix}:node:{node}"

    def answer(self, request_id: str) -> str:
        return f"{self.prefix}:answer:{request_id}"
