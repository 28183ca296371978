"""The age v1 file format (age-encryption.org/v1, C2SP age.md), X25519 recipients only.

An age file is a textual header that wraps a 16-byte file key for its recipients, then a
binary payload: a 16-byte nonce and the STREAM-encrypted body. Accord seals a message with
one file key: the header is written once and every part (body, attachments) is a separate
payload with its own nonce, so `header + payload` is a standard age file for each part and
`age -d -i key.txt` opens it. This knowingly departs from spec "File key" (a file key
"MUST NOT be reused across multiple files"): the payload key is HKDF(file key, nonce), so
a fresh random 16-byte nonce per part still gives every part its own key; what is shared
is only that whoever can open one part of a message can open all of them.

Invariants:
- Header parsing is strict and canonical (spec "ABNF definition of file header"): a parsed
  `Header` re-encodes to exactly its `raw` bytes, so the MAC covers what was parsed. Every
  violation is `AgeError("header")`; a header is at most `MAX_HEADER_SIZE` bytes.
- `unwrap_file_key` returns a file key only after the header MAC verified with it.
- `decrypt_payload` never releases the plaintext of a chunk before that chunk's tag
  verified; it writes verified chunks in order, so on `AgeError` the caller must discard
  everything written to `dst` (write to a temporary file, rename only on success).
- A payload is accepted only if it ends with exactly one final chunk, which is not empty
  unless it is the only chunk, and nothing follows it (spec "Payload").
- Streaming runs in constant memory: `PIPELINE_SLOTS` buffers of `BATCH_CHUNKS` chunks
  (about 8 MiB when decrypting), whatever the size of the file.
- Every failure of the format is an `AgeError` whose `kind` is one of "header",
  "no match", "hmac", "payload"; I/O errors of the streams pass through unchanged.
- Raw keys and file keys are bytes here; this module is private to `crypto/`.
"""

from __future__ import annotations

import binascii
import hashlib
import io
import mmap
import queue
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Final, Literal

import bech32

from ._primitives import (
    ChaCha20Poly1305,
    InvalidTag,
    PrimitiveError,
    X25519Identity,
    hkdf_sha256,
    hmac_equal,
    hmac_sha256,
    random_bytes,
    x25519_public_and_shared,
)

__all__ = [
    "CHUNK_SIZE",
    "FILE_KEY_SIZE",
    "AgeError",
    "Header",
    "PayloadInfo",
    "Stanza",
    "decode_identity",
    "decode_recipient",
    "decrypt_file",
    "decrypt_payload",
    "encode_header",
    "encode_identity",
    "encode_recipient",
    "encrypt_file",
    "encrypt_payload",
    "new_file_key",
    "parse_header",
    "unwrap_file_key",
]

FILE_KEY_SIZE: Final = 16
CHUNK_SIZE: Final = 64 * 1024
TAG_SIZE: Final = 16
ENCRYPTED_CHUNK_SIZE: Final = CHUNK_SIZE + TAG_SIZE
NONCE_SIZE: Final = 16
X25519_KEY_SIZE: Final = 32
MAC_SIZE: Final = 32
MAX_HEADER_SIZE: Final = 1024 * 1024

# Chunks per read: 16 chunks (1 MiB) per `readinto` measured fastest on the reference box
# (8 and 32 were slower), and four slots keep the hashing and writing threads fed while
# bounding how far they may fall behind.
BATCH_CHUNKS: Final = 16
PIPELINE_SLOTS: Final = 4

_VERSION_LINE: Final = b"age-encryption.org/v1\n"
_STANZA_PREFIX: Final = b"-> "
_MAC_PREFIX: Final = b"---"
_BODY_COLUMNS: Final = 64
_X25519_TYPE: Final = "X25519"
_X25519_INFO: Final = b"age-encryption.org/v1/X25519"
_SCRYPT_TYPE: Final = "scrypt"
_ZERO_NONCE: Final = bytes(12)

AgeErrorKind = Literal["header", "no match", "hmac", "payload"]
# A source of random bytes: the OS CSPRNG unless a test injects a seeded one.
RandomSource = Callable[[int], bytes]


class AgeError(Exception):
    """An age file failed to parse, unwrap, authenticate or decrypt.

    `kind` says at which step: "header" (malformed header, including a malformed stanza
    of our recipient type), "no match" (no stanza unwraps with the identity), "hmac" (a
    key unwrapped but the header MAC is wrong), "payload" (the encrypted stream or its
    digest is wrong). The message is for local logs only.
    """

    def __init__(self, kind: AgeErrorKind, detail: str) -> None:
        super().__init__(f"age {kind}: {detail}")
        self.kind: AgeErrorKind = kind
        self.detail = detail


