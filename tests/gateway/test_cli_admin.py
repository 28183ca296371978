"""The admin commands of `accord` against CLI.md: exit codes, one-line errors, `--json`.

Most tests go through typer's CliRunner (no terminal: stdin is not a TTY there); some run
the installed `accord` console script as a real process, on pipes or on a pseudo-terminal
for the prompts. Keys use the production Argon2id costs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from accord.gateway.cli import app
from accord.gateway.keys.store import NodeKeys
from accord.gateway.node.config import Home
from accord.storage import Database, get_peer, get_user

PASS_A = "пароль узла А"
PASS_B = "пароль узла Б"
PARTY_A = "МВД-РБ"
PARTY_B = "Росгвардия"
TOKEN = re.compile(r"^acc_[A-Za-z0-9_-]{43}$")
ACCORD = Path(sys.executable).with_name("accord")
KEY_FIELDS = {"key_id", "kind", "status", "not_before", "not_after"}

runner = CliRunner()


def invoke(*args: str, passphrase: str | None = PASS_A, **env: str | None) -> Result:
    """Run `accord ARGS` in-process, with a clean Accord environment plus `env`."""
    environment: dict[str, str | None] = {
        "ACCORD_HOME": None,
        "ACCORD_PASSPHRASE": passphrase,
        "ACCORD_SIGNATORY_PASSPHRASE": None,
    }
    environment.update(env)
    return runner.invoke(app, list(args), env=environment)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def refused(result: Result, *fragments: str) -> str:
    """The command exited 1 with exactly one line on stderr, 'error: ...'."""
    assert result.exit_code == 1, (result.stdout, result.stderr, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def as_json(result: Result) -> Any:
    return json.loads(ok(result).stdout)


@dataclass
class CliNode:
    home: Path
    init: dict[str, Any]
    passphrase: str


def cli_init(root: Path, party: str, port: int, passphrase: str) -> CliNode:
    result = invoke(
        "init",
        "--home",
        str(root),
        "--party",
        party,
        "--name",
        f"Узел {party}",
        "--listen",
        f"127.0.0.1:{port}",
        "--json",
        passphrase=passphrase,
    )
    return CliNode(root, as_json(result), passphrase)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[CliNode, CliNode, Path]:
    """Two nodes and A's exported descriptor, shared by tests that leave them unchanged."""
    root = tmp_path_factory.mktemp("cli")
    a = cli_init(root / "a", PARTY_A, 9443, PASS_A)
    b = cli_init(root / "b", PARTY_B, 9543, PASS_B)
    descriptor = root / "a.descriptor"
    ok(invoke("peer", "export", "--home", str(a.home), "-o", str(descriptor)))
    return a, b, descriptor


def peers_of(home: Path) -> list[dict[str, Any]]:
    keys = as_json(invoke("keys", "list", "--home", str(home), "--peers", "--json"))
    return [k for k in keys if not k["local"]]


# --- init ------------------------------------------------------------------------------------


def test_init_json(tmp_path: Path) -> None:
    node = cli_init(tmp_path / "узел", PARTY_A, 9443, PASS_A)
    assert {"party", "node_url", "ca_file", "admin_token", "fingerprint"} <= set(node.init)
    assert node.init["party"] == PARTY_A
    assert node.init["node_url"] == "https://127.0.0.1:9444"
    assert node.init["ca_file"] == str(tmp_path / "узел" / "tls" / "tls.crt")
    assert Path(node.init["ca_file"]).read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert TOKEN.match(node.init["admin_token"])
    assert re.fullmatch(r"([0-9A-F]{4} ){15}[0-9A-F]{4}", node.init["fingerprint"])
    # The token works as the admin's: the database holds its SHA-256.
    digest = hashlib.sha256(node.init["admin_token"].encode()).hexdigest()
    with Database.open(Home(node.home).sqlite_url()) as db, db.session(readonly=True) as s:
        assert get_user(s, "admin").token_sha256 == digest


