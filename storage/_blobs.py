"""A content-addressed blob store on the local file system.

Layout: the blob whose SHA-256 hex is `abcdef...` lives at `root/ab/cdef...` (62 hex
characters); blobs being written live in `root/tmp/` until committed.

Invariants:
- A blob is visible under its digest only once it is complete, synced and named by the
  SHA-256 of its bytes: a writer streams into a temporary file in `root/tmp/` (the same
  file system, so the final rename is atomic), fsyncs it, checks the digest and only then
  renames it into place and fsyncs the folder. A writer that is not committed (an
  exception, a digest mismatch) removes its temporary file; one killed outright leaves
  only a file in `root/tmp/`, which `sweep_temp` removes.
- Blobs are immutable: committing a digest already stored keeps the stored file.
- A digest is accepted only as 64 lowercase hex characters, so no caller-supplied string
  ever becomes a path component (no traversal, no absolute paths).
- The store keeps whatever bytes it is given; Accord gives it ciphertext only (age
  files), addressed by the digest of the ciphertext, the digest signatures cover.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

from ._errors import DigestMismatch, InvalidValue, NotFound, StorageError, StorageUnavailable
from ._types import check_sha256

__all__ = ["BlobStore", "BlobWriter"]

_TEMP_DIR = "tmp"
_TEMP_PREFIX = "blob-"
_CHUNK = 1 << 20


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    """Content-addressed files under `root` (see the module invariants)."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root)
        self._temp = self._root / _TEMP_DIR
        try:
            self._temp.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise StorageUnavailable(f"cannot create the blob store at {root}: {e}") from e

    @property
    def root(self) -> Path:
        return self._root

    def writer(self, *, hash: bool = True) -> BlobWriter:
        """A writer for one new blob; use it as a context manager and `commit()` it.

        With `hash=False` the writer does not hash what it writes and `commit` must be given
        the digest the caller already computed over the same bytes (for example while
        encrypting); the store then trusts that digest.
        """
        return BlobWriter(self, hashing=hash)

    def path(self, digest: str) -> Path:
        """Where the blob `digest` is (or would be) stored; it may not exist."""
        check_sha256(digest)
        return self._root / digest[:2] / digest[2:]

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        """The size in bytes of the blob; `NotFound` if absent."""
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError as e:
            raise NotFound(f"no blob {digest}") from e
        except OSError as e:
            raise StorageUnavailable(f"cannot read blob {digest}: {e}") from e

    def open(self, digest: str) -> BinaryIO:
        """The blob for reading (the caller closes it); `NotFound` if absent."""
        try:
            return self.path(digest).open("rb")
        except FileNotFoundError as e:
            raise NotFound(f"no blob {digest}") from e
        except OSError as e:
            raise StorageUnavailable(f"cannot read blob {digest}: {e}") from e

    def verify(self, digest: str) -> None:
        """Re-hash the stored blob; `DigestMismatch` if the file was altered on disk."""
        hasher = hashlib.sha256()
        with self.open(digest) as f:
            while chunk := f.read(_CHUNK):
                hasher.update(chunk)
        if hasher.hexdigest() != digest:
            raise DigestMismatch(f"blob {digest} does not hash to its name")

    def delete(self, digest: str) -> bool:
        """Remove the blob; returns False if it was not there."""
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        except OSError as e:
            raise StorageUnavailable(f"cannot delete blob {digest}: {e}") from e
        return True

    def sweep_temp(
        self, *, older_than: timedelta = timedelta(hours=1), now: datetime | None = None
    ) -> int:
        """Remove temporary files left by writers killed before they could clean up.

        Only files older than `older_than` go, so writers still running keep theirs.
        Returns how many files were removed.
        """
        limit = (now or datetime.now(UTC)) - older_than
        removed = 0
        for entry in self._temp.glob(f"{_TEMP_PREFIX}*"):
            try:
                if datetime.fromtimestamp(entry.stat().st_mtime, UTC) < limit:
                    entry.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def _install(self, temp: Path, digest: str) -> None:
        target = self.path(digest)
        folder = target.parent
        if not folder.is_dir():
            folder.mkdir(mode=0o700, exist_ok=True)
            _fsync_dir(self._root)
        if target.exists():
            # Same digest, same bytes: keep the file already there.
            temp.unlink()
            return
        os.replace(temp, target)
        _fsync_dir(folder)


class BlobWriter:
    """Streams one blob into the store. Made by `BlobStore.writer()`.

    `with store.writer() as w: w.write(chunk); digest = w.commit()`. Leaving the block
    without a successful `commit` discards everything written.
    """

    def __init__(self, store: BlobStore, *, hashing: bool) -> None:
        self._store = store
        self._hasher = hashlib.sha256() if hashing else None
        self._size = 0
        self._digest: str | None = None
        try:
            fd, name = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=".part", dir=store._temp)
        except OSError as e:
            raise StorageUnavailable(f"cannot write to the blob store: {e}") from e
        self._temp = Path(name)
        self._file: BinaryIO | None = os.fdopen(fd, "wb")

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._size

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append bytes to the blob; returns how many were written."""
        if self._file is None:
            raise StorageError("this blob writer is closed")
        view = memoryview(data).cast("B")
        try:
            self._file.write(view)
        except OSError as e:
            self.abort()
            raise StorageUnavailable(f"cannot write to the blob store: {e}") from e
        if self._hasher is not None:
            self._hasher.update(view)
        self._size += len(view)
        return len(view)

    def commit(self, expected_sha256: str | None = None, *, sha256: str | None = None) -> str:
        """Make the blob visible under its digest and return the digest.

        `expected_sha256`: refuse (and discard the blob) unless the bytes hash to it.
        `sha256`: the digest computed by the caller; required with `writer(hash=False)`,
        and with hashing on it is checked like `expected_sha256`.
        """
        if self._file is None:
            raise StorageError("this blob writer is closed")
        claims = [check_sha256(d) for d in (expected_sha256, sha256) if d is not None]
        try:
            if self._hasher is not None:
                digest = self._hasher.hexdigest()
            elif claims:
                digest = claims[0]
            else:
                raise InvalidValue("writer(hash=False) needs commit(sha256=...)")
            if any(claim != digest for claim in claims):
                raise DigestMismatch("the blob does not hash to the expected SHA-256")
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            self._store._install(self._temp, digest)
        except OSError as e:
            self.abort()
            raise StorageUnavailable(f"cannot commit the blob: {e}") from e
        except BaseException:
            self.abort()
            raise
        self._digest = digest
        return digest

    def abort(self) -> None:
        """Discard the blob being written (no effect after a successful commit)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._digest is None:
            self._temp.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._digest is None:
            self.abort()