def new_file_key(*, rng: RandomSource = random_bytes) -> bytes:
    """A fresh file key: 16 bytes from the CSPRNG (spec "File key")."""
    return _random(rng, FILE_KEY_SIZE)


def _random(rng: RandomSource, size: int) -> bytes:
    data = rng(size)
    if len(data) != size:
        raise ValueError(f"the random source returned {len(data)} bytes, not {size}")
    return data


# --- Header ---------------------------------------------------------------------------


# An argument is one or more VCHAR (0x21-0x7E), per the header ABNF; an argument line is
# one or more arguments separated by single spaces (an argument holds no space, so the line
# matches exactly when every part of its split on " " is an argument).
_ARGUMENT = re.compile(r"[\x21-\x7e]+")
_ARGUMENT_LINE = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")
_B64_TEXT = re.compile(rb"[A-Za-z0-9+/]*")


def _b64encode(data: bytes) -> bytes:
    return binascii.b2a_base64(data, newline=False).rstrip(b"=")


def _b64decode(text: bytes) -> bytes | None:
    """Canonical unpadded base64 (spec "Conventions"); None if the text is not."""
    if len(text) % 4 == 1 or _B64_TEXT.fullmatch(text) is None:
        return None
    try:
        # Strict: what base64.b64decode(validate=True) runs, without its wrapper.
        data = binascii.a2b_base64(text + b"=" * (-len(text) % 4), strict_mode=True)
    except binascii.Error:
        return None
    # Non-zero unused bits in the last character decode fine but are not canonical.
    if _b64encode(data) != text:
        return None
    return data


@dataclass(frozen=True)
class Stanza:
    """A recipient stanza: its type (the first argument), further arguments and body."""

    type: str
    args: tuple[str, ...]
    body: bytes

    def __post_init__(self) -> None:
        if not all(_ARGUMENT.fullmatch(a) for a in (self.type, *self.args)):
            raise ValueError("stanza arguments must be non-empty printable ASCII")

    def encode(self) -> bytes:
        """The stanza lines: the argument line, then the body wrapped at 64 columns."""
        line = " ".join((self.type, *self.args)).encode("ascii")
        body = _b64encode(self.body)
        # The body always ends with a line shorter than 64 columns, possibly empty.
        lines = [body[i : i + _BODY_COLUMNS] for i in range(0, len(body), _BODY_COLUMNS)]
        if not lines or len(lines[-1]) == _BODY_COLUMNS:
            lines.append(b"")
        return _STANZA_PREFIX + line + b"\n" + b"".join(x + b"\n" for x in lines)


@dataclass(frozen=True)
class Header:
    """A parsed age header. `raw` is the exact header as read, MAC line included."""

    stanzas: tuple[Stanza, ...]
    mac: bytes
    raw: bytes

    def encode(self) -> bytes:
        """Re-encode from the stanzas and MAC; equals `raw` for every parsed header."""
        return _header_without_mac(self.stanzas) + b" " + _b64encode(self.mac) + b"\n"

    @property
    def mac_input(self) -> bytes:
        """The bytes the MAC covers: the header up to and including "---" (spec "Header MAC").

        For a parsed header it is the prefix of `raw` before the MAC: the parser accepts
        only the one canonical encoding of each stanza, so these are the bytes age would
        encode from the stanzas (a test checks both agree); a header built by hand is
        encoded from its stanzas.
        """
        if self.raw:
            return self.raw[: self.raw.rindex(b"\n" + _MAC_PREFIX) + 1 + len(_MAC_PREFIX)]
        return _header_without_mac(self.stanzas)


def _header_without_mac(stanzas: Sequence[Stanza]) -> bytes:
    return _VERSION_LINE + b"".join(s.encode() for s in stanzas) + _MAC_PREFIX


def _header_mac(file_key: bytes, mac_input: bytes) -> bytes:
    # HMAC key = HKDF-SHA-256(ikm = file key, salt = empty, info = "header") (spec "Header MAC").
    return hmac_sha256(hkdf_sha256(file_key, b"", b"header"), mac_input)


