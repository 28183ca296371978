"""`accord serve`: run a node from its home (CLI.md "Admin")."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer

from .cli import HomeOption, _fail, _home, app


@app.command()
def serve(
    home: HomeOption,
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info, warning or error.")
    ] = "info",
) -> None:
    """Run the node: peer API (mutual TLS), local API, delivery worker. Stops on SIGTERM."""
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Imported here: the web stack is only needed by the one command that serves.
    from storage import StorageError

    from . import _serve
    from ._keystore import KeyStoreError, passphrase_from_env_or_prompt
    from .config import ConfigError

    try:
        passphrase = passphrase_from_env_or_prompt()
        node = _serve.load_node(_home(home).root, passphrase)
    except (KeyStoreError, ConfigError, StorageError) as e:
        _fail(str(e))
    config = node.config
    logging.getLogger("accord.serve").info(
        "node %s: peer API on %s, local API on %s", config.party, config.peer_url, config.local_url
    )
    asyncio.run(_serve.serve(node, log_level=log_level.lower()))
