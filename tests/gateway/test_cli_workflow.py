"""`accord reply`, `confirm`, `case`, `agreement`: usage errors exit 2 before any node is
contacted; a node that cannot be reached is a one-line refusal, exit 1 (CLI.md)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from accord.gateway.cli import app

runner = CliRunner()
ENV = {"ACCORD_NODE": "https://127.0.0.1:9", "ACCORD_TOKEN": "токен-не-нужен"}


@pytest.mark.parametrize(
    "args",
    [
        ["reply", "id-1", "--kind", "согласие"],  # not a step
        ["reply", "id-1"],  # --kind is required
        ["reply", "id-1", "--kind", "refusal", "--body", "а", "--body-file", "б"],
        ["agreement", "terminate"],  # --to is required
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = runner.invoke(app, args, env=ENV)
    assert result.exit_code == 2, result.output


def test_unreachable_node_is_one_line_exit_1() -> None:
    result = runner.invoke(
        app,
        ["reply", "id-1", "--kind", "refusal", "--reasons", "Противоречит закону"],
        env={**ENV, "ACCORD_TOKEN": "token"},
    )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "accord serve" in lines[0]