def _x25519_stanza(file_key: bytes, recipient: bytes, rng: RandomSource) -> Stanza:
    """Wrap the file key for one X25519 recipient (spec "X25519 recipient stanza")."""
    # 1. A new ephemeral secret, read(CSPRNG, 32), for each stanza and each file.
    ephemeral = _random(rng, X25519_KEY_SIZE)
    # 2. shared secret = X25519(ephemeral secret, recipient); all-zero is refused.
    try:
        share, shared = x25519_public_and_shared(ephemeral, recipient)
    except PrimitiveError as e:
        raise ValueError("the recipient key is not a usable X25519 public key") from e
    # 3. wrap key = HKDF-SHA-256(shared secret, salt = share || recipient, info).
    wrap_key = hkdf_sha256(shared, share + recipient, _X25519_INFO)
    # 4. body = ChaCha20-Poly1305(wrap key, nonce = 12 zero bytes, file key).
    body = ChaCha20Poly1305(wrap_key).encrypt(_ZERO_NONCE, file_key, None)
    return Stanza(_X25519_TYPE, (_b64encode(share).decode("ascii"),), body)


def encode_header(
    file_key: bytes, recipients: Sequence[bytes], *, rng: RandomSource = random_bytes
) -> bytes:
    """A header wrapping `file_key` for each 32-byte X25519 public key, with its MAC.

    The result ends with the "--- <mac>" line and its newline; the payload follows it.
    """
    if len(file_key) != FILE_KEY_SIZE:
        raise ValueError("an age file key is 16 bytes")
    if not recipients:
        raise ValueError("an age header needs at least one recipient")
    if any(len(r) != X25519_KEY_SIZE for r in recipients):
        raise ValueError("an X25519 recipient key is 32 bytes")
    # 1. One stanza per recipient (spec "Recipient stanza").
    stanzas = [_x25519_stanza(file_key, bytes(r), rng) for r in recipients]
    # 2. The MAC over the header up to "---", then " <mac>\n" (spec "Header MAC").
    mac_input = _header_without_mac(stanzas)
    return mac_input + b" " + _b64encode(_header_mac(file_key, mac_input)) + b"\n"


class _HeaderReader:
    """Reads header lines without reading past the header, within `MAX_HEADER_SIZE`."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lines: list[bytes] = []
        self._size = 0

    def line(self) -> bytes:
        """The next line, newline included; a line without one means the header is cut."""
        line = self._stream.readline(MAX_HEADER_SIZE - self._size + 1)
        self._size += len(line)
        if self._size > MAX_HEADER_SIZE:
            raise AgeError("header", f"header longer than {MAX_HEADER_SIZE} bytes")
        if not line.endswith(b"\n"):
            raise AgeError("header", "header truncated")
        self._lines.append(line)
        return line

    def raw(self) -> bytes:
        return b"".join(self._lines)


def parse_header(stream: BinaryIO) -> Header:
    """Parse a v1 header strictly and leave `stream` at the first byte of the payload.

    Raises AgeError("header") for anything the header ABNF does not allow.
    """
    reader = _HeaderReader(stream)
    # 1. The version line is exactly "age-encryption.org/v1" (spec "Version line").
    if reader.line() != _VERSION_LINE:
        raise AgeError("header", "not an age v1 file")
    stanzas: list[Stanza] = []
    while True:
        line = reader.line()
        # 2. "---" starts the MAC line: "--- " 43base64char LF (spec "Header MAC").
        if line.startswith(_MAC_PREFIX):
            if not line.startswith(_MAC_PREFIX + b" "):
                raise AgeError("header", "malformed MAC line")
            mac = _b64decode(line[len(_MAC_PREFIX) + 1 : -1])
            if mac is None or len(mac) != MAC_SIZE:
                raise AgeError("header", "malformed header MAC")
            break
        # 3. Otherwise a stanza: "-> " argument *(SP argument) LF (spec "Recipient stanza").
        if not line.startswith(_STANZA_PREFIX):
            raise AgeError("header", "expected a stanza or the MAC line")
        stanzas.append(_parse_stanza(line, reader))
    # 4. At least one stanza (ABNF: header = v1-line 1*stanza end).
    if not stanzas:
        raise AgeError("header", "no recipient stanza")
    return Header(tuple(stanzas), mac, reader.raw())


def _parse_stanza(arg_line: bytes, reader: _HeaderReader) -> Stanza:
    try:
        arguments = arg_line[len(_STANZA_PREFIX) : -1].decode("ascii")
    except UnicodeDecodeError as e:
        raise AgeError("header", "stanza argument is not ASCII") from e
    # 1. One or more arguments, each 1*VCHAR: this also refuses doubled or trailing spaces.
    if _ARGUMENT_LINE.fullmatch(arguments) is None:
        raise AgeError("header", "malformed stanza argument")
    args = arguments.split(" ")
    # 2. Body lines: full lines of exactly 64 columns, then one shorter final line, which
    #    may be empty; each line is canonical unpadded base64 on its own.
    body = bytearray()
    while True:
        text = reader.line()[:-1]
        if len(text) > _BODY_COLUMNS:
            raise AgeError("header", "stanza body line longer than 64 columns")
        chunk = _b64decode(text)
        if chunk is None:
            raise AgeError("header", "stanza body is not canonical base64")
        body += chunk
        if len(text) < _BODY_COLUMNS:
            break
    return Stanza(args[0], tuple(args[1:]), bytes(body))


def _x25519_share(stanza: Stanza) -> bytes:
    """Check an X25519 stanza's shape (spec "X25519 recipient stanza"); return the share."""
    if len(stanza.args) != 1:
        raise AgeError("header", "X25519 stanza must have exactly two arguments")
    share = _b64decode(stanza.args[0].encode("ascii"))
    if share is None or len(share) != X25519_KEY_SIZE:
        raise AgeError("header", "X25519 share is not canonical base64 of 32 bytes")
    # The body length is checked before any decryption, against partitioning oracles.
    if len(stanza.body) != FILE_KEY_SIZE + TAG_SIZE:
        raise AgeError("header", "X25519 stanza body is not 32 bytes")
    return share


