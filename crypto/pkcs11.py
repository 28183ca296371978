"""Ed25519 keys that live on a PKCS#11 token: an HSM, a smart card, SoftHSM2 in tests.

A token key is named by a `pkcs11:` URI (an RFC 7512 subset, see `Pkcs11Uri`) and used
through `Pkcs11Signer`, which implements the same `Signer` protocol as `SigningKey`, so
envelopes, messages, receipts and checkpoints are signed the same way whichever holds the
key. This module is optional: it needs python-pkcs11, and nothing else in `crypto/`
imports it, so an auditor's offline verifier never does.

Invariants:
- The private key is generated on the token as a token object that is sensitive and not
  extractable. Nothing here reads, wraps or exports it, and a key found on a token
  without those two attributes is refused.
- The PIN comes from the URI's `pin-source` (an environment variable or a file) or, for
  tests, `pin-value`. It never appears in a repr or an error message, and the process
  keeps only an HMAC of it under a per-process random key (to recognise it again).
- On open, a signer proves that the token's private key belongs to the public key the
  token reports: it signs a fresh challenge and checks it with libsodium. Every signature
  it returns is checked the same way, with the one strict rule every Accord verifier
  applies (docs/adr/0002), so a faulty token can never emit a signature a peer refuses.
- PKCS#11 login is per application and per token: the first signer on a token logs in
  with a session of its own, later ones share that login (their PIN must be the same),
  and the last one to close logs out. Closing one signer never logs out another.
- python-pkcs11 initialises a module without OS locking, so every call into a PKCS#11
  module made here is serialised by one lock.
- Loading a module leaves no error on this thread's OpenSSL error queue, where Python's
  `ssl` would later find it and fail (see `_clear_openssl_errors`).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import hmac
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote_to_bytes

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass

from .errors import SigningError, TokenError
from .keys import VerifyKey

__all__ = ["Pkcs11Signer", "Pkcs11Uri", "TokenError", "generate_token_key"]

# EC_PARAMS of Ed25519 (PKCS#11 3.0, 2.3.10): the DER of the RFC 8410 OID 1.3.101.112, or
# the DER PrintableString "edwards25519". Keys are generated with the OID; both are read.
_ED25519_OID = bytes.fromhex("06032b6570")
_ED25519_NAME = b"\x13\x0cedwards25519"
_ED25519_PARAMS = (_ED25519_OID, _ED25519_NAME)

# Ed25519 public keys are 32 bytes; tokens return EC_POINT as a DER OCTET STRING
# (04 20 || key), a few as the raw 32 bytes.
_PUBLIC_SIZE = 32
_EC_POINT_PREFIX = b"\x04\x20"
_SIGNATURE_SIZE = 64
_SELF_TEST = b"accord-pkcs11-self-test/v1\x00"

# RFC 7512, 2.3: the characters a value may carry unencoded in the path and the query.
_PATH_VALUE = r"(?:[A-Za-z0-9\-._~:\[\]@!$'()*+,=&]|%[0-9A-Fa-f]{2})+"
_QUERY_VALUE = r"(?:[A-Za-z0-9\-._~:\[\]@!$'()*+,=/?|]|%[0-9A-Fa-f]{2})+"
_PATH_ATTR = re.compile(rf"([a-z][a-z-]*)=({_PATH_VALUE})")
_QUERY_ATTR = re.compile(rf"([a-z][a-z-]*)=({_QUERY_VALUE})")
_PATH_NAMES = ("token", "object", "id")
_QUERY_NAMES = ("module-path", "pin-value", "pin-source")
# env:NAME, or file:/absolute/path (never file://host/...: a PIN is not fetched remotely).
_PIN_SOURCE = re.compile(r"env:[A-Za-z_][A-Za-z0-9_]*|file:/(?!/)[^\x00-\x1f\x7f]+")
_TOKEN_LABEL_SIZE = 32  # CK_TOKEN_INFO.label is 32 bytes, blank padded


# --- URIs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pkcs11Uri:
    """A key reference. `parse` reads one from text; the constructor checks every field.

    Accepted text (a strict subset of RFC 7512; anything else is refused)::

        pkcs11:token=<label>;object=<label>;id=<%xx bytes>
              ?module-path=<absolute path>&pin-source=env:<VAR>

    - path: `token` (required), then `object` and/or `id` (at least one);
    - query: `module-path` (required, absolute), and exactly one of `pin-source`
      (`env:NAME` or `file:/absolute/path`) or `pin-value` (tests only: the PIN is then
      in the configuration);
    - values are percent-encoded UTF-8 (`id` is raw bytes); no attribute may repeat.
    """

    token: str
    module_path: str
    object: str | None = None
    id: bytes | None = None
    pin_source: str | None = None
    pin_value: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # 1. A token label fits CK_TOKEN_INFO; labels carry no control characters.
        _check_label(self.token, "token")
        if len(self.token.encode("utf-8")) > _TOKEN_LABEL_SIZE:
            raise TokenError(
                f"malformed pkcs11: URI: a token label is at most {_TOKEN_LABEL_SIZE} bytes"
            )
        # 2. Something that finds exactly the object meant: a label, an id, or both.
        if self.object is None and self.id is None:
            raise TokenError("malformed pkcs11: URI: object=<label> or id=<bytes> is required")
        if self.object is not None:
            _check_label(self.object, "object")
        if self.id is not None and not self.id:
            raise TokenError("malformed pkcs11: URI: id must not be empty")
        # 3. An absolute module path, so a library is never picked up from the working
        #    directory or the loader's search path (library planting).
        if not os.path.isabs(self.module_path):
            raise TokenError(
                "malformed pkcs11: URI: module-path=<absolute path of the PKCS#11 module> "
                "is required"
            )
        # 4. Exactly one place the PIN comes from.
        if (self.pin_source is None) == (self.pin_value is None):
            raise TokenError(
                "malformed pkcs11: URI: give exactly one of pin-source=env:VAR, "
                "pin-source=file:/path or pin-value"
            )
        if self.pin_value == "":
            raise TokenError("malformed pkcs11: URI: pin-value must not be empty")
        if self.pin_source is not None and not _PIN_SOURCE.fullmatch(self.pin_source):
            raise TokenError(
                "malformed pkcs11: URI: pin-source must be env:VARIABLE or file:/absolute/path"
            )

    @classmethod
    def parse(cls, text: str) -> Pkcs11Uri:
        """Parse a `pkcs11:` URI; raise `TokenError` saying what is wrong with it."""
        # 1. The scheme, then a path and an optional query (RFC 7512, 2.3).
        if not isinstance(text, str) or not text.startswith("pkcs11:"):
            raise TokenError("a token key reference is a URI starting with 'pkcs11:'")
        path, has_query, query = text[len("pkcs11:") :].partition("?")
        # 2. Only the documented attributes, each at most once, each value well formed.
        p = _attributes(path, ";", _PATH_ATTR, _PATH_NAMES, "path")
        q = _attributes(query, "&", _QUERY_ATTR, _QUERY_NAMES, "query") if has_query else {}
        if "token" not in p:
            raise TokenError("malformed pkcs11: URI: token=<label> is required")
        # 3. Percent-decoded values; `file:///path` is read as `file:/path`. The
        #    constructor checks the rest.
        pin_source = _text(q["pin-source"], "pin-source") if "pin-source" in q else None
        if pin_source is not None and pin_source.startswith("file:///"):
            pin_source = "file:" + pin_source[len("file://") :]
        return cls(
            token=_text(p["token"], "token"),
            module_path=_text(q.get("module-path", ""), "module-path"),
            object=_text(p["object"], "object") if "object" in p else None,
            id=unquote_to_bytes(p["id"]) if "id" in p else None,
            pin_source=pin_source,
            pin_value=_text(q["pin-value"], "pin-value") if "pin-value" in q else None,
        )

    def describe(self) -> str:
        """The key as a local user reads it in a message: token and object, no secrets."""
        return f"{_describe(self.object, self.id)} on token {self.token!r}"


def _describe(label: str | None, ckid: bytes | None) -> str:
    parts = [f"object {label!r}"] if label is not None else []
    if ckid is not None:
        parts.append(f"id {ckid.hex()}")
    return " ".join(parts)


def _attributes(
    text: str, separator: str, pattern: re.Pattern[str], names: tuple[str, ...], part: str
) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in text.split(separator):
        match = pattern.fullmatch(item)
        if match is None:
            # The item is not echoed: it may be a PIN.
            raise TokenError(
                f"malformed pkcs11: URI: each {part} attribute is name=value with "
                "RFC 7512 characters (percent-encode the others)"
            )
        name, value = match.groups()
        if name not in names:
            raise TokenError(
                f"malformed pkcs11: URI: unsupported {part} attribute {name!r} "
                f"(supported: {', '.join(names)})"
            )
        if name in found:
            raise TokenError(f"malformed pkcs11: URI: {name} given twice")
        found[name] = value
    return found


def _text(value: str, name: str) -> str:
    try:
        return unquote_to_bytes(value).decode("utf-8")
    except UnicodeDecodeError as e:
        raise TokenError(f"malformed pkcs11: URI: {name} is not UTF-8") from e


def _check_label(label: str, name: str) -> None:
    if not label:
        raise TokenError(f"malformed pkcs11: URI: {name} must not be empty")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in label):
        raise TokenError(f"malformed pkcs11: URI: {name} contains a control character")


def _read_pin(uri: Pkcs11Uri) -> str:
    """The PIN named by the URI; `TokenError` with what to do when it is missing."""
    if uri.pin_value is not None:
        return uri.pin_value
    # The constructor made sure the source is env:NAME or file:/path.
    kind, _, where = (uri.pin_source or "").partition(":")
    if kind == "env":
        pin = os.environ.get(where, "")
        if not pin:
            raise TokenError(f"the token PIN is read from ${where}, which is not set: export it")
        return pin
    try:
        text = Path(where).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TokenError(f"cannot read the token PIN from {where}: {e.__class__.__name__}") from e
    # One trailing newline is what `echo` leaves; it is not part of the PIN.
    pin = text.removesuffix("\n").removesuffix("\r")
    if not pin:
        raise TokenError(f"the token PIN file {where} is empty")
    return pin


# --- Modules, tokens and logins ------------------------------------------------------

_lock = threading.RLock()
# A PIN is remembered only as an HMAC under this key, to check a later signer's PIN.
_PIN_KEY = os.urandom(32)


@dataclass
class _Login:
    session: pkcs11.Session
    pin_tag: bytes
    users: int = 0


_TokenKey = tuple[str, int, bytes]
_logins: dict[_TokenKey, _Login] = {}


def _error_name(e: BaseException) -> str:
    # python-pkcs11's messages are often empty; the class names the CKR_ code.
    return f"{type(e).__name__} {e}".strip()


@functools.cache
def _openssl_clear_error() -> Callable[[], object] | None:
    """ERR_clear_error of the libcrypto that Python's `ssl` uses, if it is a shared one."""
    try:
        import _ssl

        # dlsym on _ssl's handle searches its dependencies: libssl, then libcrypto.
        return ctypes.CDLL(_ssl.__file__).ERR_clear_error
    except (ImportError, AttributeError, OSError):
        return None  # no ssl module, or one with OpenSSL linked in: nothing shared


