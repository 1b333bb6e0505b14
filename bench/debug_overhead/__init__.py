"""What the debugger's hooks cost the engine benchmark when no breakpoint is armed.

    python -m bench.debug_overhead [--items N] [--rounds R] [--check] [--json FILE]

The issue asks: "with no breakpoints armed, the engine benchmark stays within 5% of its figure
without the debugging code (measured in the same run)". The figure is the target row of
``python -m bench.engine``: the async 5-routine chain, bus on with one subscriber
(:func:`bench.engine.chain.routilux_chain`, run unchanged). It is measured here in one process, for three
variants of the job it starts:

- ``no hooks`` — the reference, the engine *without the debugging code*: jobs are created as a
  ``Job`` subclass whose hooked methods (``_deliver``, ``_emit``, ``_attempts``) are the engine's own
  source with the probe checks cut out (see :func:`no_hook_job_class`; it fails loudly if the
  engine grows a hook this does not know about, so the reference cannot silently drift);
- ``no probe`` — the engine as shipped, ``job.probe is None``: what every job pays for the
  debugger existing (the issue's requirement: >= 0.95 of ``no hooks``);
- ``debugger, 0 breakpoints`` — a :class:`~routilux.debug.session.JobDebugger` attached
  (``attach(job)``) but no breakpoint: what a job keeps paying once a debug session was opened
  on it and its breakpoints were deleted (informational; the session records a call stack).

Rounds interleave the variants, rotating their order each round, after one warm-up run of each;
each run is a fresh event loop and engine. The ratio of a variant is the median over rounds of
its throughput divided by the reference's *in the same round* (so slow drift of the machine
cancels out). Throughput is judged in hops per CPU-second of the process over the bench's timed
window (``_feed``): on a shared machine the wall clock also counts time other processes held the
cores (per-round wall ratios from 0.65 to 1.35 were seen under load), the CPU time is what the
variant costs. The wall-clock hops/s (the engine bench's own figure) is reported alongside.

``--check`` exits 1 if the hook checks cost more than 5%. Sizes: ``FULL_ITEMS`` x ``FULL_ROUNDS``
(about 30-40 s); ``tests/bench/test_debug_overhead.py`` runs a bounded version in ``make test``.
"""

