"""`accord demo` runs the exchange end to end on real nodes, says what it proved, and leaves
nothing behind: no node process and no temporary folder."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from accord.gateway.harness import accord_command

pytestmark = pytest.mark.integration


def test_demo_runs_the_exchange_end_to_end(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")}
    env["TMPDIR"] = str(tmp_path)  # where the demo makes (and must remove) its folder
    result = subprocess.run(
        [*accord_command(), "demo"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    transcript = result.stdout
    assert result.returncode == 0, (transcript, result.stderr)
    assert result.stderr == ""

    # Two Parties' nodes and a third party's, introduced by fingerprint, run as separate
    # processes under one agreement profile.
    assert "Descriptors exchanged both ways" in transcript
    pids = [int(p) for p in re.findall(r"pid (\d+), local API answers", transcript)]
    assert len(pids) == 3
    # The signed request, delivered with a receipt.
    request = re.search(r"request ([0-9a-f-]{36}) queued", transcript)
    assert request is not None
    assert "checked both signatures and signed a receipt" in transcript
    assert "timeline: queued → delivered" in transcript
    # B reads it, in Cyrillic, and saves the attachment, checked against the manifest.
    assert "Прошу оказать содействие" in transcript
    assert "saved «Протокол осмотра места происшествия.txt»" in transcript
    assert "= the signed manifest = the file МВД-РБ sent" in transcript
    # B replies, and A reads the reply.
    assert re.search(r"reply [0-9a-f-]{36} delivered", transcript)
    assert "Запрос получен и принят к исполнению" in transcript
    # Art. 7.3: no forward without consent; with A's consent, C accepts and proves origin.
    assert request is not None
    assert re.search(r"refused \(exit 1\): no consent of the originator is recorded", transcript)
    assert re.search(r"consent [0-9a-f]{16}… signed by МВД-РБ's seal", transcript)
    assert "the token reached Росгвардия's node, which verified and recorded it" in transcript
    assert "accepted by Прокуратура-РФ's node under consent" in transcript
    assert re.search(r"signed by МВД-РБ: 2 key\(s\), its seal [0-9a-f]{16}…", transcript)
    assert "under consent signed by МВД-РБ's seal" in transcript
    assert "the re-wrapped key matches the key commitment" in transcript
    # The evidence, verified offline by B's auditor: the request's signed statement, B's
    # receipt, A's consent, B's forward and the log proofs all hold.
    assert "checks the evidence offline" in transcript
    assert "every proof holds" in transcript
    assert "Demo complete" in transcript

    # Nothing left behind.
    assert list(tmp_path.iterdir()) == []
    for pid in pids:
        assert not _is_node(pid), f"node process {pid} is still running"


def _is_node(pid: int) -> bool:
    try:
        return b"serve" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
