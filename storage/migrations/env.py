"""Alembic environment, driven only by `storage.Database.migrate()` (no `alembic.ini`).

Invariants:
- Migrations run on the connection (and inside the transaction) that `migrate()` passes
  in `config.attributes["connection"]`; this module never builds an engine or reads a URL.
- `target_metadata` is the storage metadata, so `alembic revision --autogenerate` and the
  drift test compare against the same tables the code uses.
- On SQLite, operations are rendered in batch mode (copy-and-move), the only way SQLite
  can alter most table properties.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from accord.storage._models import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run migrations through storage.Database.migrate()")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
