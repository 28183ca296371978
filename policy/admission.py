"""What a receiving node admits from a pinned peer: only what its own profile allows
(agreement art. 7.1, 7.5; issue 12 "a receiver accepts only what its profile allows").

A peer that holds the same profile digest can still sign anything: a level above the
ceiling (a state secret, art. 7.5), a level or caveat the scheme does not know, a marking
with fields the scheme does not define, a message type or a statement extension this
version of the protocol does not define. Each is refused here, after the signatures
verified and before anything is stored; the caller answers the peer with the uniform
refusal and logs the reason.

Invariants:
- `admit` returns the parsed marking or raises `AdmissionRefused`; nothing here reads a
  database or speaks HTTP.
- The lists of types and extensions are closed: a new type or extension is added here,
  with the code that handles it, never accepted by default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .authority import PolicyDenied
from .markings import Marking, MarkingError, MarkingScheme

__all__ = ["EXTENSIONS", "MESSAGE_TYPES", "AdmissionRefused", "admit", "admit_marking"]

# The statement types a node handles: the users' messages (request, reply, notice) and
# the art. 7 control messages (gateway/_consent.py).
MESSAGE_TYPES = frozenset(
    {"request", "reply", "notice", "consent", "consent-revocation", "consent-request", "remark"}
)
# The statement extensions a node reads: the workflow (art. 4, 5, 6, 13) and art. 7.
EXTENSIONS = frozenset(
    {"workflow", "agreement", "urgent_oral", "consent", "revocation", "remark", "consent_request"}
)
_MARKING_FIELDS = frozenset({"level", "caveats"})


class AdmissionRefused(PolicyDenied):
    """A peer's signed statement carries something this node's profile does not allow."""


def admit_marking(scheme: MarkingScheme, data: Any) -> Marking:
    """A marking exactly as the scheme defines it: known fields only, a carried level
    (never a refused one, art. 7.5), known caveats, each once."""
    if not isinstance(data, Mapping):
        raise AdmissionRefused("the marking is not an object")
    unknown = set(data) - _MARKING_FIELDS
    if unknown:
        raise AdmissionRefused(f"the marking has fields the profile does not define: {unknown}")
    caveats = data.get("caveats", [])
    if isinstance(caveats, list) and len(set(map(str, caveats))) != len(caveats):
        raise AdmissionRefused("the marking lists a caveat twice")
    try:
        return scheme.parse_for_sending(data)
    except MarkingError as e:
        raise AdmissionRefused(str(e)) from e


def admit(
    scheme: MarkingScheme, message_type: str, marking: Any, extensions: Mapping[str, Any]
) -> Marking:
    """A delivered statement's type, marking and extensions, as the profile allows."""
    if message_type not in MESSAGE_TYPES:
        raise AdmissionRefused(f"unknown message type {message_type!r}")
    unknown = set(extensions) - EXTENSIONS
    if unknown:
        raise AdmissionRefused(f"unknown statement extension(s) {sorted(unknown)}")
    return admit_marking(scheme, marking)
