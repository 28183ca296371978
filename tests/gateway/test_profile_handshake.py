"""Both nodes of a pair must hold the same agreement profile: `accord init --profile`
checks the file, the descriptor binds its digest, and `peer add` refuses a peer under
another profile (the peer API refuses one on every request: tests/integration)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from accord.crypto import KdfCost
from accord.gateway.admin import home as _admin
from accord.gateway.admin.home import AdminError, add_peer, init_node
from accord.gateway.node.config import Home
from accord.policy import DEFAULT_PROFILE_PATH, default_profile, load_profile

CHEAP = KdfCost(opslimit=1, memlimit=8192)
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
PASS = "пароль узла".encode()
TLP = DEFAULT_PROFILE_PATH.parent / "tlp.toml"


def make(root: Path, party: str, port: int, profile: Path | None = None) -> Home:
    init_node(
        root,
        party=party,
        name=f"Узел {party}",
        listen=f"127.0.0.1:{port}",
        profile=profile,
        passphrase=PASS,
        now=NOW,
        kdf_cost=CHEAP,
    )
    return Home(root)


def descriptor(home: Home) -> bytes:
    return _admin.export_descriptor(home, PASS, NOW)


def test_descriptor_binds_the_reference_profile_by_default(tmp_path: Path) -> None:
    home = make(tmp_path / "a", "МВД-РБ", 9443)
    assert not home.profile_file.exists()
    parsed = _admin.read_descriptor(descriptor(home))
    assert parsed.profile_sha256 == default_profile().digest


def test_attack_peer_under_another_profile_is_refused_at_peer_add(tmp_path: Path) -> None:
    a = make(tmp_path / "a", "МВД-РБ", 9443)
    b = make(tmp_path / "b", "Росгвардия", 9543, profile=TLP)
    assert _admin.read_descriptor(descriptor(b)).profile_sha256 == load_profile(TLP).digest
    with pytest.raises(AdminError, match="another agreement profile"):
        add_peer(a, descriptor(b), fingerprint=None, now=NOW)
    with pytest.raises(AdminError, match="another agreement profile"):
        add_peer(b, descriptor(a), fingerprint=None, now=NOW)


def test_same_profile_file_with_another_layout_is_the_same_profile(tmp_path: Path) -> None:
    relaid = tmp_path / "переформатированный.toml"
    relaid.write_text("# комментарий\n" + TLP.read_text("utf-8"), "utf-8")
    a = make(tmp_path / "a", "МВД-РБ", 9443, profile=TLP)
    b = make(tmp_path / "b", "Росгвардия", 9543, profile=relaid)
    assert add_peer(a, descriptor(b), fingerprint=None, now=NOW).change == "added"


def test_init_refuses_a_broken_profile_and_creates_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[profile]\nid = "x"\n', "utf-8")
    with pytest.raises(AdminError, match="Fix the profile"):
        make(tmp_path / "a", "МВД-РБ", 9443, profile=bad)
    assert not (tmp_path / "a").exists()