def unwrap_file_key(header: Header, identity: bytes | X25519Identity) -> bytes:
    """The file key, unwrapped with an X25519 identity (32 bytes, or loaded once) and
    checked by the MAC.

    Raises AgeError "header" (malformed X25519 stanza, low-order share, scrypt mixed with
    other stanzas), "no match" (no stanza for this identity) or "hmac".
    """
    if isinstance(identity, bytes) and len(identity) != X25519_KEY_SIZE:
        raise ValueError("an X25519 identity is 32 bytes")
    loaded = identity if isinstance(identity, X25519Identity) else X25519Identity(identity)
    # 1. An scrypt stanza must be the only stanza (spec "scrypt recipient stanza").
    if len(header.stanzas) > 1 and any(s.type == _SCRYPT_TYPE for s in header.stanzas):
        raise AgeError("header", "an scrypt stanza must be alone in the header")
    # 2. Stanzas of other types are ignored; every X25519 stanza must be well formed,
    #    whichever identity reads the file, so all readers refuse the same headers.
    ours = [(s, _x25519_share(s)) for s in header.stanzas if s.type == _X25519_TYPE]
    file_key = None
    for stanza, share in ours:
        # 3. shared secret = X25519(identity, share); all-zero MUST abort (low-order share).
        try:
            public, shared = loaded.public, loaded.shared(share)
        except PrimitiveError as e:
            raise AgeError("header", "X25519 share is a low-order point") from e
        wrap_key = hkdf_sha256(shared, share + public, _X25519_INFO)
        # 4. A body that does not authenticate was wrapped for someone else.
        try:
            file_key = ChaCha20Poly1305(wrap_key).decrypt(_ZERO_NONCE, stanza.body, None)
        except InvalidTag:
            continue
        break
    if file_key is None:
        raise AgeError("no match", "no X25519 stanza unwraps with this identity")
    # 5. The MAC, keyed from the file key, authenticates the whole header (spec "Header MAC").
    if not hmac_equal(_header_mac(file_key, header.mac_input), header.mac):
        raise AgeError("hmac", "header MAC does not verify")
    return file_key


# --- Payload ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PayloadInfo:
    """What a payload was on the wire.

    `sha256` is the digest of the payload exactly as on the wire (16-byte nonce and every
    STREAM chunk, that is the ciphertext), `size` its length in bytes, and
    `plaintext_size` the length of the plaintext it carries.
    """

    sha256: bytes
    size: int
    plaintext_size: int


def _chunk_nonce(counter: int, last: bool) -> bytes:
    # 11-byte big-endian chunk counter, then 0x01 for the final chunk (spec "Payload").
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _payload_aead(file_key: bytes, nonce: bytes) -> ChaCha20Poly1305:
    if len(file_key) != FILE_KEY_SIZE:
        raise ValueError("an age file key is 16 bytes")
    # payload key = HKDF-SHA-256(ikm = file key, salt = nonce, info = "payload").
    return ChaCha20Poly1305(hkdf_sha256(file_key, nonce, b"payload"))


