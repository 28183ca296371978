"""The committed vectors in tests/vectors: valid ones verify, invalid ones fail.

The generator is rerun by `make test` (`python -m tests.vectors.generate --check`) and by
`test_vectors_do_not_drift` below, so the files and the code cannot part ways.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from datetime import datetime
from pathlib import Path

import pytest

from accord.crypto import (
    DecryptionKey,
    Envelope,
    MessageOpener,
    VerificationError,
    VerifyKey,
    verify_envelope,
    verify_message,
    verify_receipt,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
FILES = sorted(VECTORS.glob("*.json"))


def test_vectors_are_committed() -> None:
    kinds = {f.name.split("_")[0] for f in FILES}
    assert kinds == {"auditevent", "envelope", "message", "receipt", "rotation"}
    assert any("valid" == json.loads(f.read_text())["expect"] for f in FILES)


def test_vectors_do_not_drift() -> None:
    from tests.vectors.generate import render

    rendered = render()
    assert sorted(rendered) == [f.name for f in FILES]
    for f in FILES:
        assert rendered[f.name] == f.read_bytes(), f"{f.name} drifted from the generator"


def _keys(items):
    return [VerifyKey.from_dict(k) for k in items]


def _check(case) -> list[str]:
    kind = case["name"].split("_")[0]
    if kind == "auditevent":
        from accord.crypto.bundle import LogEvent

        event = LogEvent.from_leaf(case["leaf"].encode("utf-8"))
        assert (event.chained, event.prev) == (case["chained"], case["prev"])
        return []
    env = Envelope.from_dict(case["envelope"])
    if kind == "envelope":
        verify_envelope(
            env,
            _keys(case["trusted"]),
            payload_type=case["payload_type"],
            required=case["required"],
        )
        return []
    if kind == "rotation":
        from accord.crypto.rotation import (
            HistoricKey,
            KeyHistory,
            verify_revocation,
            verify_rotation,
        )

        def at(text):
            return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))

        history = KeyHistory(
            case["party"],
            tuple(
                HistoricKey(VerifyKey.from_dict(k["key"]), at(k["not_before"]),
                            at(k["not_after"]), at(k["revoked_at"]))
                for k in case["history"]
            ),
        )  # fmt: skip
        verify = verify_rotation if case["statement"] == "rotation" else verify_revocation
        verify(env, party=case["party"], history=history, now=at(case["now"]))
        return []
    if kind == "receipt":
        verify_receipt(
            env,
            _keys(case["trusted"]),
            receiver=case["receiver"],
            message_id=case["message_id"],
            statement_sha256=case["statement_sha256"],
        )
        return []
    now = datetime.fromisoformat(case["now"].replace("Z", "+00:00"))
    verified = verify_message(
        env,
        _keys(case["trusted"]),
        sender=case["sender"],
        recipient=case["recipient"],
        now=now,
        required=case["required"],
    )
    opener = MessageOpener(
        verified,
        base64.b64decode(case["header"]),
        DecryptionKey.from_age_identity(case["identity"]),
    )
    digests = [hashlib.sha256(opener.open_body(base64.b64decode(case["body"]))).hexdigest()]
    for i, blob in enumerate(case["attachments"]):
        out = io.BytesIO()
        opener.open_attachment(i, io.BytesIO(base64.b64decode(blob)), out)
        digests.append(hashlib.sha256(out.getvalue()).hexdigest())
    return digests


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_vector(path: Path) -> None:
    case = json.loads(path.read_text())
    if case["expect"] == "valid":
        digests = _check(case)
        if "plaintext_sha256" in case:
            assert digests == case["plaintext_sha256"]
    else:
        with pytest.raises(VerificationError):
            _check(case)
