"""The node's private keys at rest: where they live in a home and how they are opened.

Invariants:
- Every private key of a node is a file in its home, encrypted under a passphrase
  (Argon2id; see `crypto.keys` and `crypto.tls`). This module never sees key bytes: it
  hands files and passphrases to `crypto/` and gets opaque key objects back.
- The node's three keys (seal, encryption, TLS) share the node passphrase
  (ACCORD_PASSPHRASE). A signatory's personal key has its own passphrase
  (ACCORD_SIGNATORY_PASSPHRASE), so the node's operators cannot sign in a person's name.
- The seal may instead live on a PKCS#11 token (an HSM; SoftHSM2 in tests): the home then
  holds `keys/seal.pkcs11`, one `pkcs11:` URI naming the module, token and key, whose PIN
  comes from an environment variable or a file (`pin-source`), never from the home. The
  key never leaves the token (`crypto.pkcs11`).
- Every failure is one `KeyStoreError` whose message says what was wrong and what to do;
  a wrong passphrase names the variable that supplies it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from accord.crypto import DecryptionKey, KdfCost, KeyFileError, Signer, SigningKey, load_private_key
from accord.crypto.tls import TlsError, TlsIdentity
from accord.gateway.node.config import ConfigError, Home

if TYPE_CHECKING:
    # Imported where used: `accord serve` opens the node's key files before the database
    # layer is loaded, so that their Argon2id derivations (64 MiB each) run on top of a
    # small process (its peak RSS, docs/benchmarks.md).
    from accord.storage import Database

__all__ = [
    "NODE_PASSPHRASE_VAR",
    "SIGNATORY_PASSPHRASE_VAR",
    "KeyStoreError",
    "NodeKeys",
    "load_signatory",
    "open_seal_ref",
    "passphrase_from_env_or_prompt",
    "save_signatory",
    "seal_token_file",
]

NODE_PASSPHRASE_VAR = "ACCORD_PASSPHRASE"  # noqa: S105 - the name of a variable
SIGNATORY_PASSPHRASE_VAR = "ACCORD_SIGNATORY_PASSPHRASE"  # noqa: S105


class KeyStoreError(Exception):
    """A key at rest cannot be created or opened; the message says what to do next."""


def passphrase_from_env_or_prompt(
    var: str = NODE_PASSPHRASE_VAR,
    prompt: str = "Passphrase for the node's keys",
    *,
    confirm: bool = False,
    environ: Mapping[str, str] | None = None,
    interactive: bool | None = None,
) -> bytes:
    """The passphrase from the environment variable `var`, else from a hidden prompt.

    `confirm` asks twice (use it when the passphrase is about to protect a new key).
    Without the variable and without a terminal to prompt on, raises `KeyStoreError`.
    `environ` and `interactive` default to the process's environment and whether stdin is
    a terminal; tests pass them explicitly.
    """
    env = os.environ if environ is None else environ
    value = env.get(var)
    if value is not None:
        if not value:
            raise KeyStoreError(f"{var} is set but empty. Set it to the passphrase, or unset it")
        return value.encode("utf-8")
    if interactive is None:
        interactive = sys.stdin.isatty()
    if not interactive:
        raise KeyStoreError(
            f"no passphrase: {var} is not set and there is no terminal to ask on. "
            f"Set {var} or run the command on a terminal"
        )
    typed: str = typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
    if not typed:
        raise KeyStoreError("an empty passphrase would leave the keys unprotected. Type one")
    return typed.encode("utf-8")


def _wrong_node_passphrase(home: Home) -> KeyStoreError:
    return KeyStoreError(
        f"wrong passphrase for the node keys in {home.root}. Give the passphrase chosen at "
        f"`accord init`, in {NODE_PASSPHRASE_VAR} or at the prompt"
    )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as e:
        raise KeyStoreError(
            f"{what} is missing ({path}). Check --home, or restore the file from a backup"
        ) from e
    except OSError as e:
        raise KeyStoreError(
            f"cannot read {what} ({path}): {e.strerror}. Check its permissions"
        ) from e


@dataclass(frozen=True, slots=True)
class NodeKeys:
    """The node's seal, encryption key and TLS identity, opened from its home."""

    seal: Signer
    encryption: DecryptionKey
    tls: TlsIdentity

    @classmethod
    def generate(cls, party: str, *, hosts: Sequence[str], now: datetime) -> NodeKeys:
        """Fresh keys for a new node; `hosts` go into the TLS certificate's SubjectAltName."""
        try:
            tls = TlsIdentity.generate(party, hosts=hosts, now=now)
        except TlsError as e:
            raise KeyStoreError(
                f"cannot make the TLS certificate: {e}. Check --party and --listen"
            ) from e
        return cls(SigningKey.generate(), DecryptionKey.generate(), tls)

    def save(self, home: Home, passphrase: bytes, *, cost: KdfCost | None = None) -> None:
        """Write the three keys into `home`, encrypted under `passphrase`; never overwrites."""
        if not isinstance(self.seal, SigningKey):
            raise KeyStoreError("a token seal is not saved to a file; it stays on its token")
        if not passphrase:
            raise KeyStoreError("an empty passphrase would leave the keys unprotected. Give one")
        for path in (home.seal_key, home.encryption_key):
            if path.exists():
                raise KeyStoreError(
                    f"{path} already exists. Move it away first: a key is not replaced"
                )
        home.seal_key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self.seal.save(home.seal_key, passphrase, cost=cost)
            self.encryption.save(home.encryption_key, passphrase, cost=cost)
            self.tls.save(home.tls_dir, passphrase)
        except (OSError, TlsError, ValueError) as e:
            raise KeyStoreError(f"cannot write the node keys into {home.root}: {e}") from e

    @classmethod
    def load(cls, home: Home, passphrase: bytes) -> NodeKeys:
        """Open the node's keys; a wrong passphrase is one `KeyStoreError` naming
        ACCORD_PASSPHRASE."""
        # 1. The seal first: it is the cheapest to open and the one every action needs, so
        #    a wrong passphrase is reported before the slower TLS key is tried.
        token_file = seal_token_file(home)
        if token_file.exists() and not home.seal_key.exists():
            seal: Signer = open_seal_ref(_read(token_file, "the seal's token reference")
                                         .decode("utf-8").strip(), passphrase)  # fmt: skip
        else:
            opened = _open(_read(home.seal_key, "the seal key"), passphrase, home)
            if not isinstance(opened, SigningKey):
                raise KeyStoreError(
                    f"{home.seal_key} does not hold an Ed25519 seal key. Restore it"
                )
            seal = opened
        encryption = _open(_read(home.encryption_key, "the encryption key"), passphrase, home)
        if not isinstance(encryption, DecryptionKey):
            raise KeyStoreError(
                f"{home.encryption_key} does not hold an X25519 encryption key. Restore it"
            )
        # 2. The TLS identity; its loader checks the key belongs to the certificate.
        if not (home.tls_dir / "tls.key").exists():
            raise KeyStoreError(
                f"the TLS key is missing ({home.tls_dir}). "
                "Check --home, or restore it from a backup"
            )
        try:
            tls = TlsIdentity.load(home.tls_dir, passphrase)
        except TlsError as e:
            if "wrong passphrase" in str(e):
                raise _wrong_node_passphrase(home) from e
            raise KeyStoreError(f"cannot open the TLS identity: {e}") from e
        return cls(seal, encryption, tls)