def _reader(src: BinaryIO) -> Callable[[memoryview], int]:
    """A `readinto` for `src`, falling back on `read` for streams that lack it."""
    readinto: Callable[[memoryview], int | None] | None = getattr(src, "readinto", None)
    if readinto is not None:
        return lambda view: readinto(view) or 0

    def read_copy(view: memoryview) -> int:
        data = src.read(len(view))
        view[: len(data)] = data
        return len(data)

    return read_copy


def _buffer(size: int) -> memoryview:
    """A page-aligned, zeroed buffer from an anonymous mapping.

    Large `bytearray`s start 16 bytes into a page (glibc's chunk header), and the kernel's
    copy between the page cache and such a buffer suffers 4K aliasing: reading a file into
    it measured three times slower than into a page-aligned one.
    """
    return memoryview(mmap.mmap(-1, size))


def _fill(readinto: Callable[[memoryview], int], view: memoryview) -> int:
    """Read until `view` is full or the stream ends; a short count means end of stream."""
    total = 0
    while total < len(view):
        n = readinto(view[total:])
        if not n:
            break
        total += n
    return total


def _write_all(dst: BinaryIO, view: memoryview) -> None:
    while view:
        n = dst.write(view)
        # A raw stream may write part of the buffer; buffered ones write it all.
        view = view[n:] if n is not None else view[len(view) :]


_Job = tuple[int, memoryview, memoryview]


