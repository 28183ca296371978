"""Where an encrypted part lives: inline in the database (small parts, such as bodies) or
in the blob store (attachments). Either way it is the ciphertext exactly as signed."""

from __future__ import annotations

import io
from typing import BinaryIO

from storage import MessagePart

from ._runtime import Node

__all__ = ["INLINE_MAX", "open_part", "read_part"]

# Parts up to this size travel and are stored inline: one durable database commit per
# message instead of a file write, its fsync and the directory's.
INLINE_MAX = 64 * 1024


def open_part(node: Node, part: MessagePart) -> BinaryIO:
    if part.data is not None:
        return io.BytesIO(part.data)
    return node.blobs.open(part.blob_sha256)


def read_part(node: Node, part: MessagePart) -> bytes:
    if part.data is not None:
        return part.data
    with node.blobs.open(part.blob_sha256) as f:
        return f.read()