def _signatory_token_ref(db: Database, user: str) -> tuple[str, str] | None:
    """(URI, key id) of `user`'s active signatory key if it lives on a token."""
    from accord.storage import KeyKind, KeyStatus, list_keys

    with db.session(readonly=True) as session:
        for key in list_keys(session, owner=user, kind=KeyKind.SIGNATORY):
            if key.status is KeyStatus.ACTIVE and (key.store_ref or "").startswith("pkcs11:"):
                return key.store_ref or "", key.key_id
    return None


def token_uri_with_pin(ref: str, pin: bytes) -> Any:
    """The `pkcs11:` URI `ref` with the PIN the person typed, in memory only."""
    import dataclasses

    from accord.crypto.pkcs11 import Pkcs11Uri

    uri = Pkcs11Uri.parse(ref)
    return dataclasses.replace(uri, pin_source=None, pin_value=pin.decode("utf-8"))


class _OneSignature:
    """A token signer that signs once and then closes its session (logging out when it
    was the last): the signatory's PIN unlocks exactly the signature they asked for."""

    def __init__(self, signer: Any) -> None:
        self._signer = signer
        self.key_id: str = signer.key_id

    def verify_key(self) -> Any:
        return self._signer.verify_key()

    def sign(self, message: bytes) -> bytes:
        try:
            signature: bytes = self._signer.sign(message)
            return signature
        finally:
            self._signer.close()


def _open_token_signatory(user: str, ref: str, key_id: str, pin: bytes) -> Signer:
    try:
        from accord.crypto.pkcs11 import Pkcs11Signer

        signer = Pkcs11Signer.open(token_uri_with_pin(ref, pin), expected_key_id=key_id)
    except ImportError as e:
        raise KeyStoreError(
            f"{user}'s key is on a PKCS#11 token but python-pkcs11 is not installed"
        ) from e
    except (KeyFileError, UnicodeDecodeError) as e:
        raise KeyStoreError(
            f"cannot use {user}'s key on its token ({e}). Give {user}'s own token PIN, in "
            f"{SIGNATORY_PASSPHRASE_VAR} or at the prompt"
        ) from e
    return _OneSignature(signer)


