"""`crypto._age`: round trips, interoperability with age and pyrage, and replayed attacks."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accord.crypto import _age
from accord.crypto._primitives import ChaCha20Poly1305, hkdf_sha256, x25519_generate, x25519_public

PROJECT_ROOT = Path(__file__).resolve().parents[2]
AGE = shutil.which("age") or "/usr/bin/age"
HAVE_AGE = os.access(AGE, os.X_OK)
needs_age = pytest.mark.skipif(
    not HAVE_AGE, reason="the age tool is not installed (apt install age)"
)

CHUNK = _age.CHUNK_SIZE
ENC_CHUNK = _age.ENCRYPTED_CHUNK_SIZE
BATCH = _age.BATCH_CHUNKS * CHUNK
# Cyrillic on purpose: the working language of the agreement (art. 9) is Russian.
CYRILLIC = "Запрос о правовой помощи: сведения конфиденциальны (ст. 7.3). ".encode()


def keypair() -> tuple[bytes, bytes]:
    private = x25519_generate()
    return private, x25519_public(private)


def seal(plaintext: bytes, *recipients: bytes) -> tuple[bytes, bytes, _age.PayloadInfo]:
    """A whole age file, its file key and the payload info."""
    file_key = _age.new_file_key()
    header = _age.encode_header(file_key, list(recipients))
    payload = io.BytesIO()
    info = _age.encrypt_payload(io.BytesIO(plaintext), payload, file_key)
    return header + payload.getvalue(), file_key, info


def open_file(blob: bytes, identity: bytes) -> bytes:
    out = io.BytesIO()
    _age.decrypt_file(io.BytesIO(blob), out, identity)
    return out.getvalue()


def split(blob: bytes) -> tuple[bytes, bytes]:
    header = _age.parse_header(io.BytesIO(blob))
    return blob[: len(header.raw)], blob[len(header.raw) :]


def chunks_of(payload: bytes) -> tuple[bytes, list[bytes]]:
    """The nonce and the encrypted chunks of a payload."""
    body = payload[_age.NONCE_SIZE :]
    return payload[: _age.NONCE_SIZE], [
        body[i : i + ENC_CHUNK] for i in range(0, len(body), ENC_CHUNK)
    ]


def decrypt_payload_bytes(payload: bytes, file_key: bytes, **kwargs: bytes) -> bytes:
    out = io.BytesIO()
    _age.decrypt_payload(io.BytesIO(payload), out, file_key, **kwargs)  # type: ignore[arg-type]
    return out.getvalue()


# --- Round trips ------------------------------------------------------------------------

SIZES = {
    "empty": 0,
    "one_byte": 1,
    "one_full_chunk": CHUNK,
    "chunk_plus_one": CHUNK + 1,
    "three_chunks": 2 * CHUNK + 1000,
    "batch_minus_one_chunk": BATCH - CHUNK,
    "exactly_one_batch": BATCH,
    "batch_plus_one": BATCH + 1,
    "two_batches_exactly": 2 * BATCH,
    "two_batches_and_a_bit": 2 * BATCH + CHUNK + 7,
}


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_round_trip(size: int) -> None:
    private, public = keypair()
    plaintext = os.urandom(size)
    blob, _, info = seal(plaintext, public)
    _, payload = split(blob)
    assert open_file(blob, private) == plaintext
    assert info.sha256 == hashlib.sha256(payload).digest()
    assert info.size == len(payload)
    assert info.plaintext_size == size
    chunks = max(1, -(-size // CHUNK))
    assert len(payload) == _age.NONCE_SIZE + size + chunks * _age.TAG_SIZE


def test_decrypt_reports_the_same_payload_info() -> None:
    _, public = keypair()
    blob, file_key, info = seal(os.urandom(3 * CHUNK), public)
    _, payload = split(blob)
    out = io.BytesIO()
    assert _age.decrypt_payload(io.BytesIO(payload), out, file_key) == info
    assert (
        _age.decrypt_payload(
            io.BytesIO(payload), io.BytesIO(), file_key, expected_sha256=info.sha256
        )
        == info
    )


def test_cyrillic_plaintext_round_trip() -> None:
    private, public = keypair()
    plaintext = CYRILLIC * 3000  # a little over two chunks of UTF-8
    blob, _, _ = seal(plaintext, public)
    assert open_file(blob, private).decode("utf-8") == plaintext.decode("utf-8")


def test_every_recipient_can_open() -> None:
    keys = [keypair() for _ in range(3)]
    blob, _, _ = seal(b"for three recipients", *(public for _, public in keys))
    header = _age.parse_header(io.BytesIO(blob))
    assert [s.type for s in header.stanzas] == ["X25519"] * 3
    for private, _ in keys:
        assert open_file(blob, private) == b"for three recipients"


def test_one_header_serves_several_payloads() -> None:
    private, public = keypair()
    file_key = _age.new_file_key()
    header = _age.encode_header(file_key, [public])
    parts = [b"body", os.urandom(CHUNK + 5)]
    payloads = []
    for part in parts:
        out = io.BytesIO()
        _age.encrypt_payload(io.BytesIO(part), out, file_key)
        payloads.append(out.getvalue())
    # Each payload draws its own nonce, so no payload key repeats.
    assert payloads[0][:16] != payloads[1][:16]
    for part, payload in zip(parts, payloads, strict=True):
        assert open_file(header + payload, private) == part


def seeded(seed: str) -> Callable[[int], bytes]:
    counter = 0

    def take(n: int) -> bytes:
        nonlocal counter
        counter += 1
        return hashlib.shake_256(f"{seed}/{counter}".encode()).digest(n)

    return take


def test_injected_randomness_makes_output_reproducible() -> None:
    private, public = keypair()
    plaintext = os.urandom(CHUNK + 1)
    outputs = []
    for _ in range(2):
        out = io.BytesIO()
        _age.encrypt_file(io.BytesIO(plaintext), out, [public], rng=seeded("vectors"))
        outputs.append(out.getvalue())
    assert outputs[0] == outputs[1]
    assert open_file(outputs[0], private) == plaintext
    with pytest.raises(ValueError):
        _age.new_file_key(rng=lambda n: bytes(n - 1))


def test_parse_header_stops_at_the_payload() -> None:
    _, public = keypair()
    blob, _, _ = seal(b"payload", public)
    stream = io.BytesIO(blob)
    header = _age.parse_header(stream)
    assert stream.tell() == len(header.raw)
    assert header.encode() == header.raw
    assert header.raw.endswith(b"\n") and b"\n--- " in header.raw


def test_streams_that_return_short_reads() -> None:
    class Trickle(io.RawIOBase):
        """A pipe-like source that never returns more than 1000 bytes per read."""

        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            return self._data.readinto(memoryview(buffer)[:1000])

    class ReadOnly:
        """A source with `read` only."""

        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def read(self, n: int) -> bytes:
            return self._data.read(min(n, 777))

    plaintext = os.urandom(BATCH + CHUNK + 3)
    file_key = _age.new_file_key()
    for source in (Trickle, ReadOnly):
        payload = io.BytesIO()
        info = _age.encrypt_payload(source(plaintext), payload, file_key)  # type: ignore[arg-type]
        out = io.BytesIO()
        again = _age.decrypt_payload(source(payload.getvalue()), out, file_key)  # type: ignore[arg-type]
        assert out.getvalue() == plaintext
        assert again == info


def test_write_error_in_the_pipeline_is_raised_not_lost() -> None:
    class DiskFull(io.RawIOBase):
        def __init__(self) -> None:
            self.written = 0

        def writable(self) -> bool:
            return True

        def write(self, data: bytes) -> int:  # type: ignore[override]
            if self.written > BATCH:
                raise OSError(28, "No space left on device")
            self.written += len(data)
            return len(data)

    file_key = _age.new_file_key()
    with pytest.raises(OSError, match="No space"):
        _age.encrypt_payload(io.BytesIO(bytes(4 * BATCH)), DiskFull(), file_key)  # type: ignore[arg-type]
    payload = io.BytesIO()
    _age.encrypt_payload(io.BytesIO(bytes(4 * BATCH)), payload, file_key)
    with pytest.raises(OSError, match="No space"):
        _age.decrypt_payload(io.BytesIO(payload.getvalue()), DiskFull(), file_key)  # type: ignore[arg-type]


# --- Keys -------------------------------------------------------------------------------

# The example keys of the age specification (C2SP age.md, "The X25519 recipient type").
SPEC_IDENTITY = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"
SPEC_RECIPIENT = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"


def test_spec_example_keys() -> None:
    private = _age.decode_identity(SPEC_IDENTITY)
    assert private == b"\x42" * 32
    assert _age.encode_identity(private) == SPEC_IDENTITY
    assert _age.encode_recipient(x25519_public(private)) == SPEC_RECIPIENT
    assert _age.decode_recipient(SPEC_RECIPIENT) == x25519_public(private)


@pytest.mark.parametrize(
    ("text", "decode"),
    [
        (SPEC_IDENTITY.lower(), _age.decode_identity),  # identities are upper case
        (SPEC_RECIPIENT.upper(), _age.decode_recipient),  # recipients are lower case
        (SPEC_IDENTITY[:20] + SPEC_IDENTITY[20:].lower(), _age.decode_identity),  # mixed case
        (SPEC_RECIPIENT[:-1] + "q", _age.decode_recipient),  # checksum broken
        (SPEC_IDENTITY, _age.decode_recipient),  # an identity where a recipient is due
        (SPEC_RECIPIENT, _age.decode_identity),
        ("age1qqqqqqqqqqqq", _age.decode_recipient),
        ("age1" + "b" * 58, _age.decode_recipient),  # "b" is not a Bech32 character
    ],
    ids=[
        "lowercase_identity",
        "uppercase_recipient",
        "mixed_case",
        "bad_checksum",
        "identity_as_recipient",
        "recipient_as_identity",
        "too_short",
        "bad_character",
    ],
)
def test_malformed_key_strings_refused(text: str, decode: Callable[[str], bytes]) -> None:
    with pytest.raises(ValueError):
        decode(text)


def test_key_strings_round_trip() -> None:
    private, public = keypair()
    assert _age.decode_identity(_age.encode_identity(private)) == private
    assert _age.decode_recipient(_age.encode_recipient(public)) == public


def test_encode_header_refuses_bad_input() -> None:
    file_key = _age.new_file_key()
    with pytest.raises(ValueError):
        _age.encode_header(file_key, [])
    with pytest.raises(ValueError):
        _age.encode_header(file_key, [b"\x01" * 31])
    with pytest.raises(ValueError):
        _age.encode_header(b"short", [keypair()[1]])
    with pytest.raises(ValueError):  # a low-order point gives the all-zero secret
        _age.encode_header(file_key, [bytes(32)])


# --- Interoperability ---------------------------------------------------------------------


@needs_age
def test_our_file_opens_with_age(tmp_path: Path) -> None:
    private, public = keypair()
    (tmp_path / "key.txt").write_text(_age.encode_identity(private) + "\n")
    plaintext = CYRILLIC * 5000
    blob, _, _ = seal(plaintext, public, keypair()[1])
    result = subprocess.run(
        [AGE, "-d", "-i", str(tmp_path / "key.txt")], input=blob, capture_output=True, check=True
    )
    assert result.stdout == plaintext


@needs_age
def test_each_part_with_the_shared_header_opens_with_age(tmp_path: Path) -> None:
    private, public = keypair()
    (tmp_path / "key.txt").write_text(_age.encode_identity(private) + "\n")
    file_key = _age.new_file_key()
    header = _age.encode_header(file_key, [public])
    for part in (b"", b"body", os.urandom(2 * CHUNK)):
        payload = io.BytesIO()
        _age.encrypt_payload(io.BytesIO(part), payload, file_key)
        result = subprocess.run(
            [AGE, "-d", "-i", str(tmp_path / "key.txt")],
            input=header + payload.getvalue(),
            capture_output=True,
            check=True,
        )
        assert result.stdout == part


@needs_age
def test_age_file_opens_here(tmp_path: Path) -> None:
    private, public = keypair()
    plaintext = os.urandom(3 * CHUNK + 11)
    result = subprocess.run(
        [AGE, "-e", "-r", _age.encode_recipient(public)],
        input=plaintext,
        capture_output=True,
        check=True,
    )
    assert open_file(result.stdout, private) == plaintext


@needs_age
def test_age_keygen_identity_decodes(tmp_path: Path) -> None:
    keygen = shutil.which("age-keygen") or "/usr/bin/age-keygen"
    if not os.access(keygen, os.X_OK):
        pytest.skip("age-keygen is not installed")
    subprocess.run([keygen, "-o", str(tmp_path / "k.txt")], capture_output=True, check=True)
    lines = (tmp_path / "k.txt").read_text().splitlines()
    identity = next(x for x in lines if x.startswith("AGE-SECRET-KEY-1"))
    recipient = next(x for x in lines if x.startswith("# public key: ")).removeprefix(
        "# public key: "
    )
    private = _age.decode_identity(identity)
    assert _age.encode_recipient(x25519_public(private)) == recipient


def test_pyrage_interop() -> None:
    pyrage = pytest.importorskip("pyrage", reason="pyrage is not installed")
    private, public = keypair()
    identity = pyrage.x25519.Identity.from_str(_age.encode_identity(private))
    recipient = pyrage.x25519.Recipient.from_str(_age.encode_recipient(public))
    plaintext = CYRILLIC * 2500
    blob, _, _ = seal(plaintext, public)
    assert pyrage.decrypt(blob, [identity]) == plaintext
    assert open_file(pyrage.encrypt(plaintext, [recipient]), private) == plaintext


# --- Attacks on the payload -----------------------------------------------------------------


@pytest.fixture
def three_chunk_file() -> tuple[bytes, bytes, bytes, bytes]:
    """Private key, header, payload and plaintext of a file of 2.5 chunks (3 chunks)."""
    private, public = keypair()
    plaintext = os.urandom(2 * CHUNK + CHUNK // 2)
    blob, _, _ = seal(plaintext, public)
    header, payload = split(blob)
    return private, header, payload, plaintext


def refused(blob: bytes, identity: bytes, kind: str) -> bytes:
    """Assert the file fails with `kind`; return the plaintext released before it did."""
    out = io.BytesIO()
    with pytest.raises(_age.AgeError) as info:
        _age.decrypt_file(io.BytesIO(blob), out, identity)
    assert info.value.kind == kind, info.value
    return out.getvalue()


def test_truncated_payload_refused(three_chunk_file) -> None:
    private, header, payload, plaintext = three_chunk_file
    nonce, chunks = chunks_of(payload)
    # Cut at a chunk boundary: the rest authenticates but no final chunk ever comes.
    released = refused(header + nonce + b"".join(chunks[:2]), private, "payload")
    assert released == plaintext[: 2 * CHUNK]
    # Cut inside a chunk, or inside the nonce.
    refused(header + payload[:-1], private, "payload")
    refused(header + payload[:10], private, "payload")
    refused(header, private, "payload")


def test_chunk_reordering_refused(three_chunk_file) -> None:
    private, header, payload, _ = three_chunk_file
    nonce, chunks = chunks_of(payload)
    released = refused(header + nonce + chunks[1] + chunks[0] + chunks[2], private, "payload")
    assert released == b""


def test_chunk_duplication_refused(three_chunk_file) -> None:
    private, header, payload, plaintext = three_chunk_file
    nonce, chunks = chunks_of(payload)
    released = refused(
        header + nonce + chunks[0] + chunks[0] + chunks[1] + chunks[2], private, "payload"
    )
    assert released == plaintext[:CHUNK]


def test_trailing_data_after_final_chunk_refused(three_chunk_file) -> None:
    private, header, payload, _ = three_chunk_file
    refused(header + payload + b"\x00", private, "payload")
    refused(header + payload + payload[16:], private, "payload")


def test_final_chunk_flag_stripped_refused() -> None:
    # Re-encrypt a payload whose last chunk carries the non-final flag: a truncation that
    # happens to end on a chunk boundary looks exactly like this.
    private, public = keypair()
    file_key = _age.new_file_key()
    header = _age.encode_header(file_key, [public])
    nonce = os.urandom(16)
    aead = ChaCha20Poly1305(hkdf_sha256(file_key, nonce, b"payload"))
    plaintext = os.urandom(CHUNK + 100)
    forged = nonce
    for counter, piece in enumerate((plaintext[:CHUNK], plaintext[CHUNK:])):
        forged += aead.encrypt(counter.to_bytes(11, "big") + b"\x00", piece, None)
    released = refused(header + forged, private, "payload")
    assert released == plaintext[:CHUNK]


def test_empty_final_chunk_after_data_refused() -> None:
    private, public = keypair()
    file_key = _age.new_file_key()
    header = _age.encode_header(file_key, [public])
    nonce = os.urandom(16)
    aead = ChaCha20Poly1305(hkdf_sha256(file_key, nonce, b"payload"))
    forged = nonce + aead.encrypt(bytes(12), bytes(CHUNK), None)
    forged += aead.encrypt((1).to_bytes(11, "big") + b"\x01", b"", None)
    refused(header + forged, private, "payload")


def test_corrupted_second_chunk_releases_only_the_first(three_chunk_file) -> None:
    private, header, payload, plaintext = three_chunk_file
    tampered = bytearray(payload)
    tampered[16 + ENC_CHUNK + 5] ^= 1
    assert refused(header + bytes(tampered), private, "payload") == plaintext[:CHUNK]


def test_payload_swapped_from_another_file_with_the_same_key_refused() -> None:
    # Whoever holds the file key can encrypt other content under it; the signed digest of
    # the ciphertext is what catches the substitution.
    file_key = _age.new_file_key()
    original, substitute = io.BytesIO(), io.BytesIO()
    info = _age.encrypt_payload(io.BytesIO(b"the original document"), original, file_key)
    substituted = "подмена".encode()
    _age.encrypt_payload(io.BytesIO(substituted), substitute, file_key)
    with pytest.raises(_age.AgeError) as error:
        decrypt_payload_bytes(substitute.getvalue(), file_key, expected_sha256=info.sha256)
    assert error.value.kind == "payload"
    assert decrypt_payload_bytes(original.getvalue(), file_key, expected_sha256=info.sha256) == (
        b"the original document"
    )


def test_payload_under_another_file_key_refused() -> None:
    payload = io.BytesIO()
    _age.encrypt_payload(io.BytesIO(b"secret"), payload, _age.new_file_key())
    with pytest.raises(_age.AgeError) as error:
        decrypt_payload_bytes(payload.getvalue(), _age.new_file_key())
    assert error.value.kind == "payload"


# --- Attacks on the header ------------------------------------------------------------------


def test_flipped_header_mac_refused() -> None:
    private, public = keypair()
    blob, _, _ = seal(b"x", public)
    header_bytes, payload = split(blob)
    header = _age.parse_header(io.BytesIO(header_bytes))
    mac = bytearray(header.mac)
    mac[0] ^= 0x80
    forged = _age.Header(header.stanzas, bytes(mac), b"").encode()
    assert refused(forged + payload, private, "hmac") == b""


def test_stanza_injected_without_the_file_key_refused() -> None:
    # Adding a stanza (say, for an attacker's key) changes the MACed header.
    private, public = keypair()
    blob, _, _ = seal(b"x", public)
    header_bytes, payload = split(blob)
    header = _age.parse_header(io.BytesIO(header_bytes))
    extra = _age.Stanza("example.org/grease", ("a",), b"\x00" * 5)
    forged = _age.Header((*header.stanzas, extra), header.mac, b"").encode()
    refused(forged + payload, private, "hmac")


def test_wrong_identity_no_match() -> None:
    _, public = keypair()
    other_private, _ = keypair()
    blob, _, _ = seal(b"x", public)
    refused(blob, other_private, "no match")


def test_stanza_body_tampered_no_match() -> None:
    private, public = keypair()
    blob, _, _ = seal(b"x", public)
    header_bytes, payload = split(blob)
    header = _age.parse_header(io.BytesIO(header_bytes))
    stanza = header.stanzas[0]
    body = bytes([stanza.body[0] ^ 1]) + stanza.body[1:]
    forged = _age.Header((_age.Stanza(stanza.type, stanza.args, body),), header.mac, b"").encode()
    refused(forged + payload, private, "no match")


def test_scrypt_stanza_mixed_in_refused() -> None:
    private, public = keypair()
    blob, _, _ = seal(b"x", public)
    header_bytes, payload = split(blob)
    header = _age.parse_header(io.BytesIO(header_bytes))
    scrypt = _age.Stanza("scrypt", ("c2FsdHNhbHRzYWx0c2FsdA", "10"), bytes(32))
    forged = _age.Header((*header.stanzas, scrypt), header.mac, b"").encode()
    refused(forged + payload, private, "header")


def test_oversized_header_refused() -> None:
    huge = b"age-encryption.org/v1\n-> " + b"A" * _age.MAX_HEADER_SIZE + b"\n\n--- x\n"
    with pytest.raises(_age.AgeError) as error:
        _age.parse_header(io.BytesIO(huge))
    assert error.value.kind == "header"


@pytest.mark.parametrize(
    "header",
    [
        b"",
        b"age-encryption.org/v1\n",
        b"age-encryption.org/v1\n--- " + base64.b64encode(bytes(32)).rstrip(b"=") + b"\n",
        b"age-encryption.org/v1\n-> X25519\n",
        b"age-encryption.org/v1\n-> X25519\n\n--- " + b"A" * 42 + b"\n",
    ],
    ids=["empty", "version_only", "no_stanza", "cut_after_stanza", "short_mac"],
)
def test_malformed_headers_refused(header: bytes) -> None:
    with pytest.raises(_age.AgeError) as error:
        _age.parse_header(io.BytesIO(header))
    assert error.value.kind == "header"


def test_stanza_with_invalid_argument_cannot_be_built() -> None:
    with pytest.raises(ValueError):
        _age.Stanza("X25519", ("two words",), b"")
    with pytest.raises(ValueError):
        _age.Stanza("", (), b"")


# --- Any flipped bit -------------------------------------------------------------------------

FLIP_PLAINTEXT = os.urandom(2 * CHUNK + CHUNK // 2)
FLIP_PRIVATE, FLIP_PUBLIC = keypair()
FLIP_FILE, _, _ = seal(FLIP_PLAINTEXT, FLIP_PUBLIC)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(position=st.integers(0, len(FLIP_FILE) * 8 - 1))
def test_any_flipped_bit_is_refused(position: int) -> None:
    tampered = bytearray(FLIP_FILE)
    tampered[position // 8] ^= 1 << (position % 8)
    out = io.BytesIO()
    # Any other exception type, or success, fails the test.
    with pytest.raises(_age.AgeError):
        _age.decrypt_file(io.BytesIO(bytes(tampered)), out, FLIP_PRIVATE)


def test_flipped_bits_in_the_header_region_are_refused() -> None:
    # Hypothesis samples the whole file; the header is small, so walk it exhaustively.
    header_len = len(split(FLIP_FILE)[0])
    for position in range(header_len * 8):
        tampered = bytearray(FLIP_FILE)
        tampered[position // 8] ^= 1 << (position % 8)
        with pytest.raises(_age.AgeError):
            _age.decrypt_file(io.BytesIO(bytes(tampered)), io.BytesIO(), FLIP_PRIVATE)


# --- Constant memory -----------------------------------------------------------------------

MEMORY_SCRIPT = textwrap.dedent(
    """
    import hashlib, os, sys
    from accord.crypto import _age
    from accord.crypto._primitives import x25519_generate, x25519_public

    folder, size = sys.argv[1], int(sys.argv[2])
    plain, sealed, opened = (os.path.join(folder, n) for n in ("plain", "sealed", "opened"))
    with open(plain, "wb") as f:  # sparse: no time spent writing zeros
        f.truncate(size)
    private = x25519_generate()
    with open(plain, "rb") as src, open(sealed, "wb") as dst:
        _age.encrypt_file(src, dst, [x25519_public(private)])
    with open(sealed, "rb") as src, open(opened, "wb") as dst:
        info = _age.decrypt_file(src, dst, private)
    digest = hashlib.sha256()
    with open(opened, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    assert info.plaintext_size == size, info
    assert os.path.getsize(opened) == size
    zeros = hashlib.sha256()
    block = bytes(1 << 20)
    for _ in range(size >> 20):
        zeros.update(block)
    assert digest.digest() == zeros.digest()
    # VmHWM is this process's own peak; ru_maxrss would also count the parent image
    # it was forked from.
    with open("/proc/self/status") as status:
        print(next(x.split()[1] for x in status if x.startswith("VmHWM:")))
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_constant_memory_on_a_200_mib_file(tmp_path: Path) -> None:
    size = 200 * 1024 * 1024
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path), str(size)],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    peak_mib = int(result.stdout.strip()) / 1024  # VmHWM is in kB
    assert peak_mib < 64, f"peak RSS {peak_mib:.1f} MiB for a 200 MiB file"
