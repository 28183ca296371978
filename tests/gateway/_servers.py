"""Real uvicorn servers over mutual TLS on loopback, for gateway tests.

`running_server` starts `gateway._tls.build_server` in a thread on a free 127.0.0.1 port,
waits until the port accepts connections, yields the base URL, and always stops the server.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

from accord.gateway.node.tls import build_server

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, thread: threading.Thread, timeout: float) -> None:
    """Polls until `host:port` accepts a TCP connection; fails fast if the server died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError(f"the server on {host}:{port} exited during start-up")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"the server on {host}:{port} did not start within {timeout} s")


@contextlib.contextmanager
def running_server(
    app: Any,
    context: ssl.SSLContext,
    *,
    server_cert_pem: bytes | None = None,
    timeout: float = 10.0,
) -> Iterator[str]:
    """Serves `app` over `context` on a free loopback port; yields `https://127.0.0.1:PORT`."""
    port = free_port()
    server = build_server(app, context, host=HOST, port=port, server_cert_pem=server_cert_pem)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        wait_for_port(HOST, port, thread, timeout)
        yield f"https://{HOST}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            # A graceful stop that hangs would leak the port into later tests; force it.
            server.force_exit = True
            thread.join(timeout)
        assert not thread.is_alive(), f"the server on port {port} did not stop"
