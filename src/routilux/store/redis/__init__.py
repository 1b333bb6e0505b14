"""A store on Redis, shared by every server process of a cluster (``ROUTILUX_REDIS_URL``).

Several server processes (gunicorn workers, several machines) act as one server only if they
read and write one store: :class:`RedisStore` is the :class:`~routilux.store.base.Store` contract
on Redis, the one dependency a cluster already runs for its event streams and shared rate limits.
It passes the same contract suite as the memory and SQLite stores (``tests/store``).

Key layout: see :mod:`routilux.store.redis.keys`, where every key name is spelled.

Why this layout
    * **Flows and runtimes in one hash each**: they are few (tens to thousands), listed whole
      (HGETALL, one round trip, sorted here) and counted with HLEN. The revision sits in a hash
      of its own so the conditional write (``expected_revision``) is a Lua script that compares
      a short string instead of decoding whole flow documents: check and write are atomic for
      every process, with no WATCH retry loop.
    * **Job records in big hashes, not a key per job**: a page of ``list_jobs`` is then one
      HMGET on one key for all its ids, inside the same script that picks the ids, and a batch
      of upserts one variadic HSET. The ``state`` (routine states, history, shared data: most of
      a record's bytes) is a separate hash, so ``with_state=False`` neither transfers nor decodes
      it. A stored record is the record's JSON with an empty state (valid JSON, readable with
      redis-cli); the full record is that with the state spliced in before its last brace.
    * **Sorted sets as indexes, score ``-created_us``**: ZRANGE by rank gives newest first
      (created_at descending) and, among equal scores, Redis orders members by their bytes
      ascending — exactly the contract's tie-break (job_id ascending, which for UTF-8 is code
      point order, as in the other stores). Offset/limit are ranks: ``ZRANGE idx off
      off+limit-1`` costs O(log n + limit) however many jobs there are. Microseconds since 1970
      stay below 2**53 until the year 2255, so a double score is exact.
    * **One index per filter value**: a single filter reads its index directly; combined
      filters are intersected (ZINTERSTORE, AGGREGATE MAX: the scores are equal) into
      ``p:idx:scratch`` inside the listing's Lua script, which reads the total, the page and
      the records and deletes the scratch key before it returns. Being one script it is one
      round trip, a consistent snapshot (page and total agree), and the scratch key needs no
      unique name or expiry since no other command can run while it exists. Its cost is that of
      the smallest filter set, in C.
    * **``p:job_indexes``**: what a job is indexed under now, so an upsert that changes the
      status (or flow, runtime, dates) removes the old entries and adds the new ones in the same
      Lua script — atomically, and only when something changed (a running job's frequent state
      updates write two hash fields and compare one string). ``p:idx:finished`` orders finished
      jobs the way pruning deletes them (oldest end first, ties by job_id): ``prune_jobs`` is
      ZCARD/ZCOUNT plus a ZRANGE of what it deletes. ``p:idx:active`` lets ``mark_interrupted``
      read only the unfinished jobs.
    * **Events in one stream per job**, in exactly the format of
      :class:`~routilux.cluster.redis_events.RedisEventBridge` (which reads them): entry id
      ``<seq>-0``, so Redis refuses a duplicate or out-of-order append and "events after seq N"
      is ``XRANGE key (N+1)-0 +``; a ``job_start`` is also announced on ``p:jobs``, as the bridge
      did. The store is their only writer. Each batch trims a job's stream exactly (``XTRIM
      MINID max_seq - events_per_job + 1``), which keeps what the other stores keep (``seq >
      max_seq - events_per_job``); an approximate ``MAXLEN ~`` would keep an unpredictable
      extra. No TTL: a job's events go with the job (``delete_jobs``, ``prune_jobs``, i.e.
      retention), as in the other stores.
    * **A replayed event** (a seq already stored) is refused by XADD; that refusal is caught
      (``redis.pcall``) so it never spoils the batch, and the event then replaces the stored one,
      as the contract requires: the tail of the stream from that seq on is rewritten (XDEL,
      XSETID back, XADD) in the same script, so it costs no extra round trip. The count of
      replays is logged at DEBUG. Readers that already passed that seq are not sent it again.
    * **Scripts for the batches, not one command per record**: a batch is ONE pipeline of a
      few script calls (an upsert per ``JOBS_PER_SCRIPT`` jobs, an append per
      ``EVENTS_PER_SCRIPT`` events), and reads return one packed string per call (a JSON array
      of records, or ``<seq>:<length>:<payload>`` runs for events). Redis-py parses replies in
      Python, item by item, and packs every argument in Python: one reply per event (XADD,
      XRANGE) made the client ten times slower than the server. Inside a script, one variadic
      command per key (ZADD, HSET) instead of one per record keeps Redis's own cost low too.
    * **Metrics**: a hash for the blobs and a sorted set scored by a counter for "in the order
      they were stored" (a replaced blob takes a new, newest position, as in SQLite).

Writes
    Through the same :class:`~routilux.store.batch_writer.BatchWriter` as SQLite's:
    ``record_job``/``record_events`` only enqueue (coalesced: the latest record per job, one
    event per seq, at most the newest ``events_per_job`` per job, see
    :class:`~routilux.store.segments.EventsBySeq`); awaited operations (``put_*``, ``delete_*``,
    ``prune_jobs``, ``mark_interrupted``, ``flush``) queue behind them, so their order is kept.
    One writer task, owned by :meth:`RedisStore.open`/:meth:`RedisStore.close` (call both from
    the same task: ``async with store:``), writes each batch of up to ``batch_max`` records,
    with the awaited operations queued among them, as ONE pipeline of script calls (see above):
    a busy server pays one round trip for many jobs' records, starts and posts, not one each.
    Every call succeeds or is refused on its own (a refused operation fails alone); the few
    operations of several dependent steps (``mark_interrupted``, ``delete_jobs``) run alone.
    Pending events are bounded by
    ``max_pending_events``: beyond it ``record_events`` raises
    :class:`~routilux.store.errors.StoreOverloaded` and ``wait_for_room`` waits for half.

Reads go straight to Redis (one round trip each: a MULTI/EXEC pair or a Lua script) and see what
has been written: after ``record_*``, ``await store.flush()`` before reading it back.

Errors: every Redis failure surfaces as :class:`~routilux.store.errors.StoreError` naming the
server (never its password). A failed batch fails its awaited operations and is reported in the
log (ERROR) and in :meth:`RedisStore.stats`, like SQLite's.

Limits: keys of one store span hash slots and the scripts build key names from the prefix, so
this needs a standalone Redis (or Sentinel/replication), not Redis Cluster. Event seqs start at 1
(Redis refuses the stream id ``0-0``). The client must not decode responses (``decode_responses``
stays False): payloads and metrics blobs are bytes.

Modules: :mod:`~routilux.store.redis.keys` (every key name), :mod:`~routilux.store.redis.connection`
(clients, URLs without passwords), :mod:`~routilux.store.redis.replies` (replies narrowed to
bytes), :mod:`~routilux.store.redis.scripts` (the Lua),
:mod:`~routilux.store.redis.records` (records as stored), :mod:`~routilux.store.redis.batches`
(a batch as script calls), :mod:`~routilux.store.redis.pipeline` (sending them) and
:mod:`~routilux.store.redis.store` (the class).
"""

from __future__ import annotations

from routilux.store.redis.keys import DEFAULT_PREFIX
from routilux.store.redis.store import RedisStore

__all__ = ["DEFAULT_PREFIX", "RedisStore"]
