"""The head meter finds where a request head ends and refuses one past its limits, whichever way
the head is cut into chunks — before the parser has buffered it."""

from __future__ import annotations

import pytest

from routilux.api.transport.head import CONTINUES, HeadMeter, HeadTooLarge

HEAD = b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n"


def meter(max_line: int = 64, max_head: int = 256) -> HeadMeter:
    return HeadMeter(max_line, max_head)


def feed_in_pieces(m: HeadMeter, data: bytes, size: int) -> list[int]:
    return [m.feed(data[i:i + size]) for i in range(0, len(data), size)]


def test_a_head_in_one_chunk_ends_after_its_blank_line_and_the_body_is_not_counted() -> None:
    m = meter()
    assert m.feed(HEAD + b"{}") == len(HEAD)
    assert m.size == len(HEAD)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16])
def test_a_head_cut_anywhere_ends_at_the_same_byte(size: int) -> None:
    m = meter()
    answers = feed_in_pieces(m, HEAD, size)
    assert answers[:-1] == [CONTINUES] * (len(answers) - 1)
    assert (len(answers) - 1) * size + answers[-1] == len(HEAD)
    assert m.size == len(HEAD)


def test_bare_line_feeds_end_lines_too() -> None:
    head = b"GET / HTTP/1.1\nHost: x\n\n"
    assert meter().feed(head + b"next") == len(head)


def test_empty_lines_before_the_request_line_are_skipped_but_counted() -> None:
    m = meter()
    assert m.feed(b"\r\n\r\n" + HEAD) == 4 + len(HEAD)
    assert m.size == 4 + len(HEAD)


def test_a_request_line_longer_than_the_line_limit_is_414_before_it_ends() -> None:
    m = meter(max_line=64)
    assert m.feed(b"GET /" + b"a" * 50) == CONTINUES
    with pytest.raises(HeadTooLarge) as refused:
        m.feed(b"a" * 20)
    assert refused.value.status == 414


def test_a_header_line_longer_than_the_line_limit_is_431() -> None:
    with pytest.raises(HeadTooLarge) as refused:
        meter(max_line=64).feed(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 100)
    assert refused.value.status == 431 and "header line" in refused.value.message


def test_a_line_of_exactly_the_limit_line_ending_included_passes() -> None:
    line = b"X: " + b"a" * (64 - 5) + b"\r\n"
    assert len(line) == 64
    head = b"GET / HTTP/1.1\r\n" + line + b"\r\n"
    assert meter(max_line=64).feed(head) == len(head)
    with pytest.raises(HeadTooLarge):
        meter(max_line=64).feed(b"GET / HTTP/1.1\r\n" + b"X: a" + line)


def test_many_short_lines_past_the_total_are_431() -> None:
    m = meter(max_line=64, max_head=256)
    assert m.feed(b"GET / HTTP/1.1\r\n") == CONTINUES
    with pytest.raises(HeadTooLarge) as refused:
        for _ in range(100):
            m.feed(b"X-A: 1\r\n")
    assert refused.value.status == 431 and "in all" in refused.value.message
    assert m.size <= 256 + 8  # refused within one line of the limit


def test_endless_empty_lines_count_against_the_total() -> None:
    with pytest.raises(HeadTooLarge):
        meter(max_head=256).feed(b"\r\n" * 200)


def test_reset_starts_the_next_head() -> None:
    m = meter()
    m.feed(HEAD)
    m.reset()
    assert m.size == 0 and m.feed(HEAD) == len(HEAD)


def test_bytes_the_parser_read_as_head_past_the_meter_are_counted() -> None:
    m = meter(max_head=256)
    m.feed(HEAD)
    with pytest.raises(HeadTooLarge):
        m.count(256)
