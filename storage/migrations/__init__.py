"""Alembic migrations of the node database, run by `storage.Database.migrate()`."""
