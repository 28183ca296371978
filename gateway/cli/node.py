"""`accord serve`: run a node from its home (CLI.md "Admin")."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer

from accord.gateway.cli._common import HomeOption, _fail, _home, app


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
    from accord.crypto.keys import Passphrase
    from accord.gateway.keys.store import KeyStoreError, NodeKeys, passphrase_from_env_or_prompt
    from accord.gateway.node.config import ConfigError

    try:
        _home(home).load_config()  # A wrong --home is told first, as before.
        # Kept by the node to reopen its keys when they rotate: no key file opened here is
        # derived again (`crypto.keys.Passphrase`).
        passphrase = Passphrase(passphrase_from_env_or_prompt())
        # The key files are opened before the web stack and the database layer are
        # imported: each Argon2id derivation briefly takes 64 MiB, and on top of a
        # process with everything loaded that was the node's peak RSS (158 MiB).
        keys = NodeKeys.load(_home(home), passphrase)
    except (KeyStoreError, ConfigError) as e:
        _fail(str(e))
    # Imported here: the web stack is only needed by the one command that serves.
    from accord.gateway import serve as _serve
    from accord.storage import StorageError

    try:
        node = _serve.load_node(_home(home).root, passphrase, keys=keys)
    except (KeyStoreError, ConfigError, StorageError) as e:
        _fail(str(e))
    config = node.config
    logging.getLogger("accord.serve").info(
        "node %s: peer API on %s, local API on %s", config.party, config.peer_url, config.local_url
    )
    with asyncio.Runner(loop_factory=_serve.event_loop_factory()) as runner:
        runner.run(_serve.serve(node, log_level=log_level.lower()))
