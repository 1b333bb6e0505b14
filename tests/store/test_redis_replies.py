"""The reply helpers narrow redis-py's reply unions to what a non-decoding RESP2 client gets,
and fail loudly on anything else (a client that decodes responses)."""

from __future__ import annotations

import pytest

from routilux.store.redis.replies import as_bytes, as_text, stream_entries, stream_reads


def test_bytes_pass_through() -> None:
    assert as_bytes(b"x") == b"x"
    assert as_text(b"n\xc3\xa9") == "né"


@pytest.mark.parametrize("value", ["x", None])
def test_str_or_none_is_a_type_error(value: str | None) -> None:
    with pytest.raises(TypeError, match="must not decode responses"):
        as_bytes(value)


def test_stream_replies() -> None:
    entries = [(b"1-0", {b"event": b"{}"})]
    assert stream_entries(entries) == entries
    assert stream_entries(None) == []
    assert stream_reads([[b"k", entries]]) == [(b"k", entries)]
    assert stream_reads(None) == [] and stream_reads([]) == []
    with pytest.raises(TypeError):
        stream_entries([("1-0", {"event": "{}"})])
    with pytest.raises(TypeError):
        stream_entries([(None, None)])
    with pytest.raises(TypeError, match="RESP2"):
        stream_reads({b"k": [entries]})
