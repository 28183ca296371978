"""Streaming uploads: a multipart request sealed on the fly, never plaintext at rest.

The local API's send request is multipart/form-data: first a `meta` field (JSON), then one
`attachment` file field per attachment, in the order `meta` lists them. The request body is
parsed as it arrives (python-multipart's push parser); attachment bytes go through a small
bounded queue to a thread that encrypts them straight into the blob store. Memory stays
constant whatever the size, and no plaintext touches the disk.
"""

from __future__ import annotations

import asyncio
import io
import queue
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import Any

from python_multipart.exceptions import ParseError
from python_multipart.multipart import MultipartParser, parse_options_header

__all__ = ["QueueReader", "UploadError", "UploadTooLarge", "parse_upload"]

MAX_META = 1024 * 1024
_EOF = object()


class UploadError(Exception):
    """The upload is malformed; the message says what the client must change."""


class UploadTooLarge(UploadError):
    pass


class QueueReader(io.RawIOBase):
    """A readable stream fed chunk by chunk from another thread (the event loop)."""

    def __init__(self, maxsize: int = 32) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize)
        self._pending = memoryview(b"")
        self._eof = False

    def readable(self) -> bool:
        return True

    def feed(self, chunk: bytes, alive: Callable[[], bool]) -> None:
        """Put a chunk, waiting while the consumer is alive (so a dead consumer cannot
        block the event loop for ever)."""
        while True:
            try:
                self._queue.put(chunk, timeout=0.2)
                return
            except queue.Full:
                if not alive():
                    raise UploadError("the upload could not be processed") from None

    def close_feed(self, error: BaseException | None = None) -> None:
        try:
            self._queue.put(error if error is not None else _EOF, timeout=5)
        except queue.Full:
            pass

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._pending:
            if self._eof:
                return 0
            item = self._queue.get()
            if item is _EOF:
                self._eof = True
                return 0
            if isinstance(item, BaseException):
                raise item
            self._pending = memoryview(item)  # type: ignore[arg-type]
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


async def parse_upload(
    content_type: str,
    body: AsyncIterator[bytes],
    *,
    max_bytes: int,
    start: Callable[[dict[str, Any], list[QueueReader]], Future[Any]],
) -> Any:
    """Parse a send request; call `start(meta, readers)` once `meta` is read, then feed the
    attachments to the readers; return what the started job returns."""
    try:
        ctype, params = parse_options_header(content_type)
    except (UnicodeEncodeError, ParseError) as e:  # HTTP headers are latin-1 (RFC 9110)
        raise UploadError("the content type is not a valid header value") from e
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise UploadError("send a multipart/form-data request with a meta field first")

    state: dict[str, Any] = {"name": None, "headers": {}, "field": b"", "value": b""}
    meta_buf = bytearray()
    readers: list[QueueReader] = []
    job: list[Future[Any]] = []
    received = [0]
    current: list[QueueReader | None] = [None]
    next_attachment = [0]

    def alive() -> bool:
        return not job or not job[0].done()

    def on_header_field(data: bytes, s: int, e: int) -> None:
        state["field"] += data[s:e]

    def on_header_value(data: bytes, s: int, e: int) -> None:
        state["value"] += data[s:e]

    def on_header_end() -> None:
        state["headers"][state["field"].decode("latin-1").lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        _disp, options = parse_options_header(state["headers"].get("content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        state["name"] = name
        if name == "meta":
            if job:
                raise UploadError("only one meta field is allowed")
            current[0] = None
        elif name == "attachment":
            if not job:
                raise UploadError("the meta field must come before the attachments")
            if next_attachment[0] >= len(readers):
                raise UploadError("more attachments than meta lists")
            current[0] = readers[next_attachment[0]]
            next_attachment[0] += 1
        else:
            raise UploadError(f"unexpected form field {name!r}: send meta, then attachment files")

    def on_part_data(data: bytes, s: int, e: int) -> None:
        received[0] += e - s
        if received[0] > max_bytes:
            raise UploadTooLarge(
                f"the upload exceeds this node's limit of {max_bytes} bytes (max_upload_bytes)"
            )
        if state["name"] == "meta":
            meta_buf.extend(data[s:e])
            if len(meta_buf) > MAX_META:
                raise UploadError("the meta field is larger than 1 MiB")
        elif current[0] is not None:
            current[0].feed(bytes(data[s:e]), alive)

    def on_part_end() -> None:
        if state["name"] == "meta":
            import json

            try:
                meta = json.loads(meta_buf.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                raise UploadError(f"the meta field is not JSON: {e}") from e
            except RecursionError as e:
                raise UploadError("the meta field is nested too deeply") from e
            if not isinstance(meta, dict):
                raise UploadError("the meta field must be a JSON object")
            names = meta.get("attachments") or []
            if not isinstance(names, list):
                raise UploadError("the meta field's attachments must be a list of file names")
            count = len(names)
            readers.extend(QueueReader() for _ in range(count))
            job.append(start(meta, readers))
        elif current[0] is not None:
            current[0].close_feed()
            current[0] = None
        state["headers"] = {}

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        try:
            async for chunk in body:
                parser.write(chunk)
            parser.finalize()
        except ParseError as e:
            raise UploadError(f"the request is not well-formed multipart/form-data: {e}") from e
        if current[0] is not None:
            # The body ended inside an attachment: its reader would wait for ever.
            raise UploadError("the request ended before the last attachment's boundary")
        if not job:
            raise UploadError("the request has no meta field")
        if next_attachment[0] != len(readers):
            raise UploadError(
                f"meta lists {len(readers)} attachment(s) but {next_attachment[0]} were sent"
            )
    except BaseException as e:
        error = e if isinstance(e, UploadError) else UploadError("the upload was interrupted")
        for r in readers:
            r.close_feed(error)
        if job:
            try:
                await asyncio.wrap_future(job[0])
            except BaseException:  # noqa: S110 - the upload error below is the one to report
                pass
        raise
    return await asyncio.wrap_future(job[0])
