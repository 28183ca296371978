"""The errors of `crypto/`, grouped by who must act.

- `VerificationError`: what was presented does not verify (bad signature, wrong key,
  tampered or truncated data, expired, wrong recipient, malformed). It is the one error
  type every verify and open recipe raises, so a caller cannot mistake one failure for
  another kind of success. Its `reason` is for local logs and local users; towards a
  remote peer every `VerificationError` must look the same.
- `KeyFileError`: a key at rest cannot be used (wrong passphrase, damaged or unknown
  format). The local operator must act. `TokenError` is its PKCS#11 case (malformed
  `pkcs11:` URI, module not loadable, token or key not found, wrong PIN), so one handler
  covers both.
- `SigningError`: a signer could not sign (a revoked key, a token that refused).
"""

from __future__ import annotations

__all__ = ["CryptoError", "KeyFileError", "SigningError", "TokenError", "VerificationError"]


class CryptoError(Exception):
    """Root of every error raised by `crypto/`."""


class VerificationError(CryptoError):
    """Something presented for verification or opening failed; nothing of it may be used."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeyFileError(CryptoError):
    """A key file could not be opened: wrong passphrase, damaged file or unknown format."""


class TokenError(KeyFileError):
    """A token key could not be opened or made: its URI, module, token, PIN or object."""


class SigningError(CryptoError):
    """A signer refused or failed to sign."""
