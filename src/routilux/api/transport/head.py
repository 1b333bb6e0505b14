"""Counting a request's head — its request line and header lines — as its bytes arrive.

httptools (llhttp) parses a head of any size: it keeps every partial URL and header in memory
until the line ends, and uvicorn concatenates the URL's pieces as they come. One 256 MiB header
line is 256 MiB of memory and seconds of a blocked event loop. :class:`HeadMeter` looks at each
chunk *before* the parser does and says when the head has grown past its limits, so the
connection is refused (414 or 431) having buffered at most one read of the socket.

It needs only line endings, not HTTP: the head is every line up to the first empty one that
follows a non-empty one (llhttp skips empty lines before a request line, and so does this). Lines
end with ``\\n`` (the ``\\r`` before it is counted as part of the line); a line of one byte
before its ``\\n`` is taken as empty — such a line is no valid request or header line, so the
parser refuses it with a 400 if it is not the ``\\r`` of a blank line.
"""

from __future__ import annotations

from typing import Final

#: :meth:`HeadMeter.feed`'s answer when the head goes on past the chunk.
CONTINUES: Final = -1


class HeadTooLarge(Exception):
    """A head past a limit: ``status`` is 414 for the request line, else 431."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class HeadMeter:
    """The size of one head so far, its current line's length, and the limits on both."""

    __slots__ = ("line", "max_head", "max_line", "size", "started")

    def __init__(self, max_line: int, max_head: int) -> None:
        self.max_line = max_line
        self.max_head = max_head
        self.size = 0  # bytes of this head so far, leading empty lines included
        self.line = 0  # bytes of the line in progress (the part in earlier chunks)
        self.started = False  # the request line has begun

    def reset(self) -> None:
        """The next request's head begins."""
        self.size = 0
        self.line = 0
        self.started = False

    def feed(self, data: bytes) -> int:
        """Count ``data``: the offset just past the head's end if it ends in ``data``, else
        :data:`CONTINUES`. Raises :class:`HeadTooLarge` as soon as a limit is passed."""
        if self.size == 0:
            # Almost every head arrives whole in one chunk, with CRLF line ends: when the first
            # blank line comes before max_line bytes, no line nor the head can be too long.
            end = data.find(b"\r\n\r\n", 0, self.max_line)
            if end > 0 and data[0] not in b"\r\n":
                self.size = end + 4
                return end + 4
        pos = 0
        n = len(data)
        find = data.find
        while pos < n:
            nl = find(b"\n", pos)
            if nl == -1:
                self.line += n - pos
                self.size += n - pos
                self._check(self.line)
                return CONTINUES
            length = self.line + nl - pos + 1
            self.size += nl - pos + 1
            self.line = 0
            pos = nl + 1
            self._check(length)
            if length <= 2:  # "\n" or "\r\n": an empty line
                if self.started:
                    return pos
            else:
                self.started = True
        return CONTINUES

    def count(self, n: int) -> None:
        """Count ``n`` more bytes of the head without looking at them (the parser went on reading
        a head past the point :meth:`feed` took for its end)."""
        self.size += n
        self._check(0)

    def _check(self, line: int) -> None:
        if line > self.max_line:
            if not self.started:
                raise HeadTooLarge(414, f"the request line is longer than {self.max_line} bytes")
            raise HeadTooLarge(431, f"a header line is longer than {self.max_line} bytes")
        if self.size > self.max_head:
            raise HeadTooLarge(431, f"the request line and headers are larger than {self.max_head} bytes in all")
