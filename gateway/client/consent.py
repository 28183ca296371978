"""The local API's consent, forward and provenance endpoints, for the CLI and the demo."""

from __future__ import annotations

from typing import Any

from accord.gateway.client.local import ClientError, LocalClient, _id

__all__ = ["PolicyClient"]


class PolicyClient(LocalClient):
    """The local API's consent and forward endpoints."""

    def __enter__(self) -> PolicyClient:
        return self

    def grant(self, message_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("POST", f"/messages/{_id(message_id)}/consents", body)

    def revoke(self, nonce: str) -> dict[str, Any]:
        return self._object("POST", f"/consents/{_id(nonce)}/revoke", {})

    def ask(self, message_id: str, to: str, purpose: str) -> dict[str, Any]:
        body = {"to": to, "purpose": purpose}
        return self._object("POST", f"/messages/{_id(message_id)}/consent-requests", body)

    def use(self, message_id: str, purpose: str) -> dict[str, Any]:
        return self._object("POST", f"/messages/{_id(message_id)}/uses", {"purpose": purpose})

    def forward(self, message_id: str, to: str, purpose: str | None) -> dict[str, Any]:
        body = {"to": to, "purpose": purpose}
        return self._object("POST", f"/messages/{_id(message_id)}/forward", body)

    def consents(self, message_id: str | None) -> list[dict[str, Any]]:
        path = "/consents" if message_id is None else f"/messages/{_id(message_id)}/consents"
        document = self._request("GET", path)
        if not isinstance(document, list):
            raise ClientError("the node answered with something other than a consent list")
        return document

    def remark(
        self,
        message_id: str,
        level: str,
        caveats: list[str],
        signatory_passphrase: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"level": level, "caveats": caveats}
        if signatory_passphrase is not None:
            body["signatory_passphrase"] = signatory_passphrase
        return self._object("POST", f"/messages/{_id(message_id)}/marking", body)

    def provenance(self, message_id: str) -> dict[str, Any]:
        return self._object("GET", f"/messages/{_id(message_id)}/provenance", None)

    def _object(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        kwargs = {} if body is None else {"json": body}
        document = self._request(method, path, **kwargs)
        if not isinstance(document, dict):
            raise ClientError("the node answered with something other than a JSON object")
        return document
