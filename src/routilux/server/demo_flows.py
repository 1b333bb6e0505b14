"""The demo flows ``ROUTILUX_DEBUGGER_MODE=true`` registers, so a debugger UI has something to show.

They are plain DSL documents built only from builtin routines, loaded through the same catalogue
(and so the same validation and persistence) as a flow posted over HTTP: a demo flow is an
ordinary flow that a user may inspect, run, edit or delete. Feed each one at ``source.trigger``
(``complex_flow`` at ``source1.trigger`` and ``source2.trigger``).

- ``linear_flow``: source → validator → transformer → sink.
- ``branching_flow``: the validator fans out to a transformer and a multiplier, both into one sink.
- ``complex_flow``: two sources and validators feed a transformer, a multiplier, a slow processor
  and an aggregator that pairs the transformed and multiplied items.
- ``error_flow``: items whose data has a true ``fail`` key (``{"data": {"fail": true}}``) go to
  the processor, which raises, so the job fails; any other item reaches the sink.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from routilux.engine.dsl import load_flow_dict
from routilux.errors import RoutiluxError
from routilux.server.catalog import FlowCatalog

log = logging.getLogger("routilux.server")

SOURCE: Final = "routilux:debugger-mode"


def _c(source: str, target: str) -> dict[str, str]:
    return {"from": source, "to": target}


DEMO_FLOWS: Final[dict[str, dict[str, Any]]] = {
    "linear_flow": {
        "flow_id": "linear_flow",
        "description": "Demo: source -> validator -> transformer -> sink.",
        "routines": {
            "source": {"class": "DataSource"},
            "validator": {"class": "DataValidator"},
            "transformer": {"class": "DataTransformer", "config": {"transformation": "upper"}},
            "sink": {"class": "DataSink"},
        },
        "connections": [
            _c("source.output", "validator.input"),
            _c("validator.valid", "transformer.input"),
            _c("transformer.output", "sink.input"),
        ],
    },
    "branching_flow": {
        "flow_id": "branching_flow",
        "description": "Demo: the validator fans out to a transformer and a multiplier, both into one sink.",
        "routines": {
            "source": {"class": "DataSource"},
            "validator": {"class": "DataValidator"},
            "transformer": {"class": "DataTransformer", "config": {"transformation": "upper"}},
            "multiplier": {"class": "DataMultiplier", "config": {"factor": 2}},
            "sink": {"class": "DataSink"},
        },
        "connections": [
            _c("source.output", "validator.input"),
            _c("validator.valid", "transformer.input"),
            _c("validator.valid", "multiplier.input"),
            _c("transformer.output", "sink.input"),
            _c("multiplier.output", "sink.input"),
        ],
    },
    "complex_flow": {
        "flow_id": "complex_flow",
        "description": "Demo: two sources and validators feeding a transformer, a multiplier, a slow "
        "processor and an aggregator.",
        "routines": {
            "source1": {"class": "DataSource"},
            "source2": {"class": "DataSource"},
            "validator1": {"class": "DataValidator"},
            "validator2": {"class": "DataValidator"},
            "transformer": {"class": "DataTransformer", "config": {"transformation": "upper"}},
            "multiplier": {"class": "DataMultiplier", "config": {"factor": 3}},
            "slow": {"class": "SlowProcessor", "config": {"delay": 0.2}},
            "aggregator": {"class": "DataAggregator"},
            "sink": {"class": "DataSink"},
        },
        "connections": [
            _c("source1.output", "validator1.input"),
            _c("source2.output", "validator2.input"),
            _c("validator1.valid", "transformer.input"),
            _c("validator1.valid", "slow.input"),
            _c("validator2.valid", "multiplier.input"),
            _c("transformer.output", "aggregator.input1"),
            _c("multiplier.output", "aggregator.input2"),
            _c("slow.output", "sink.input"),
            _c("aggregator.output", "sink.input"),
        ],
    },
    "error_flow": {
        "flow_id": "error_flow",
        "description": "Demo: post {\"fail\": true} as data and the processor raises (the job fails); "
        "anything else reaches the sink.",
        "routines": {
            "source": {"class": "DataSource"},
            "gate": {
                "class": "Router",
                "config": {
                    "routes": [{"when": {"path": "data.fail", "op": "truthy"}, "event": "fail"}],
                    "default": "ok",
                },
            },
            "processor": {"class": "ErrorGenerator", "config": {"should_fail": True, "message": "failed on demand"}},
            "sink": {"class": "DataSink"},
        },
        "connections": [
            _c("source.output", "gate.input"),
            _c("gate.fail", "processor.input"),
            _c("gate.ok", "sink.input"),
            _c("processor.output", "sink.input"),
        ],
    },
}


async def register_demo_flows(catalog: FlowCatalog) -> list[str]:
    """Create (or bring back to their definition) the demo flows; returns the ids registered.

    A flow already stored with the same definition is left alone, so restarting in debugger mode
    keeps its revision; one the user edited is reset, because the mode promises these flows as
    documented. A flow that cannot be registered is logged, never fatal: the server still starts.
    """
    registered: list[str] = []
    for flow_id, document in DEMO_FLOWS.items():
        try:
            flow = load_flow_dict(document)
            await catalog.put(flow, source=SOURCE)
            registered.append(flow_id)
        except RoutiluxError as exc:
            log.error("demo flow %s does not load: %s", flow_id, exc)
    return registered
