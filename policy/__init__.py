"""The agreement's rules: the profile, markings, consent tokens, the request workflow,
lifecycle."""

from .markings import (
    DEFAULT_SCHEME,
    Label,
    LabelModel,
    Marking,
    MarkingError,
    MarkingScheme,
)
from .profile import (
    DEFAULT_PROFILE_PATH,
    Duration,
    Party,
    Profile,
    ProfileError,
    default_profile,
    load_profile,
    profile_or_default,
)

__all__ = [
    "DEFAULT_PROFILE_PATH",
    "DEFAULT_SCHEME",
    "Duration",
    "Label",
    "LabelModel",
    "Marking",
    "MarkingError",
    "MarkingScheme",
    "Party",
    "Profile",
    "ProfileError",
    "default_profile",
    "load_profile",
    "profile_or_default",
]
