"""A flow written back out: block-style YAML or JSON, keys in document order, lossless."""

from __future__ import annotations

import io
import re
from typing import Any, Final

import msgspec
from ruamel.yaml import YAML
from ruamel.yaml.representer import SafeRepresenter

from routilux.engine.dsl.parse import Format
from routilux.engine.flow import Flow

_STR: Final = "tag:yaml.org,2002:str"


def dump_flow(flow: Flow, format: Format = "yaml") -> str:
    """Write a flow as block-style YAML or as JSON indented by 2, keys in document order."""
    if format == "json":
        return msgspec.json.format(msgspec.json.encode(flow), indent=2).decode("utf-8") + "\n"
    if format == "yaml":
        stream = io.StringIO()
        _yaml_dumper().dump(flow.to_builtins(), stream)
        return stream.getvalue()
    raise ValueError(f"format must be 'yaml' or 'json', not {format!r}")


class _Representer(SafeRepresenter):
    """Safe representer that writes multi-line strings as literal blocks, never aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


#: Characters that only survive a round trip escaped: controls, line breaks a reader
#: normalises or folds (CR, NEL, LS, PS), BOMs, non-characters and lone surrogates.
_NEEDS_ESCAPES: Final = re.compile(
    "[^\t\n\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)


def _represent_str(representer: SafeRepresenter, data: str) -> Any:
    """Literal blocks for multi-line text; double quotes (escapes) for unprintable text."""
    style: str | None = None
    if _NEEDS_ESCAPES.search(data):
        style = '"'
    elif "\n" in data:
        style = "|"  # the emitter falls back to quotes when a block would not round-trip
    return representer.represent_scalar(_STR, data, style=style)


_Representer.add_representer(str, _represent_str)


def _yaml_dumper() -> YAML:
    yaml = YAML(typ="safe", pure=True)
    yaml.Representer = _Representer
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    yaml.allow_unicode = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml
