"""Accord's cryptographic core: keys, signed envelopes, sealed messages and receipts.

`crypto/` imports nothing else of Accord's, so an auditor's offline verifier needs only
this package. The recipes exported here are the whole public surface; the primitives live
in private modules.
"""

from .canonical import dumps as canonical_json
from .envelope import Envelope, Signature, VerifiedEnvelope, pae, sign_envelope, verify_envelope
from .errors import CryptoError, KeyFileError, SigningError, VerificationError
from .keys import (
    DecryptionKey,
    KdfCost,
    Passphrase,
    RecipientKey,
    Signer,
    SigningKey,
    VerifyKey,
    key_id_for,
    load_private_key,
)
from .receipts import (
    RECEIPT_TYPE,
    Receipt,
    Verdict,
    VerifiedReceipt,
    issue_receipt,
    verify_receipt,
)
from .sealed import (
    STATEMENT_TYPE,
    MessageDraft,
    MessageOpener,
    OpenedPart,
    PartDigest,
    SealedMessage,
    Statement,
    VerifiedMessage,
    new_message_id,
    seal_message,
    verify_message,
)

__all__ = [
    "RECEIPT_TYPE",
    "STATEMENT_TYPE",
    "CryptoError",
    "DecryptionKey",
    "Envelope",
    "KdfCost",
    "KeyFileError",
    "MessageDraft",
    "MessageOpener",
    "OpenedPart",
    "PartDigest",
    "Passphrase",
    "Receipt",
    "RecipientKey",
    "SealedMessage",
    "Signature",
    "Signer",
    "SigningError",
    "SigningKey",
    "Statement",
    "Verdict",
    "VerificationError",
    "VerifiedEnvelope",
    "VerifiedMessage",
    "VerifiedReceipt",
    "VerifyKey",
    "canonical_json",
    "issue_receipt",
    "key_id_for",
    "load_private_key",
    "new_message_id",
    "pae",
    "seal_message",
    "sign_envelope",
    "verify_envelope",
    "verify_message",
    "verify_receipt",
]
