"""Database fixtures shared by the test tree.

`db` is a migrated `storage.Database`, once on SQLite (a file in `tmp_path`) and once on
PostgreSQL (a database created for the test and dropped after it), so every test using it
runs on both backends. `database_url` is the URL of a fresh, empty database on each
backend, for tests of the migrations themselves.

PostgreSQL is found at `ACCORD_TEST_POSTGRES` (default
`postgresql://postgres@127.0.0.1:5432/test`). If it is unreachable the PostgreSQL cases
are skipped, unless `ACCORD_REQUIRE_POSTGRES=1` (set by CI), which makes them fail.

For speed, `db` starts as a copy of a database migrated once per session (a file copy on
SQLite, `CREATE DATABASE ... TEMPLATE` on PostgreSQL). PostgreSQL spends its time syncing
the files of new databases, so a few copies are made ahead in background threads, and
dropped ones are dropped in the background too. Each test still gets a database of its
own, with a random name, dropped after it.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from accord.storage import Database

POSTGRES_URL = os.environ.get("ACCORD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


class PostgresDatabases:
    """Creates and drops the test databases of one PostgreSQL server."""

    def __init__(self, admin_url: str, ahead: int = 4) -> None:
        self.admin_url = admin_url
        self._pool = ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="test-db")
        self._drops: list[Future[None]] = []
        self._ahead = ahead
        self._copies: deque[Future[str]] = deque()
        self.template = self._create()
        with Database.open(self.url(self.template)) as database:
            database.migrate()
        for _ in range(ahead):
            self._copies.append(self._pool.submit(self._create, self.template))

    def url(self, name: str) -> str:
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def empty(self) -> str:
        """A new empty database."""
        return self._create()

    def migrated(self) -> str:
        """A new database at head (a copy of the template made ahead of time)."""
        name = self._copies.popleft().result()
        self._copies.append(self._pool.submit(self._create, self.template))
        return name

    def drop(self, name: str) -> None:
        self._drops.append(self._pool.submit(self._drop, name))

    def close(self) -> None:
        while self._copies:
            self.drop(self._copies.popleft().result())
        for drop in self._drops:
            drop.result()
        self._drop(self.template)
        self._pool.shutdown()

    def _create(self, template: str | None = None) -> str:
        name = f"accord_test_{secrets.token_hex(6)}"
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(statement)
        return name

    def _drop(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases]:
    """The PostgreSQL server's test databases, or skip (fail when CI requires it)."""
    url = make_url(POSTGRES_URL).set(drivername="postgresql")
    admin_url = url.render_as_string(hide_password=False)
    try:
        with psycopg.connect(admin_url, connect_timeout=3):
            pass
    except psycopg.Error as e:
        message = f"PostgreSQL not reachable at {url!r}: start it or set ACCORD_TEST_POSTGRES ({e})"
        if os.environ.get("ACCORD_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    databases = PostgresDatabases(admin_url)
    try:
        yield databases
    finally:
        databases.close()


@pytest.fixture
def postgres_url(postgres_databases: PostgresDatabases) -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database, dropped after the test."""
    name = postgres_databases.empty()
    try:
        yield postgres_databases.url(name)
    finally:
        postgres_databases.drop(name)


@pytest.fixture
def postgres_migrated_url(postgres_databases: PostgresDatabases) -> Iterator[str]:
    """The URL of a fresh PostgreSQL database at head, dropped after the test."""
    name = postgres_databases.migrated()
    try:
        yield postgres_databases.url(name)
    finally:
        postgres_databases.drop(name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database file migrated to head, to copy test databases from."""
    path = tmp_path_factory.mktemp("sqlite-template") / "accord.db"
    with Database.open(f"sqlite:///{path}") as database:
        database.migrate()
    # Closing the last connection checkpointed the WAL into the main file.
    return path


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """`"sqlite"` or `"postgresql"`: tests depending on it run once on each."""
    name: str = request.param
    return name


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh, empty database on each backend."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'accord.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def db(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A fresh database at head, on each backend."""
    if backend == "sqlite":
        path = tmp_path / "accord.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("postgres_migrated_url")
    database = Database.open(url)
    try:
        yield database
    finally:
        database.close()