class _Pipeline:
    """Hashes, then writes, finished batches in order on two threads, recycling slots.

    SHA-256, ChaCha20-Poly1305 and file writes all release the GIL, so the digest and the
    write run beside the encryption on other cores: the main thread reads and encrypts
    batch k+2 while one worker hashes batch k+1 and the other writes batch k. The number
    of slots bounds the memory: the main thread blocks in `acquire` while the workers are
    behind. Until `start` is called the work runs inline, so a payload of one batch
    starts no thread.
    """

    def __init__(self, dst: BinaryIO, digest: hashlib._Hash, slots: int) -> None:
        self._dst = dst
        self._digest = digest
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for slot in range(slots):
            self._free.put(slot)
        self._to_hash: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._to_write: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._error: BaseException | None = None

    def start(self) -> None:
        if not self._threads:
            self._threads = [
                threading.Thread(target=self._hash_loop, name="age-hash", daemon=True),
                threading.Thread(target=self._write_loop, name="age-write", daemon=True),
            ]
            for thread in self._threads:
                thread.start()

    def acquire(self) -> int:
        slot = self._free.get()
        if self._error is not None:
            raise self._error
        return slot

    def submit(self, slot: int, to_hash: memoryview, to_write: memoryview) -> None:
        if self._threads:
            self._to_hash.put((slot, to_hash, to_write))
        else:
            self._digest.update(to_hash)
            _write_all(self._dst, to_write)
            self._free.put(slot)

    def finish(self) -> None:
        """Wait for every submitted batch; re-raise a worker's error, if any."""
        self._stop()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Flush what was submitted (verified plaintext still reaches `dst`), then stop."""
        self._stop()

    def _stop(self) -> None:
        if self._threads:
            self._to_hash.put(None)
            for thread in self._threads:
                thread.join()
            self._threads = []

    def _hash_loop(self) -> None:
        while (job := self._to_hash.get()) is not None:
            if self._error is None:
                try:
                    self._digest.update(job[1])
                except BaseException as e:  # handed to the main thread, never lost
                    self._error = e
            self._to_write.put(job)
        self._to_write.put(None)

    def _write_loop(self) -> None:
        while (job := self._to_write.get()) is not None:
            slot, _, to_write = job
            if self._error is None:
                try:
                    _write_all(self._dst, to_write)
                except BaseException as e:  # handed to the main thread, never lost
                    self._error = e
            # After an error, slots are still recycled so the main thread never blocks.
            self._free.put(slot)


def encrypt_payload(
    src: BinaryIO, dst: BinaryIO, file_key: bytes, *, rng: RandomSource = random_bytes
) -> PayloadInfo:
    """Encrypt all of `src` as an age payload into `dst`, in constant memory.

    Returns the SHA-256 and size of what was written (the ciphertext) and the plaintext
    size. Every call draws a fresh nonce, so one file key may encrypt several payloads.
    """
    # 1. A fresh 16-byte nonce for this payload, then the payload key (spec "Payload").
    nonce = _random(rng, NONCE_SIZE)
    aead = _payload_aead(file_key, nonce)
    readinto = _reader(src)
    digest = hashlib.sha256(nonce)
    _write_all(dst, memoryview(nonce))
    plain = _buffer(BATCH_CHUNKS * CHUNK_SIZE)
    outs = [_buffer(BATCH_CHUNKS * ENCRYPTED_CHUNK_SIZE) for _ in range(PIPELINE_SLOTS)]
    pipe = _Pipeline(dst, digest, PIPELINE_SLOTS)
    counter = carry = 0
    size = NONCE_SIZE
    try:
        while True:
            filled = carry + _fill(readinto, plain[carry:])
            # 2. A full buffer may be followed by more data, so its last chunk is held
            #    back: only a chunk known to end the stream gets the final flag.
            more = filled == len(plain)
            count = BATCH_CHUNKS - 1 if more else max(1, -(-filled // CHUNK_SIZE))
            slot = pipe.acquire()
            out = outs[slot]
            written = 0
            for i in range(count):
                start = i * CHUNK_SIZE
                end = min(start + CHUNK_SIZE, filled)
                # 3. Chunk i: counter || 0x00, or 0x01 for the final chunk, which is empty
                #    only when the whole payload is empty.
                nonce_i = _chunk_nonce(counter, not more and i == count - 1)
                n = end - start + TAG_SIZE
                aead.encrypt_into(nonce_i, plain[start:end], None, out[written : written + n])
                written += n
                counter += 1
            pipe.submit(slot, out[:written], out[:written])
            size += written
            if not more:
                break
            # 4. Carry the held-back chunk to the front and read after it.
            plain[:CHUNK_SIZE] = plain[(BATCH_CHUNKS - 1) * CHUNK_SIZE :]
            carry = CHUNK_SIZE
            pipe.start()
    except BaseException:
        pipe.abort()
        raise
    pipe.finish()
    return PayloadInfo(digest.digest(), size, size - NONCE_SIZE - counter * TAG_SIZE)


def encrypt_payload_bytes(
    data: bytes, file_key: bytes, *, rng: RandomSource = random_bytes
) -> tuple[bytes, PayloadInfo]:
    """`encrypt_payload` for a small payload held in memory (a message body): the same
    bytes on the wire, without the streaming pipeline's buffers and threads."""
    nonce = _random(rng, NONCE_SIZE)
    aead = _payload_aead(file_key, nonce)
    chunks = [nonce]
    starts = range(0, len(data), CHUNK_SIZE) if data else range(1)
    for counter, start in enumerate(starts):
        last = start + CHUNK_SIZE >= len(data)
        chunks.append(
            aead.encrypt(_chunk_nonce(counter, last), data[start : start + CHUNK_SIZE], None)
        )
    payload = b"".join(chunks)
    return payload, PayloadInfo(hashlib.sha256(payload).digest(), len(payload), len(data))


def decrypt_payload_bytes(
    payload: bytes, file_key: bytes, *, expected_sha256: bytes | None = None
) -> bytes:
    """`decrypt_payload` for a payload held in memory. The digest is checked before any
    decryption, and nothing is returned unless the whole payload opened."""
    if expected_sha256 is not None and not hmac_equal(
        hashlib.sha256(payload).digest(), expected_sha256
    ):
        raise AgeError("payload", "payload does not match its expected digest")
    body = payload[NONCE_SIZE:]
    if len(payload) < NONCE_SIZE or len(body) < TAG_SIZE or len(body) > ENCRYPTED_CHUNK_SIZE:
        # Not a single chunk: the streaming path handles every other shape and its errors.
        out = io.BytesIO()
        decrypt_payload(io.BytesIO(payload), out, file_key)
        return out.getvalue()
    aead = _payload_aead(file_key, payload[:NONCE_SIZE])
    try:
        return aead.decrypt(_chunk_nonce(0, True), body, None)
    except InvalidTag:
        raise AgeError("payload", "chunk failed to authenticate") from None


