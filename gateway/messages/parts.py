"""Where an encrypted part lives: inline in the database (small parts, such as bodies) or
in the blob store (attachments). Either way it is the ciphertext exactly as signed."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import BinaryIO

from accord.crypto.sealed import Statement
from accord.gateway.node.runtime import Node
from accord.storage import MessagePart, NewMessage, PartRef

__all__ = ["INLINE_MAX", "message_row", "open_part", "read_part"]

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


def message_row(
    statement: Statement, *, envelope: bytes, header: bytes, parts: Iterable[PartRef]
) -> NewMessage:
    """The row of a message to store, from its signed statement (the one mapping of the
    statement's fields to columns), its envelope as signed, its age header and its parts."""
    return NewMessage(
        message_id=statement.message_id,
        sender=statement.sender,
        recipient=statement.recipient,
        type=statement.type,
        marking=dict(statement.marking),
        purpose=statement.purpose,
        created=statement.created,
        expires=statement.expires,
        envelope=envelope,
        header=header,
        in_reply_to=statement.in_reply_to,
        parts=tuple(parts),
    )
