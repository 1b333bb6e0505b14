"""Flows that live as files: loaded from ``ROUTILUX_FLOWS_DIR`` at start-up and on sync.

Start-up and ``POST /api/discovery/flows/sync`` share :func:`sync_flows`: a new file creates its
flow, a changed file replaces it (a new revision), an unchanged one is left alone, and a file that
does not load is reported with its problems — never half-applied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import msgspec

from routilux.engine.dsl import load_flow
from routilux.errors import RoutiluxError
from routilux.server.catalog import FlowCatalog

PATTERNS = ("*.yaml", "*.yml", "*.json")


def flow_files(directory: Path) -> list[Path]:
    return sorted({p for pattern in PATTERNS for p in directory.glob(pattern) if p.is_file()})


def _read(path: Path) -> Any:
    return load_flow(path.read_bytes(), "json" if path.suffix == ".json" else "yaml")


async def scan(directory: Path) -> list[dict[str, Any]]:
    """Every flow file with what it holds (or why it does not load)."""
    found = []
    for path in flow_files(directory):
        try:
            flow = await anyio.to_thread.run_sync(_read, path)
            found.append({"file": str(path), "flow": flow, "problems": []})
        except RoutiluxError as exc:
            found.append({"file": str(path), "flow": None, "problems": exc.to_dict().get("problems", [exc.to_dict()])})
        except OSError as exc:
            found.append({"file": str(path), "flow": None, "problems": [{"message": str(exc)}]})
    return found


async def sync_flows(catalog: FlowCatalog, directory: Path) -> dict[str, list[Any]]:
    result: dict[str, list[Any]] = {"created": [], "updated": [], "unchanged": [], "errors": []}
    for item in await scan(directory):
        flow = item["flow"]
        if flow is None:
            result["errors"].append({"file": item["file"], "problems": item["problems"]})
            continue
        try:
            result[await catalog.put(flow, source=item["file"])].append(flow.flow_id)
        except RoutiluxError as exc:
            result["errors"].append({"file": item["file"], "problems": exc.to_dict().get("problems", [exc.to_dict()])})
    return result


def describe(item: dict[str, Any], catalog: FlowCatalog) -> dict[str, Any]:
    flow = item["flow"]
    flow_id = flow.flow_id if flow is not None else None
    loaded = flow_id is not None and flow_id in catalog
    in_sync = flow_id is not None and loaded and catalog.get(flow_id).flow == flow
    return {
        "file": item["file"],
        "flow_id": flow_id,
        "valid": flow is not None,
        "loaded": loaded,
        "in_sync": in_sync,
        "problems": msgspec.to_builtins(item["problems"]),
    }
