"""A throwaway SoftHSM2 for tests: its own configuration, token directory and tokens.

SoftHSM2 reads `SOFTHSM2_CONF` when the module is initialised and only then finds the
tokens `softhsm2-util` made, so `SoftHsm.init_token` re-initialises the module in this
process. That ends every session open on it: make a test's tokens before opening keys.

The module is looked up at `ACCORD_TEST_SOFTHSM_MODULE`, then at the usual install paths.
If SoftHSM2 or python-pkcs11 is missing the tests skip, unless
`ACCORD_REQUIRE_SOFTHSM=1` (set by CI), which makes them fail.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

MODULE_PATHS = (
    "/usr/lib/softhsm/libsofthsm2.so",  # Debian, Ubuntu
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",  # Fedora, RHEL
    "/usr/local/lib/softhsm/libsofthsm2.so",  # built from source
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",  # macOS
)


def find_module() -> str | None:
    configured = os.environ.get("ACCORD_TEST_SOFTHSM_MODULE")
    if configured:
        return configured if Path(configured).is_file() else None
    return next((p for p in MODULE_PATHS if Path(p).is_file()), None)


def missing() -> str | None:
    """Why SoftHSM2 tests cannot run here, or None when they can."""
    if importlib.util.find_spec("pkcs11") is None:
        return "python-pkcs11 is not installed (pip install python-pkcs11)"
    if shutil.which("softhsm2-util") is None:
        return "softhsm2-util is not on PATH (apt-get install softhsm2)"
    configured = os.environ.get("ACCORD_TEST_SOFTHSM_MODULE")
    if configured and find_module() is None:
        return f"ACCORD_TEST_SOFTHSM_MODULE={configured} is not a file"
    if find_module() is None:
        return (
            "libsofthsm2.so not found: install softhsm2 or set ACCORD_TEST_SOFTHSM_MODULE "
            f"(looked in {', '.join(MODULE_PATHS)})"
        )
    return None


def required() -> bool:
    return os.environ.get("ACCORD_REQUIRE_SOFTHSM") == "1"


@dataclass(frozen=True)
class Token:
    """An initialised token: its label, PINs and the module that serves it."""

    label: str
    pin: str
    so_pin: str
    module: str

    def uri(self, object: str = "seal", *, pin: str | None = None, extra: str = "") -> str:
        """A key URI for `object` on this token, with the PIN inline (tests only)."""
        return (
            f"pkcs11:token={quote(self.label, safe='')};object={quote(object, safe='')}{extra}"
            f"?module-path={quote(self.module, safe='/')}"
            f"&pin-value={quote(self.pin if pin is None else pin, safe='')}"
        )


class SoftHsm:
    """A SoftHSM2 installation in `root`; the caller points `SOFTHSM2_CONF` at `conf`."""

    def __init__(self, root: Path, module: str) -> None:
        self.module = module
        self.tokens = root / "tokens"
        self.tokens.mkdir(parents=True)
        self.conf = root / "softhsm2.conf"
        self.conf.write_text(
            f"directories.tokendir = {self.tokens}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
            "slots.removable = false\n",
            encoding="utf-8",
        )

    def init_token(self, label: str, *, pin: str | None = None, so_pin: str | None = None) -> Token:
        """Initialise a token in the next free slot, then make this process see it."""
        pin = pin or secrets.token_hex(4)
        so_pin = so_pin or secrets.token_hex(4)
        subprocess.run(
            [
                "softhsm2-util",
                "--init-token",
                "--free",
                "--label",
                label,
                "--pin",
                pin,
                "--so-pin",
                so_pin,
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "SOFTHSM2_CONF": str(self.conf)},
        )
        self.reload()
        return Token(label, pin, so_pin, self.module)

    def reload(self) -> None:
        """Re-initialise the module so that it reads the configuration and tokens again."""
        import pkcs11

        from accord.crypto.pkcs11 import _clear_openssl_errors

        if os.environ.get("SOFTHSM2_CONF") != str(self.conf):
            raise RuntimeError("point SOFTHSM2_CONF at this SoftHsm's conf first")
        pkcs11.lib(self.module).reinitialize()
        # C_Initialize leaves OpenSSL errors queued; crypto.pkcs11 drops them on its own
        # loads, and this reload is the tests' own (see crypto/pkcs11.py).
        _clear_openssl_errors()
