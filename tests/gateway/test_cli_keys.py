"""`accord keys rotate|revoke|history|passphrase` and `accord doctor` against CLI.md: exit
codes, one-line errors, `--json` (issue 5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from accord.gateway.keys.store import NodeKeys
from accord.gateway.node.config import Home

from .test_cli_admin import (
    KEY_FIELDS,
    PARTY_A,
    PARTY_B,
    PASS_A,
    PASS_B,
    as_json,
    cli_init,
    invoke,
    ok,
    refused,
)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("cli-keys")
    a = cli_init(root / "a", PARTY_A, 9443, PASS_A)
    b = cli_init(root / "b", PARTY_B, 9543, PASS_B)
    for src, dst, dst_pass in ((a, b, PASS_B), (b, a, PASS_A)):
        descriptor = root / f"{src.init['party']}.descriptor"
        ok(
            invoke(
                "peer",
                "export",
                "--home",
                str(src.home),
                "-o",
                str(descriptor),
                passphrase=src.passphrase,
            )
        )
        ok(
            invoke(
                "peer",
                "add",
                "--home",
                str(dst.home),
                str(descriptor),
                "--fingerprint",
                src.init["fingerprint"],
                passphrase=dst_pass,
            )
        )
    return a, b


def test_rotate_prints_old_and_new_keys_and_the_new_fingerprint(nodes) -> None:
    a, _ = nodes
    before = NodeKeys.load(Home(a.home), PASS_A.encode()).encryption.key_id
    result = as_json(
        invoke(
            "keys",
            "rotate",
            "--home",
            str(a.home),
            "--key",
            "encryption",
            "--overlap-days",
            "3",
            "--json",
        )
    )
    assert result["kind"] == "encryption" and result["old_key_id"] == before
    assert result["announced_to"] == [PARTY_B]
    assert result["fingerprint"] != a.init["fingerprint"]
    keys = {
        k["key_id"]: k for k in as_json(invoke("keys", "list", "--home", str(a.home), "--json"))
    }
    assert KEY_FIELDS <= set(keys[before])
    assert keys[before]["status"] == "overlap" and keys[before]["not_after"] is not None
    assert keys[result["new_key_id"]]["status"] == "active"
    history = as_json(invoke("keys", "history", "--home", str(a.home), "--json"))
    assert {"rotated-out", "rotated-in"} <= {e["event"] for e in history}


def test_rotate_refusals_are_one_line(nodes, tmp_path: Path) -> None:
    a, _ = nodes
    refused(
        invoke("keys", "rotate", "--home", str(a.home), "--key", "печать"),
        "unknown key kind",
        "seal, encryption or tls",
    )
    refused(
        invoke("keys", "rotate", "--home", str(a.home), "--key", "seal", passphrase="неверный"),
        "wrong passphrase",
    )
    refused(invoke("keys", "rotate", "--home", str(tmp_path), "--key", "seal"), "accord init")


def test_revoke_needs_a_reason_and_refuses_the_active_seal(nodes) -> None:
    a, _ = nodes
    seal = NodeKeys.load(Home(a.home), PASS_A.encode()).seal.key_id
    refused(
        invoke("keys", "revoke", "--home", str(a.home), seal, "--reason", "утечка"),
        "Rotate it first",
    )
    refused(invoke("keys", "revoke", "--home", str(a.home), "0" * 64, "--reason", "нет"), "no key")
    usage = invoke("keys", "revoke", "--home", str(a.home), seal)
    assert usage.exit_code == 2


def test_revoke_a_peer_key_locally(nodes) -> None:
    a, b = nodes
    peer_tls = NodeKeys.load(Home(b.home), PASS_B.encode()).tls.fingerprint
    doc = as_json(
        invoke(
            "keys",
            "revoke",
            "--home",
            str(a.home),
            peer_tls,
            "--reason",
            "сертификат скомпрометирован",
            "--json",
            passphrase=None,
        )
    )
    assert (doc["owner"], doc["announced_to"]) == (PARTY_B, [])
    # doctor now explains why B is not trusted over TLS, and exits 1.
    result = invoke("doctor", "--home", str(a.home), "--peer", PARTY_B, "--json")
    assert result.exit_code == 1
    findings = json.loads(result.stdout)["findings"]
    pin = next(f for f in findings if f["check"] == "TLS pin")
    assert pin["ok"] is False and "revoked" in pin["detail"]


def test_doctor_on_a_healthy_peer_exits_0(nodes) -> None:
    _, b = nodes
    text = ok(invoke("doctor", "--home", str(b.home), "--peer", PARTY_A)).stdout
    assert "descriptor signature" in text and "fingerprint" in text


def test_passphrase_change_wrong_passphrase_is_one_error(nodes, tmp_path: Path) -> None:
    c = cli_init(tmp_path / "c", "третья-сторона", 9643, "пароль В")
    refused(
        invoke(
            "keys",
            "passphrase",
            "--home",
            str(c.home),
            passphrase="не тот",
            ACCORD_NEW_PASSPHRASE="новый пароль",
        ),
        "wrong passphrase",
        "nothing",
    )
    ok(
        invoke(
            "keys",
            "passphrase",
            "--home",
            str(c.home),
            passphrase="пароль В",
            ACCORD_NEW_PASSPHRASE="новый пароль",
        )
    )
    NodeKeys.load(Home(c.home), "новый пароль".encode())
