"""`append_chained`: each event about a message names the previous one (issue 12), under
the log's lock, on both backends, with concurrent appenders."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from accord.storage import Database, append_chained, leaves_for_message, list_leaves

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def _builder(label: str) -> Callable[[int | None], bytes]:
    return lambda prev: json.dumps({"label": label, "prev": prev}, sort_keys=True).encode()


def _prevs(db: Database, message_id: str) -> list[tuple[int, int | None]]:
    with db.session(readonly=True) as session:
        rows = leaves_for_message(session, message_id)
        return [(r.index, json.loads(bytes(r.leaf))["prev"]) for r in rows]


def test_events_about_a_message_chain_within_and_across_batches(db: Database) -> None:
    with db.session() as session:
        first = append_chained(
            session,
            [
                (_builder("a1"), NOW, "a"),
                (_builder("none"), NOW, None),
                (_builder("b1"), NOW, "b"),
                (_builder("a2"), NOW, "a"),
            ],
        )
    with db.session() as session:
        (later,) = append_chained(session, [(_builder("a3"), NOW, "a")])
    assert _prevs(db, "a") == [(first[0], None), (first[3], first[0]), (later, first[3])]
    assert _prevs(db, "b") == [(first[2], None)]
    with db.session(readonly=True) as session:
        unlinked = json.loads(bytes(list_leaves(session)[first[1]].leaf))
    assert unlinked == {"label": "none", "prev": None}


def test_concurrent_events_about_one_message_form_one_chain(db: Database) -> None:
    """Two appenders racing on one message never name the same predecessor: the chain
    has no fork, so a bundle built from it is whole."""

    def appender(n: int) -> None:
        for i in range(10):
            with db.session() as session:
                append_chained(session, [(_builder(f"{n}-{i}"), NOW, "m")])

    threads = [threading.Thread(target=appender, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    chain = _prevs(db, "m")
    assert len(chain) == 30
    assert [prev for _, prev in chain] == [None, *(index for index, _ in chain[:-1])]
