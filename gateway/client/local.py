"""A small typed client for a node's local API (what `accord send`, `read`, ... talk to).

Invariants:
- Every failure is one `ClientError` whose message is a single sentence for the user: the
  node's own `detail` when it answered, plus what to do next. Foreign exceptions (httpx,
  ssl, OS) are funnelled into it with `from e`.
- Attachments stream both ways. An upload is a multipart body produced by a generator,
  one bounded chunk at a time, with its exact length announced up front; a download is
  written chunk by chunk to the caller's file while its SHA-256 is computed. A file of any
  size is never held in memory.
- The node's certificate is checked against the CA file given (the `ca_file` that
  `accord init` printed), or against the system's trust store when none is given.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import ssl
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import quote

import httpx

__all__ = [
    "ClientError",
    "Download",
    "LocalClient",
    "SavedAttachment",
    "Upload",
    "multipart_upload",
    "safe_attachment_name",
]

CHUNK = 256 * 1024
API = "/api/v1"
# Sealing streams as the upload arrives, so the answer comes soon after the last byte;
# the generous read timeout covers a slow disk on the node.
TIMEOUT = httpx.Timeout(300.0, connect=10.0)

Progress = Callable[[int], None]


class ClientError(Exception):
    """A request to the node was refused or failed; the message says what to do next."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Upload:
    """A multipart body ready to stream: its content type, exact length and chunks."""

    content_type: str
    length: int
    chunks: Iterator[bytes]


@dataclass(frozen=True)
class SavedAttachment:
    """An attachment saved to `path` after its size and SHA-256 matched the manifest."""

    name: str
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class Download:
    """What one streamed attachment turned out to be, measured while it was written."""

    size: int
    sha256: str


def multipart_upload(
    meta: Mapping[str, Any],
    files: Sequence[Path],
    *,
    progress: Progress | None = None,
    boundary: str | None = None,
) -> Upload:
    """The send request's body: a `meta` field (JSON) first, then one `attachment` field
    per file, in order, each read in `CHUNK`-sized pieces only while it is being sent.

    The files are measured now, so the length is known; a file whose size changes before
    it has been sent makes the generator raise `ClientError`.
    """
    boundary = boundary or f"accord-{secrets.token_hex(16)}"
    delimiter = f"--{boundary}\r\n".encode("ascii")
    meta_part = (
        delimiter
        + b'Content-Disposition: form-data; name="meta"\r\n'
        + b"Content-Type: application/json; charset=utf-8\r\n\r\n"
        + json.dumps(meta, ensure_ascii=False).encode("utf-8")
        + b"\r\n"
    )
    heads: list[bytes] = []
    sizes: list[int] = []
    for path in files:
        try:
            size = path.stat().st_size
        except OSError as e:
            raise ClientError(f"cannot read {path}: {e.strerror}. Check the --attach path") from e
        if not path.is_file():
            raise ClientError(f"{path} is not a regular file. Attach files, not folders")
        sizes.append(size)
        # The node takes the names from meta; the part's own filename is informative only,
        # so it is percent-encoded to stay plain ASCII.
        heads.append(
            delimiter
            + b'Content-Disposition: form-data; name="attachment"; filename="'
            + quote(path.name).encode("ascii")
            + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
        )
    closing = f"--{boundary}--\r\n".encode("ascii")
    length = len(meta_part) + sum(len(h) + 2 for h in heads) + sum(sizes) + len(closing)

    def chunks() -> Iterator[bytes]:
        yield meta_part
        for path, head, size in zip(files, heads, sizes, strict=True):
            yield head
            sent, grew = 0, False
            try:
                with path.open("rb") as f:
                    while sent < size:
                        chunk = f.read(min(CHUNK, size - sent))
                        if not chunk:
                            break
                        sent += len(chunk)
                        yield chunk
                        if progress is not None:
                            progress(len(chunk))
                    grew = bool(f.read(1))
            except OSError as e:
                raise ClientError(f"cannot read {path}: {e.strerror}") from e
            if sent != size or grew:
                raise ClientError(
                    f"{path} changed while it was being sent. Send it again once it is complete"
                )
            yield b"\r\n"
        yield closing

    return Upload(f"multipart/form-data; boundary={boundary}", length, chunks())


