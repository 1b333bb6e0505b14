"""Engine throughput and idle-cost benchmark (``make bench``; a bounded run is in ``make test``).

    python -m bench.engine [--items N] [--idle-jobs N] [--quick] [--check] [--profile]
                             [--only async,sync,idle,metrics,checkpoint] [--json FILE]

In one run it measures a 5-stage pass-through chain fed N items (default 100,000), built twice:
from raw anyio memory object streams (the baseline) and as a Routilux flow of five routines in one
job, first with ``async def`` logic and then with sync ``def`` logic. Every Routilux run has the
event bus on with one wildcard subscriber that drains events as they come, and reports how many
events it got and lost. Each sink checks that all N items arrived in order; a loss, a duplicate,
a reordering or a failed job raises :class:`BenchFailure` (the run fails loudly, always).

The definition of a hop (the same for the baseline and the engine) is printed with the table:
one item delivered to one stage, so 5 hops per item.

Rows, in order (the ``×raw`` column divides a row's µs/hop by its reference baseline's):

- ``raw anyio, async``: the reference — each stage a task forwarding item by item.
- ``raw anyio, async (batch drain)``: informational — stages take everything waiting, as the
  engine's ``immediate`` policy does; the fastest plain anyio gets.
- ``routilux, async, bus + 1 subscriber``: the target row (>= 20,000 hops/s).
- ``routilux, async, no subscriber``: informational — what the bus costs.
- ``raw anyio, sync (thread per batch, loop sends)``: the reference for sync (see
  :func:`baseline_sync` for why it mirrors the engine).
- ``raw anyio, sync (thread per batch, blocking hop per item)``: informational — the naive way.
- ``routilux, sync, bus + 1 subscriber``: the target row (>= 5,000 hops/s).
- ``routilux, async, bus + 1 subscriber + metrics``: the async chain with the metrics aggregator
  subscribed as well, interleaved 5 times with the same chain without it (30,000 items each);
  target: >= 90% of the throughput without, per CPU second of the process (the median of the
  per-round ratios; CPU time, because waiting for a core on a shared machine is not a cost of
  the aggregator).
- ``routilux, async, bus + 1 subscriber, side sink[, paced]`` without and with ``checkpoint every
  100 activations``: what checkpointing a running job costs (:mod:`bench.engine.checkpoints`;
  the subscriber encodes a checkpoint to bytes every 100 activations and discards it), the chain
  fed at full speed (30,000 items) and paced (10,000 items, one at a time through the chain);
  target: >= 70% of the throughput without, per CPU second (median of interleaved rounds).

Then it starts --idle-jobs jobs (default 10,000) of a 5-routine flow in a fresh interpreter
(``python -m bench.engine.idle_jobs``), lets each run one item and go idle, and measures RSS growth, CPU while
idle and job-lookup latency.

Targets (issue, 2-core machine): >= 20,000 async hops/s with the bus on and one subscriber,
>= 5,000 sync hops/s, 10,000 idle jobs in <= 300 MB RSS growth. ``--check`` makes a missed
target exit 1; without it the table just says FAIL.

Modules: :mod:`~bench.engine.common` (routines, chain flow, order check, rows),
:mod:`~bench.engine.baselines` (raw anyio), :mod:`~bench.engine.chain` (Routilux chains),
:mod:`~bench.engine.idle_jobs` (idle jobs, in a fresh interpreter), ``__main__`` (the run).
"""

