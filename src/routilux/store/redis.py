"""A store on Redis, shared by every server process of a cluster (``ROUTILUX_REDIS_URL``).

Several server processes (gunicorn workers, several machines) act as one server only if they
read and write one store: :class:`RedisStore` is the :class:`~routilux.store.base.Store` contract
on Redis, the one dependency a cluster already runs for its event streams and shared rate limits.
It passes the same contract suite as the memory and SQLite stores (``tests/store``).

Key layout (``p`` is ``prefix``, ``"routilux"`` by default)
    ==============================  ======  ==================================================
    key                             type    holds
    ==============================  ======  ==================================================
    ``p:flows``                     hash    flow_id → FlowRecord (msgspec JSON)
    ``p:flow_revisions``            hash    flow_id → its revision (decimal)
    ``p:runtimes``                  hash    runtime_id → RuntimeRecord (JSON)
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
    ==============================  ======  ==================================================

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
    As in :class:`~routilux.store.sqlite.SQLiteStore`: ``record_job``/``record_events`` only
    enqueue (coalesced: the latest record per job, one event per seq, at most the newest
    ``events_per_job`` per job); awaited operations (``put_*``, ``delete_*``, ``prune_jobs``,
    ``mark_interrupted``, ``flush``) queue behind them, so their order is kept. One writer task,
    owned by :meth:`RedisStore.open`/:meth:`RedisStore.close` (call both from the same task:
    ``async with store:``), writes each batch of up to ``batch_max`` records as ONE pipeline
    of script calls (see above). Pending events are bounded
    by ``max_pending_events``: beyond it ``record_events`` raises
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
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import msgspec
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from routilux.store import _codec
from routilux.store.base import (
    PRUNE_BATCH,
    TERMINAL_STATUSES,
    FlowRecord,
    JobQuery,
    JobRecord,
    RuntimeRecord,
    StoreCounts,
    StoredEvent,
    StoreLifetime,
)
from routilux.store.errors import (
    FlowRevisionConflict,
    StoreClosedError,
    StoreError,
    StoreOverloaded,
    check_expected_revision,
)
from routilux.store.sqlite import StoreStats

log = logging.getLogger("routilux.store")

T = TypeVar("T")

DEFAULT_PREFIX: Final = "routilux"
#: The announcement stream's cap (``MAXLEN ~``), as the event bridge has always used.
ANNOUNCEMENTS_MAXLEN: Final = 100_000
#: Job records / events per script call: bound how long one script holds Redis (milliseconds).
JOBS_PER_SCRIPT: Final = 500
EVENTS_PER_SCRIPT: Final = 1000
#: Ids per HMGET inside a script (Lua's ``unpack`` has a stack limit of about 8000).
_LUA_CHUNK: Final = 1000
#: Timeouts (seconds) of a client the store creates from a URL: a dead Redis fails a call
#: instead of hanging it (and close's final flush) forever.
CONNECT_TIMEOUT: Final = 5.0
SOCKET_TIMEOUT: Final = 30.0
#: How often ``mark_interrupted`` re-reads jobs that changed under it before giving up.
_MARK_ROUNDS: Final = 10

_REFUSED_ID = "equal or smaller than the target stream top item"
#: Arguments per job of the upsert script.
_UPSERT_ARGS: Final = 5

_encode = msgspec.json.encode
_decode_job = msgspec.json.Decoder(JobRecord).decode
_decode_jobs = msgspec.json.Decoder(list[JobRecord]).decode
_decode_flow = msgspec.json.Decoder(FlowRecord).decode
_decode_runtime = msgspec.json.Decoder(RuntimeRecord).decode

#: How a stored job record ends: ``state`` is JobRecord's last field and is stored empty, so the
#: full record is ``record[:-3] + state + b"}"`` (the listing script does the same in Lua).
_STATE_TAIL: Final = b'"state":{}}'
if not _encode(JobRecord("j", "f", "r", "s", datetime(2000, 1, 1, tzinfo=UTC))).endswith(_STATE_TAIL):
    raise RuntimeError("JobRecord.state must stay its last field: RedisStore splices states into stored records")


def _with_state(record: bytes, state: bytes) -> bytes:
    """A stored record (empty state) with ``state`` spliced in: the record's full JSON."""
    return record[:-3] + state + b"}"


class _EventHead(msgspec.Struct):
    """The two fields of an event's JSON the store needs (msgspec skips the rest unread)."""

    type: str = ""
    flow_id: str = ""


_decode_head = msgspec.json.Decoder(_EventHead).decode


# -- Lua ----------------------------------------------------------------------------------------
class _Script:
    """A Lua script run with EVALSHA (its SHA1 is computed here, so a pipeline needs no SCRIPT
    EXISTS round trip); if Redis lost it (restart, SCRIPT FLUSH), the caller falls back to EVAL,
    which also caches it again."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


# ``forget(ids)`` deletes jobs (distinct ids) with everything that hangs off them: records,
# index entries, event streams, metrics; returns how many were jobs. Shared by delete_jobs and
# prune_jobs; one variadic command per key and chunk, not one per job.
_FORGET_LUA = f"""
local p = ARGV[1]
local function forget_chunk(ids)
  local olds = redis.call('HMGET', p .. ':job_indexes', unpack(ids))
  local by_key, streams = {{}}, {{}}
  for k, id in ipairs(ids) do
    if olds[k] then
      local o = cjson.decode(olds[k])
      for j, name in ipairs({{':idx:flow:', ':idx:status:', ':idx:runtime:'}}) do
        local key = p .. name .. o[j]
        by_key[key] = by_key[key] or {{}}
        table.insert(by_key[key], id)
      end
    end
    streams[k] = p .. ':job:' .. id
  end
  for key, members in pairs(by_key) do redis.call('ZREM', key, unpack(members)) end
  for _, name in ipairs({{':idx:all', ':idx:finished', ':idx:active', ':metrics:order'}}) do
    redis.call('ZREM', p .. name, unpack(ids))
  end
  for _, name in ipairs({{':job_indexes', ':job_states', ':metrics'}}) do
    redis.call('HDEL', p .. name, unpack(ids))
  end
  redis.call('DEL', unpack(streams))
  return redis.call('HDEL', p .. ':job_records', unpack(ids))
