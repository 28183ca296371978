"""The local API: the Party's own users send, list and read messages here.

Users authenticate with API tokens (only their SHA-256 is stored) and act under roles:
operators and signatories send and read within their clearance; a signatory also signs
requests (art. 4.4); admins manage the node; auditors see metadata and timelines, never
content. Errors to local users are specific and say what to do next.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from accord.crypto import (
    Envelope,
    KeyFileError,
    MessageDraft,
    MessageOpener,
    OpenedPart,
    SealedMessage,
    VerificationError,
    VerifyKey,
    canonical_json,
    new_message_id,
    seal_message,
    verify_envelope,
)
from accord.crypto.bundle import LogEvent
from accord.crypto.canonical import loads_canonical
from accord.crypto.sealed import STATEMENT_TYPE, Statement, VerifiedMessage
from accord.gateway.admin import home as _admin
from accord.gateway.audit import log as _audit
from accord.gateway.audit.log import EventKind
from accord.gateway.keys.lifecycle import expiry_warnings
from accord.gateway.keys.store import KeyStoreError, load_signatory
from accord.gateway.messages.access import NotKnown, governing_marking, known_message
from accord.gateway.messages.parts import message_row, open_part, read_part
from accord.gateway.messages.upload import QueueReader, UploadError, UploadTooLarge, parse_upload
from accord.gateway.node.groupcommit import BulkWrite
from accord.gateway.node.runtime import Node, PeerUnknown
from accord.gateway.workflow import cases as _workflow
from accord.policy import MarkingError
from accord.policy.workflow import WorkflowError
from accord.storage import (
    Conflict,
    Direction,
    KeyKind,
    Message,
    MessagePart,
    NewMessage,
    NotFound,
    PartRef,
    Role,
    StorageError,
    User,
    get_message,
    get_parts,
    insert_draft,
    insert_outgoing,
    insert_outgoing_many,
    list_events,
    list_keys,
    list_peers,
    list_users,
    list_visible_messages,
    queue_draft,
)

__all__ = ["local_router"]

log = logging.getLogger("accord.local")
MESSAGE_TYPES = ("request", "reply", "notice")
SENDERS = (Role.OPERATOR, Role.SIGNATORY)
READERS = (Role.OPERATOR, Role.SIGNATORY)


def _problem(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


class SignBody(BaseModel):
    passphrase: str


class AccessBody(BaseModel):
    user: str


class NewUserBody(BaseModel):
    name: str
    role: str
    clearance: str = "OFFICIAL"
    signatory_passphrase: str | None = None


async def current_user(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> User:
    """The user whose API token the request carries (only its SHA-256 is stored).

    A user found in the last `Node.user_cache_seconds` is answered from memory, on the
    event loop: a busy client's every request would otherwise take a thread and a read
    transaction for the same row."""
    node: Node = request.app.state.node
    if not authorization or not authorization.startswith("Bearer "):
        raise _problem(401, "missing API token: pass --token or set ACCORD_TOKEN")
    token = authorization.removeprefix("Bearer ").strip()
    digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
    user = node.cached_user(digest)
    if user is None:
        user = await run_in_threadpool(node.user_by_token, digest)
    if user is None:
        raise _problem(401, "unknown or disabled API token: ask the node's admin for one")
    # The user's rate limit (gateway/_ratelimit.py): a flood from one user slows no other.
    limited = request.app.state.rate_limiter.check_user(user.name)
    if limited is not None:
        retry_after, message = limited
        raise HTTPException(429, message, headers={"Retry-After": str(retry_after)})
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def local_router(node: Node) -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    queue_outgoing = _outgoing_writer(node)

    @router.get("/health")
    def health() -> dict[str, Any]:
        now = node.clock()
        with node.db.session(readonly=True) as session:
            warnings = expiry_warnings(session, node.party, now)
        return {"party": node.party, "status": "ok", "time": now.isoformat(), "warnings": warnings}

    @router.get("/whoami")
    def whoami(user: CurrentUser) -> dict[str, Any]:
        return {
            "user": user.name,
            "role": user.role.value,
            "clearance": user.clearance,
            "party": node.party,
        }

    @router.get("/users")
    def users(user: CurrentUser) -> list[dict[str, Any]]:
        """The node's local users (admins only); tokens are never shown again."""
        _require_admin(user)
        with node.db.session(readonly=True) as session:
            rows = list_users(session)
        return [
            {
                "user": u.name,
                "role": u.role.value,
                "clearance": u.clearance,
                "created": u.created_at.isoformat(),
                "disabled": u.disabled,
            }
            for u in rows
        ]

    @router.post("/users", status_code=201)
    def create_user(body: NewUserBody, user: CurrentUser) -> dict[str, Any]:
        """Create a local user (admins only); the token is returned once."""
        _require_admin(user)
        try:
            created = _admin.add_user(
                node.home,
                body.name,
                role=body.role,
                clearance=body.clearance,
                signatory_passphrase=(
                    body.signatory_passphrase.encode("utf-8")
                    if body.signatory_passphrase is not None
                    else None
                ),
                now=node.clock(),
            )
        except _admin.AdminError as e:
            raise _problem(422, str(e)) from e
        return {"user": created.user, "role": created.role.value, "token": created.token}

    @router.post("/messages", status_code=201)
    async def send(request: Request, user: CurrentUser) -> dict[str, Any]:
        """Seal and queue a message: multipart `meta` (JSON) then `attachment` files."""
        if user.role not in SENDERS:
            raise _problem(403, f"a user with role {user.role.value} cannot send messages")
        # Yield to the delivery worker while it is far behind (bounded: see `_flow`).
        await node.backlog.room()

        def start(meta: dict[str, Any], readers: list[QueueReader]) -> Future[Any]:
            sending = _Sending(node, user, meta, readers, queue_outgoing)  # raises on bad meta
            if not readers:
                # Nothing to stream: the node's shared pool seals it, without the cost of
                # starting a thread (Thread.start blocks the event loop until it runs),
                # and the pool thread is free again as soon as it has sealed: the commit
                # is awaited by the request, not by a pool thread.
                return sending.submit()
            # Attachments are fed from the event loop while they are sealed, so their job
            # gets a thread of its own: a shared, bounded pool could leave a job waiting
            # for a thread while the loop waits for that job to take its data.
            future: Future[Any] = Future()
            threading.Thread(target=sending.run, args=(future,), daemon=True).start()
            return future

        try:
            result = await parse_upload(
                request.headers.get("content-type", ""),
                request.stream(),
                max_bytes=node.config.max_upload_bytes,
                start=start,
            )
        except UploadTooLarge as e:
            raise _problem(413, str(e)) from e
        except (UploadError, _SendRefused) as e:
            if isinstance(e, _SendRefused):
                _audit.record_alone(node, _refusal(node, EventKind.SEND_REFUSED, user, str(e)))
            raise _problem(e.status if isinstance(e, _SendRefused) else 400, str(e)) from e
        if result.get("status") == "queued":
            node.backlog.accepted()
        node.wake_worker()
        return dict(result)

    @router.post("/messages/{message_id}/sign")
    def sign(message_id: str, body: SignBody, user: CurrentUser) -> dict[str, Any]:
        """A signatory (head or deputy, art. 4.4) signs a drafted request; it is queued."""
        if user.role is not Role.SIGNATORY:
            raise _problem(403, "only a signatory (head or deputy) signs requests (art. 4.4)")
        with node.db.session(readonly=True) as session:
            row = _get(session, message_id)
            if row.direction is not Direction.OUT or row.status.value != "draft":
                raise _problem(409, f"message {message_id} is not a draft awaiting signature")
            envelope = Envelope.from_bytes(row.envelope)
        try:
            signatory = load_signatory(
                node.home, user.name, body.passphrase.encode("utf-8"), db=node.db
            )
        except (KeyStoreError, KeyFileError, OSError) as e:
            raise _problem(403, f"cannot use your signing key: {e}") from e
        signed = envelope.add_signatures([signatory])
        now = node.clock()
        try:
            with node.db.session() as session:
                queued = queue_draft(
                    session,
                    message_id,
                    envelope=signed.to_bytes(),
                    now=now,
                    detail={"by": user.name, "key_id": signatory.key_id},
                )
                _audit.record(
                    session,
                    _audit.message_event(
                        EventKind.MESSAGE_SIGNED,
                        node.party,
                        queued,
                        now,
                        envelope=signed,
                        user=user.name,
                        detail={"key_id": signatory.key_id},
                    ),
                )
        except StorageError as e:
            raise _problem(409, str(e)) from e
        node.wake_worker()
        return {"message_id": message_id, "status": "queued"}

    @router.get("/messages")
    def listing(
        user: CurrentUser,
        box: Annotated[str, Query(pattern="^(inbox|outbox)$")] = "inbox",
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[dict[str, Any]]:
        direction = Direction.IN if box == "inbox" else Direction.OUT
        with node.db.session(readonly=True) as session:
            # Art. 6.3: a confidential-fact case's messages are left out for users
            # without need-to-know, in the query itself so that pages stay whole.
            rows = list_visible_messages(
                session,
                direction,
                user_name=user.name,
                sees_all=user.role is Role.SIGNATORY,
                limit=limit,
                offset=offset,
            )
        return [_summary(r) for r in rows]

    @router.get("/messages/{message_id}/status")
    def status(message_id: str, user: CurrentUser) -> dict[str, Any]:
        # Need-to-know: clearance and art. 6.3; a forbidden message answers as a missing one.
        try:
            known_message(node, user, message_id)
        except NotKnown as e:
            raise _problem(404, str(e)) from e
        with node.db.session(readonly=True) as session:
            row = _get(session, message_id, user)
            events = list_events(session, message_id)
            case = _workflow.case_summary(session, message_id, now=node.clock())
        return {
            "message_id": message_id,
            "status": row.status.value,
            "direction": row.direction.value,
            "case": case,
            "events": [
                {"at": e.at.isoformat(), "event": e.event, "detail": e.detail} for e in events
            ],
        }

    @router.get("/messages/{message_id}")
    def read(message_id: str, user: CurrentUser) -> dict[str, Any]:
        row, opener, _statement = _opener_for(node, user, message_id)
        with node.db.session(readonly=True) as session:
            parts = get_parts(session, message_id)
        payload = read_part(node, parts[0])
        try:
            body = loads_canonical(opener.open_body(payload))
        except VerificationError as e:
            log.error("stored message %s failed to open: %s", message_id, e.reason)
            raise _problem(500, "the stored message does not open: report this to the admin") from e
        _record_read(
            node,
            _audit.message_event(
                EventKind.MESSAGE_READ, node.party, row, node.clock(), user=user.name
            ),
        )
        return {
            "message_id": message_id,
            "from": row.sender,
            "to": row.recipient,
            "type": row.type,
            # The governing marking (signed statement and re-markings), not the column.
            "marking": governing_marking(node, row).to_dict(),
            "purpose": row.purpose,
            "created": row.created.isoformat(),
            "in_reply_to": row.in_reply_to,
            "body": body.get("text", ""),
            "fields": body.get("fields", {}),
            "attachments": body.get("attachments", []),
            "status": row.status.value,
        }

    @router.get("/messages/{message_id}/attachments/{index}")
    async def attachment(message_id: str, index: int, user: CurrentUser) -> StreamingResponse:
        _row, opener, statement = _opener_for(node, user, message_id)
        if not 0 <= index < len(statement.attachments):
            raise _problem(404, f"message {message_id} has no attachment {index}")
        # Part 0 is the body; a small attachment may be stored inline, not as a blob.
        with node.db.session(readonly=True) as session:
            parts = get_parts(session, message_id)
        if len(parts) != len(statement.parts):
            raise _problem(409, f"message {message_id} has no content on this node")
        _record_read(
            node,
            _audit.message_event(
                EventKind.MESSAGE_READ,
                node.party,
                _row,
                node.clock(),
                user=user.name,
                detail={"attachment": index},
            ),
        )
        return StreamingResponse(
            _decrypt_stream(node, opener, index, parts[index + 1]),
            media_type="application/octet-stream",
        )

    @router.get("/cases/{case_id}")
    def case(case_id: str, user: CurrentUser) -> dict[str, Any]:
        """A request's case: state, overdue flag (art. 4.2), allowed steps, history."""
        try:  # need-to-know of the request the case is about (clearance, art. 6.3)
            known_message(node, user, case_id)
        except NotKnown as e:
            raise _problem(
                404,
                f"no case {case_id} on this node: check the request's message id with "
                "`accord inbox` or `accord outbox`",
            ) from e
        with node.db.session(readonly=True) as session:
            try:
                return _workflow.case_view(session, user, case_id, now=node.clock())
            except _workflow.WorkflowRefused as e:
                raise _problem(e.status, str(e)) from e

    @router.post("/cases/{case_id}/access")
    def grant(case_id: str, body: AccessBody, user: CurrentUser) -> dict[str, Any]:
        """A signatory grants a user need-to-know of a confidential-fact case (art. 6.3)."""
        try:
            with node.db.session() as session:
                return _workflow.grant_access(
                    session, user, case_id, body.user, now=node.clock(), local=node.party
                )
        except _workflow.WorkflowRefused as e:
            raise _problem(e.status, str(e)) from e

    @router.get("/agreement")
    def agreement(user: CurrentUser) -> list[dict[str, Any]]:
        """Where the agreement stands with each peer (art. 13)."""
        with node.db.session(readonly=True) as session:
            peers = [p.party_id for p in list_peers(session)]
            return _workflow.agreement_view(
                session, peers, now=node.clock(), periods=_workflow.periods_of(node)
            )

    return router


class _SendRefused(Exception):
    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def _outgoing_writer(node: Node) -> BulkWrite:
    """The group commit's bulk write for sent messages: every message sealed while the
    previous transaction committed is queued by one `insert_outgoing_many` (DESIGN 6:
    persist, then deliver; each message whole or not at all), with the audit leaf of each
    one queued, in the same transaction (DESIGN 7)."""

    def write(session: Session, items: Sequence[tuple[NewMessage, LogEvent]]) -> list[Any]:
        results = list(insert_outgoing_many(session, [m for m, _ in items], now=node.clock()))
        _audit.record_all(
            session, (e for (_, e), r in zip(items, results, strict=True) if r is None)
        )
        return results

    return write


class _Sending:
    """One send request: checks the meta, then (in its own thread) seals into the store."""

    def __init__(
        self,
        node: Node,
        user: User,
        meta: dict[str, Any],
        readers: list[QueueReader],
        queue_outgoing: BulkWrite,
    ) -> None:
        self.node, self.user, self.readers = node, user, readers
        self.queue_outgoing = queue_outgoing
        # One read transaction for every check (this runs for each message sent).
        with node.db.session(readonly=True) as session:
            self._check(session, meta)

    def _check(self, session: Session, meta: dict[str, Any]) -> None:
        node, user = self.node, self.user
        try:
            # A workflow step names its case; the recipient and purpose follow from it.
            meta = _workflow.reply_defaults(session, user, meta)
        except _workflow.WorkflowRefused as e:
            raise _SendRefused(str(e), e.status) from e
        to = meta.get("to")
        kind = meta.get("type", "request")
        purpose = meta.get("purpose")
        if not isinstance(to, str) or not to:
            raise _SendRefused("name the recipient Party with --to")
        if kind not in MESSAGE_TYPES:
            raise _SendRefused(f"unknown message type {kind!r}: use {', '.join(MESSAGE_TYPES)}")
        if not isinstance(purpose, str) or not purpose.strip():
            raise _SendRefused("state the purpose with --purpose (art. 7.2 binds its use to it)")
        try:
            # The profile's scheme; a state-secret level is refused here (art. 7.5).
            scheme = node.profile.scheme
            self.marking = scheme.parse_for_sending(meta.get("marking") or {})
            if not scheme.may_read(user.clearance, self.marking):
                raise _SendRefused(
                    f"your clearance {user.clearance} is below the marking {self.marking.level}"
                )
        except MarkingError as e:
            raise _SendRefused(str(e)) from e
        try:
            self.peer = node.peer_keys(to)
        except PeerUnknown as e:
            raise _SendRefused(
                f"{to!r} is not an active peer of this node: see `accord peer add`"
            ) from e
        names = meta.get("attachments") or []
        if not isinstance(names, list) or not all(_safe_file_name(n) for n in names):
            raise _SendRefused(
                "attachments must be plain file names (no folders, no control characters, "
                "at most 255 characters)"
            )
        self.names: list[str] = names
        self.text = meta.get("body", "")
        self.fields = meta.get("fields") or {}
        if not isinstance(self.text, str) or not isinstance(self.fields, dict):
            raise _SendRefused("body must be text and fields an object")
        self.kind, self.to, self.purpose = kind, to, purpose
        self.in_reply_to = meta.get("in_reply_to")
        if meta.get("urgent_oral") and kind != "request":
            raise _SendRefused("--urgent-oral registers an urgent request (art. 4.2)")
        # The agreement's rules (art. 4 to 7, 13), checked before anything is sealed.
        self.periods = _workflow.periods_of(node)
        try:
            self.plan = _workflow.plan_outgoing(
                session,
                party=node.party,
                user=user,
                meta=meta,
                message_type=kind,
                to=to,
                marking=self.marking,
                lowest_level=node.profile.scheme.levels[0],
                now=node.clock(),
                periods=self.periods,
            )
        except _workflow.WorkflowRefused as e:
            raise _SendRefused(str(e), e.status) from e
        self.extensions: dict[str, Any] = dict(self.plan.extensions) if self.plan else {}
        if self.plan is not None:
            self.fields = {**self.fields, **self.plan.fields}
        self.signatory = None
        if (kind == "request" and user.role is Role.SIGNATORY) or (
            self.plan is not None and self.plan.signatory_required
        ):
            passphrase = meta.get("signatory_passphrase")
            if not isinstance(passphrase, str):
                raise _SendRefused(
                    "signing a request needs your passphrase (ACCORD_SIGNATORY_PASSPHRASE)"
                )
            try:
                self.signatory = load_signatory(
                    node.home, user.name, passphrase.encode("utf-8"), db=node.db
                )
            except (KeyStoreError, KeyFileError, OSError) as e:
                raise _SendRefused(f"cannot use your signing key: {e}") from e
        if self.in_reply_to is not None:
            try:
                get_message(session, str(self.in_reply_to))
            except NotFound as e:
                raise _SendRefused(f"no message {self.in_reply_to} to reply to") from e

    def _body(self, opened: Sequence[OpenedPart]) -> bytes:
        return canonical_json(
            {
                "v": 1,
                "text": self.text,
                "fields": self.fields,
                "attachments": [
                    {"name": n, "size": o.size, "sha256": o.sha256}
                    for n, o in zip(self.names, opened, strict=True)
                ],
            }
        )

    def run(self, future: Future[Any]) -> None:
        try:
            future.set_result(self._store(*self._seal()).result())
        except BaseException as e:
            future.set_exception(e)

    def submit(self) -> Future[dict[str, Any]]:
        """Seal on the node's pool, then queue the store in the group commit; the future
        resolves once the message is committed (nothing is answered before)."""
        done: Future[dict[str, Any]] = Future()

        def stored(f: Future[dict[str, Any]]) -> None:
            try:
                done.set_result(f.result())
            except BaseException as e:
                done.set_exception(e)

        def sealed(f: Future[tuple[NewMessage, bool]]) -> None:
            try:
                self._store(*f.result()).add_done_callback(stored)
            except BaseException as e:
                done.set_exception(e)

        self.node.executor.submit(self._seal).add_done_callback(sealed)
        return done

    def _seal(self) -> tuple[NewMessage, bool]:
        """Seal and sign the message; attachments are encrypted into the blob store.
        Returns what to store and whether it is a draft awaiting a signatory."""
        node, now = self.node, self.node.clock()
        draft = MessageDraft(
            message_id=new_message_id(),
            sender=node.party,
            recipient=self.to,
            created=now,
            expires=now + timedelta(days=node.config.message_ttl_days),
            marking=self.marking.to_dict(),
            purpose=self.purpose,
            type=self.kind,
            in_reply_to=self.in_reply_to,
            extensions=self.extensions,
        )
        writers = [node.blobs.writer(hash=False) for _ in self.readers]
        created: list[str] = []
        try:
            sealed = seal_message(
                draft,
                body=self._body,
                attachments=list(zip(self.readers, writers, strict=True)),  # type: ignore[arg-type]
                recipients=[self.peer.encryption, node.encryption.recipient()],
            )
            for writer, part in zip(writers, sealed.statement.attachments, strict=True):
                created.append(writer.commit(sha256=part.sha256))
            # The body is small: it is stored inline, with the message, in one commit.
            return self._message(sealed)
        except BaseException:
            for writer in writers:
                writer.abort()
            for digest in created:
                node.blobs.delete(digest)
            raise

    def _message(self, sealed: SealedMessage) -> tuple[NewMessage, bool]:
        """What to store, and whether it is a draft awaiting a signatory (art. 4.4); the
        send's audit leaf is made here, from the envelope signed here."""
        node = self.node
        signers = [self.signatory, node.seal] if self.signatory else [node.seal]
        envelope = sealed.sign([s for s in signers if s is not None])
        st = sealed.statement
        message = message_row(
            st,
            envelope=envelope.to_bytes(),
            header=sealed.header,
            parts=(
                PartRef(st.body.sha256, st.body.size, sealed.body),
                *(PartRef(p.sha256, p.size) for p in st.attachments),
            ),
        )
        plan = self.plan
        draft = plan is not None and plan.may_wait_as_draft and self.signatory is None
        kind = EventKind.MESSAGE_DRAFTED if draft else EventKind.MESSAGE_SENT
        self.logged = _audit.message_event(
            kind, node.party, message, node.clock(), envelope=envelope, user=self.user.name
        )
        return message, draft

    def _write_alone(self, message: NewMessage, draft: bool) -> Callable[[Session], None]:
        """A draft, or a message that moves a case: stored in a transaction of its own,
        with the case's step and the audit leaf."""
        plan, node, logged = self.plan, self.node, self.logged

        def write(session: Session) -> None:
            now = node.clock()
            (insert_draft if draft else insert_outgoing)(session, message, now=now)
            if plan is not None:
                # The case moves in the transaction that stores the message carrying it.
                _workflow.record_outgoing(
                    session,
                    plan,
                    message_id=message.message_id,
                    party=node.party,
                    recipient=message.recipient,
                    user=self.user,
                    now=now,
                    periods=self.periods,
                )
            _audit.record(session, logged)

        return write

    def _store(self, message: NewMessage, draft: bool) -> Future[dict[str, Any]]:
        """Queue the store in the group commit: a draft or a workflow step alone, any
        other message to send with the others sealed meanwhile (and its audit leaf). The
        future gives the answer to the client."""
        answer = {"message_id": message.message_id, "status": "draft" if draft else "queued"}
        done: Future[dict[str, Any]] = Future()

        def committed(f: Future[Any]) -> None:
            error = f.exception()
            if error is not None:
                # The message was sealed but not stored: its attachments go too.
                for part in message.parts[1:]:
                    with contextlib.suppress(StorageError, OSError):
                        self.node.blobs.delete(part.blob_sha256)
                if isinstance(error, WorkflowError | Conflict):
                    error = _SendRefused(
                        f"{error}: the case changed meanwhile, see `accord case`", 409
                    )
                done.set_exception(error)
            else:
                done.set_result(answer)

        if draft or self.plan is not None:
            future: Future[Any] = self.node.writes.submit(self._write_alone(message, draft))
        else:
            future = self.node.writes.submit_item(self.queue_outgoing, (message, self.logged))
        future.add_done_callback(committed)
        return done


def _safe_file_name(name: object) -> bool:
    """A name a recipient can save as is: no path, no control characters."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= 255
        and name not in (".", "..")
        and not any(c in name for c in "/\\")
        and all(c.isprintable() for c in name)
    )


def _require_admin(user: User) -> None:
    if user.role is not Role.ADMIN:
        raise _problem(403, "only an admin manages users")


def _get(session: Any, message_id: str, user: User | None = None) -> Message:
    """The message, or 404; the same 404 when `user` may not know it exists (art. 6.3)."""
    try:
        row = get_message(session, message_id)
    except NotFound as e:
        raise _problem(404, f"no message {message_id} on this node") from e
    if user is not None and not _workflow.is_visible(session, user, message_id):
        raise _problem(404, f"no message {message_id} on this node")
    return row


def _summary(row: Message) -> dict[str, Any]:
    return {
        "message_id": row.message_id,
        "from": row.sender,
        "to": row.recipient,
        "type": row.type,
        "marking": row.marking,
        "status": row.status.value,
        "created": row.created.isoformat(),
        "in_reply_to": row.in_reply_to,
    }


def _verify_stored(node: Node, row: Message) -> VerifiedMessage:
    """Re-verify a stored envelope against every key its sender ever had (defence in depth:
    the store is not trusted blindly)."""
    owner = row.sender
    with node.db.session(readonly=True) as session:
        keys = [
            k
            for k in list_keys(session, owner=owner)
            if k.kind in (KeyKind.SEAL, KeyKind.SIGNATORY)
        ]
    trusted = {k.key_id: VerifyKey.from_dict(k.public) for k in keys}
    envelope = Envelope.from_bytes(row.envelope)
    evidence = verify_envelope(envelope, trusted, payload_type=STATEMENT_TYPE)
    return VerifiedMessage(Statement.from_payload(evidence.statement), evidence)


def _record_read(node: Node, entry: Any) -> None:
    """No content leaves the node unless its read is in the audit log (DESIGN 7)."""
    try:
        _audit.record_alone(node, entry, required=True)
    except StorageError as e:
        raise _problem(503, "the read could not be recorded in the audit log: try again") from e


def _refusal(
    node: Node, kind: EventKind, user: User, reason: str, row: Message | None = None
) -> Any:
    """The audit event of a local user's refused action (the reason, never content)."""
    if row is not None:
        return _audit.message_event(
            kind,
            node.party,
            row,
            node.clock(),
            user=user.name,
            verdict="refused",
            detail={"reason": reason},
        )
    return _audit.event(
        kind,
        node.party,
        node.clock(),
        user=user.name,
        verdict="refused",
        detail={"reason": reason},
    )


def _opener_for(
    node: Node, user: User, message_id: str
) -> tuple[Message, MessageOpener, Statement]:
    if user.role not in READERS:
        reason = f"a user with role {user.role.value} cannot read message content"
        _audit.record_alone(node, _refusal(node, EventKind.READ_REFUSED, user, reason))
        raise _problem(403, reason)
    with node.db.session(readonly=True) as session:
        row = _get(session, message_id, user)
    # The marking that governs is the verified signed one and its verified re-markings,
    # never the database column alone (`_authority.governing_marking`).
    try:
        marking = governing_marking(node, row)
        allowed = node.profile.scheme.may_read(user.clearance, marking)
        level = marking.level
    except (MarkingError, VerificationError) as e:
        log.error("message %s has no verifiable marking: %s", message_id, e)
        allowed, level = False, "unverifiable"
    if not allowed:
        _audit.record_alone(
            node, _refusal(node, EventKind.READ_REFUSED, user, "above the user's clearance", row)
        )
        raise _problem(
            403,
            f"message {message_id} is marked {level}, above your clearance {user.clearance}",
        )
    if row.header is None:
        raise _problem(409, f"message {message_id} has no content on this node")
    try:
        verified = _verify_stored(node, row)
        opener = MessageOpener(verified, row.header, node.encryption)
    except VerificationError as e:
        log.error("stored message %s failed verification: %s", message_id, e.reason)
        raise _problem(500, "the stored message does not verify: report this to the admin") from e
    return row, opener, verified.statement


async def _decrypt_stream(
    node: Node, opener: MessageOpener, index: int, part: MessagePart
) -> AsyncIterator[bytes]:
    """Decrypt one attachment on a thread, handing plaintext chunks to the response."""
    chunks: queue.Queue[object] = queue.Queue(16)
    done = object()

    class _Sink:
        def write(self, data: Any) -> int:
            chunks.put(bytes(data))
            return len(data)

    def work() -> None:
        try:
            with open_part(node, part) as src:
                opener.open_attachment(index, src, _Sink(), plaintext_digest=False)  # type: ignore[arg-type]
            chunks.put(done)
        except BaseException as e:
            chunks.put(e)

    threading.Thread(target=work, daemon=True).start()
    while True:
        item = await asyncio.to_thread(chunks.get)
        if item is done:
            return
        if isinstance(item, BaseException):
            # The response is cut short: the client sees an incomplete download.
            raise item
        yield item  # type: ignore[misc]