def seal_token_file(home: Home) -> Path:
    """Where a home names its seal on a PKCS#11 token (one `pkcs11:` URI)."""
    return home.seal_key.with_name("seal.pkcs11")


def open_seal_ref(
    ref: str, passphrase: bytes, *, expected_key_id: str | None = None, home: Home | None = None
) -> Signer:
    """Open a seal from its store reference: a `pkcs11:` URI (the key stays on the token)
    or the path of an encrypted key file."""
    if ref.startswith("pkcs11:"):
        try:
            from accord.crypto.pkcs11 import Pkcs11Signer, Pkcs11Uri

            uri = Pkcs11Uri.parse(ref)
            if uri.pin_value is not None:
                raise KeyStoreError(
                    "the seal's token URI carries its PIN: use pin-source=env:VARIABLE or "
                    "pin-source=file:/path, so the PIN is not kept in the home"
                )
            return Pkcs11Signer.open(uri, expected_key_id=expected_key_id)
        except ImportError as e:
            raise KeyStoreError(
                "the seal is on a PKCS#11 token but python-pkcs11 is not installed. "
                "Install it (pip install python-pkcs11)"
            ) from e
        except KeyFileError as e:  # TokenError
            raise KeyStoreError(f"cannot open the seal on its token: {e}") from e
    path = Path(ref)
    key = _open(_read(path, "a seal key"), passphrase, home or Home(path.parent.parent))
    if not isinstance(key, SigningKey):
        raise KeyStoreError(f"{path} does not hold an Ed25519 seal key. Restore it")
    if expected_key_id is not None and key.key_id != expected_key_id:
        raise KeyStoreError(f"{path} holds another key than the history names. Restore it")
    return key


def _open(data: bytes, passphrase: bytes, home: Home) -> SigningKey | DecryptionKey:
    try:
        return load_private_key(data, passphrase)
    except KeyFileError as e:
        if "wrong passphrase" in str(e):
            raise _wrong_node_passphrase(home) from e
        raise KeyStoreError(f"a node key file in {home.root} is damaged ({e}). Restore it") from e


def _signatory_path(home: Home, user: str) -> Path:
    try:
        return home.signatory_key(user)
    except ConfigError as e:
        raise KeyStoreError(f"{e}. Use a name without '/' that does not start with '.'") from e


def save_signatory(
    home: Home, user: str, key: SigningKey, passphrase: bytes, *, cost: KdfCost | None = None
) -> Path:
    """Write a signatory's personal key under their own passphrase; never overwrites."""
    if not passphrase:
        raise KeyStoreError(
            f"an empty passphrase would leave {user}'s key unprotected. "
            f"Set {SIGNATORY_PASSPHRASE_VAR} or type one"
        )
    path = _signatory_path(home, user)
    if path.exists():
        raise KeyStoreError(
            f"{path} already exists. Move it away first: a signatory's key is not replaced"
        )
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key.save(path, passphrase, cost=cost)
    except (OSError, ValueError) as e:
        raise KeyStoreError(f"cannot write {user}'s key to {path}: {e}") from e
    return path


def load_signatory(
    home: Home, user: str, passphrase: bytes, *, db: Database | None = None
) -> Signer:
    """Open `user`'s personal signing key with their own passphrase. With `db`, the key
    must also be `user`'s current key in the key history: a revoked or retired key signs
    nothing new; and a key held on a PKCS#11 token opens with `passphrase` as its PIN,
    for one signature only (the node never keeps a usable handle on it)."""
    if db is not None:
        token_ref = _signatory_token_ref(db, user)
        if token_ref is not None:
            return _open_token_signatory(user, token_ref[0], token_ref[1], passphrase)
    path = _signatory_path(home, user)
    data = _read(path, f"{user}'s signing key")
    try:
        key = load_private_key(data, passphrase)
    except KeyFileError as e:
        if "wrong passphrase" in str(e):
            raise KeyStoreError(
                f"wrong passphrase for {user}'s signing key. Give {user}'s own passphrase "
                f"(not the node's), in {SIGNATORY_PASSPHRASE_VAR} or at the prompt"
            ) from e
        raise KeyStoreError(f"{path} is damaged ({e}). Restore it from a backup") from e
    if not isinstance(key, SigningKey):
        raise KeyStoreError(f"{path} does not hold an Ed25519 signing key. Restore it")
    if db is not None:
        from accord.storage import KeyStatus, NotFound, get_key

        with db.session(readonly=True) as session:
            try:
                record = get_key(session, key.key_id)
            except NotFound:
                record = None
        if record is None or record.owner != user or record.status is not KeyStatus.ACTIVE:
            state = "unknown" if record is None else record.status.value
            raise KeyStoreError(
                f"{user}'s signing key {key.key_id[:16]}… is {state} in the key history and "
                "signs nothing new. Ask an admin for a new signatory key"
            )
    return key
