"""The delivery stream: how one node hands a batch of sealed messages to another.

One HTTP request body carries one or more messages, so that many small messages travel in
one round trip and one huge attachment streams in constant memory:

    "ACCORD-DELIVERY/1\\n"
    for each message:
        u32 big-endian length, the envelope (canonical JSON, as signed)
        u32 big-endian length, the age header
        the parts, body first, each exactly as long as the signed statement says
    u32 zero: the end of the batch

Part sizes come from the signed statement, never from the wire, so a sender cannot make
the receiver read a part with a length it did not sign. Limits on the envelope and header
sizes stop a peer from making the receiver buffer arbitrary amounts.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Callable

__all__ = [
    "MAGIC",
    "MAX_ENVELOPE",
    "MAX_HEADER",
    "AsyncByteReader",
    "StreamError",
    "frame_lengths",
]

MAGIC = b"ACCORD-DELIVERY/1\n"
MAX_ENVELOPE = 1024 * 1024
MAX_HEADER = 64 * 1024
_U32 = struct.Struct(">I")
END = _U32.pack(0)


class StreamError(Exception):
    """The delivery stream is malformed or ended early."""


def frame_lengths(envelope: bytes, header: bytes) -> bytes:
    return _U32.pack(len(envelope)) + envelope + _U32.pack(len(header)) + header


class AsyncByteReader:
    """Exact reads over an async iterator of byte chunks (a request body)."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = bytearray()
        self._done = False

    async def _fill(self) -> bool:
        if self._done:
            return False
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            self._done = True
            return False
        self._buffer += chunk
        return True

    async def readexactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            if not await self._fill():
                raise StreamError("the delivery stream ended early")
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    async def read_u32(self, limit: int, what: str) -> int:
        n: int = _U32.unpack(await self.readexactly(4))[0]
        if n > limit:
            raise StreamError(f"{what} of {n} bytes exceeds the limit of {limit}")
        return n

    async def copy_exactly(
        self, n: int, sink: Callable[[bytes | bytearray | memoryview], object]
    ) -> None:
        """Pass exactly `n` bytes to `sink`, chunk by chunk, holding at most one chunk."""
        remaining = n
        while remaining:
            if not self._buffer and not await self._fill():
                raise StreamError("the delivery stream ended early")
            if remaining >= len(self._buffer):
                # Hand over the whole buffer without copying it.
                data, self._buffer = self._buffer, bytearray()
            else:
                data = self._buffer[:remaining]
                del self._buffer[:remaining]
            sink(data)
            remaining -= len(data)

    async def skip(self, n: int) -> None:
        await self.copy_exactly(n, lambda _chunk: None)
