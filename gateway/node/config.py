"""A node's home directory and configuration.

Layout of a home (created by `accord init`):

    config.toml          party, name, listen and local addresses, database URL, limits
    profile.toml         the agreement profile, if `accord init --profile` gave one
    keys/seal.key        Ed25519 seal, encrypted at rest (Argon2id, ACCORD_PASSPHRASE)
    keys/encryption.key  X25519 encryption identity, encrypted at rest
    tls/tls.crt, tls.key TLS identity (key encrypted at rest)
    signatories/NAME.key personal keys of heads and deputies, under their own passphrases
    accord.db            the SQLite database (unless `database` names PostgreSQL)
    blobs/               encrypted payloads exactly as sent or received

Invariants: the configuration is parsed into a typed, checked `NodeConfig` (a bad file is
one clear `ConfigError` naming the field); nothing else of the node reads the TOML.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import tomli_w

__all__ = [
    "AuditConfig",
    "ConfigError",
    "DeliveryConfig",
    "Home",
    "HostPort",
    "NodeConfig",
    "RateLimitConfig",
]


class ConfigError(Exception):
    """The node's configuration or home directory is unusable; the message says how to fix it."""


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, what: str) -> HostPort:
        host, sep, port = text.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"{what} must be HOST:PORT (for example 127.0.0.1:9443), not {text!r}"
            )
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def is_loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


@dataclass(frozen=True)
class DeliveryConfig:
    max_attempts: int = 12
    base_delay: float = 0.5
    max_delay: float = 300.0
    batch_size: int = 64
    lease_seconds: float = 120.0
    poll_interval: float = 0.2
    connect_timeout: float = 5.0
    # While batches are on the wire, wait this long before leasing the next one, so that a
    # busy node sends fewer, fuller batches (0 leases at once; an idle node never waits).
    linger: float = 0.05


@dataclass(frozen=True)
class AuditConfig:
    """When the node signs checkpoints of its audit log and asks peers to cosign them.

    A checkpoint is signed once `checkpoint_burst` leaves have been appended since the
    last one, or once `checkpoint_interval` seconds have passed with any new leaf; peers
    are asked to cosign each new checkpoint, and asked again every `witness_interval`
    seconds while one has not cosigned. The schedule is looked at every `poll_interval`.

    The defaults keep the unsigned tail short (issue 12): the leaves past the last
    witnessed checkpoint are the only ones a thief of the database can delete unseen, so a
    busy node signs every `checkpoint_burst` leaves and a quiet one within
    `checkpoint_interval` seconds of its last event.
    """

    checkpoint_interval: float = 5.0
    checkpoint_burst: int = 64
    witness_interval: float = 60.0
    poll_interval: float = 1.0

    def __post_init__(self) -> None:
        if (
            min(self.checkpoint_interval, self.witness_interval, self.poll_interval) <= 0
            or self.checkpoint_burst < 1
        ):
            raise ValueError("audit intervals must be positive and checkpoint_burst at least 1")


@dataclass(frozen=True)
class RateLimitConfig:
    """Requests a second (and bursts) allowed to each peer on the peer API and to each
    user on the local API (gateway/_ratelimit.py). The defaults are far above what one
    peer or user of a busy node sends, so they only stop a flood."""

    peer_rate: float = 1000.0
    peer_burst: int = 2000
    user_rate: float = 500.0
    user_burst: int = 1000

    def __post_init__(self) -> None:
        if min(self.peer_rate, self.user_rate) <= 0 or min(self.peer_burst, self.user_burst) < 1:
            raise ValueError("rate limits must be positive and bursts at least 1")


@dataclass(frozen=True)
class NodeConfig:
    party: str
    name: str
    listen: HostPort
    local: HostPort
    database: str
    max_upload_bytes: int = 8 * 1024**3
    message_ttl_days: int = 30
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    rate_limits: RateLimitConfig = field(default_factory=RateLimitConfig)

    @property
    def peer_url(self) -> str:
        return f"https://{self.listen.url_host}:{self.listen.port}"

    @property
    def local_url(self) -> str:
        return f"https://{self.local.url_host}:{self.local.port}"

    def to_toml(self) -> str:
        data: dict[str, Any] = {
            "party": self.party,
            "name": self.name,
            "listen": str(self.listen),
            "local": str(self.local),
            "database": self.database,
            "max_upload_bytes": self.max_upload_bytes,
            "message_ttl_days": self.message_ttl_days,
            "delivery": asdict(self.delivery),
            "audit": asdict(self.audit),
            "rate_limits": asdict(self.rate_limits),
        }
        return tomli_w.dumps(data)

    @classmethod
    def from_toml(cls, text: str, where: str = "config.toml") -> NodeConfig:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{where} is not valid TOML: {e}") from e
        try:
            delivery = DeliveryConfig(**data.get("delivery", {}))
            audit = AuditConfig(**data.get("audit", {}))
            rate_limits = RateLimitConfig(**data.get("rate_limits", {}))
            config = cls(
                party=str(data["party"]),
                name=str(data["name"]),
                listen=HostPort.parse(str(data["listen"]), "listen"),
                local=HostPort.parse(str(data["local"]), "local"),
                database=str(data["database"]),
                max_upload_bytes=int(data.get("max_upload_bytes", cls.max_upload_bytes)),
                message_ttl_days=int(data.get("message_ttl_days", cls.message_ttl_days)),
                delivery=delivery,
                audit=audit,
                rate_limits=rate_limits,
            )
        except KeyError as e:
            raise ConfigError(f"{where} lacks the setting {e.args[0]!r}") from e
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where} has a bad setting: {e}") from e
        if config.max_upload_bytes <= 0 or config.message_ttl_days <= 0:
            raise ConfigError(f"{where}: max_upload_bytes and message_ttl_days must be positive")
        return config

    def with_changes(self, **changes: Any) -> NodeConfig:
        return replace(self, **changes)


@dataclass(frozen=True)
class Home:
    """The paths of a node's home directory."""

    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / "config.toml"

    @property
    def seal_key(self) -> Path:
        return self.root / "keys" / "seal.key"

    @property
    def encryption_key(self) -> Path:
        return self.root / "keys" / "encryption.key"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def profile_file(self) -> Path:
        """The agreement profile given to `accord init --profile`, copied verbatim."""
        return self.root / "profile.toml"

    @property
    def signatories(self) -> Path:
        return self.root / "signatories"

    def signatory_key(self, user: str) -> Path:
        if not user or "/" in user or user.startswith(".") or "\x00" in user:
            raise ConfigError(f"invalid user name {user!r}")
        return self.signatories / f"{user}.key"

    def sqlite_url(self) -> str:
        return f"sqlite:///{self.root / 'accord.db'}"

    def load_config(self) -> NodeConfig:
        if not self.config_file.exists():
            raise ConfigError(
                f"{self.root} is not an Accord node home (no config.toml): run `accord init` first"
            )
        return NodeConfig.from_toml(self.config_file.read_text("utf-8"), str(self.config_file))

    def save_config(self, config: NodeConfig) -> None:
        tmp = self.config_file.with_suffix(".tmp")
        tmp.write_text(config.to_toml(), "utf-8")
        tmp.replace(self.config_file)
