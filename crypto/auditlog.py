"""A node's whole audit log, exported for an auditor and checked offline with `crypto/`
alone (issue 12; DESIGN guarantee 7; CLI.md "accord audit verify FILE --trust ...").

The export (`accord audit export`) holds every leaf of the log in index order, every
signed checkpoint with the cosignatures the node stored, and the seal rotations and
revocations that link the seals which signed them to the Parties' current descriptors.
Nothing in it is trusted: the node that made it is the one under audit.

`verify_log_export` checks, in order, and lists every failure:
 1. The file parses strictly (canonical JSON, known fields, bounded sizes).
 2. The exporting Party's descriptor is among the trusted ones; the key changes link
    each trusted Party's earlier seals to its descriptor's seal (`trace_seal_chain`).
 3. Every leaf is a well-formed audit event of this node's log; a version 2 event about
    a message names as `prev` an earlier leaf about the same message.
 4. Every checkpoint is signed for this log's origin by a seal of the node's chain, and
    the leaves hash (RFC 6962) to its root at its size: a leaf altered, removed or
    inserted before it fails here, as does a checkpoint larger than the leaves.
    Successive checkpoints are then consistent by construction: each is a prefix of the
    same recomputed tree.
 5. Every other signature line is a cosignature of a trusted Party that verifies under
    one of its chain's seals; a cosignature by a Party not passed is reported, not a
    failure, and one by an unknown key under a trusted Party's name is a failure.
Raises `LogVerificationError` (a `VerificationError`) with the failures and what held;
returns `LogEvidence` otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ._wire import parse_ident, require_keys
from .bundle import LogEvent, _b64, _unb64, _witness_party, log_origin, witness_name
from .canonical import dumps, loads_canonical
from .checkpoint import (
    COSIGNATURE_V1,
    ED25519,
    note_key_id,
    parse_note,
    verify_checkpoint,
    verify_cosignature,
)
from .descriptor import NodeDescriptor
from .errors import VerificationError
from .keys import VerifyKey
from .merkle import MerkleTree, leaf_hash
from .rotation import KeyChange, SealChain, trace_seal_chain

__all__ = [
    "LOG_EXPORT_TYPE",
    "LogEvidence",
    "LogExport",
    "LogVerificationError",
    "verify_log_export",
]

LOG_EXPORT_TYPE = "application/vnd.accord.audit-log+json; version=1"
MAX_LEAVES = 10_000_000
MAX_CHECKPOINTS = 1_000_000


@dataclass(frozen=True)
class LogExport:
    """The whole log of `party`'s node: leaves in index order, checkpoint notes (each
    with its cosignatures), and seal key changes."""

    party: str
    leaves: tuple[bytes, ...]
    checkpoints: tuple[str, ...]
    key_changes: tuple[KeyChange, ...] = ()

    def to_bytes(self) -> bytes:
        return dumps(
            {
                "type": LOG_EXPORT_TYPE,
                "party": self.party,
                "leaves": [_b64(leaf) for leaf in self.leaves],
                "checkpoints": list(self.checkpoints),
                "key_changes": [k.to_dict() for k in self.key_changes],
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> LogExport:
        document = require_keys(
            loads_canonical(data),
            {"type", "party", "leaves", "checkpoints", "key_changes"},
            set(),
            "audit log export",
        )
        if document["type"] != LOG_EXPORT_TYPE:
            raise VerificationError("not an Accord audit log export of version 1")
        leaves, notes, changes = (
            document["leaves"],
            document["checkpoints"],
            document["key_changes"],
        )
        if not isinstance(leaves, list) or len(leaves) > MAX_LEAVES:
            raise VerificationError(f"leaves must be a list of at most {MAX_LEAVES}")
        if not isinstance(notes, list) or len(notes) > MAX_CHECKPOINTS:
            raise VerificationError(f"checkpoints must be a list of at most {MAX_CHECKPOINTS}")
        if not all(isinstance(n, str) for n in notes):
            raise VerificationError("a checkpoint must be a signed note")
        if not isinstance(changes, list) or len(changes) > 1024:
            raise VerificationError("key_changes must be a list of at most 1024")
        return cls(
            party=parse_ident(document["party"], "party"),
            leaves=tuple(_unb64(leaf, "leaf") for leaf in leaves),
            checkpoints=tuple(notes),
            key_changes=tuple(KeyChange.from_dict(k) for k in changes),
        )


@dataclass(frozen=True)
class LogEvidence:
    """What an exported log proved, in plain words, and what it could not show."""

    party: str
    size: int
    proven: tuple[str, ...]
    warnings: tuple[str, ...]


class LogVerificationError(VerificationError):
    """The export failed; `failures` lists each problem, `proven` what held anyway."""

    def __init__(self, failures: Sequence[str], proven: Sequence[str]) -> None:
        super().__init__("; ".join(failures))
        self.failures = tuple(failures)
        self.proven = tuple(proven)


@dataclass
class _State:
    proven: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    chains: dict[str, SealChain] = field(default_factory=dict)

    def seals(self, party: str, descriptor: NodeDescriptor) -> dict[str, VerifyKey]:
        chain = self.chains.get(party)
        seals = {descriptor.seal.key_id: descriptor.seal}
        if chain is not None:
            seals.update({k.key_id: k.key for k in chain.history.keys})
        return seals


def _check_leaves(export: LogExport, state: _State) -> None:
    """3. Every leaf an event of this log; chained events link to an earlier event about
    the same message."""
    about: dict[int, str | None] = {}
    for index, leaf in enumerate(export.leaves):
        try:
            event = LogEvent.from_leaf(leaf)
            if event.node != export.party:
                raise VerificationError("it names another node's log")
            if event.prev is not None and (
                event.prev >= index or about.get(event.prev) != event.message_id
            ):
                raise VerificationError(
                    f"it names entry {event.prev} as the previous one about its message, "
                    "which is not"
                )
        except VerificationError as e:
            state.failures.append(f"leaf {index} does not verify: {e.reason}")
            continue
        about[index] = event.message_id


def _check_checkpoints(
    export: LogExport,
    descriptors: dict[str, NodeDescriptor],
    state: _State,
) -> int:
    """4 and 5. Returns the largest checkpointed size that verified."""
    origin = log_origin(export.party)
    own = state.seals(export.party, descriptors[export.party])
    log_keys = {note_key_id(origin, ED25519, k): k for k in own.values()}
    witnesses = {
        (witness_name(p), note_key_id(witness_name(p), COSIGNATURE_V1, key)): (p, key)
        for p, d in descriptors.items()
        if p != export.party
        for key in state.seals(p, d).values()
    }
    tree = MerkleTree(leaf_hash(leaf) for leaf in export.leaves)
    covered, count, cosigned = 0, 0, 0
    sizes: set[int] = set()
    for note_text in export.checkpoints:
        try:
            note = parse_note(note_text)
            signers = [log_keys[s.key_id] for s in note.signatures if s.key_id in log_keys]
            if not signers:
                raise VerificationError(
                    f"it is not signed by a seal of {export.party} (its descriptor and chain)"
                )
            checkpoint = verify_checkpoint(note_text, origin, origin, signers[0]).checkpoint
        except VerificationError as e:
            state.failures.append(f"a checkpoint does not verify: {e.reason}")
            continue
        if checkpoint.size in sizes:
            state.failures.append(f"two checkpoints of size {checkpoint.size}")
            continue
        sizes.add(checkpoint.size)
        if checkpoint.size > tree.size:
            state.failures.append(
                f"the checkpoint of size {checkpoint.size} covers more leaves than the export "
                f"holds ({tree.size}): leaves were removed"
            )
            continue
        if tree.root(checkpoint.size) != checkpoint.root:
            state.failures.append(
                f"the leaves do not hash to the root the checkpoint of size {checkpoint.size} "
                "signed: a leaf before it was altered, removed or inserted"
            )
            continue
        count += 1
        covered = max(covered, checkpoint.size)
        for line in note.signatures:
            if line.key_id in log_keys and line.name == origin:
                continue
            witness = witnesses.get((line.name, line.key_id))
            stranger = _witness_party(line.name)
            if witness is None and stranger is not None and stranger not in descriptors:
                state.warnings.append(
                    f"The checkpoint of size {checkpoint.size} is also cosigned by {stranger}, "
                    "whose descriptor was not passed (--trust): not checked."
                )
                continue
            if witness is None:
                state.failures.append(
                    f"the checkpoint of size {checkpoint.size} has a signature by an unknown "
                    f"key {line.name}"
                )
                continue
            party, key = witness
            try:
                signed = verify_cosignature(note_text, line.name, key, origin=origin)
                chain = state.chains.get(party)
                if chain is not None and key.key_id != chain.current:
                    why = chain.seal_at(key.key_id, signed.signed_at)
                    if why is not None:
                        raise VerificationError(why)
            except VerificationError as e:
                state.failures.append(
                    f"the cosignature of {party} on the checkpoint of size {checkpoint.size} "
                    f"does not verify: {e.reason}"
                )
                continue
            cosigned += 1
    state.proven.append(
        f"{count} checkpoint(s) of {export.party}'s log are signed by its seal and match the "
        f"leaves, each a prefix of the same tree (so each is consistent with the earlier "
        f"ones); {cosigned} cosignature(s) by trusted Parties verify."
    )
    return covered


def verify_log_export(data: bytes, trusted: Sequence[NodeDescriptor]) -> LogEvidence:
    """Steps 1 to 5 of the module's checklist; raises `LogVerificationError`."""
    try:
        export = LogExport.from_bytes(data)
    except VerificationError as e:
        raise LogVerificationError([f"the export is malformed: {e.reason}"], []) from e
    descriptors: dict[str, NodeDescriptor] = {}
    for d in trusted:
        if d.party in descriptors and descriptors[d.party] != d:
            raise LogVerificationError(
                [f"two descriptors of {d.party}: pass only its current one"], []
            )
        descriptors[d.party] = d
    if export.party not in descriptors:
        raise LogVerificationError(
            [f"the exporting node {export.party} is not trusted: pass its descriptor"], []
        )
    state = _State()
    linked: set[str] = set()
    for party, descriptor in descriptors.items():
        chain = trace_seal_chain(party, descriptor.seal, export.key_changes)
        state.chains[party] = chain
        state.proven.extend(chain.proven)
        state.failures.extend(chain.failures)
        linked |= chain.used | chain.refused
    unlinked = [c for c in export.key_changes if c.envelope.sha256 not in linked]
    if unlinked:
        state.warnings.append(
            f"{len(unlinked)} key change(s) link to no seal of a descriptor you passed: not used."
        )
    _check_leaves(export, state)
    covered = _check_checkpoints(export, descriptors, state)
    size = len(export.leaves)
    if not export.checkpoints:
        state.failures.append("the export holds no checkpoint: nothing binds its leaves")
    elif size > covered and not state.failures:
        state.warnings.append(
            f"The last {size - covered} leaf/leaves are past the last checkpoint: they rest "
            f"on {export.party}'s word alone."
        )
    if state.failures:
        raise LogVerificationError(state.failures, state.proven)
    state.proven.insert(
        0,
        f"{export.party}'s audit log of {size} entries verifies: every leaf is an event of "
        f"its log, and the first {covered} are bound by signed checkpoints.",
    )
    return LogEvidence(export.party, size, tuple(state.proven), tuple(state.warnings))