def _clear_openssl_errors() -> None:
    """Drop what a module's C_Initialize left on this thread's OpenSSL error queue.

    SoftHSM2 2.6.1 links the system libcrypto, tries to load an engine that is not
    installed (gost), and leaves that failure queued (DSO and NO_SUCH_ENGINE). Python's
    `ssl` shares the library and reads a queued error as its own: the next
    `load_verify_locations(cadata=...)` on this thread, as in `crypto.tls`, then fails
    with "no such engine".
    """
    clear = _openssl_clear_error()
    if clear is not None:
        clear()


def _find_token(uri: Pkcs11Uri) -> pkcs11.Token:
    try:
        module = pkcs11.lib(uri.module_path)
    except (RuntimeError, OSError) as e:
        raise TokenError(
            f"cannot load the PKCS#11 module {uri.module_path}: {_error_name(e)} "
            "(check module-path in the key URI)"
        ) from e
    finally:
        # The first call initialises the module (C_Initialize), even when it then fails.
        _clear_openssl_errors()
    try:
        return module.get_token(token_label=uri.token)
    except pkcs11.NoSuchToken as e:
        raise TokenError(
            f"no token labelled {uri.token!r} in {uri.module_path}: check token= in the key "
            "URI (softhsm2-util --show-slots or pkcs11-tool -L lists the tokens)"
        ) from e
    except pkcs11.MultipleTokensReturned as e:
        raise TokenError(
            f"several tokens are labelled {uri.token!r}: give each token its own label"
        ) from e
    except pkcs11.PKCS11Error as e:
        raise TokenError(f"cannot list the tokens of {uri.module_path}: {_error_name(e)}") from e


