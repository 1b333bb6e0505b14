"""The Lua scripts of the Redis store, and how they are run (EVALSHA, EVAL when Redis lost them).

Why scripts: a batch is ONE pipeline of a few script calls, and reads return one packed string
per call. Redis-py parses replies in Python, item by item, and packs every argument in Python: one
reply per event made the client ten times slower than the server. Inside a script, one variadic
command per key (ZADD, HSET) instead of one per record keeps Redis's own cost low too. Being
atomic, a script is also the store's only tool for check-and-write (flow revisions, the
compare-and-set of ``mark_interrupted``) and for consistent snapshots (a page and its total).

Key names: a script gets the prefix (``ARGV[1]``) or whole keys (``KEYS``); the names it builds
itself come from the table ``K`` (:data:`~routilux.store.redis.keys.LUA_SUFFIXES`), so each name
is spelled once, in :mod:`routilux.store.redis.keys`.
"""

from __future__ import annotations

import hashlib
from typing import Final

from routilux.store.redis.keys import LUA_SUFFIXES

#: The announcement stream's cap (``MAXLEN ~``), as the event bridge has always used.
ANNOUNCEMENTS_MAXLEN: Final = 100_000
#: Ids per HMGET inside a script (Lua's ``unpack`` has a stack limit of about 8000).
LUA_CHUNK: Final = 1000
#: What Redis says when XADD is given an id at or below the stream's top (a replayed seq).
_REFUSED_ID: Final = "equal or smaller than the target stream top item"

#: The Lua table ``K`` of key-name suffixes every script starts with.
_K_ENTRIES: Final = ", ".join(f"{name} = '{suffix}'" for name, suffix in LUA_SUFFIXES.items())
_NAMES_LUA: Final = f"local K = {{{_K_ENTRIES}}}\n"


class Script:
    """A Lua script run with EVALSHA (its SHA1 is computed here, so a pipeline needs no SCRIPT
    EXISTS round trip); if Redis lost it (restart, SCRIPT FLUSH), the caller falls back to EVAL,
    which also caches it again."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = _NAMES_LUA + source
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


# ``forget(ids)`` deletes jobs (distinct ids) with everything that hangs off them: records,
# index entries, event streams, metrics, checkpoints, posts; returns how many were jobs. Shared by delete_jobs and
# prune_jobs; one variadic command per key and chunk, not one per job.
_FORGET_LUA = f"""
local p = ARGV[1]
local function forget_chunk(ids)
  local olds = redis.call('HMGET', p .. K.job_indexes, unpack(ids))
  local by_key, streams = {{}}, {{}}
  for k, id in ipairs(ids) do
    if olds[k] then
      local o = cjson.decode(olds[k])
      for j, name in ipairs({{K.idx_flow, K.idx_status, K.idx_runtime}}) do
        local key = p .. name .. o[j]
        by_key[key] = by_key[key] or {{}}
        table.insert(by_key[key], id)
      end
    end
    streams[k] = p .. K.job .. id
  end
  for key, members in pairs(by_key) do redis.call('ZREM', key, unpack(members)) end
  for _, name in ipairs({{K.idx_all, K.idx_finished, K.idx_active, K.metrics_order}}) do
    redis.call('ZREM', p .. name, unpack(ids))
  end
  for _, name in ipairs({{K.job_indexes, K.job_states, K.metrics, K.checkpoints}}) do
    redis.call('HDEL', p .. name, unpack(ids))
  end
  redis.call('DEL', unpack(streams))
  for k, id in ipairs(ids) do streams[k] = p .. K.posts .. id end
  redis.call('DEL', unpack(streams))
  return redis.call('HDEL', p .. K.job_records, unpack(ids))