end
local function forget(ids)
  local deleted = 0
  for i = 1, #ids, {_LUA_CHUNK} do
    deleted = deleted + forget_chunk({{unpack(ids, i, math.min(i + {_LUA_CHUNK - 1}, #ids))}})
  end
  return deleted
end
"""

# ARGV: prefix, then 5 values per job (ids distinct within a call): id, cas, index, record,
# state. ``index`` is the JSON ``[flow_id, status, runtime_id, -created_us, created_us, ended_us
# or ""]``, decoded only when it differs from the stored one (a new job, a status change), so the
# frequent update of a running job's state costs a string comparison. ``state`` "" keeps the
# stored state. ``cas`` "" writes unconditionally; otherwise only if the stored record is exactly
# ``cas`` (mark_interrupted). The script first reads what it needs for every job (one HMGET),
# then writes with one variadic command per key (ZREM/ZADD per index, HSET per hash): a handful
# of Redis calls per batch instead of ten per job, which is most of Redis's cost. Five arguments
# per job, not eleven, because packing arguments is most of the client's cost. Returns the ids
# skipped by their ``cas``.
_UPSERT_JOBS = _Script(
    "upsert_jobs",
    """
local p = ARGV[1]
local records, states, indexes = p .. ':job_records', p .. ':job_states', p .. ':job_indexes'
local finished, active = p .. ':idx:finished', p .. ':idx:active'
local ids, guarded = {}, false
for i = 2, #ARGV, 5 do
  ids[#ids + 1] = ARGV[i]
  guarded = guarded or ARGV[i + 1] ~= ''
end
if #ids == 0 then return {} end
local olds = redis.call('HMGET', indexes, unpack(ids))
local stored = guarded and redis.call('HMGET', records, unpack(ids))
local adds, removes, set_index, set_record, set_state, skipped = {}, {}, {}, {}, {}, {}
local function push(t, key, a, b)
  local list = t[key]
  if not list then list = {}; t[key] = list end
  list[#list + 1] = a
  if b then list[#list + 1] = b end
end
for k, id in ipairs(ids) do
  local i = 2 + (k - 1) * 5
  if ARGV[i + 1] ~= '' and stored[k] ~= ARGV[i + 1] then
    skipped[#skipped + 1] = id
  else
    local index, old = ARGV[i + 2], olds[k]
    if old ~= index then
      local n = cjson.decode(index)
      if old then
        local o = cjson.decode(old)
        if o[1] ~= n[1] then push(removes, p .. ':idx:flow:' .. o[1], id) end
        if o[2] ~= n[2] then push(removes, p .. ':idx:status:' .. o[2], id) end
        if o[3] ~= n[3] then push(removes, p .. ':idx:runtime:' .. o[3], id) end
        push(removes, n[6] ~= '' and active or finished, id)
      end
      push(adds, p .. ':idx:all', n[4], id)
      push(adds, p .. ':idx:flow:' .. n[1], n[4], id)
      push(adds, p .. ':idx:status:' .. n[2], n[4], id)
      push(adds, p .. ':idx:runtime:' .. n[3], n[4], id)
      if n[6] ~= '' then push(adds, finished, n[6], id) else push(adds, active, n[5], id) end
      push(set_index, 1, id, index)
    end
    push(set_record, 1, id, ARGV[i + 3])
    if ARGV[i + 4] ~= '' then push(set_state, 1, id, ARGV[i + 4]) end
  end
end
for key, members in pairs(removes) do redis.call('ZREM', key, unpack(members)) end
for key, pairs_ in pairs(adds) do redis.call('ZADD', key, unpack(pairs_)) end
if set_index[1] then redis.call('HSET', indexes, unpack(set_index[1])) end
if set_record[1] then redis.call('HSET', records, unpack(set_record[1])) end
if set_state[1] then redis.call('HSET', states, unpack(set_state[1])) end
return skipped
""",
)

# KEYS: records, states, scratch, then 1-3 index keys. ARGV: offset, limit, with_state (1/0).
# Returns {total, the page as ONE JSON array of records}: a stored record is the record's JSON
# with an empty state, ending in ``{}}`` (see ``_STATE_TAIL``), so a whole record is that minus
# its last three bytes, the state, and ``}``. One bulk string instead of two per job, because
# parsing a reply item by item is most of a client's cost, and msgspec decodes the array at once.
_LIST_JOBS = _Script(
    "list_jobs",
    f"""
local source = KEYS[4]
if #KEYS > 4 then
  local args = {{KEYS[3], #KEYS - 3}}
  for i = 4, #KEYS do args[#args + 1] = KEYS[i] end
  args[#args + 1] = 'AGGREGATE'
  args[#args + 1] = 'MAX'
  redis.call('ZINTERSTORE', unpack(args))
  source = KEYS[3]
end
local total = redis.call('ZCARD', source)
local offset, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local ids = {{}}
if limit > 0 and offset < total then
  ids = redis.call('ZRANGE', source, offset, offset + limit - 1)
end
if source == KEYS[3] then redis.call('DEL', source) end
local page = {{}}
for i = 1, #ids, {_LUA_CHUNK} do
  local chunk = {{unpack(ids, i, math.min(i + {_LUA_CHUNK - 1}, #ids))}}
  local records = redis.call('HMGET', KEYS[1], unpack(chunk))
  local states = ARGV[3] == '1' and redis.call('HMGET', KEYS[2], unpack(chunk))
  for j, record in ipairs(records) do
    if record then
      page[#page + 1] = #page == 0 and '[' or ','
      if states then
        page[#page + 1] = string.sub(record, 1, -4)
        page[#page + 1] = states[j] or '{{}}'
        page[#page + 1] = '}}'
      else
        page[#page + 1] = record
      end
    end
  end
end
page[#page + 1] = #page == 0 and '[]' or ']'
return {{total, table.concat(page)}}
""",
)

# ARGV: prefix, ids (distinct)... Returns how many of them were jobs.
_DELETE_JOBS = _Script(
    "delete_jobs",
    _FORGET_LUA
    + """
local ids = {}
for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
return forget(ids)
""",
)

# ARGV: prefix, keep ("" = off), cutoff_us ("" = off), limit. Both rules select a prefix of the
# finished jobs, oldest first, so their union is the longer prefix. Returns the deleted ids.
_PRUNE_JOBS = _Script(
    "prune_jobs",
    _FORGET_LUA
    + """
local finished = p .. ':idx:finished'
local n = 0
if ARGV[2] ~= '' then n = math.max(0, redis.call('ZCARD', finished) - tonumber(ARGV[2])) end
if ARGV[3] ~= '' then n = math.max(n, redis.call('ZCOUNT', finished, '-inf', '(' .. ARGV[3])) end
n = math.min(n, tonumber(ARGV[4]))
if n <= 0 then return {} end
local ids = redis.call('ZRANGE', finished, 0, n - 1)
forget(ids)
return ids
""",
)

# KEYS: active index, records. Returns {ids, records} of every unfinished job, oldest first.
_ACTIVE_JOBS = _Script(
    "active_jobs",
    f"""
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local records = {{}}
for i = 1, #ids, {_LUA_CHUNK} do
  local chunk = {{unpack(ids, i, math.min(i + {_LUA_CHUNK - 1}, #ids))}}
  for _, v in ipairs(redis.call('HMGET', KEYS[2], unpack(chunk))) do records[#records + 1] = v end
end
return {{ids, records}}
""",
)

# The revision rule of Store.put_flow, shared by the two flow scripts: sets ``current``
# (false if there is no flow) and returns true when ARGV[2] ("" = unconditional) allows the write.
_REVISION_LUA = """
local current = redis.call('HGET', KEYS[2], ARGV[1])
local function allowed()
  if ARGV[2] == '' then return true end
  if ARGV[2] == '0' then return not current end
  return current == ARGV[2]
end
"""

# KEYS: flows, revisions. ARGV: flow_id, expected, revision, record.
# Returns {1, ""} when written, {0, current revision or ""} on a conflict.
_PUT_FLOW = _Script(
    "put_flow",
    _REVISION_LUA
    + """
if not allowed() then return {0, current or ''} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return {1, ''}
""",
)

# KEYS: flows, revisions. ARGV: flow_id, expected. Returns {1, deleted} or {0, current or ""}.
_DELETE_FLOW = _Script(
    "delete_flow",
    _REVISION_LUA
    + """
if not allowed() then return {0, current or ''} end
redis.call('HDEL', KEYS[2], ARGV[1])
return {1, redis.call('HDEL', KEYS[1], ARGV[1])}
""",
)

# KEYS: blobs, order, counter. ARGV: job_id, blob, job_id, blob...
_PUT_METRICS = _Script(
    "put_metrics",
    """
for i = 1, #ARGV, 2 do
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[i])
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return #ARGV / 2
""",
)

# KEYS: blobs, order. Every blob, oldest first.
_ALL_METRICS = _Script(
    "all_metrics",
    f"""
local ids = redis.call('ZRANGE', KEYS[2], 0, -1)
local blobs = {{}}
for i = 1, #ids, {_LUA_CHUNK} do
  local chunk = {{unpack(ids, i, math.min(i + {_LUA_CHUNK - 1}, #ids))}}
  for _, v in ipairs(redis.call('HMGET', KEYS[1], unpack(chunk))) do
    if v then blobs[#blobs + 1] = v end
  end
end
return blobs
""",
)

# ``rewrite(key, node, keep, pending)``: put events at or below a stream's top (what XADD
# refuses: a replay, or a gap filled late) into the stream, as the contract wants (a replayed
# event replaces the stored one). It rewrites the tail from the lowest such seq, keeping the other
# entries as they were: XDEL them, XSETID back to the last entry left, XADD everything in order,
# then trim as a batch does. ``pending`` is a flat list of seq (number), payload.
_REWRITE_LUA = """
local function seq_of(id) return tonumber(string.match(id, '^%d+')) end
local function rewrite(key, node, keep, pending)
  local high = 0
  local top = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if top[1] then high = seq_of(top[1][1]) end
  for i = 1, #pending, 2 do high = math.max(high, pending[i]) end
  local floor = high - keep
  local new, seqs = {}, {}
  for i = 1, #pending, 2 do
    local s = pending[i]
    if s > floor then
      if not new[s] then seqs[#seqs + 1] = s end
      new[s] = pending[i + 1]
    end
  end
  if #seqs == 0 then return end
  table.sort(seqs)
  local kept = {}
  for _, entry in ipairs(redis.call('XRANGE', key, string.format('%d-0', seqs[1]), '+')) do
    local s = seq_of(entry[1])
    redis.call('XDEL', key, entry[1])
    if not new[s] then
      kept[s] = entry[2]
      seqs[#seqs + 1] = s
    end
  end
  table.sort(seqs)
  if redis.call('EXISTS', key) == 1 then
    local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
    redis.call('XSETID', key, last[1] and last[1][1] or '0-0')
  end
  for _, s in ipairs(seqs) do
    local id = string.format('%d-0', s)
    if kept[s] then
      redis.call('XADD', key, id, unpack(kept[s]))
    else
      redis.call('XADD', key, id, 'node', node, 'event', new[s])
    end
  end
  if floor > 0 then redis.call('XTRIM', key, 'MINID', string.format('%d-0', floor + 1)) end
end
"""

# Append a batch of events to their jobs' streams, in the bridge's format, and announce job_starts.
# KEYS: the announcement stream, then one stream per job. ARGV: node, events_per_job, then per
# stream: job_id, n events, m announcements, m flow_ids, n (seq, payload) pairs in seq order.
# XADD (id ``<seq>-0``) refuses a seq at or below the stream's top: those go to ``rewrite``; the
# rest is one XADD each and one exact XTRIM per job. A script rather than pipelined XADDs because
# a pipeline's reply is one item per event, and parsing those is most of a client's cost.
# Returns how many events were replays.
_APPEND_EVENTS = _Script(
    "append_events",
    _REWRITE_LUA
    + f"""
local node, keep = ARGV[1], tonumber(ARGV[2])
local i, replayed = 3, 0
for k = 2, #KEYS do
  local key, job_id, n, m = KEYS[k], ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  i = i + 3
  for _ = 1, m do
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', {ANNOUNCEMENTS_MAXLEN}, '*',
               'job_id', job_id, 'flow_id', ARGV[i], 'node', node)
    i = i + 1
  end
  local high, pending = 0, {{}}
  for _ = 1, n do
    local added = redis.pcall('XADD', key, ARGV[i] .. '-0', 'node', node, 'event', ARGV[i + 1])
    if type(added) == 'table' and added.err then
      if not string.find(added.err, '{_REFUSED_ID}', 1, true) then
        return redis.error_reply(key .. ': ' .. added.err)
      end
      pending[#pending + 1] = tonumber(ARGV[i])
      pending[#pending + 1] = ARGV[i + 1]
    else
      high = tonumber(ARGV[i])
    end
    i = i + 2
  end
  if #pending > 0 then
    rewrite(key, node, keep, pending)
    replayed = replayed + #pending / 2
  elseif high > keep then
    redis.call('XTRIM', key, 'MINID', string.format('%d-0', high - keep + 1))
  end
end
return replayed
""",
)

# KEYS: a job's stream. ARGV: first id, count. Returns ONE string, each event as
# ``<seq>:<payload length>:<payload>`` (exact for any bytes), for the same reason as above.
_READ_EVENTS = _Script(
    "read_events",
    """
local parts = {}
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])) do
  local fields, payload = entry[2], ''
  for j = 1, #fields, 2 do
    if fields[j] == 'event' then payload = fields[j + 1] end
  end
  parts[#parts + 1] = string.sub(entry[1], 1, -3) .. ':' .. #payload .. ':'  -- ids are '<seq>-0'
  parts[#parts + 1] = payload
end
return table.concat(parts)
""",
)

_SCRIPTS: Final = (
    _UPSERT_JOBS,
    _LIST_JOBS,
    _DELETE_JOBS,
    _PRUNE_JOBS,
    _ACTIVE_JOBS,
    _PUT_FLOW,
    _DELETE_FLOW,
    _PUT_METRICS,
    _ALL_METRICS,
    _APPEND_EVENTS,
    _READ_EVENTS,
)


# -- where the store is, without secrets -------------------------------------------------------
def _redacted_url(url: str) -> str:
    """``url`` without its password (in the authority or a ``password=`` query parameter), for
    messages and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hostport}" if user else hostport
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k.lower() != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _client_location(client: aioredis.Redis) -> str:
    """A readable name for the server ``client`` talks to (no password)."""
    kwargs = client.connection_pool.connection_kwargs
    db = kwargs.get("db", 0)
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={db}"
    scheme = "rediss" if "ssl" in client.connection_pool.connection_class.__name__.lower() else "redis"
    return f"{scheme}://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{db}"


def _decode_responses(client: aioredis.Redis) -> bool:
    return bool(client.connection_pool.connection_kwargs.get("decode_responses", False))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# -- the write queue ----------------------------------------------------------------------------
class _Op:
    """One awaited operation: ``await fn(*args)`` runs in the writer, in queue order."""

    __slots__ = ("args", "done", "error", "fn", "result")

    def __init__(self, fn: Callable[..., Awaitable[Any]] | None, args: tuple[Any, ...]) -> None:
        self.fn = fn  # None: a flush barrier
        self.args = args
        self.done = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class _Segment:
    """The fire-and-forget writes between two operations: the latest record per job, and per job
    one event per seq (the last recorded wins)."""

    __slots__ = ("events", "jobs", "n_events")

    def __init__(self) -> None:
        self.jobs: dict[str, JobRecord] = {}
        self.events: dict[str, dict[int, StoredEvent]] = {}
        self.n_events = 0

    def size(self) -> int:
        return len(self.jobs) + self.n_events

    def split(self, n: int) -> _Segment:
        """Move up to ``n`` records from the front of this segment into a new one (a job's
        events in seq order, so each part appends in order)."""
        part = _Segment()
        for job_id in list(itertools.islice(self.jobs, n)):
            part.jobs[job_id] = self.jobs.pop(job_id)
        n -= len(part.jobs)
        while n > 0 and self.events:
            job_id = next(iter(self.events))
            kept = self.events[job_id]
            if len(kept) <= n:
                taken = self.events.pop(job_id)
            else:
                taken = {seq: kept.pop(seq) for seq in sorted(kept)[:n]}
            part.events[job_id] = taken
            part.n_events += len(taken)
            self.n_events -= len(taken)
            n -= len(taken)
        return part


def _newest(events: dict[int, StoredEvent], keep: int) -> list[StoredEvent]:
    """The events a job keeps of ``events``, in seq order: ``seq > max_seq - keep``."""
    seqs = sorted(events)
    floor = seqs[-1] - keep
    return [events[seq] for seq in seqs if seq > floor]


class _Call(NamedTuple):
    """One script call of a batch's pipeline, kept to make sense of its result."""

    script: _Script
    keys: list[str]
    args: list[Any]
    count: int  # the records it carries (reported as lost if it fails)
    what: str  # "job records" or "events"


def _parse_events(job_id: str, blob: bytes) -> list[StoredEvent]:
    """The events ``_READ_EVENTS`` packed into one string (``<seq>:<length>:<payload>``...)."""
    out: list[StoredEvent] = []
    pos, end = 0, len(blob)
    while pos < end:
        colon = blob.index(b":", pos)
        size_end = blob.index(b":", colon + 1)
        start = size_end + 1
        stop = start + int(blob[colon + 1 : size_end])
        payload = blob[start:stop]
        out.append(StoredEvent(job_id=job_id, seq=int(blob[pos:colon]), type=_event_type(payload), payload=payload))
        pos = stop
    return out


def _event_type(payload: bytes) -> str:
    try:
        return _decode_head(payload).type
    except msgspec.DecodeError:
        return ""


class RedisStore(StoreLifetime):
    """The :class:`~routilux.store.base.Store` contract on Redis (see the module docstring).

    ``client_or_url`` is a ``redis.asyncio.Redis`` client (shared with the rest of the server:
    the store never closes it) or a ``redis://``, ``rediss://`` or ``unix://`` URL (the store
    creates its client in :meth:`open` and closes it in :meth:`close`). ``prefix`` namespaces
    every key; ``node_id`` is written with each event (the event bridge uses it to tell its own
    jobs from the others'). ``batch_max`` bounds the records one pipeline carries;
    ``max_pending_events`` bounds the events waiting for the writer.
    """

    def __init__(
        self,
        client_or_url: aioredis.Redis | str,
        *,
        events_per_job: int = 10_000,
        prefix: str = DEFAULT_PREFIX,
        node_id: str = "",
        batch_max: int = 2_000,
        max_pending_events: int = 200_000,
    ) -> None:
        if events_per_job < 1 or batch_max < 1 or max_pending_events < 1:
            raise ValueError("events_per_job, batch_max and max_pending_events must be >= 1")
        if not prefix:
            raise ValueError("a RedisStore needs a non-empty key prefix")
        self._url: str | None
        self._client: aioredis.Redis | None
        if isinstance(client_or_url, str):
            self._url, self._client, self._owns_client = client_or_url, None, True
            self.location = _redacted_url(client_or_url)
            self._password = urlsplit(client_or_url).password
        else:
            if _decode_responses(client_or_url):
                raise ValueError("RedisStore needs a client with decode_responses=False (payloads are bytes)")
            self._url, self._client, self._owns_client = None, client_or_url, False
            self.location = _client_location(client_or_url)
            self._password = client_or_url.connection_pool.connection_kwargs.get("password")
        self.events_per_job = events_per_job
        self.prefix = prefix
        self.node_id = node_id
        self.batch_max = batch_max
        self.max_pending_events = max_pending_events
        self._keys = _Keys(prefix)

        self._state = "new"  # new → open → closing → closed
        self._stack: AsyncExitStack | None = None
        self._owner: int | None = None
        self._queue: deque[_Segment | _Op] = deque()
        self._in_flight = False
        self._stopping = False
        self._writer_gone = False
        self._writer_done = anyio.Event()
        self._wake = anyio.Event()
        self._room = anyio.Event()
        self._pending_events = 0
        self._batches = 0
        self._rows = 0
        self._failed_batches = 0
        self._lost_records = 0
        self._rejected_events = 0

    def __repr__(self) -> str:
        return f"RedisStore({self.location!r}, prefix={self.prefix!r})"

    # -- life cycle ------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect (PING), load the scripts and start the writer task.

        Must be awaited in the task that will later await :meth:`close`.
        """
        if self._state != "new":
            raise StoreError(f"{self!r} was already opened; make a new store", location=self.location)
        if self._client is None:
            assert self._url is not None
            try:
                self._client = aioredis.Redis.from_url(
                    self._url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=SOCKET_TIMEOUT
                )
            except (ValueError, RedisError) as exc:
                raise StoreError(f"{self.location} is not a usable Redis URL: {self._scrub(exc)}",
                                 location=self.location) from None
        try:
            await self._greet()
        except BaseException:
            await self._close_client()
            raise
        self._owner = anyio.get_current_task().id
        stack = AsyncExitStack()
        task_group = await stack.enter_async_context(anyio.create_task_group())
        task_group.start_soon(self._run_writer, name=f"routilux store writer ({self.location})")
        self._stack = stack
        self._state = "open"

    async def _greet(self) -> None:
        """PING, so a wrong URL or a stopped server fails at start-up with a clear message, and
        load the scripts (in the same round trip) so the first batch finds them."""
        pipe = self.client.pipeline(transaction=False)
        pipe.ping()
        for script in _SCRIPTS:
            pipe.script_load(script.source)
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreError(
                f"cannot reach Redis at {self.location}: {self._scrub(exc)} (is the server running, "
                "and are the URL, password and TLS settings right?)",
                location=self.location,
            ) from None

    async def close(self) -> None:
        """Write everything pending, stop the writer and, if the store created its client, close
        it. Idempotent. Shielded from cancellation: records already accepted are written (or
        reported lost, if Redis fails) before it returns."""
        if self._state in ("closing", "closed"):
            return
        if self._state == "new":
            self._state = "closed"
            return
        if anyio.get_current_task().id != self._owner:
            raise RuntimeError(
                f"{self!r} must be closed by the task that opened it (its writer's task group "
                "lives there); hold the store with `async with store:`"
            )
        self._state = "closing"
        self._stopping = True
        self._wake.set()
        try:
            with anyio.CancelScope(shield=True):
                await self._writer_done.wait()
            assert self._stack is not None
            await self._stack.aclose()
        finally:
            with anyio.CancelScope(shield=True):
                await self._close_client()
            self._state = "closed"

    async def _close_client(self) -> None:
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            try:
                await client.aclose()
            except (RedisError, OSError):  # pragma: no cover - closing a broken connection
                log.warning("closing the Redis client of %s failed", self.location, exc_info=True)

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise StoreClosedError(f"the store at {self.location} has no connection", location=self.location)
        return self._client

    def _check_open(self) -> None:
        if self._state != "open" or self._writer_gone:
            if self._state == "new":
                what = "not open yet (use `async with store:`)"
            elif self._state == "open":
                what = "unusable: its writer task was cancelled (close it)"
            else:
                what = "closed"
            raise StoreClosedError(f"the store at {self.location} is {what}", location=self.location)

    # -- errors ----------------------------------------------------------------------------
    def _scrub(self, exc: BaseException) -> str:
        text = str(exc) or type(exc).__name__
        return text.replace(self._password, "***") if self._password else text

    def _failed(self, what: str, exc: BaseException) -> StoreError:
        return StoreError(f"{what} at {self.location}: {self._scrub(exc)}", location=self.location,
                          redis_error=type(exc).__name__)

    @contextmanager
    def _redis_errors(self, what: str) -> Iterator[None]:
        """Turn a Redis or socket failure, or a stored value this code cannot read, into a
        :class:`StoreError` naming the server (an API client sees a clear message, never a
        traceback)."""
        try:
            yield
        except (RedisError, OSError) as exc:
            raise self._failed(what, exc) from None
        except msgspec.DecodeError as exc:  # includes ValidationError
            raise StoreError(
                f"{what} at {self.location}: a stored value under the prefix {self.prefix!r} is not "
                f"what Routilux writes (written by another program or version?): {exc}",
                location=self.location,
            ) from None

    async def _eval_many(self, script: _Script, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
        """Run ``script`` once per ``(keys, args)`` in one pipeline; raises the first error."""
        client = self.client
        pipe = client.pipeline(transaction=False)
        for keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        results = await pipe.execute(raise_on_error=False)
        for i, result in enumerate(results):
            if isinstance(result, NoScriptError):  # Redis restarted or flushed its scripts
                keys, args = calls[i]
                results[i] = result = await client.eval(script.source, len(keys), *keys, *args)
            if isinstance(result, Exception):
                raise result
        return list(results)

    async def _eval(self, script: _Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        return (await self._eval_many(script, [(keys, args)]))[0]

    def stats(self) -> StoreStats:
        """What the writer is doing; cheap, meant for logs and /metrics."""
        pending_jobs = pending_ops = 0
        for item in self._queue:
            if type(item) is _Op:
                pending_ops += 1
            else:
                assert isinstance(item, _Segment)
                pending_jobs += len(item.jobs)
        return StoreStats(
            pending_jobs=pending_jobs,
            pending_events=self._pending_events,
            pending_ops=pending_ops,
            batches=self._batches,
            rows=self._rows,
            failed_batches=self._failed_batches,
            lost_records=self._lost_records,
            rejected_events=self._rejected_events,
        )

    # -- the write queue -------------------------------------------------------------------
    def _segment(self) -> _Segment:
        queue = self._queue
        if queue and type(queue[-1]) is _Segment:
            return queue[-1]  # type: ignore[return-value]
        segment = _Segment()
        queue.append(segment)
        return segment

    async def _submit(self, fn: Callable[..., Awaitable[T]] | None, *args: Any) -> T:
        self._check_open()
        op = _Op(fn, args)
        self._queue.append(op)
        self._wake.set()
        await op.done.wait()
        if op.error is not None:
            raise op.error
        return op.result  # type: ignore[no-any-return]

    async def flush(self) -> None:
        self._check_open()
        if self._queue or self._in_flight:
            await self._submit(None)

    async def wait_for_room(self) -> None:
        """Wait until the event backlog is at most half of ``max_pending_events``."""
        while self._pending_events > self.max_pending_events // 2:
            self._check_open()
            await self._room.wait()
        self._check_open()

    async def _run_writer(self) -> None:
        try:
            while True:
                if not self._queue:
                    if self._stopping:
                        return
                    await self._wake.wait()
                    self._wake = anyio.Event()
                    continue
                await self._write_next()
        finally:
            # Stopping, or cancelled with the task group: what was accepted is written before
            # the writer goes (shielded; the backlog is bounded, the client has timeouts).
            self._writer_gone = True
            with anyio.CancelScope(shield=True):
                try:
                    while self._queue:
                        await self._write_next()
                finally:
                    self._abandon(list(self._queue))
                    self._queue.clear()
                    self._room.set()
                    self._writer_done.set()

    def _abandon(self, leftovers: list[_Segment | _Op]) -> None:
        """Fail what could not even be attempted (only if draining itself failed)."""
        if not leftovers:
            return
        error = StoreClosedError(f"the writer of the store at {self.location} stopped", location=self.location)
        for item in leftovers:
            if type(item) is _Op:
                item.error = error
                item.done.set()
            else:
                assert isinstance(item, _Segment)
                self._lost_records += item.size()
                log.error("%s: %d job records and events were not stored: %s", self.location, item.size(), error)
        self._pending_events = 0

    async def _write_next(self) -> None:
        """Take the head of the queue (an operation, or up to ``batch_max`` records) and write it.
        Shielded: once off the queue it must be written (or reported), whatever happens."""
        head = self._queue[0]
        self._in_flight = True
        try:
            with anyio.CancelScope(shield=True):
                if type(head) is _Op:
                    self._queue.popleft()
                    await self._run_op(head)
                else:
                    assert isinstance(head, _Segment)
                    if head.size() <= self.batch_max:
                        part = self._queue.popleft()
                    else:
                        part = head.split(self.batch_max)
                    assert isinstance(part, _Segment)
                    self._pending_events -= part.n_events
                    await self._write_segment(part)
        finally:
            self._in_flight = False
            self._room.set()  # wake wait_for_room() callers; they re-check the backlog
            self._room = anyio.Event()

    async def _run_op(self, op: _Op) -> None:
        try:
            if op.fn is not None:
                with self._redis_errors("a write failed"):
                    op.result = await op.fn(*op.args)
        except Exception as exc:  # noqa: BLE001 - the op's caller gets it (e.g. FlowRevisionConflict)
            op.error = exc
        finally:
            op.done.set()

    async def _write_segment(self, part: _Segment) -> None:
        try:
            rows, lost = await self._write_records(part)
        except (RedisError, OSError) as exc:
            self._failed_batches += 1
            self._lost_records += part.size()
            log.error("%s: %d job records and events were not stored: %s",
                      self.location, part.size(), self._scrub(exc))
            return
        self._batches += 1
        self._rows += rows
        self._lost_records += lost

    # -- writing a batch -------------------------------------------------------------------
    async def _write_records(self, part: _Segment) -> tuple[int, int]:
        """Write one batch as ONE pipeline of script calls; returns ``(records written, records
        lost)``."""
        calls: list[_Call] = []
        lost = self._job_calls(calls, part.jobs.values())
        self._event_calls(calls, part.events)
        if not calls:
            return 0, lost
        pipe = self.client.pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        results = await pipe.execute(raise_on_error=False)
        failed = await self._check_results(calls, results)
        return part.size() - lost - failed, lost + failed

    def _job_calls(self, calls: list[_Call], records: Iterable[JobRecord]) -> int:
        """Upsert calls for ``records`` (at most ``JOBS_PER_SCRIPT`` each); returns how many
        could not be encoded (each logged: an unstorable record must not spoil its batch)."""
        args: list[Any] = [self.prefix]
        lost = 0
        for record in records:
            try:
                args.extend(self._job_args(record))
            except (TypeError, ValueError, msgspec.EncodeError) as exc:
                lost += 1
                log.error("%s: job %s was not stored: %s", self.location, record.job_id, exc)
            if len(args) > JOBS_PER_SCRIPT * _UPSERT_ARGS:
                calls.append(_Call(_UPSERT_JOBS, [], args, (len(args) - 1) // _UPSERT_ARGS, "job records"))
                args = [self.prefix]
        if len(args) > 1:
            calls.append(_Call(_UPSERT_JOBS, [], args, (len(args) - 1) // _UPSERT_ARGS, "job records"))
        return lost

    def _job_args(self, record: JobRecord, cas: bytes = b"", with_state: bool = True) -> list[Any]:
        """The upsert script's arguments for one job (see ``_UPSERT_JOBS``)."""
        created = _codec.to_us(record.created_at)
        terminal = record.status in TERMINAL_STATUSES
        ended = str(_codec.to_us(record.completed_at or record.created_at)) if terminal else ""
        index = _encode([record.flow_id, record.status, record.runtime_id, str(-created), str(created), ended])
        state = _encode(record.state) if with_state else b""
        return [record.job_id, cas, index, _encode(msgspec.structs.replace(record, state={})), state]

    def _event_calls(self, calls: list[_Call], events: dict[str, dict[int, StoredEvent]]) -> None:
        """Append calls for each job's newest events (at most ``EVENTS_PER_SCRIPT`` each)."""
        keys: list[str] = [self._keys.announcements]
        args: list[Any] = [self.node_id, self.events_per_job]
        count = 0
        for job_id, kept in events.items():
            ordered = _newest(kept, self.events_per_job)
            for start in range(0, len(ordered), EVENTS_PER_SCRIPT):
                chunk = ordered[start : start + EVENTS_PER_SCRIPT]
                if count and count + len(chunk) > EVENTS_PER_SCRIPT:
                    calls.append(_Call(_APPEND_EVENTS, keys, args, count, "events"))
                    keys, args, count = [self._keys.announcements], [self.node_id, self.events_per_job], 0
                flows = [self._started_flow(e) for e in chunk if e.type == "job_start"]
                keys.append(self._keys.stream(job_id))
                args.extend((job_id, len(chunk), len(flows), *flows))
                for event in chunk:
                    args.extend((event.seq, event.payload))
                count += len(chunk)
        if count:
            calls.append(_Call(_APPEND_EVENTS, keys, args, count, "events"))

    def _started_flow(self, event: StoredEvent) -> str:
        """The flow_id a job_start announcement carries, from the event's JSON."""
        try:
            return _decode_head(event.payload).flow_id
        except msgspec.DecodeError:
            log.warning("%s: job_start of %s is not JSON; announced without flow_id", self.location, event.job_id)
            return ""

    async def _check_results(self, calls: list[_Call], results: list[Any]) -> int:
        """Retry the calls whose script Redis had lost, log and count the ones that failed;
        returns how many records were lost."""
        failed = 0
        for call, result in zip(calls, results, strict=True):
            if isinstance(result, NoScriptError):  # Redis restarted or flushed its scripts
                try:
                    result = await self._eval(call.script, call.keys, call.args)
                except (RedisError, OSError) as exc:
                    result = exc
            if isinstance(result, Exception):
                failed += call.count
                log.error("%s: Redis refused %d %s: %s", self.location, call.count, call.what, self._scrub(result))
            elif call.script is _APPEND_EVENTS and result:
                log.debug("%s: %d event(s) were already stored (replays): replaced", self.location, result)
        return failed

    # -- flows -----------------------------------------------------------------------------
    async def put_flow(self, record: FlowRecord, *, expected_revision: int | None = None) -> None:
        """See :meth:`Store.put_flow`: the revision check and the write are one Lua script."""
        self._check_open()
        record = _codec.check_flow(record)
        check_expected_revision(expected_revision)
        await self._submit(self._put_flow, record, expected_revision)

    async def _put_flow(self, record: FlowRecord, expected_revision: int | None) -> None:
        expected = "" if expected_revision is None else str(expected_revision)
        args = [record.flow_id, expected, str(record.revision), _encode(record)]
        done, current = await self._eval(_PUT_FLOW, self._keys.flow_keys, args)
        self._check_revision(record.flow_id, expected_revision, done, current)

    def _check_revision(self, flow_id: str, expected: int | None, done: int, current: bytes | int) -> None:
        """Raise :class:`FlowRevisionConflict` if a flow script refused (``done`` 0): ``current``
        is then the stored revision, empty if the flow does not exist."""
        if not done:
            assert expected is not None
            raise FlowRevisionConflict(flow_id, expected_revision=expected,
                                       current_revision=int(current) if current else None, location=self.location)

    async def get_flow(self, flow_id: str) -> FlowRecord | None:
        self._check_open()
        with self._redis_errors("reading a flow failed"):
            data = await self.client.hget(self._keys.flows, flow_id)
            return None if data is None else _decode_flow(data)

    async def list_flows(self) -> list[FlowRecord]:
        self._check_open()
        with self._redis_errors("listing flows failed"):
            stored = await self.client.hgetall(self._keys.flows)
            return [_decode_flow(stored[k]) for k in sorted(stored)]  # bytes order is code point order

    async def delete_flow(self, flow_id: str, expected_revision: int | None = None) -> bool:
        """Forget a flow (its jobs stay); ``expected_revision`` as in :meth:`put_flow`."""
        check_expected_revision(expected_revision)
        return await self._submit(self._delete_flow, flow_id, expected_revision)

    async def _delete_flow(self, flow_id: str, expected_revision: int | None) -> bool:
        expected = "" if expected_revision is None else str(expected_revision)
        done, result = await self._eval(_DELETE_FLOW, self._keys.flow_keys, [flow_id, expected])
        self._check_revision(flow_id, expected_revision, done, result)
        return bool(result)

    # -- jobs ------------------------------------------------------------------------------
    def record_job(self, record: JobRecord) -> None:
        """Enqueue an upsert; a later record for the same job, not yet written, replaces it.

        The record is encoded by the writer: do not mutate dicts inside it afterwards.
        """
        self._check_open()
        record = _codec.check_job(record)
        self._segment().jobs[record.job_id] = record
        self._wake.set()

    async def put_job(self, record: JobRecord) -> None:
        self._check_open()
        await self._submit(self._put_jobs, [_codec.check_job(record)])

    async def _put_jobs(self, records: list[JobRecord], cas: list[bytes] | None = None) -> list[str]:
        """Upsert ``records`` (optionally each only if its stored record is still ``cas[i]``, the
        state left alone); returns the ids skipped by their ``cas``."""
        calls = []
        for start in range(0, len(records), JOBS_PER_SCRIPT):
            args: list[Any] = [self.prefix]
            for i in range(start, min(start + JOBS_PER_SCRIPT, len(records))):
                if cas is None:
                    args.extend(self._job_args(records[i]))
                else:
                    args.extend(self._job_args(records[i], cas[i], with_state=False))
            calls.append(((), args))
        skipped = await self._eval_many(_UPSERT_JOBS, calls)
        return [_text(job_id) for chunk in skipped for job_id in chunk]

    async def get_job(self, job_id: str) -> JobRecord | None:
        """One round trip: the record and its state in one MULTI/EXEC (a consistent pair)."""
        self._check_open()
        with self._redis_errors("reading a job failed"):
            pipe = self.client.pipeline(transaction=True)
            pipe.hget(self._keys.records, job_id)
            pipe.hget(self._keys.states, job_id)
            record, state = await pipe.execute()
            if record is None:
                return None
            return _decode_job(record if state is None else _with_state(record, state))

    async def list_jobs(self, query: JobQuery) -> tuple[list[JobRecord], int]:
        """One Lua script: pick the index (or intersect several), count, page, fetch records."""
        self._check_open()
        query = _codec.check_query(query)
        keys = [self._keys.records, self._keys.states, self._keys.scratch, *self._keys.indexes(query)]
        args = [query.offset, query.limit, "1" if query.with_state else "0"]
        with self._redis_errors("listing jobs failed"):
            total, page = await self._eval(_LIST_JOBS, keys, args)
            return _decode_jobs(page), int(total)

    async def delete_jobs(self, job_ids: Sequence[str]) -> int:
        self._check_open()
        ids = sorted(set(job_ids))
        if not ids:
            return await self._submit(_zero)
        return await self._submit(self._delete_jobs, ids)

    async def _delete_jobs(self, ids: list[str]) -> int:
        chunks = [ids[i : i + JOBS_PER_SCRIPT] for i in range(0, len(ids), JOBS_PER_SCRIPT)]
        counts = await self._eval_many(_DELETE_JOBS, [((), [self.prefix, *chunk]) for chunk in chunks])
        return sum(int(n) for n in counts)

    async def prune_jobs(
        self, *, keep: int | None = None, ended_before: datetime | None = None, limit: int = PRUNE_BATCH
    ) -> list[str]:
        """See :meth:`Store.prune_jobs`: one script reads ``p:idx:finished`` (ZCARD, ZCOUNT,
        ZRANGE of what goes) and deletes those jobs, atomically."""
        self._check_open()
        ended_before = _codec.check_prune(keep, ended_before, limit)
        cutoff = "" if ended_before is None else str(_codec.to_us(ended_before))
        args = [self.prefix, "" if keep is None else str(keep), cutoff, limit]
        ids = await self._submit(self._eval, _PRUNE_JOBS, (), args)
        return [_text(job_id) for job_id in ids]

    async def mark_interrupted(self, reason: str) -> list[str]:
        """See :meth:`Store.mark_interrupted`. Reads only ``p:idx:active``; each job is rewritten
        only if its record is still what was read (compare-and-set in the upsert script), and the
        ones that changed meanwhile (another process wrote them) are read again."""
        self._check_open()
        return await self._submit(self._mark_interrupted, reason, datetime.now(UTC))

    async def _mark_interrupted(self, reason: str, now: datetime) -> list[str]:
        error = {"type": "interrupted", "message": reason}
        marked: list[str] = []
        for _ in range(_MARK_ROUNDS):
            _ids, metas = await self._eval(_ACTIVE_JOBS, (self._keys.active, self._keys.records), ())
            read = [(meta, _decode_job(meta)) for meta in metas if meta is not None]
            if not read:
                return marked
            records = [msgspec.structs.replace(r, status="failed", error=error, completed_at=now) for _, r in read]
            skipped = set(await self._put_jobs(records, cas=[meta for meta, _ in read]))
            marked.extend(r.job_id for r in records if r.job_id not in skipped)
            if not skipped:
                return marked
        raise StoreError(
            f"mark_interrupted at {self.location}: jobs kept changing while being marked "
            f"({_MARK_ROUNDS} rounds); is another server still running them?",
            location=self.location,
        )

    async def counts(self) -> StoreCounts:
        self._check_open()
        with self._redis_errors("counting failed"):
            pipe = self.client.pipeline(transaction=True)
            pipe.hlen(self._keys.flows)
            pipe.hlen(self._keys.records)
            flows, jobs = await pipe.execute()
        return StoreCounts(flow_count=int(flows), job_count=int(jobs))

    # -- runtimes --------------------------------------------------------------------------
    async def put_runtime(self, record: RuntimeRecord) -> None:
        self._check_open()
        record = _codec.check_runtime(record)
        await self._submit(self.client.hset, self._keys.runtimes, record.runtime_id, _encode(record))

    async def list_runtimes(self) -> list[RuntimeRecord]:
        self._check_open()
        with self._redis_errors("listing runtimes failed"):
            records = [_decode_runtime(data) for data in await self.client.hvals(self._keys.runtimes)]
        records.sort(key=lambda r: (r.created_at, r.runtime_id))
        return records

    # -- events ----------------------------------------------------------------------------
    def record_events(self, events: Sequence[StoredEvent]) -> None:
        """Enqueue events; raises :class:`StoreOverloaded` (keeping none of them) when the
        backlog would exceed ``max_pending_events``. Seqs start at 1 (a stream id is > 0-0)."""
        self._check_open()
        checked = [_codec.check_event(event) for event in events]
        if not checked:
            return
        for event in checked:
            if event.seq < 1:
                raise ValueError(f"StoredEvent.seq must be >= 1 in a Redis store (got {event.seq})")
        pending = self._pending_events
        if pending and pending + len(checked) > self.max_pending_events:
            self._rejected_events += len(checked)
            raise StoreOverloaded(
                f"the store at {self.location} has {pending} events waiting to be written "
                f"(limit {self.max_pending_events}); await store.wait_for_room() and retry",
                location=self.location,
                pending_events=pending,
            )
        self._pending_events += self._add_events(self._segment(), checked)
        self._wake.set()

    def _add_events(self, segment: _Segment, events: list[StoredEvent]) -> int:
        """Put ``events`` into ``segment`` (one per seq, the last wins); a job's pending events
        are cut back to its newest ``events_per_job`` once they reach twice that. Returns the
        change in pending events."""
        per_job = segment.events
        change = 0
        for event in events:
            kept = per_job.get(event.job_id)
            if kept is None:
                kept = per_job[event.job_id] = {}
            before = len(kept)
            kept[event.seq] = event
            change += len(kept) - before
            if len(kept) >= 2 * self.events_per_job:
                newest = _newest(kept, self.events_per_job)
                change -= len(kept) - len(newest)
                per_job[event.job_id] = {e.seq: e for e in newest}
        segment.n_events += change
        return change

    async def events_since(self, job_id: str, since: int = 0, limit: int = 1000) -> list[StoredEvent]:
        """XRANGE from ``(since+1)-0`` (the stream's ids are the seqs), packed by a script."""
        self._check_open()
        _codec.check_limit(limit)
        if limit == 0:
            return []
        start = f"{since + 1}-0" if since >= 0 else "-"
        with self._redis_errors("reading events failed"):
            blob = await self._eval(_READ_EVENTS, [self._keys.stream(job_id)], [start, limit])
        return _parse_events(job_id, blob)

    # -- job metrics -----------------------------------------------------------------------
    async def put_job_metrics(self, items: Sequence[tuple[str, str, bytes]]) -> None:
        """Store blobs (the flow id is not kept: nothing reads metrics by flow)."""
        self._check_open()
        args: list[Any] = []
        for job_id, _flow_id, data in items:
            args.extend((job_id, bytes(data)))
        if args:
            await self._submit(self._eval, _PUT_METRICS, self._keys.metrics_keys, args)

    async def get_job_metrics(self, job_id: str) -> bytes | None:
        self._check_open()
        with self._redis_errors("reading job metrics failed"):
            data = await self.client.hget(self._keys.metrics, job_id)
        return None if data is None else bytes(data)

    async def all_job_metrics(self) -> list[bytes]:
        self._check_open()
        with self._redis_errors("reading job metrics failed"):
            blobs = await self._eval(_ALL_METRICS, self._keys.metrics_keys[:2], ())
        return [bytes(blob) for blob in blobs]


async def _zero() -> int:
    return 0


class _Keys:
    """Every key name of one store (see "Key layout" in the module docstring)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.flows = f"{prefix}:flows"
        self.flow_keys = (self.flows, f"{prefix}:flow_revisions")
        self.runtimes = f"{prefix}:runtimes"
        self.records = f"{prefix}:job_records"
        self.states = f"{prefix}:job_states"
        self.all = f"{prefix}:idx:all"
        self.active = f"{prefix}:idx:active"
        self.scratch = f"{prefix}:idx:scratch"
        self.announcements = f"{prefix}:jobs"
        self.metrics = f"{prefix}:metrics"
        self.metrics_keys = (self.metrics, f"{prefix}:metrics:order", f"{prefix}:metrics:counter")

    def stream(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def indexes(self, query: JobQuery) -> list[str]:
        """The index keys a query reads: one per filter, or every job."""
        keys = [
            f"{self.prefix}:idx:{name}:{value}"
            for name, value in (("flow", query.flow_id), ("status", query.status), ("runtime", query.runtime_id))
            if value is not None
        ]
        return keys or [self.all]