def _open_session(uri: Pkcs11Uri, *, rw: bool) -> tuple[pkcs11.Session, _TokenKey]:
    """A logged-in session on the URI's token; give it back with `_close_session`.

    1. The PIN is read first, so a missing variable or file fails before any token call.
    2. The first session on a token logs in with a session of its own; it stays open
       while any of ours does, so closing one signer never logs the others out.
    3. A later open presenting another PIN is refused: PKCS#11 would not check it
       (the token is already logged in), so we do.
    """
    pin = _read_pin(uri)  # 1
    pin_tag = hmac.new(_PIN_KEY, pin.encode("utf-8"), hashlib.sha256).digest()
    with _lock:
        token = _find_token(uri)
        key: _TokenKey = (uri.module_path, token.slot.slot_id, bytes(token.serial))
        login = _logins.get(key)
        if login is None:  # 2
            try:
                login = _Login(token.open(user_pin=pin), pin_tag)
            except (pkcs11.PinIncorrect, pkcs11.PinInvalid, pkcs11.PinLenRange) as e:
                raise TokenError(
                    f"wrong PIN for token {uri.token!r}: check the PIN its pin-source gives"
                ) from e
            except pkcs11.PinLocked as e:
                raise TokenError(
                    f"the PIN of token {uri.token!r} is locked: the token's security "
                    "officer must unlock it"
                ) from e
            except pkcs11.UserAlreadyLoggedIn as e:
                raise TokenError(
                    f"token {uri.token!r} is already logged in by other code in this "
                    "process: Accord cannot check the PIN, so it refuses"
                ) from e
            except pkcs11.PKCS11Error as e:
                raise TokenError(f"cannot log in to token {uri.token!r}: {_error_name(e)}") from e
            _logins[key] = login
        elif not hmac.compare_digest(login.pin_tag, pin_tag):  # 3
            raise TokenError(
                f"wrong PIN for token {uri.token!r}: check the PIN its pin-source gives"
            )
        try:
            session = token.open(rw=rw)
        except pkcs11.PKCS11Error as e:
            if login.users == 0:
                _logout(key)
            raise TokenError(
                f"cannot open a session on token {uri.token!r}: {_error_name(e)}"
            ) from e
        login.users += 1
        return session, key