def decrypt_payload(
    src: BinaryIO, dst: BinaryIO, file_key: bytes, *, expected_sha256: bytes | None = None
) -> PayloadInfo:
    """Decrypt the age payload in `src` (read to its end) into `dst`, in constant memory.

    Plaintext is written chunk by chunk, each only after its tag verified, so a failure
    can come after some plaintext was written: on `AgeError` the caller must discard
    everything written to `dst`. With `expected_sha256`, the SHA-256 of the payload as
    read (nonce and chunks, the ciphertext) must match, or AgeError("payload") is raised
    once the stream ends; this refuses a valid payload swapped in from another file.
    """
    if len(file_key) != FILE_KEY_SIZE:
        raise ValueError("an age file key is 16 bytes")
    readinto = _reader(src)
    # 1. The 16-byte nonce, then the payload key (spec "Payload").
    nonce_buf = bytearray(NONCE_SIZE)
    if _fill(readinto, memoryview(nonce_buf)) != NONCE_SIZE:
        raise AgeError("payload", "payload shorter than its nonce")
    nonce = bytes(nonce_buf)
    aead = _payload_aead(file_key, nonce)
    digest = hashlib.sha256(nonce)
    ins = [_buffer(BATCH_CHUNKS * ENCRYPTED_CHUNK_SIZE) for _ in range(PIPELINE_SLOTS)]
    outs = [_buffer(BATCH_CHUNKS * CHUNK_SIZE) for _ in range(PIPELINE_SLOTS)]
    pipe = _Pipeline(dst, digest, PIPELINE_SLOTS)
    counter = carry = 0
    size = NONCE_SIZE
    try:
        slot = pipe.acquire()
        while True:
            src_view, out = ins[slot], outs[slot]
            filled = carry + _fill(readinto, src_view[carry:])
            size += filled - carry
            # 2. Only a chunk known to end the stream may be final: in a full buffer the
            #    last chunk waits for the next read to tell.
            more = filled == len(src_view)
            if not more and filled == 0:
                raise AgeError("payload", "payload has no chunk")
            start = written = 0
            while True:
                end = min(start + ENCRYPTED_CHUNK_SIZE, filled)
                last = not more and end == filled
                try:
                    written += _open_chunk(
                        aead, counter, src_view[start:end], out[written:], last=last
                    )
                except _ReleaseThenFail as e:
                    # 3. An authentic chunk whose flag contradicts its position: release
                    #    it, as age does and the CCTV vectors expect (stream_no_final_full,
                    #    stream_two_final_chunks_full), then fail.
                    pipe.submit(slot, src_view[:0], out[: written + e.released])
                    raise AgeError("payload", e.detail) from None
                except AgeError:
                    pipe.submit(slot, src_view[:0], out[:written])
                    raise
                counter += 1
                start = end
                if last or (more and start == (BATCH_CHUNKS - 1) * ENCRYPTED_CHUNK_SIZE):
                    break
            if not more:
                pipe.submit(slot, src_view[carry:filled], out[:written])
                break
            # 4. Move the undecided chunk to the next slot, then hand this one over.
            following = pipe.acquire()
            ins[following][:ENCRYPTED_CHUNK_SIZE] = src_view[start:]
            pipe.submit(slot, src_view[carry:filled], out[:written])
            slot, carry = following, ENCRYPTED_CHUNK_SIZE
            pipe.start()
    except BaseException:
        pipe.abort()
        raise
    pipe.finish()
    sha256 = digest.digest()
    # 5. The digest of the ciphertext as read binds this payload to the signed one.
    if expected_sha256 is not None and not hmac_equal(sha256, expected_sha256):
        raise AgeError("payload", "payload digest does not match the expected one")
    return PayloadInfo(sha256, size, size - NONCE_SIZE - counter * TAG_SIZE)


class _ReleaseThenFail(Exception):
    """An authentic chunk that must still fail the stream, after its plaintext."""

    def __init__(self, released: int, detail: str) -> None:
        super().__init__(detail)
        self.released = released
        self.detail = detail