def test_init_text_prints_the_token_once(tmp_path: Path) -> None:
    result = ok(
        invoke(
            "init",
            "--home",
            str(tmp_path / "a"),
            "--party",
            PARTY_A,
            "--name",
            "Министерство",
            "--listen",
            "127.0.0.1:9443",
        )
    )
    tokens = re.findall(r"acc_[A-Za-z0-9_-]{43}", result.stdout)
    assert len(tokens) == 1
    assert PARTY_A in result.stdout and "https://127.0.0.1:9444" in result.stdout
    assert result.stderr == ""


def test_init_uses_accord_home(tmp_path: Path) -> None:
    home = tmp_path / "из-окружения"
    args = ("init", "--party", PARTY_A, "--name", "А", "--listen", "127.0.0.1:9443", "--json")
    ok(invoke(*args, ACCORD_HOME=str(home)))
    assert (home / "config.toml").is_file()


def test_init_without_passphrase_or_terminal_refused(tmp_path: Path) -> None:
    result = invoke(
        "init",
        "--home",
        str(tmp_path / "a"),
        "--party",
        PARTY_A,
        "--name",
        "А",
        "--listen",
        "127.0.0.1:9443",
        passphrase=None,
    )
    refused(result, "ACCORD_PASSPHRASE")
    assert not (tmp_path / "a").exists()


def test_init_non_empty_home_refused(pair: tuple[CliNode, CliNode, Path]) -> None:
    a, _, _ = pair
    before = (a.home / "config.toml").read_bytes()
    result = invoke(
        "init", "--home", str(a.home), "--party", "X", "--name", "X", "--listen", "127.0.0.1:1"
    )
    refused(result, "not empty")
    assert (a.home / "config.toml").read_bytes() == before