def _close_session(session: pkcs11.Session, key: _TokenKey) -> None:
    """Close one session; the last one on a token also logs out."""
    with _lock:
        try:
            session.close()
        except pkcs11.PKCS11Error:
            pass  # the token may be gone; the session is dead either way
        login = _logins.get(key)
        if login is not None:
            login.users -= 1
            if login.users <= 0:
                _logout(key)


def _logout(key: _TokenKey) -> None:
    login = _logins.pop(key)
    try:
        login.session.close()  # C_Logout, then C_CloseSession
    except pkcs11.PKCS11Error:
        pass  # a removed token or a finalised module is logged out already


# --- Keys on the token ---------------------------------------------------------------


def _find_one(
    session: pkcs11.Session,
    object_class: ObjectClass,
    label: str | None,
    ckid: bytes | None,
    where: str,
) -> pkcs11.Object:
    """The one Ed25519 key object of `object_class` with this label and/or id."""
    template: dict[Attribute, Any] = {
        Attribute.CLASS: object_class,
        Attribute.KEY_TYPE: KeyType.EC_EDWARDS,
    }
    if label is not None:
        template[Attribute.LABEL] = label
    if ckid is not None:
        template[Attribute.ID] = ckid
    what = "private key" if object_class is ObjectClass.PRIVATE_KEY else "public key"
    found = list(session.get_objects(template))
    if not found:
        raise TokenError(
            f"no Ed25519 {what} with {_describe(label, ckid)} on token {where!r}: check "
            "object=/id= in the key URI, or generate the key first"
        )
    if len(found) > 1:
        raise TokenError(
            f"several Ed25519 {what}s with {_describe(label, ckid)} on token {where!r}: "
            "add id= to the key URI"
        )
    return found[0]


