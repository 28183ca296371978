"""Byte-level fuzz targets: the envelope, delivery-stream and bundle parsers.

Each target takes arbitrary bytes and either parses them into a fully valid object or
lets the parser's ONE documented error out (`VerificationError` for envelopes and
bundles, `StreamError` for the delivery stream), which the target swallows. Anything
else escaping a target is a bug: atheris reports it as a crash, the hypothesis
properties and the bounded corpus run as a failure. The same functions drive
`tests/fuzz/test_atheris.py` (a bounded run in the suite) and `python -m bench.fuzz`
(the long run), so both fuzz exactly what the nodes run.

`read_delivery` is the peer API's reading loop (gateway/_peer_api.py, `deliver` and
`_receive_one`) without the node: the magic, then for each message the envelope and
header frames under their limits, the envelope parsed and its statement read for the
part sizes, the parts consumed; a zero length ends the batch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass

from accord.crypto import Envelope, VerificationError
from accord.crypto.bundle import Bundle
from accord.gateway.messages.receive import _unverified_statement
from accord.gateway.messages.stream import (
    MAGIC,
    MAX_ENVELOPE,
    MAX_HEADER,
    AsyncByteReader,
    StreamError,
)

from ._objects import assert_valid_envelope

__all__ = ["TARGETS", "Frame", "read_delivery", "target_bundle", "target_delivery",
           "target_envelope"]  # fmt: skip


@dataclass(frozen=True)
class Frame:
    envelope: bytes
    header: bytes
    parts: tuple[bytes, ...]


async def _chunks(data: bytes, sizes: Sequence[int]) -> AsyncIterator[bytes]:
    at = 0
    for size in sizes:
        if at >= len(data):
            break
        yield data[at : at + size]
        at += size
    if at < len(data):
        yield data[at:]


async def _read(reader: AsyncByteReader) -> list[Frame]:
    if await reader.readexactly(len(MAGIC)) != MAGIC:
        raise StreamError("not a delivery stream")
    frames = []
    while True:
        n = await reader.read_u32(MAX_ENVELOPE, "envelope")
        if n == 0:
            return frames
        envelope_bytes = await reader.readexactly(n)
        header = await reader.readexactly(await reader.read_u32(MAX_HEADER, "header"))
        try:
            envelope = Envelope.from_bytes(envelope_bytes)
        except VerificationError as e:
            raise StreamError(f"unparseable envelope: {e.reason}") from e
        statement = _unverified_statement(envelope)
        if statement is None:
            raise StreamError("envelope is not a message statement")
        parts = []
        for part in statement.parts:
            chunks: list[bytes] = []
            await reader.copy_exactly(part.size, lambda c, out=chunks: out.append(bytes(c)))
            parts.append(b"".join(chunks))
        frames.append(Frame(envelope_bytes, header, tuple(parts)))


def read_delivery(data: bytes, chunk_sizes: Sequence[int] = (65536,)) -> list[Frame]:
    """The frames of a delivery stream, as the peer API reads them (the body arriving in
    chunks of `chunk_sizes`, then the rest); raises `StreamError` only."""
    return _run(_read(AsyncByteReader(_chunks(data, chunk_sizes))))


def _run(coroutine: Coroutine[object, object, list[Frame]]) -> list[Frame]:
    """Run a coroutine that never waits (its chunks are in memory) without an event loop:
    a million executions of a fuzz target cannot afford one loop each."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: list[Frame] = done.value
        return result
    coroutine.close()
    raise RuntimeError("the delivery reader waited on something")


def target_envelope(data: bytes) -> None:
    try:
        envelope = Envelope.from_bytes(data)
    except VerificationError:
        return
    assert_valid_envelope(envelope)
    # Canonical: the parsed envelope has exactly these bytes as its one form.
    assert envelope.to_bytes() == data
    assert envelope._write() == data


def target_delivery(data: bytes) -> None:
    try:
        frames = read_delivery(data, (7, 1, 300))
    except StreamError:
        return
    for frame in frames:
        assert len(frame.header) <= MAX_HEADER


def target_bundle(data: bytes) -> None:
    try:
        bundle = Bundle.from_bytes(data)
    except VerificationError:
        return
    assert bundle.to_bytes() == data
    for envelope in (bundle.statement, *bundle.receipts, *bundle.consent_tokens):
        assert_valid_envelope(envelope)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "envelope": target_envelope,
    "delivery": target_delivery,
    "bundle": target_bundle,
}
