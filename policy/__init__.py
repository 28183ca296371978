"""The agreement's rules: markings, consent tokens, the request workflow, lifecycle."""

from .markings import DEFAULT_SCHEME, Marking, MarkingError, MarkingScheme

__all__ = ["DEFAULT_SCHEME", "Marking", "MarkingError", "MarkingScheme"]
