"""The `accord` command line loads only what the command it runs needs."""

from __future__ import annotations

import subprocess
import sys

from accord.gateway.admin import home as _admin
from accord.gateway.cli import _common as cli_common
from accord.storage import Role


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def test_cli_import_loads_no_database_web_or_key_code() -> None:
    """`accord --help` and the user commands do not pay for the database layer, alembic,
    the web stack or the key store (each `accord` run took about a second when they did)."""
    loaded = _modules_after("import accord.gateway.cli")
    assert "accord.gateway.cli" in loaded
    for heavy in ("accord.storage", "sqlalchemy", "sqlmodel", "alembic", "fastapi", "uvicorn"):
        assert heavy not in loaded, heavy
    assert "accord.gateway.keys.store" not in loaded
    assert "accord.crypto" not in loaded


def test_serve_opens_the_node_keys_before_the_database_layer_is_loaded() -> None:
    """`accord serve` opens the key files (an Argon2id derivation of 64 MiB each) with what
    `gateway._keystore` loads: without the database layer and the web stack, so that the
    derivations sit on a small process, which keeps the node's peak RSS under 150 MiB."""
    loaded = _modules_after(
        "import accord.gateway.cli, accord.gateway.cli.node, accord.gateway.keys.store"
    )
    assert "accord.gateway.keys.store" in loaded
    for heavy in ("accord.storage", "sqlalchemy", "sqlmodel", "alembic", "fastapi", "uvicorn"):
        assert heavy not in loaded, heavy


def test_cli_choices_are_the_stored_roles_and_the_admin_clearances() -> None:
    """The `user add` choices are spelled in the CLI module so that parsing needs no
    database layer; they must stay what storage and the admin functions accept."""
    assert [r.value for r in cli_common.RoleChoice] == [r.value for r in Role]
    assert cli_common.CLEARANCES == _admin.CLEARANCES


def test_cli_default_overlap_is_the_key_lifecycles() -> None:
    """`accord keys rotate --overlap-days` defaults to the key lifecycle's overlap window,
    spelled in the CLI module so that parsing needs neither storage nor crypto."""
    from accord.gateway.cli import keys as _cli_keys
    from accord.gateway.keys import lifecycle as _keys

    assert _keys.DEFAULT_OVERLAP.days == _cli_keys.DEFAULT_OVERLAP_DAYS
