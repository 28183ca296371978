"""Fixtures of the integration tests: real `accord serve` processes on loopback.

`cluster_factory` (module scope) makes `Cluster`s of real nodes (see `_nodes`) on each
database backend: SQLite in each node's home, and PostgreSQL with a fresh database per
node, created for the module and dropped after it. The PostgreSQL case reuses the
session's `postgres_databases` (tests/conftest.py): it is skipped when the server is
unreachable, and fails instead when ACCORD_REQUIRE_POSTGRES=1.

Nodes are module-scoped because starting one costs about a second (Python start-up and
the Argon2id opening of its TLS key); tests that stop, kill or restart a node leave it
running again. Whatever happens, the factory stops every node it started, then drops the
databases.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration._nodes import Cluster

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything in this folder starts real nodes: mark it `integration`."""
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module", params=BACKENDS)
def node_backend(request: pytest.FixtureRequest) -> str:
    """`"sqlite"` or `"postgresql"`: each module's nodes run once on each."""
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def cluster_factory(
    node_backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[], Cluster]]:
    """Makes clusters of nodes on this module's backend; stops them all at the end."""
    databases: list[str] = []
    new_database: Callable[[], str | None]
    if node_backend == "postgresql":
        postgres = request.getfixturevalue("postgres_databases")

        def new_database() -> str:
            name: str = postgres.empty()
            databases.append(name)
            url: str = postgres.url(name)
            return url

    else:

        def new_database() -> None:
            return None

    clusters: list[Cluster] = []

    def make() -> Cluster:
        cluster = Cluster(tmp_path_factory.mktemp(f"cluster-{node_backend}"), new_database)
        clusters.append(cluster)
        return cluster

    try:
        yield make
    finally:
        try:
            for cluster in clusters:
                cluster.close()
        finally:
            # The nodes are stopped (or killed): nothing holds the databases any more.
            for name in databases:
                postgres.drop(name)
