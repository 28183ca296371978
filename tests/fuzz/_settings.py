"""How long the fuzz properties run: bounded and seeded in CI, long on request.

`ACCORD_FUZZ_PROFILE` picks the profile: `ci` (the default: a hundred examples per
property, derandomized, so a CI run is reproducible) or `long` (fifty thousand random
examples per property, for a soak run:
`ACCORD_FUZZ_PROFILE=long .venv/bin/pytest tests/fuzz`). `ACCORD_FUZZ_EXAMPLES` overrides
the number of examples of either. The profiles are applied per test with `@FUZZ`, not
loaded globally, so the other hypothesis tests of the suite keep their own settings.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

__all__ = ["FUZZ", "FUZZ_SLOW", "PROFILE"]

# No "explain" phase: on a failure it replays the example many times over, which for the
# thread-and-queue upload parser took minutes; the shrunk example is what is needed.
_PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink]
_SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile(
    "accord-fuzz-ci",
    max_examples=100,
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=_SUPPRESS,
    phases=_PHASES,
)
settings.register_profile(
    "accord-fuzz-long",
    max_examples=50_000,
    derandomize=False,
    deadline=None,
    print_blob=True,
    suppress_health_check=_SUPPRESS,
    phases=_PHASES,
)

PROFILE = os.environ.get("ACCORD_FUZZ_PROFILE", "ci")
if PROFILE not in ("ci", "long"):
    raise RuntimeError(f"ACCORD_FUZZ_PROFILE must be ci or long, not {PROFILE!r}")
_base = settings.get_profile(f"accord-fuzz-{PROFILE}")
_examples = int(os.environ.get("ACCORD_FUZZ_EXAMPLES", _base.max_examples))

# Properties whose one example signs, seals or verifies several times run a third as many.
FUZZ = settings(_base, max_examples=_examples)
FUZZ_SLOW = settings(_base, max_examples=max(1, _examples * 2 // 5))
