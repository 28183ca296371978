"""Local users found by API token are remembered briefly (`Node.user_cache_seconds`), so
that a busy client's every request does not read the same row; a change made in another
process (`accord user ...`) takes effect within that time, and a token not found is never
remembered."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from accord.crypto import KdfCost
from accord.gateway.admin.home import add_user, init_node
from accord.gateway.node.config import Home
from accord.gateway.node.runtime import Node
from accord.gateway.serve import load_node

CHEAP = KdfCost(opslimit=1, memlimit=8192)
T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
PASS = "пароль узла".encode()


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    init_node(
        tmp_path,
        party="МВД-РБ",
        name="Узел МВД-РБ",
        listen="127.0.0.1:9443",
        passphrase=PASS,
        now=T0,
        kdf_cost=CHEAP,
    )
    loaded = load_node(tmp_path, PASS)
    try:
        yield loaded
    finally:
        loaded.close()


def disable(node: Node, name: str) -> None:
    """As another process would: straight in the store."""
    with node.db.engine.begin() as connection:
        connection.execute(text("UPDATE users SET disabled = true WHERE name = :n"), {"n": name})


def test_a_found_user_is_remembered_and_a_disabled_one_forgotten_after_the_window(
    node: Node,
) -> None:
    token = add_user(Home(node.home.root), "Иванова", role="operator", now=T0).token
    assert node.cached_user(digest(token)) is None
    found = node.user_by_token(digest(token))
    assert found is not None and found.name == "Иванова"
    assert node.cached_user(digest(token)) is found
    disable(node, "Иванова")
    # Within the window the node still answers from memory...
    assert node.cached_user(digest(token)) is found
    # ...and after it, the store says the token no longer works, and it is forgotten.
    node.user_cache_seconds = 0.0
    assert node.cached_user(digest(token)) is None
    assert node.user_by_token(digest(token)) is None
    node.user_cache_seconds = 60.0
    assert node.cached_user(digest(token)) is None


def test_an_unknown_token_is_never_remembered_so_a_new_users_works_at_once(node: Node) -> None:
    add_user(Home(node.home.root), "Петров", role="operator", now=T0)
    token = "токен, которого ещё нет"
    assert node.user_by_token(digest(token)) is None
    assert node.cached_user(digest(token)) is None
    with node.db.engine.begin() as connection:
        connection.execute(
            text("UPDATE users SET token_sha256 = :d WHERE name = :n"),
            {"d": digest(token), "n": "Петров"},
        )
    found = node.user_by_token(digest(token))
    assert found is not None and found.name == "Петров"
