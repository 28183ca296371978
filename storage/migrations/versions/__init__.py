"""The alembic revisions, oldest first; each file is loaded by alembic, never imported."""