def _open_chunk(
    aead: ChaCha20Poly1305, counter: int, chunk: memoryview, out: memoryview, *, last: bool
) -> int:
    """Decrypt one chunk into `out`; return the plaintext length (spec "Payload").

    `last` says whether the chunk ends the stream. Only a full-size chunk can be
    ambiguous: one that authenticates only with the other flag is reported with
    `_ReleaseThenFail` (truncated stream, or data after the final chunk).
    """
    n = len(chunk) - TAG_SIZE
    # 1. A chunk shorter than its tag, or an empty final chunk after others, is invalid.
    if n < 0:
        raise AgeError("payload", "truncated chunk")
    if last and n == 0 and counter > 0:
        raise AgeError("payload", "final chunk is empty")
    # 2. Decrypt into `out`, which is released only if this returns.
    try:
        return aead.decrypt_into(_chunk_nonce(counter, last), chunk, None, out[:n])
    except InvalidTag:
        if n != CHUNK_SIZE:
            raise AgeError("payload", "chunk failed to authenticate") from None
    # 3. A full chunk may carry the other flag: authentic, but in the wrong place.
    try:
        aead.decrypt_into(_chunk_nonce(counter, not last), chunk, None, out[:n])
    except InvalidTag:
        raise AgeError("payload", "chunk failed to authenticate") from None
    if last:
        raise _ReleaseThenFail(n, "stream truncated: no final chunk")
    raise _ReleaseThenFail(n, "data after the final chunk")


# --- Whole files ------------------------------------------------------------------------


def encrypt_file(
    src: BinaryIO, dst: BinaryIO, recipients: Sequence[bytes], *, rng: RandomSource = random_bytes
) -> PayloadInfo:
    """Write a standard age file (header, then payload) for X25519 recipient keys."""
    file_key = new_file_key(rng=rng)
    _write_all(dst, memoryview(encode_header(file_key, recipients, rng=rng)))
    return encrypt_payload(src, dst, file_key, rng=rng)


def decrypt_file(src: BinaryIO, dst: BinaryIO, identity: bytes) -> PayloadInfo:
    """Decrypt a standard age file with an X25519 identity; see `decrypt_payload`."""
    header = parse_header(src)
    return decrypt_payload(src, dst, unwrap_file_key(header, identity))


# --- Key encoding (Bech32, spec "Conventions" and "The X25519 recipient type") ------------

_RECIPIENT_HRP: Final = "age"
_IDENTITY_HRP: Final = "AGE-SECRET-KEY-"


def _bech32_encode(hrp: str, data: bytes) -> str:
    """BIP 173 Bech32 (the `bech32` reference implementation); the checksum covers the
    lowercase form."""
    words = bech32.convertbits(data, 8, 5)
    text = bech32.bech32_encode(hrp.lower(), words) if words is not None else None
    if text is None:
        raise ValueError("cannot encode the key as Bech32")
    return text


def _bech32_decode(text: str, hrp: str) -> bytes:
    """Decode Bech32 whose human-readable part is exactly `hrp` (case included)."""
    # 1. The human-readable part is compared as written: age identities are upper case,
    #    recipients lower case; the library checks the rest (one case, checksum, length).
    if not text.startswith(hrp + "1"):
        raise ValueError(f"expected a key starting with {hrp}1")
    found, words = bech32.bech32_decode(text)
    if found is None or words is None or found != hrp.lower():
        raise ValueError("malformed Bech32 string or checksum mismatch")
    # 2. 5-bit words to bytes; padding must be under 5 bits and all zero.
    data = bech32.convertbits(words, 5, 8, False)
    if data is None:
        raise ValueError("non-canonical Bech32 padding")
    return bytes(data)


def encode_recipient(public: bytes) -> str:
    """An X25519 public key as an age recipient: Bech32 with HRP "age" (age1...)."""
    if len(public) != X25519_KEY_SIZE:
        raise ValueError("an X25519 public key is 32 bytes")
    return _bech32_encode(_RECIPIENT_HRP, public)


def decode_recipient(text: str) -> bytes:
    """The 32-byte X25519 public key of an "age1..." recipient; ValueError if malformed."""
    key = _bech32_decode(text, _RECIPIENT_HRP)
    if len(key) != X25519_KEY_SIZE:
        raise ValueError("an age recipient holds a 32-byte key")
    return key


def encode_identity(private: bytes) -> str:
    """An X25519 private key as an age identity: upper-case Bech32 "AGE-SECRET-KEY-1..."."""
    if len(private) != X25519_KEY_SIZE:
        raise ValueError("an X25519 private key is 32 bytes")
    return _bech32_encode(_IDENTITY_HRP, private).upper()


def decode_identity(text: str) -> bytes:
    """The 32-byte X25519 private key of an "AGE-SECRET-KEY-1..." identity."""
    key = _bech32_decode(text, _IDENTITY_HRP)
    if len(key) != X25519_KEY_SIZE:
        raise ValueError("an age identity holds a 32-byte key")
    return key