def _public_key(public: pkcs11.Object) -> VerifyKey:
    """The Ed25519 key of a public key object; refuse Ed448 or anything malformed."""
    params = bytes(public[Attribute.EC_PARAMS])
    if params not in _ED25519_PARAMS:
        raise TokenError(f"the token key is not Ed25519 (EC_PARAMS {params.hex()})")
    point = bytes(public[Attribute.EC_POINT])
    if len(point) == len(_EC_POINT_PREFIX) + _PUBLIC_SIZE and point.startswith(_EC_POINT_PREFIX):
        point = point[len(_EC_POINT_PREFIX) :]
    if len(point) != _PUBLIC_SIZE:
        raise TokenError(f"the token returned a malformed Ed25519 EC_POINT ({len(point)} bytes)")
    return VerifyKey(point)


def _sign_on_token(private: pkcs11.SignMixin, message: bytes) -> bytes:
    return bytes(private.sign(message, mechanism=Mechanism.EDDSA))


def _self_test(private: pkcs11.SignMixin, key: VerifyKey) -> bool:
    """Whether the private key signs for `key` under the strict rule (pair-swap check)."""
    challenge = _SELF_TEST + os.urandom(32)
    return key.verify(challenge, _sign_on_token(private, challenge))


def generate_token_key(uri: str | Pkcs11Uri) -> VerifyKey:
    """Generate an Ed25519 key pair on the token named by `uri`; return its public key.

    1. The URI must name the object by label (`object=`); an `id=` is used as the
       CKA_ID, otherwise a random 16-byte one links the two halves for other tools.
    2. Nothing on the token may already carry that label or id: a second key under
       the same name would make the reference ambiguous.
    3. The private key is a token object, private, sensitive, never extractable, and can
       only sign; the public key can only verify.
    4. The new pair passes the self-test before its public key is returned; a pair that
       fails it is destroyed.
    """
    ref = uri if isinstance(uri, Pkcs11Uri) else Pkcs11Uri.parse(uri)
    if ref.object is None:  # 1
        raise TokenError("generating a token key needs object=<label> in the key URI")
    ckid = ref.id if ref.id is not None else os.urandom(16)
    session, key = _open_session(ref, rw=True)
    try:
        with _lock:
            taken = [*session.get_objects({Attribute.LABEL: ref.object})]
            taken += session.get_objects({Attribute.ID: ckid})
            if taken:  # 2
                raise TokenError(
                    f"token {ref.token!r} already holds an object labelled {ref.object!r} "
                    "or with that id: choose another label, or delete the old key first"
                )
            public, private = _generate_pair(session, ref.object, ckid)  # 3
            try:
                verify_key = _public_key(public)
                if not _self_test(private, verify_key):  # 4
                    raise TokenError("the generated key pair failed its self-test")
            except BaseException:
                private.destroy()
                public.destroy()
                raise
            return verify_key
    except pkcs11.PKCS11Error as e:
        raise TokenError(
            f"token {ref.token!r} could not generate an Ed25519 key: {_error_name(e)}"
        ) from e
    finally:
        _close_session(session, key)


def _generate_pair(
    session: pkcs11.Session, label: str, ckid: bytes
) -> tuple[pkcs11.PublicKey, pkcs11.SignMixin]:
    # SoftHSM2 2.6.1 takes the OID form; a token that wants the printable name gets it.
    try:
        public, private = _generate_with(session, label, ckid, _ED25519_OID)
    except (pkcs11.DomainParamsInvalid, pkcs11.AttributeValueInvalid):
        public, private = _generate_with(session, label, ckid, _ED25519_NAME)
    if not isinstance(private, pkcs11.SignMixin):
        private.destroy()
        public.destroy()
        raise TokenError("the token made an Ed25519 private key that cannot sign")
    return public, private


def _generate_with(
    session: pkcs11.Session, label: str, ckid: bytes, params: bytes
) -> tuple[pkcs11.PublicKey, pkcs11.PrivateKey]:
    return session.generate_keypair(
        KeyType.EC_EDWARDS,
        store=True,
        label=label,
        id=ckid,
        # The private key can sign and nothing else; the public key can only verify.
        capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
        mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
        public_template={Attribute.EC_PARAMS: params, Attribute.PRIVATE: False},
        private_template={
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
        },
    )


# --- The signer ----------------------------------------------------------------------


