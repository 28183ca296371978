"""The shape of the `storage` package: its public surface and its trust boundary."""

from __future__ import annotations

import ast
from pathlib import Path

from accord import storage

PACKAGE = Path(storage.__file__).parent


def test_storage_imports_nothing_of_crypto_policy_or_gateway() -> None:
    forbidden = {"accord.crypto", "accord.policy", "accord.gateway", "crypto", "policy", "gateway"}
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [
                f"{path}: {n}"
                for n in names
                if n.split(".")[0] in forbidden or ".".join(n.split(".")[:2]) in forbidden
            ]
    assert offenders == []


def test_public_surface_is_what_all_declares() -> None:
    assert sorted(storage.__all__) == storage.__all__
    for name in storage.__all__:
        assert not name.startswith("_")
        assert getattr(storage, name).__module__.startswith("accord.storage")
