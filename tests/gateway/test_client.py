"""`gateway._client` without a node: the streamed multipart body, error funnelling, and the
checks that keep a saved attachment inside its folder and equal to its manifest.

The local API is replaced by an `httpx.MockTransport`; the multipart body is parsed back
with python-multipart, the parser the node itself uses.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from python_multipart.multipart import MultipartParser

from accord.gateway.client.local import (
    CHUNK,
    ClientError,
    LocalClient,
    multipart_upload,
    safe_attachment_name,
)

NODE = "https://node.test:9444"


def parse_multipart(boundary: str, body: bytes) -> list[tuple[dict[str, bytes], bytes]]:
    parts: list[tuple[dict[str, bytes], bytes]] = []
    state: dict[str, Any] = {"headers": {}, "field": b"", "value": b"", "data": bytearray()}

    def on_header_field(data: bytes, s: int, e: int) -> None:
        state["field"] += data[s:e]

    def on_header_value(data: bytes, s: int, e: int) -> None:
        state["value"] += data[s:e]

    def on_header_end() -> None:
        state["headers"][state["field"].decode().lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_part_data(data: bytes, s: int, e: int) -> None:
        state["data"].extend(data[s:e])

    def on_part_end() -> None:
        parts.append((state["headers"], bytes(state["data"])))
        state["headers"], state["data"] = {}, bytearray()

    parser = MultipartParser(
        boundary.encode(),
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    parser.write(body)
    parser.finalize()
    return parts


def files(tmp_path: Path) -> list[Path]:
    big = tmp_path / "Отчёт о проверке.bin"
    big.write_bytes(bytes(range(256)) * (3 * CHUNK // 256 + 17))
    empty = tmp_path / "пусто"
    empty.write_bytes(b"")
    return [big, empty]


def test_multipart_upload_round_trips_through_the_nodes_parser(tmp_path: Path) -> None:
    paths = files(tmp_path)
    moved: list[int] = []
    meta = {"to": "Росгвардия", "body": "Текст", "attachments": [p.name for p in paths]}
    upload = multipart_upload(meta, paths, progress=moved.append, boundary="b0undary")
    chunks = list(upload.chunks)
    body = b"".join(chunks)

    assert upload.length == len(body)
    assert upload.content_type == "multipart/form-data; boundary=b0undary"
    # Streamed in bounded pieces, never the whole file at once.
    assert max(len(c) for c in chunks) <= CHUNK
    assert sum(moved) == sum(p.stat().st_size for p in paths)
    parts = parse_multipart("b0undary", body)
    assert [h["content-disposition"].split(b";")[1].strip() for h, _ in parts] == [
        b'name="meta"',
        b'name="attachment"',
        b'name="attachment"',
    ]
    assert json.loads(parts[0][1]) == meta
    assert [data for _, data in parts[1:]] == [p.read_bytes() for p in paths]


def test_multipart_upload_reads_files_only_while_sending(tmp_path: Path) -> None:
    (path,) = files(tmp_path)[:1]
    upload = multipart_upload({}, [path])
    next(upload.chunks)  # the meta part: no file opened yet
    path.unlink()
    with pytest.raises(ClientError, match="cannot read"):
        list(upload.chunks)


def test_multipart_upload_refuses_a_file_that_grew_while_sent(tmp_path: Path) -> None:
    (path,) = files(tmp_path)[:1]
    upload = multipart_upload({}, [path])
    with path.open("ab") as f:
        f.write(b"more")
    with pytest.raises(ClientError, match="changed while it was being sent"):
        list(upload.chunks)


def test_multipart_upload_refuses_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match="not a regular file"):
        multipart_upload({}, [tmp_path])


@pytest.mark.parametrize(
    "name", ["../escaped", "a/b", "..", ".", "", "a\\b", "evil\x00.txt", "new\nline", None, 7]
)
def test_attachment_name_that_could_leave_the_folder_refused(name: object) -> None:
    with pytest.raises(ClientError, match="outside the folder"):
        safe_attachment_name(name)


@pytest.mark.parametrize("name", ["Протокол №1.pdf", "..hidden-but-inside", "a..b", "-x"])
def test_plain_attachment_names_accepted(name: str) -> None:
    assert safe_attachment_name(name) == name


# --- Against a mock node ------------------------------------------------------------------------

Handler = Callable[[httpx.Request], httpx.Response]


def mock_client(handler: Handler) -> LocalClient:
    return LocalClient(NODE, "acc_token", transport=httpx.MockTransport(handler))


def test_error_detail_and_what_to_do() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer acc_token"
        return httpx.Response(401, json={"detail": "unknown or disabled API token"})

    with mock_client(handler) as client, pytest.raises(ClientError) as raised:
        client.whoami()
    assert str(raised.value) == "unknown or disabled API token. Check --token or ACCORD_TOKEN"
    assert raised.value.status == 401


def test_server_error_without_json_says_ask_the_admin() -> None:
    with (
        mock_client(lambda r: httpx.Response(500, text="boom")) as client,
        pytest.raises(ClientError, match=r"HTTP 500.*admin to check its log"),
    ):
        client.status("x")


def test_connection_refused_says_is_serve_running() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with (
        mock_client(handler) as client,
        pytest.raises(ClientError, match=r"cannot reach the node at .*: is `accord serve` running"),
    ):
        client.messages("inbox")


def test_message_id_cannot_reach_another_path() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return httpx.Response(200, json={})

    with mock_client(handler) as client:
        client.status("../../whoami")
        with pytest.raises(ClientError, match="not a message id"):
            client.read("..")
    assert seen == ["/api/v1/messages/..%2F..%2Fwhoami/status"]


def test_missing_ca_file_refused(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match="cannot use the CA file"):
        LocalClient(NODE, "acc_token", tmp_path / "missing.crt")


def test_node_must_be_a_url() -> None:
    with pytest.raises(ClientError, match="is not a URL"):
        LocalClient("127.0.0.1:9444", "acc_token")


def _message(content: bytes, name: str = "Справка.txt", **changes: Any) -> dict[str, Any]:
    entry = {"name": name, "size": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    entry.update(changes)
    return {"message_id": "m1", "attachments": [entry]}


def serving(content: bytes) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/messages/m1/attachments/0"
        return httpx.Response(200, stream=httpx.ByteStream(content))

    return handler


def test_save_attachment_checks_the_manifest(tmp_path: Path) -> None:
    content = "содержимое справки\n".encode() * 50_000
    with mock_client(serving(content)) as client:
        (saved,) = client.save_attachments(_message(content), tmp_path / "out")
    assert saved.path == tmp_path / "out" / "Справка.txt"
    assert saved.path.read_bytes() == content
    assert list((tmp_path / "out").iterdir()) == [saved.path]


def test_save_attachment_not_matching_the_manifest_leaves_nothing(tmp_path: Path) -> None:
    content = b"what the node streamed"
    tampered = _message(content, sha256="0" * 64)
    with mock_client(serving(content)) as client, pytest.raises(ClientError, match="manifest"):
        client.save_attachments(tampered, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_save_attachment_refuses_to_overwrite(tmp_path: Path) -> None:
    content = b"new"
    (tmp_path / "Справка.txt").write_bytes(b"old")
    with mock_client(serving(content)) as client, pytest.raises(ClientError, match="exists"):
        client.save_attachments(_message(content), tmp_path)
    assert (tmp_path / "Справка.txt").read_bytes() == b"old"


def test_download_streams_into_the_sink() -> None:
    content = bytes(range(256)) * 5000
    sink = io.BytesIO()
    moved: list[int] = []
    with mock_client(serving(content)) as client:
        got = client.download("m1", 0, sink, progress=moved.append)
    assert sink.getvalue() == content
    assert (got.size, got.sha256) == (len(content), hashlib.sha256(content).hexdigest())
    assert sum(moved) == len(content)
