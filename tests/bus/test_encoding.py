"""The one event encoder: what the recorder stores and every socket sends, encoded once."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from routilux.bus import Event, capture, encode_event, encode_json


class Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


def event(seq: int, data: dict[str, object]) -> Event:
    return Event(seq=seq, type="log", job_id="enc-job", flow_id="f", routine_id="r",
                 timestamp=datetime(2026, 1, 18, 12, 0, 0, 123000, tzinfo=UTC), data=data)


def test_an_event_is_encoded_as_the_sockets_always_sent_it() -> None:
    e = event(1, {"level": "info", "message": "m", "fields": capture({"s": Opaque()})})
    assert encode_event(e) == msgspec.json.Encoder(enc_hook=repr).encode(e)
    assert encode_event(e) == (
        b'{"seq":1,"type":"log","job_id":"enc-job","flow_id":"f","routine_id":"r",'
        b'"timestamp":"2026-01-18T12:00:00.123000Z","data":{"level":"info","message":"m","fields":{"s":"<opaque>"}}}'
    )


def test_an_event_is_encoded_once_however_many_readers_ask() -> None:
    e = event(2, {"n": 1})
    assert encode_event(e) is encode_event(e)


def test_values_json_cannot_hold_are_shown_as_their_repr() -> None:
    assert encode_json({"x": Opaque(), "n": [1]}) == b'{"x":"<opaque>","n":[1]}'