class LocalClient:
    """The local API of one node, as one user (the bearer of `token`)."""

    def __init__(
        self,
        node_url: str,
        token: str,
        ca_file: Path | str | None = None,
        *,
        timeout: httpx.Timeout = TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.node_url = node_url.rstrip("/")
        if not self.node_url.startswith(("https://", "http://")):
            raise ClientError(
                f"--node {node_url!r} is not a URL. Give the node_url `accord init` printed, "
                "like https://127.0.0.1:9444"
            )
        if not token:
            raise ClientError("no API token: pass --token or set ACCORD_TOKEN")
        if not token.isascii() or any(c.isspace() for c in token):
            raise ClientError("the API token has characters no token has. Check --token")
        verify: ssl.SSLContext | bool = True
        if ca_file is not None:
            try:
                verify = ssl.create_default_context(cafile=str(ca_file))
            except (OSError, ssl.SSLError) as e:
                reason = getattr(e, "strerror", None) or str(e)
                raise ClientError(
                    f"cannot use the CA file {ca_file}: {reason}. Give the ca_file "
                    "`accord init` printed, with --ca or ACCORD_CA"
                ) from e
        self.ca_file = ca_file
        self._http = httpx.Client(
            base_url=self.node_url + API,
            headers={"Authorization": f"Bearer {token}"},
            verify=verify,
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> LocalClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- Requests --------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return _object(self._request("GET", "/health"))

    def whoami(self) -> dict[str, Any]:
        """`{user, role, clearance, party}` of the token's bearer."""
        return _object(self._request("GET", "/whoami"))

    def send(
        self,
        meta: Mapping[str, Any],
        files: Sequence[Path] = (),
        *,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Seal and queue a message: `{message_id, status}`, status "queued" or "draft"."""
        names = [p.name for p in files]
        if list(meta.get("attachments") or []) != names:
            meta = {**meta, "attachments": names}
        upload = multipart_upload(meta, files, progress=progress)
        return _object(
            self._request(
                "POST",
                "/messages",
                content=upload.chunks,
                headers={
                    "Content-Type": upload.content_type,
                    "Content-Length": str(upload.length),
                },
            )
        )

    def sign(self, message_id: str, passphrase: str) -> dict[str, Any]:
        """A signatory signs a drafted request, which is then queued."""
        return _object(
            self._request(
                "POST", f"/messages/{_id(message_id)}/sign", json={"passphrase": passphrase}
            )
        )

    def messages(self, box: str, *, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """The inbox or outbox, newest first as the node orders them."""
        document = self._request(
            "GET", "/messages", params={"box": box, "limit": limit, "offset": offset}
        )
        if not isinstance(document, list) or not all(isinstance(m, dict) for m in document):
            raise ClientError("the node answered with something other than a message list")
        return document

    def read(self, message_id: str) -> dict[str, Any]:
        """The decrypted message: metadata, body, art. 4.3 fields and the attachments'
        names, sizes and SHA-256 digests from the signed manifest."""
        return _object(self._request("GET", f"/messages/{_id(message_id)}"))

    def status(self, message_id: str) -> dict[str, Any]:
        """`{message_id, status, direction, events: [{at, event, detail}]}`."""
        return _object(self._request("GET", f"/messages/{_id(message_id)}/status"))

    def download(
        self,
        message_id: str,
        index: int,
        sink: IO[bytes],
        *,
        progress: Progress | None = None,
    ) -> Download:
        """Stream attachment `index` into `sink`; return its size and SHA-256 as received.
        The caller compares them with the manifest before trusting the file."""
        digest = hashlib.sha256()
        size = 0
        url = f"/messages/{_id(message_id)}/attachments/{index}"
        with self._funnel():
            with self._http.stream("GET", url) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _refusal(response)
                for chunk in response.iter_bytes(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    try:
                        sink.write(chunk)
                    except OSError as e:
                        raise ClientError(f"cannot write the attachment: {e.strerror}") from e
                    if progress is not None:
                        progress(len(chunk))
        return Download(size, digest.hexdigest())

    def save_attachments(
        self,
        message: Mapping[str, Any],
        folder: Path,
        *,
        progress: Progress | None = None,
    ) -> list[SavedAttachment]:
        """Save every attachment of `message` (as `read` returned it) into `folder`.

        1. Every name and target is checked before anything is downloaded: a name that
           could leave `folder`, or a file that already exists there, refuses them all.
        2. Each attachment streams into a temporary file beside its target and gets its
           name only once its size and SHA-256 match the signed manifest; on any failure
           the temporary file is removed and nothing is left under the name.
        """
        message_id = str(message.get("message_id"))
        plan: list[tuple[int, SavedAttachment]] = []
        for index, item in enumerate(message.get("attachments") or []):
            if not isinstance(item, Mapping):
                raise ClientError("the node listed an attachment without name, size and digest")
            name = safe_attachment_name(item.get("name"))
            size, digest = item.get("size"), item.get("sha256")
            if not isinstance(size, int) or not isinstance(digest, str):
                raise ClientError(f"the manifest of {name!r} has no size or digest: not saved")
            target = folder / name
            if target.exists():
                raise ClientError(
                    f"{target} already exists: nothing was saved. Remove it or choose another "
                    "folder"
                )
            plan.append((index, SavedAttachment(name, target, size, digest.lower())))
        if not plan:
            return []
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ClientError(f"cannot create {folder}: {e.strerror}") from e
        for index, expected in plan:
            self._save_one(message_id, index, expected, progress)
        return [saved for _, saved in plan]

    def _save_one(
        self, message_id: str, index: int, expected: SavedAttachment, progress: Progress | None
    ) -> None:
        target = expected.path
        try:
            handle = tempfile.NamedTemporaryFile(
                dir=target.parent, prefix=".accord-", suffix=".part", delete=False
            )
        except OSError as e:
            raise ClientError(f"cannot write into {target.parent}: {e.strerror}") from e
        temporary = Path(handle.name)
        try:
            with handle:
                got = self.download(message_id, index, handle, progress=progress)
                handle.flush()
                os.fsync(handle.fileno())
            if got.size != expected.size or got.sha256 != expected.sha256:
                raise ClientError(
                    f"{expected.name} does not match the signed manifest (got {got.size} "
                    f"bytes, sha256 {got.sha256[:16]}…): it was not saved. Report this to the "
                    "node's admin"
                )
            try:
                # A hard link never replaces a file that appeared meanwhile.
                os.link(temporary, target)
            except FileExistsError as e:
                raise ClientError(f"{target} appeared meanwhile: it was not replaced") from e
            except OSError:
                # No hard links on this file system: rename, after one more check.
                if target.exists():
                    raise ClientError(f"{target} appeared meanwhile: it was not replaced") from None
                os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)

    def bundle(self, message_id: str) -> bytes:
        """The evidence bundle of a message, byte for byte as the node made it."""
        path = f"/messages/{_id(message_id)}/bundle"
        with self._funnel():
            response = self._http.get(path)
        if response.status_code >= 400:
            raise _refusal(response)
        return response.content

    def audit_verify(self) -> dict[str, Any]:
        """The node's check of its whole audit log (auditors and admins)."""
        return _object(self._request("GET", "/audit/verify"))

    def audit_get(self, path: str, **params: Any) -> Any:
        """A GET of the audit API (`path` under /api/v1/audit), its JSON answer."""
        return self._request("GET", path, params=params)

    # -- Plumbing ----------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        with self._funnel():
            response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise _refusal(response)
        try:
            return response.json()
        except ValueError as e:
            raise ClientError(
                f"the node at {self.node_url} answered {method} {path} with something other "
                "than JSON. Check that --node is an Accord node's local API"
            ) from e

    @contextlib.contextmanager
    def _funnel(self) -> Iterator[None]:
        """Turns transport failures into one `ClientError` that says what to do."""
        url = self.node_url
        try:
            yield
        except httpx.ConnectError as e:
            if _caused_by(e, ssl.SSLCertVerificationError):
                where = (
                    "the system's trust store"
                    if self.ca_file is None
                    else f"the CA file {self.ca_file}"
                )
                raise ClientError(
                    f"the node at {url} presented a certificate that {where} does not trust. "
                    "Pass the node's ca_file (printed by `accord init`) with --ca or ACCORD_CA"
                ) from e
            if _caused_by(e, ssl.SSLError):
                raise ClientError(
                    f"TLS with the node at {url} failed ({e}). Check that --node is the "
                    "node's local API URL (https://...)"
                ) from e
            raise ClientError(f"cannot reach the node at {url}: is `accord serve` running?") from e
        except httpx.TimeoutException as e:
            raise ClientError(
                f"the node at {url} did not answer in time. Check that it is running and "
                "not overloaded, then try again"
            ) from e
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as e:
            raise ClientError(
                f"--node {url!r} is not a usable URL. Give the node_url `accord init` printed"
            ) from e
        except httpx.TransportError as e:
            raise ClientError(
                f"the connection to the node at {url} broke ({type(e).__name__}: {e}). "
                "Try again; if it persists, ask the node's admin to check its log"
            ) from e


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


# What to do, for answers whose detail may not say it.
_HINTS = {
    401: "Check --token or ACCORD_TOKEN",
    404: "Check the message id with `accord inbox` or `accord outbox`",
}


def _refusal(response: httpx.Response) -> ClientError:
    """The node's `detail`, plus what to do next."""
    detail: str | None = None
    try:
        document = response.json()
    except ValueError:
        document = None
    if isinstance(document, dict):
        value = document.get("detail")
        if isinstance(value, str):
            detail = value
        elif isinstance(value, list) and value:
            # FastAPI's validation errors: a list of {loc, msg}.
            first = value[0]
            if isinstance(first, dict):
                where = ".".join(str(p) for p in first.get("loc", []) if p != "body")
                detail = f"{where}: {first.get('msg', 'invalid')}" if where else first.get("msg")
    status = response.status_code
    if not detail:
        detail = f"the node answered HTTP {status} {response.reason_phrase}"
    detail = " ".join(detail.split()).rstrip(".")
    hint = _HINTS.get(status)
    if status >= 500:
        hint = "Ask the node's admin to check its log"
    message = f"{detail}. {hint}" if hint and hint.lower() not in detail.lower() else detail
    return ClientError(message, status=status)


def _object(document: Any) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise ClientError("the node answered with something other than a JSON object")
    return document


def _id(message_id: str) -> str:
    """A message id as one path segment: nothing in it may reach another URL."""
    if not message_id or message_id in (".", "..") or not message_id.isprintable():
        raise ClientError(f"{message_id!r} is not a message id. Copy it from `accord inbox`")
    return quote(message_id, safe="")


def safe_attachment_name(name: object) -> str:
    """`name` if it is a plain file name that stays inside the folder it is saved in;
    `ClientError` otherwise (a hostile sender could name a file `../../.bashrc`)."""
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or "/" in name
        or "\\" in name
        or (os.altsep is not None and os.altsep in name)
        or not name.isprintable()
    ):
        raise ClientError(
            f"an attachment is named {name!r}, which could land outside the folder: nothing "
            "was saved. Ask the sender to rename it"
        )
    return name
