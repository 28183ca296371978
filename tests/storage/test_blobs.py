"""The content-addressed blob store."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accord.storage import BlobStore, DigestMismatch, InvalidValue, NotFound, StorageError

CONTENT = "зашифрованное вложение ".encode() * 1000


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _temp_files(store: BlobStore) -> list[Path]:
    return _files(store.root / "tmp")


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


def test_blob_round_trip_and_layout(store: BlobStore) -> None:
    with store.writer() as w:
        for i in range(0, len(CONTENT), 4096):
            w.write(CONTENT[i : i + 4096])
        assert w.size == len(CONTENT)
        digest = w.commit()
    assert digest == hashlib.sha256(CONTENT).hexdigest()
    assert store.path(digest) == store.root / digest[:2] / digest[2:]
    assert _files(store.root) == [store.path(digest)]
    assert store.exists(digest)
    assert store.size(digest) == len(CONTENT)
    with store.open(digest) as f:
        assert f.read() == CONTENT
    store.verify(digest)


def test_commit_with_the_expected_digest(store: BlobStore) -> None:
    expected = hashlib.sha256(CONTENT).hexdigest()
    with store.writer() as w:
        w.write(memoryview(CONTENT))
        assert w.commit(expected) == expected
    assert store.exists(expected)


def test_blob_digest_mismatch_leaves_nothing(store: BlobStore) -> None:
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(DigestMismatch), store.writer() as w:
        w.write(CONTENT)
        w.commit(expected_sha256=wrong)
    assert _files(store.root) == []


def test_blob_crash_mid_write_leaves_nothing(store: BlobStore) -> None:
    class Crash(Exception):
        pass

    with pytest.raises(Crash), store.writer() as w:
        w.write(CONTENT[:1000])
        raise Crash("the peer hung up mid-upload")
    assert _files(store.root) == []
    assert not store.exists(hashlib.sha256(CONTENT[:1000]).hexdigest())


def test_uncommitted_writer_leaves_nothing(store: BlobStore) -> None:
    with store.writer() as w:
        w.write(CONTENT)
        assert len(_temp_files(store)) == 1  # Written, but only in tmp/.
    assert _files(store.root) == []


def test_writing_an_existing_digest_is_idempotent(store: BlobStore) -> None:
    digests = []
    for _ in range(2):
        with store.writer() as w:
            w.write(CONTENT)
            digests.append(w.commit())
    assert digests[0] == digests[1]
    assert _files(store.root) == [store.path(digests[0])]


def test_unhashed_writer_uses_the_digest_given(store: BlobStore) -> None:
    digest = hashlib.sha256(CONTENT).hexdigest()
    with store.writer(hash=False) as w:
        w.write(CONTENT)
        assert w.commit(sha256=digest) == digest
    store.verify(digest)


def test_unhashed_writer_needs_a_digest(store: BlobStore) -> None:
    with pytest.raises(InvalidValue), store.writer(hash=False) as w:
        w.write(CONTENT)
        w.commit()
    assert _files(store.root) == []


def test_unhashed_writer_refuses_contradictory_digests(store: BlobStore) -> None:
    with pytest.raises(DigestMismatch), store.writer(hash=False) as w:
        w.write(CONTENT)
        w.commit("a" * 64, sha256="b" * 64)
    assert _files(store.root) == []


def test_hashing_writer_checks_the_digest_given(store: BlobStore) -> None:
    with pytest.raises(DigestMismatch), store.writer() as w:
        w.write(CONTENT)
        w.commit(sha256="c" * 64)
    assert _files(store.root) == []


def test_writer_is_closed_after_commit(store: BlobStore) -> None:
    with store.writer() as w:
        w.write(b"x")
        w.commit()
        with pytest.raises(StorageError):
            w.write(b"y")
        with pytest.raises(StorageError):
            w.commit()


@pytest.mark.parametrize(
    "digest",
    [
        "../../../../etc/passwd",
        "/etc/passwd",
        "ab/../../" + "0" * 55,
        "A" * 64,
        "a" * 63,
        "a" * 65,
        "a" * 64 + "\n",
        "g" * 64,
        "",
    ],
)
def test_blob_path_traversal_refused(store: BlobStore, digest: str) -> None:
    for operation in (store.path, store.exists, store.size, store.open, store.delete):
        with pytest.raises(InvalidValue):
            operation(digest)
    with pytest.raises(InvalidValue), store.writer() as w:
        w.write(b"x")
        w.commit(expected_sha256=digest)
    with pytest.raises(InvalidValue), store.writer(hash=False) as w:
        w.write(b"x")
        w.commit(sha256=digest)
    assert _files(store.root) == []


def test_missing_blob_not_found(store: BlobStore) -> None:
    digest = "0" * 64
    assert not store.exists(digest)
    with pytest.raises(NotFound):
        store.open(digest)
    with pytest.raises(NotFound):
        store.size(digest)
    assert store.delete(digest) is False


def test_delete(store: BlobStore) -> None:
    with store.writer() as w:
        w.write(CONTENT)
        digest = w.commit()
    assert store.delete(digest) is True
    assert not store.exists(digest)


def test_tampered_blob_fails_verification(store: BlobStore) -> None:
    with store.writer() as w:
        w.write(CONTENT)
        digest = w.commit()
    path = store.path(digest)
    path.chmod(0o600)
    path.write_bytes(CONTENT[:-1] + b"!")
    with pytest.raises(DigestMismatch):
        store.verify(digest)


def test_sweep_removes_only_stale_temp_files(store: BlobStore) -> None:
    # A writer killed with -9 leaves its temp file; a live writer's must survive.
    stale = store.root / "tmp" / "blob-killed.part"
    stale.write_bytes(b"half a blob")
    hour_ago = time.time() - 7200
    os.utime(stale, (hour_ago, hour_ago))
    with store.writer() as live:
        live.write(b"in progress")
        assert store.sweep_temp(older_than=timedelta(hours=1), now=datetime.now(UTC)) == 1
        assert len(_temp_files(store)) == 1
        live.commit()
    assert not stale.exists()


@settings(max_examples=40, deadline=None)
@given(chunks=st.lists(st.binary(max_size=3000), max_size=8))
def test_any_chunking_stores_the_concatenation(chunks: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as root:
        store = BlobStore(Path(root))
        with store.writer() as w:
            for chunk in chunks:
                w.write(chunk)
            digest = w.commit()
        data = b"".join(chunks)
        assert digest == hashlib.sha256(data).hexdigest()
        with store.open(digest) as f:
            assert f.read() == data
        assert _temp_files(store) == []
