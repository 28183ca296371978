"""The byte-level fuzz targets in the suite: the committed corpus, then a bounded
coverage-guided run (atheris) of each target.

The long run is `python -m bench.fuzz --executions 1000000` (figures in
docs/benchmarks.md). Here each target gets a fixed number of executions from a fixed
seed (`ACCORD_FUZZ_EXECUTIONS`, 5000 by default): seconds, not minutes, and the same
inputs on every run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.fuzz import TARGET_NAMES, run_target

from . import make_corpus
from ._targets import TARGETS

EXECUTIONS = int(os.environ.get("ACCORD_FUZZ_EXECUTIONS", "5000"))


def test_corpus_is_what_the_generator_writes() -> None:
    assert make_corpus.main(["--check"]) == 0


@pytest.mark.parametrize("target", TARGET_NAMES)
def test_corpus_inputs_parse_cleanly(target: str) -> None:
    files = sorted((make_corpus.CORPUS / target).iterdir())
    assert files
    for path in files:
        TARGETS[target](path.read_bytes())


@pytest.mark.parametrize("target", TARGET_NAMES)
def test_atheris_bounded_run_finds_no_crash(target: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    result = run_target(target, EXECUTIONS, seed=1, artifacts=tmp_path, timeout=600)
    assert not result.crashed, f"{result.artifacts}\n{result.log_tail}"
    assert result.executions == EXECUTIONS, result.log_tail