class Pkcs11Signer:
    """An Ed25519 signer whose private key stays on a PKCS#11 token.

    Open it with `Pkcs11Signer.open(uri)`; close it with `close()` or a `with` block. It
    keeps one session open and is safe to share between threads.
    """

    def __init__(
        self,
        _uri: Pkcs11Uri,
        _session: pkcs11.Session,
        _token_key: _TokenKey,
        _private: pkcs11.SignMixin,
        _verify_key: VerifyKey,
    ) -> None:
        self._uri = _uri
        self._session: pkcs11.Session | None = _session
        self._token_key = _token_key
        self._private = _private
        self._verify_key = _verify_key

    @classmethod
    def open(cls, uri: str | Pkcs11Uri, *, expected_key_id: str | None = None) -> Pkcs11Signer:
        """Open the token key named by `uri`; raise `TokenError` saying what to fix.

        1. Log in (or share this process's login) and find exactly one Ed25519 private
           key matching the URI.
        2. Refuse a key that is not sensitive or that is extractable: its bytes could
           leave the token, so it is not a token key in Accord's sense.
        3. Find its public half (same CKA_ID, else same label) and read the public key.
        4. If the caller knows which key to expect, the token must hold that one (a
           token swapped or a key replaced under the same label).
        5. Self-test: the private key signs for that public key (a public object
           relabelled or swapped next to another private key).
        """
        ref = uri if isinstance(uri, Pkcs11Uri) else Pkcs11Uri.parse(uri)
        session, token_key = _open_session(ref, rw=False)
        try:
            with _lock:
                private = _find_one(  # 1
                    session, ObjectClass.PRIVATE_KEY, ref.object, ref.id, ref.token
                )
                if not isinstance(private, pkcs11.SignMixin):
                    raise TokenError(f"the private key with {ref.describe()} cannot sign")
                sensitive = private[Attribute.SENSITIVE]
                extractable = private[Attribute.EXTRACTABLE]
                if sensitive is not True or extractable is not False:  # 2
                    raise TokenError(
                        f"the private key with {ref.describe()} is extractable or not "
                        "sensitive: Accord uses only keys generated to stay on the token"
                    )
                ckid = bytes(private[Attribute.ID])  # 3
                public = _find_one(
                    session,
                    ObjectClass.PUBLIC_KEY,
                    None if ckid else str(private[Attribute.LABEL]),
                    ckid or None,
                    ref.token,
                )
                verify_key = _public_key(public)
                if expected_key_id is not None and verify_key.key_id != expected_key_id:  # 4
                    raise TokenError(
                        f"the key with {ref.describe()} is {verify_key.key_id[:16]}, not the "
                        f"expected {expected_key_id[:16]}: check the URI or the key history"
                    )
                if not _self_test(private, verify_key):  # 5
                    raise TokenError(
                        f"the private key with {ref.describe()} does not match its public key"
                    )
        except pkcs11.PKCS11Error as e:
            _close_session(session, token_key)
            raise TokenError(f"cannot use the key with {ref.describe()}: {_error_name(e)}") from e
        except BaseException:
            _close_session(session, token_key)
            raise
        return cls(ref, session, token_key, private, verify_key)

    def __repr__(self) -> str:
        state = "" if self._session is not None else " closed"
        return f"<Pkcs11Signer {self.key_id[:16]} {self._uri.describe()}{state}>"

    @property
    def key_id(self) -> str:
        return self._verify_key.key_id

    def verify_key(self) -> VerifyKey:
        return self._verify_key

    def sign(self, message: bytes) -> bytes:
        """Sign `message` on the token (CKM_EDDSA, pure Ed25519); raise `SigningError`.

        The signature is checked with the strict rule before it is returned.
        """
        with _lock:
            if self._session is None:
                raise SigningError("this token signer is closed")
            try:
                signature = _sign_on_token(self._private, bytes(message))
            except pkcs11.PKCS11Error as e:
                raise SigningError(
                    f"token {self._uri.token!r} refused to sign: {_error_name(e)}"
                ) from e
        if len(signature) != _SIGNATURE_SIZE or not self._verify_key.verify(message, signature):
            raise SigningError(
                f"token {self._uri.token!r} returned a signature that does not verify"
            )
        return signature

    def close(self) -> None:
        """End the session (and the login, if this was the token's last); idempotent."""
        with _lock:
            if self._session is not None:
                _close_session(self._session, self._token_key)
                self._session = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