@pytest.mark.parametrize(
    "extra",
    [
        ["--listen", "нет-порта"],
        ["--listen", "127.0.0.1:9443", "--local", "127.0.0.1:9443"],
        ["--listen", "127.0.0.1:9443", "--database", "mysql://db/accord"],
    ],
)
def test_init_bad_options_refused(tmp_path: Path, extra: list[str]) -> None:
    result = invoke(
        "init", "--home", str(tmp_path / "a"), "--party", PARTY_A, "--name", "А", *extra
    )
    refused(result)
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["init", "--party", PARTY_A, "--name", "А", "--listen", "127.0.0.1:9443"],  # no --home
        ["keys", "list"],
        ["peer", "add", "--home", "x"],  # no FILE
        ["user", "add", "--home", "x", "Иванов"],  # no --role
        ["user", "add", "--home", "x", "Иванов", "--role", "начальник"],
        ["keys", "list", "--home", "x", "--no-such-option"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    assert invoke(*args).exit_code == 2


def test_commands_outside_a_node_home_refused(tmp_path: Path) -> None:
    refused(invoke("keys", "list", "--home", str(tmp_path)), "accord init")
    refused(invoke("peer", "export", "--home", str(tmp_path)))
    refused(invoke("user", "add", "--home", str(tmp_path), "Иванов", "--role", "operator"))


# --- peers -----------------------------------------------------------------------------------


def test_peer_export_to_file_and_stdout(pair: tuple[CliNode, CliNode, Path]) -> None:
    a, _, descriptor = pair
    text = ok(invoke("peer", "export", "--home", str(a.home), "-o", str(descriptor) + ".2"))
    assert a.init["fingerprint"].split()[0] in text.stdout
    raw = ok(invoke("peer", "export", "--home", str(a.home))).stdout_bytes
    exported = json.loads(raw)
    assert set(exported) == {"payload", "payloadType", "signatures"}
    document = as_json(invoke("peer", "export", "--home", str(a.home), "--json"))
    assert document["party"] == PARTY_A
    assert document["fingerprint"] == a.init["fingerprint"]
    assert document["endpoint"] == "https://127.0.0.1:9443"
    assert document["file"] is None
    assert set(document["descriptor"]) == {"payload", "payloadType", "signatures"}


def test_peer_export_with_wrong_passphrase_refused(
    pair: tuple[CliNode, CliNode, Path], tmp_path: Path
) -> None:
    a, _, _ = pair
    out = tmp_path / "a.descriptor"
    result = invoke("peer", "export", "--home", str(a.home), "-o", str(out), passphrase=PASS_B)
    refused(result, "wrong passphrase", "ACCORD_PASSPHRASE")
    assert not out.exists()


def test_peer_add_with_fingerprint(tmp_path: Path) -> None:
    a = cli_init(tmp_path / "a", PARTY_A, 9443, PASS_A)
    b = cli_init(tmp_path / "b", PARTY_B, 9543, PASS_B)
    descriptor = tmp_path / "a.descriptor"
    ok(invoke("peer", "export", "--home", str(a.home), "-o", str(descriptor)))
    args = ("peer", "add", "--home", str(b.home), str(descriptor))
    added = as_json(invoke(*args, "--fingerprint", a.init["fingerprint"], "--json"))
    assert added == {
        "party": PARTY_A,
        "name": f"Узел {PARTY_A}",
        "endpoint": "https://127.0.0.1:9443",
        "fingerprint": a.init["fingerprint"],
        "change": "added",
    }
    text = ok(invoke(*args, "--fingerprint", a.init["fingerprint"]))
    assert "nothing changed" in text.stdout
    assert {(k["kind"], k["owner"]) for k in peers_of(b.home)} == {
        ("seal", PARTY_A),
        ("encryption", PARTY_A),
        ("tls", PARTY_A),
    }


def test_peer_add_with_wrong_fingerprint_refused(pair: tuple[CliNode, CliNode, Path]) -> None:
    _, b, descriptor = pair
    args = ("peer", "add", "--home", str(b.home), str(descriptor))
    refused(invoke(*args, "--fingerprint", b.init["fingerprint"]), "fingerprint mismatch")
    assert peers_of(b.home) == []


def test_peer_add_without_fingerprint_and_terminal_refused(
    pair: tuple[CliNode, CliNode, Path],
) -> None:
    _, b, descriptor = pair
    refused(invoke("peer", "add", "--home", str(b.home), str(descriptor)), "--fingerprint")
    assert peers_of(b.home) == []


def test_peer_add_tampered_descriptor_refused(
    pair: tuple[CliNode, CliNode, Path], tmp_path: Path
) -> None:
    a, b, descriptor = pair
    data = bytearray(descriptor.read_bytes())
    data[len(data) // 3] ^= 0x01
    tampered = tmp_path / "tampered.descriptor"
    tampered.write_bytes(bytes(data))
    result = invoke(
        "peer", "add", "--home", str(b.home), str(tampered), "--fingerprint", a.init["fingerprint"]
    )
    refused(result, "does not verify")
    refused(invoke("peer", "add", "--home", str(b.home), str(tmp_path / "нет")), "cannot read")
    assert peers_of(b.home) == []


# --- users and keys ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["operator", "signatory", "admin", "auditor"])
def test_user_add_json(tmp_path: Path, role: str) -> None:
    a = cli_init(tmp_path / "a", PARTY_A, 9443, PASS_A)
    result = as_json(
        invoke(
            "user",
            "add",
            "--home",
            str(a.home),
            "Иванов Иван",
            "--role",
            role,
            "--clearance",
            "CONFIDENTIAL",
            "--json",
            ACCORD_SIGNATORY_PASSPHRASE="пароль Иванова",
        )
    )
    assert (result["user"], result["role"]) == ("Иванов Иван", role)
    assert result["clearance"] == "CONFIDENTIAL"
    assert TOKEN.match(result["token"])
    keys = as_json(invoke("keys", "list", "--home", str(a.home), "--json"))
    signatory_keys = [k for k in keys if k["kind"] == "signatory"]
    if role == "signatory":
        assert [k["key_id"] for k in signatory_keys] == [result["signatory_key_id"]]
        assert signatory_keys[0]["owner"] == "Иванов Иван"
    else:
        assert signatory_keys == [] and result["signatory_key_id"] is None


def test_user_add_text_prints_the_token_once(pair: tuple[CliNode, CliNode, Path]) -> None:
    a, _, _ = pair
    result = ok(invoke("user", "add", "--home", str(a.home), "Аудитор", "--role", "auditor"))
    assert len(re.findall(r"acc_[A-Za-z0-9_-]{43}", result.stdout)) == 1
    assert "OFFICIAL" in result.stdout


@pytest.mark.parametrize("level", ["SECRET", "secret", "TOP SECRET"])
def test_user_add_secret_clearance_refused(pair: tuple[CliNode, CliNode, Path], level: str) -> None:
    a, _, _ = pair
    result = invoke(
        "user", "add", "--home", str(a.home), "Смирнов", "--role", "operator", "--clearance", level
    )
    refused(result, "art. 7.5")


def test_user_add_signatory_without_passphrase_refused(
    pair: tuple[CliNode, CliNode, Path],
) -> None:
    a, _, _ = pair
    result = invoke("user", "add", "--home", str(a.home), "Петров", "--role", "signatory")
    refused(result, "ACCORD_SIGNATORY_PASSPHRASE")
    assert not (a.home / "signatories" / "Петров.key").exists()


def test_user_add_signatory_with_node_passphrase_refused(
    pair: tuple[CliNode, CliNode, Path],
) -> None:
    a, _, _ = pair
    result = invoke(
        "user",
        "add",
        "--home",
        str(a.home),
        "Петров",
        "--role",
        "signatory",
        ACCORD_SIGNATORY_PASSPHRASE=PASS_A,
    )
    refused(result, "node's passphrase")


def test_keys_list(pair: tuple[CliNode, CliNode, Path]) -> None:
    a, _, _ = pair
    keys = as_json(invoke("keys", "list", "--home", str(a.home), "--json"))
    assert all(KEY_FIELDS <= set(k) for k in keys)
    node_keys = {k["kind"]: k for k in keys if k["owner"] == PARTY_A}
    assert set(node_keys) == {"seal", "encryption", "tls"}
    assert all(k["status"] == "active" for k in node_keys.values())
    assert node_keys["seal"]["not_after"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", node_keys["tls"]["not_after"])
    loaded = NodeKeys.load(Home(a.home), PASS_A.encode())
    assert node_keys["seal"]["key_id"] == loaded.seal.key_id
    text = ok(invoke("keys", "list", "--home", str(a.home))).stdout
    assert loaded.seal.key_id in text and "KIND" in text


# --- the installed console script, as a real process --------------------------------------


def accord_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")}
    env.update(extra)
    return env


def run_accord(args: Sequence[str], **env: str) -> subprocess.CompletedProcess[str]:
    if not ACCORD.exists():
        pytest.fail(f"{ACCORD} is missing: run `{sys.executable} -m pip install -e .`")
    return subprocess.run(
        [str(ACCORD), *args],
        env=accord_env(**env),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
        check=False,
    )


def test_admin_flow_in_real_processes(tmp_path: Path) -> None:
    a_home, b_home = tmp_path / "a", tmp_path / "b"
    init_a = run_accord(
        ["init", "--home", str(a_home), "--party", PARTY_A, "--name", "А",
         "--listen", "127.0.0.1:9443", "--json"],
        ACCORD_PASSPHRASE=PASS_A,
    )  # fmt: skip
    assert init_a.returncode == 0, init_a.stderr
    a = json.loads(init_a.stdout)
    init_b = run_accord(
        ["init", "--party", PARTY_B, "--name", "Б", "--listen", "127.0.0.1:9543", "--json"],
        ACCORD_PASSPHRASE=PASS_B,
        ACCORD_HOME=str(b_home),
    )
    assert init_b.returncode == 0, init_b.stderr

    descriptor = tmp_path / "a.descriptor"
    export = run_accord(
        ["peer", "export", "--home", str(a_home), "-o", str(descriptor)], ACCORD_PASSPHRASE=PASS_A
    )
    assert export.returncode == 0, export.stderr

    wrong = run_accord(
        ["peer", "add", "--home", str(b_home), str(descriptor), "--fingerprint", "ABCD " * 16]
    )
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("error: fingerprint mismatch") and wrong.stderr.count("\n") == 1

    add = run_accord(
        ["peer", "add", "--home", str(b_home), str(descriptor), "--fingerprint", a["fingerprint"]]
    )
    assert add.returncode == 0, add.stderr

    user = run_accord(
        ["user", "add", "--home", str(a_home), "Иванов", "--role", "signatory", "--json"],
        ACCORD_SIGNATORY_PASSPHRASE="пароль Иванова",
    )
    assert user.returncode == 0, user.stderr
    assert json.loads(user.stdout)["role"] == "signatory"

    listed = run_accord(["keys", "list", "--home", str(b_home), "--peers", "--json"])
    assert listed.returncode == 0, listed.stderr
    assert {k["kind"] for k in json.loads(listed.stdout) if k["owner"] == PARTY_A} == {
        "seal",
        "encryption",
        "tls",
    }


# --- prompts on a terminal --------------------------------------------------------------------


def run_on_terminal(
    args: Sequence[str], answers: Sequence[tuple[str, str]], **env: str
) -> tuple[int, str]:
    """Run `accord ARGS` on a pseudo-terminal, typing each answer after its prompt appears.

    The child gets a new session with no controlling terminal, so it can never read the
    terminal pytest runs on; Python's hidden prompt then reads the pseudo-terminal (stdin).
    """
    if not ACCORD.exists():
        pytest.fail(f"{ACCORD} is missing: run `{sys.executable} -m pip install -e .`")
    master, slave = os.openpty()
    process = subprocess.Popen(
        [str(ACCORD), *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=accord_env(**env),
        start_new_session=True,
    )
    os.close(slave)
    output, pending, position = b"", list(answers), 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed its side
                break
            if not chunk:
                break
            output += chunk
            text = output.decode("utf-8", "replace")
            while pending and pending[0][0] in text[position:]:
                position = text.index(pending[0][0], position) + len(pending[0][0])
                os.write(master, pending.pop(0)[1].encode() + b"\n")
        code = process.wait(timeout=60)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    assert not pending, f"never prompted for {pending}: {output!r}"
    return code, output.decode("utf-8", "replace")


def test_init_asks_for_the_passphrase_twice(tmp_path: Path) -> None:
    home = tmp_path / "a"
    code, output = run_on_terminal(
        ["init", "--home", str(home), "--party", PARTY_A, "--name", "А", "--listen",
         "127.0.0.1:9443"],
        # The hidden prompt writes its last space once the terminal's echo is off; what is
        # typed before that is flushed away, so wait for the space.
        [("Passphrase for the new node's keys: ", PASS_A), ("confirmation: ", PASS_A)],
    )  # fmt: skip
    assert code == 0, output
    assert NodeKeys.load(Home(home), PASS_A.encode()).seal.key_id


def test_peer_add_confirmed_on_a_terminal(tmp_path: Path) -> None:
    a = cli_init(tmp_path / "a", PARTY_A, 9443, PASS_A)
    b = cli_init(tmp_path / "b", PARTY_B, 9543, PASS_B)
    descriptor = tmp_path / "a.descriptor"
    ok(invoke("peer", "export", "--home", str(a.home), "-o", str(descriptor)))

    # Refusing (the default answer) adds nothing and exits 1.
    code, output = run_on_terminal(
        ["peer", "add", "--home", str(b.home), str(descriptor)], [("[y/N]:", "")]
    )
    assert code == 1, output
    # The fingerprint was shown in groups of four before the question.
    groups = a.init["fingerprint"].split()
    assert " ".join(groups[:4]) in output and " ".join(groups[12:]) in output
    assert peers_of(b.home) == []

    code, output = run_on_terminal(
        ["peer", "add", "--home", str(b.home), str(descriptor)], [("[y/N]:", "y")]
    )
    assert code == 0, output
    with Database.open(Home(b.home).sqlite_url()) as db, db.session(readonly=True) as session:
        assert get_peer(session, PARTY_A).status.value == "active"
