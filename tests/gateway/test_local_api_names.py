"""Attachment names a recipient could not save safely are refused at send."""

from __future__ import annotations

import pytest

from accord.gateway.api.local.messages import _safe_file_name


@pytest.mark.parametrize("name", ["протокол осмотра.pdf", "a.b.c", "x" * 255])
def test_plain_names_accepted(name: str) -> None:
    assert _safe_file_name(name)


@pytest.mark.parametrize(
    "name", ["../etc/passwd", "a/b", "a\\b", "..", ".", "", "x\ny", "x" * 256, 7, None]
)
def test_path_traversal_names_refused(name: object) -> None:
    assert not _safe_file_name(name)
