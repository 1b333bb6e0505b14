"""Imported into a test server through ``ROUTILUX_ROUTINE_MODULES``: makes the server's recorder
(a part with no supervision of its own) fail with an unexpected error once the file named by
``ROUTILUX_TEST_FAULT_FILE`` appears. The file is removed as the fault fires, so a restarted
process (a new gunicorn worker) runs normally."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio

from routilux.server.eventlog import Recorder

_run = Recorder.run


async def _failing_run(self: Any, *args: Any, **kwargs: Any) -> None:
    trigger = Path(os.environ["ROUTILUX_TEST_FAULT_FILE"])
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _run(self, *args, **kwargs))
        while not trigger.exists():
            await anyio.sleep(0.02)
        trigger.unlink()
        raise RuntimeError("an injected failure of the recorder")


Recorder.run = _failing_run  # type: ignore[method-assign]