end
local function forget(ids)
  local deleted = 0
  for i = 1, #ids, {LUA_CHUNK} do
    deleted = deleted + forget_chunk({{unpack(ids, i, math.min(i + {LUA_CHUNK - 1}, #ids))}})
  end
  return deleted
end
"""

# ``owned(entry, token)``: whether a job's owner entry (``p:owners``, false if none) lets the node
# whose fence token is ``token`` write for the job. In a cluster every write of a job's record,
# events, checkpoint or posts is checked here, atomically with the write: a node that is no longer
# the job's owner (it stalled past its lease and the job was handed to another node, which bumped
# the entry's epoch) is refused. The token is how the node's entry starts (``{"node":"<id>",``, see
# ``routilux.cluster.nodes.Owner``): a prefix compare, no JSON decoding. No entry (a job that
# ended and was released, or not yet claimed) lets everyone write.
_FENCE_LUA = """
local function owned(entry, token)
  return not entry or string.sub(entry, 1, #token) == token
end
"""

# ARGV: prefix, fence token ("" = no fencing: see ``_FENCE_LUA``), then 5 values per job (ids
# distinct within a call): id, cas, index, record, state. ``index`` is the JSON ``[flow_id,
# status, runtime_id, -created_us, created_us, ended_us or ""]``, decoded only when it differs
# from the stored one (a new job, a status change), so the frequent update of a running job's
# state costs a string comparison. ``state`` "" keeps the stored state. ``cas`` "" writes
# unconditionally; otherwise only if the stored record is exactly ``cas`` (mark_interrupted). The
# script first reads what it needs for every job (one HMGET), then writes with one variadic
# command per key (ZREM/ZADD per index, HSET per hash): a handful of Redis calls per batch instead
# of ten per job, which is most of Redis's cost. A job that turns terminal (its index moves to
# ``idx:finished``) loses its checkpoint and posts in the same script; later writes of them are
# refused while it is there (PUT_IF_LIVE), so that is enough. Five arguments per job, not eleven,
# because packing arguments is most of the client's cost. Returns {the ids skipped by their
# ``cas``, the ids fenced off}.
UPSERT_JOBS = Script(
    "upsert_jobs",
    _FENCE_LUA
    + """
local p, token = ARGV[1], ARGV[2]
local records, states, indexes = p .. K.job_records, p .. K.job_states, p .. K.job_indexes
local finished, active = p .. K.idx_finished, p .. K.idx_active
local ids, guarded = {}, false
for i = 3, #ARGV, 5 do
  ids[#ids + 1] = ARGV[i]
  guarded = guarded or ARGV[i + 1] ~= ''
end
if #ids == 0 then return {{}, {}} end
local olds = redis.call('HMGET', indexes, unpack(ids))
local stored = guarded and redis.call('HMGET', records, unpack(ids))
local owners = token ~= '' and redis.call('HMGET', p .. K.owners, unpack(ids))
local adds, removes, set_index, set_record, set_state, skipped, ended = {}, {}, {}, {}, {}, {}, {}
local fenced = {}
local function push(t, key, a, b)
  local list = t[key]
  if not list then list = {}; t[key] = list end
  list[#list + 1] = a
  if b then list[#list + 1] = b end
end
for k, id in ipairs(ids) do
  local i = 3 + (k - 1) * 5
  if owners and not owned(owners[k], token) then
    fenced[#fenced + 1] = id
  elseif ARGV[i + 1] ~= '' and stored[k] ~= ARGV[i + 1] then
    skipped[#skipped + 1] = id
  else
    local index, old = ARGV[i + 2], olds[k]
    if old ~= index then
      local n = cjson.decode(index)
      if old then
        local o = cjson.decode(old)
        if o[1] ~= n[1] then push(removes, p .. K.idx_flow .. o[1], id) end
        if o[2] ~= n[2] then push(removes, p .. K.idx_status .. o[2], id) end
        if o[3] ~= n[3] then push(removes, p .. K.idx_runtime .. o[3], id) end
        push(removes, n[6] ~= '' and active or finished, id)
      end
      push(adds, p .. K.idx_all, n[4], id)
      push(adds, p .. K.idx_flow .. n[1], n[4], id)
      push(adds, p .. K.idx_status .. n[2], n[4], id)
      push(adds, p .. K.idx_runtime .. n[3], n[4], id)
      if n[6] ~= '' then
        push(adds, finished, n[6], id)
        push(ended, 1, id)
        push(ended, 2, p .. K.posts .. id)
      else
        push(adds, active, n[5], id)
      end
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
if ended[1] then
  redis.call('HDEL', p .. K.checkpoints, unpack(ended[1]))
  redis.call('DEL', unpack(ended[2]))
end
return {skipped, fenced}
""",
)

# KEYS: records, states, scratch, then 1-3 index keys. ARGV: offset, limit, with_state (1/0), then
# the job ids to leave out (JobQuery.exclude), if any: removed from a scratch copy of the index.
# Returns {total, the page as ONE JSON array of records}: a stored record is the record's JSON
# with an empty state, ending in ``{}}`` (see ``_STATE_TAIL``), so a whole record is that minus
# its last three bytes, the state, and ``}``. One bulk string instead of two per job, because
# parsing a reply item by item is most of a client's cost, and msgspec decodes the array at once.
LIST_JOBS = Script(
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
if #ARGV > 3 then
  if source ~= KEYS[3] then
    redis.call('ZUNIONSTORE', KEYS[3], 1, source)
    source = KEYS[3]
  end
  for i = 4, #ARGV, {LUA_CHUNK} do
    redis.call('ZREM', source, unpack(ARGV, i, math.min(i + {LUA_CHUNK - 1}, #ARGV)))
  end
end
local total = redis.call('ZCARD', source)
local offset, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local ids = {{}}
if limit > 0 and offset < total then
  ids = redis.call('ZRANGE', source, offset, offset + limit - 1)
end
if source == KEYS[3] then redis.call('DEL', source) end
local page = {{}}
for i = 1, #ids, {LUA_CHUNK} do
  local chunk = {{unpack(ids, i, math.min(i + {LUA_CHUNK - 1}, #ids))}}
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
DELETE_JOBS = Script(
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
PRUNE_JOBS = Script(
    "prune_jobs",
    _FORGET_LUA
    + """
local finished = p .. K.idx_finished
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

# ``zset_values(zkey, hkey)``: every member of the sorted set ``zkey`` in order, and its value in
# the hash ``hkey`` (false if it has none), read in chunks.
_ZSET_VALUES_LUA = f"""
local function zset_values(zkey, hkey)
  local ids, values = redis.call('ZRANGE', zkey, 0, -1), {{}}
  for i = 1, #ids, {LUA_CHUNK} do
    local chunk = {{unpack(ids, i, math.min(i + {LUA_CHUNK - 1}, #ids))}}
    for _, v in ipairs(redis.call('HMGET', hkey, unpack(chunk))) do values[#values + 1] = v end
  end
  return ids, values
end
"""

# KEYS: active index, records. Returns {ids, records} of every unfinished job, oldest first.
ACTIVE_JOBS = Script(
    "active_jobs",
    _ZSET_VALUES_LUA
    + """
local ids, records = zset_values(KEYS[1], KEYS[2])
return {ids, records}
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
PUT_FLOW = Script(
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
DELETE_FLOW = Script(
    "delete_flow",
    _REVISION_LUA
    + """
if not allowed() then return {0, current or ''} end
redis.call('HDEL', KEYS[2], ARGV[1])
return {1, redis.call('HDEL', KEYS[1], ARGV[1])}
""",
)

# KEYS: the finished index, a hash (checkpoints, or the job's posts), the owners. ARGV: job_id,
# field, value, fence token ("" = none). HSET field = value unless the job is finished (a late
# write must never resurrect an ended job, and its checkpoint and posts were deleted when it
# ended) or another node owns it now. Returns 1 if written, 0 if finished, -1 if fenced off.
PUT_IF_LIVE = Script(
    "put_if_live",
    _FENCE_LUA
    + """
if ARGV[4] ~= '' and not owned(redis.call('HGET', KEYS[3], ARGV[1]), ARGV[4]) then return -1 end
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
""",
)

# KEYS: owners, the node's job set. ARGV: job_id, its owner entry. A cluster node claims a job it
# starts; it goes in the pipeline before the job's first record, so the fenced writes find it.
CLAIM_JOB = Script(
    "claim_job",
    """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
""",
)

# KEYS: blobs, order, counter. ARGV: job_id, blob, job_id, blob...
PUT_METRICS = Script(
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
ALL_METRICS = Script(
    "all_metrics",
    _ZSET_VALUES_LUA
    + """
local _, values = zset_values(KEYS[2], KEYS[1])
local blobs = {}
for _, v in ipairs(values) do
  if v then blobs[#blobs + 1] = v end
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
# KEYS: the announcement stream, the owners, then one stream per job. ARGV: node,
# events_per_job, fence token ("" = none), then per stream: job_id, n events, m announcements, m
# flow_ids, n (seq, payload) pairs in seq order. A job another node owns now is skipped whole.
# XADD (id ``<seq>-0``) refuses a seq at or below the stream's top: those go to ``rewrite``; the
# rest is one XADD each and one exact XTRIM per job. A script rather than pipelined XADDs because
# a pipeline's reply is one item per event, and parsing those is most of a client's cost.
# Returns {how many events were replays, the ids fenced off}.
APPEND_EVENTS = Script(
    "append_events",
    _REWRITE_LUA
    + _FENCE_LUA
    + f"""
local node, keep, token = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local i, replayed, fenced = 4, 0, {{}}
for k = 3, #KEYS do
  local key, job_id, n, m = KEYS[k], ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  i = i + 3
  if token ~= '' and not owned(redis.call('HGET', KEYS[2], job_id), token) then
    fenced[#fenced + 1] = job_id
    i = i + m + 2 * n
    n, m = 0, 0
  end
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
return {{replayed, fenced}}
""",
)

# KEYS: a job's stream. ARGV: first id, count. Returns ONE string, each event as
# ``<seq>:<payload length>:<payload>`` (exact for any bytes), for the same reason as above.
READ_EVENTS = Script(
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

SCRIPTS: Final = (
    UPSERT_JOBS,
    LIST_JOBS,
    DELETE_JOBS,
    PRUNE_JOBS,
    ACTIVE_JOBS,
    PUT_FLOW,
    DELETE_FLOW,
    PUT_METRICS,
    ALL_METRICS,
    PUT_IF_LIVE,
    CLAIM_JOB,
    APPEND_EVENTS,
    READ_EVENTS,
)
