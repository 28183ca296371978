"""`accord demo` runs end to end and says what it proved."""

from __future__ import annotations

import io

from rich.console import Console

from gateway import _demo


def test_demo_runs_the_exchange_end_to_end() -> None:
    buffer = io.StringIO()
    _demo.run(Console(file=buffer, width=120))
    transcript = buffer.getvalue()
    assert "B opens it" in transcript
    assert "receipt signed by its seal" in transcript
    assert "Demo complete" in transcript
