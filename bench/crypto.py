"""Crypto core benchmarks, each figure beside a baseline measured in the same run.

    python -m bench.crypto [--seconds 5] [--size-mib 1024] [--skip-stream]

1. Seal + open of a 4 KiB message with two signatures, against the bare primitive calls
   it needs (two Ed25519 signs, two verifies, one X25519 wrap and unwrap, one AEAD pass
   each way). Target: ratio >= 0.50.
2. Attachment streaming, file to file, against the Debian `age` tool on the same file
   (bench/age_stream.py). Target: ratio >= 0.80, peak RSS < 64 MiB.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.signing import SigningKey as NaclSigningKey

from accord.crypto import (
    DecryptionKey,
    Envelope,
    MessageDraft,
    MessageOpener,
    SigningKey,
    seal_message,
    verify_message,
)

BODY = os.urandom(4096)
NOW = datetime.now(UTC)


def rate(fn: Callable[[], None], seconds: float) -> float:
    """Operations per CPU second of `fn` (this process's CPU time, which the other
    processes on a shared machine do not inflate), run for about `seconds` after a warm-up.
    The 4 KiB path is single-threaded, so CPU time is its cost."""
    for _ in range(20):
        fn()
    n, start = 0, time.process_time()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(50):
            fn()
        n += 50
    return n / (time.process_time() - start)


def baseline_primitives() -> Callable[[], None]:
    """The primitive calls a two-signature 4 KiB message needs, and nothing else."""
    s1, s2 = NaclSigningKey.generate(), NaclSigningKey.generate()
    v1, v2 = s1.verify_key, s2.verify_key
    recipient = X25519PrivateKey.generate()
    recipient_pub = recipient.public_key()
    content_key = os.urandom(32)
    file_key = os.urandom(16)

    def once() -> None:
        # One AEAD pass each way over the body.
        aead = ChaCha20Poly1305(content_key)
        nonce = os.urandom(12)
        ct = aead.encrypt(nonce, BODY, None)
        # X25519 wrap: ephemeral key, agreement, HKDF, wrap the file key.
        eph = X25519PrivateKey.generate()
        shared = eph.exchange(recipient_pub)
        kek = HKDF(hashes.SHA256(), 32, b"", b"wrap").derive(shared)
        wrapped = ChaCha20Poly1305(kek).encrypt(bytes(12), file_key, None)
        # Two signatures over a digest-sized statement, two verifications.
        statement = ct[:512]
        sig1 = s1.sign(statement).signature
        sig2 = s2.sign(statement).signature
        v1.verify(statement, sig1)
        v2.verify(statement, sig2)
        # X25519 unwrap and the AEAD pass back.
        shared2 = recipient.exchange(eph.public_key())
        kek2 = HKDF(hashes.SHA256(), 32, b"", b"wrap").derive(shared2)
        ChaCha20Poly1305(kek2).decrypt(bytes(12), wrapped, None)
        aead.decrypt(nonce, ct, None)

    return once


def accord_message() -> Callable[[], None]:
    seal, signatory = SigningKey.generate(), SigningKey.generate()
    trusted = [seal.verify_key(), signatory.verify_key()]
    b = DecryptionKey.generate()
    recipient = [b.recipient()]

    def once() -> None:
        draft = MessageDraft(
            message_id="bench-message",
            sender="A",
            recipient="B",
            created=NOW,
            expires=NOW + timedelta(days=1),
            marking={"level": "OFFICIAL", "caveats": []},
            purpose="benchmark",
            type="request",
        )
        sealed = seal_message(draft, body=BODY, recipients=recipient)
        wire = sealed.sign([signatory, seal]).to_bytes()
        verified = verify_message(
            Envelope.from_bytes(wire),
            trusted,
            sender="A",
            recipient="B",
            now=NOW,
            required=[seal.key_id, signatory.key_id],
        )
        body = MessageOpener(verified, sealed.header, b).open_body(sealed.body)
        assert body == BODY

    return once


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Accord crypto benchmarks")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--skip-stream", action="store_true")
    args = parser.parse_args(argv)

    # The two loops alternate in short rounds and each figure is the median of its rounds,
    # so load from other processes on this shared machine hits both alike.
    rounds = 5
    base_fn, ours_fn = baseline_primitives(), accord_message()
    base_rates, our_rates = [], []
    for _ in range(rounds):
        base_rates.append(rate(base_fn, args.seconds / rounds))
        our_rates.append(rate(ours_fn, args.seconds / rounds))
    base, ours = statistics.median(base_rates), statistics.median(our_rates)
    print("== 4 KiB message, two signatures: seal + sign + verify + open ==")
    print(
        f"(per CPU second; median of {rounds} alternating rounds of {args.seconds / rounds:.1f} s)"
    )
    print(f"{'bare primitives (baseline)':<34}{base:>10.0f} msg/s")
    print(f"{'accord seal + open':<34}{ours:>10.0f} msg/s")
    print(f"{'ratio (target >= 0.50)':<34}{ours / base:>10.2f}")
    if not args.skip_stream:
        from bench import age_stream

        print()
        age_stream.main(["--size-mib", str(args.size_mib)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
