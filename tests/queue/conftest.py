"""Fixtures of the queue's tests: a real PostgreSQL (never a mock), started once per session.

``VLENS_TEST_DATABASE_URL`` names a server to use instead (each test gets a database of its
own on it). Without it the session starts a throwaway cluster (:mod:`.pgcluster`) from
``initdb``/``pg_ctl`` (``make test`` installs Debian's ``postgresql`` when they are missing).
The tests skip only when ``VLENS_TEST_NO_DATABASE`` is set and ``CI`` is not: in CI a missing
server is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import conninfo

from .pgcluster import Cluster, find_pg_bin


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The URL of a PostgreSQL server for this session."""
    given = os.environ.get("VLENS_TEST_DATABASE_URL")
    if given:
        yield given
        return
    bin_dir = find_pg_bin()
    if bin_dir is None:
        if os.environ.get("VLENS_TEST_NO_DATABASE") and not os.environ.get("CI"):
            pytest.skip("VLENS_TEST_NO_DATABASE is set: no PostgreSQL for the queue's tests")
        pytest.fail("initdb/pg_ctl not found: run `make test` (it installs Debian's postgresql)")
    cluster = Cluster(bin_dir)
    try:
        cluster.start()
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo.conninfo_to_dict(pg_server)
    params["dbname"] = name
    yield conninfo.make_conninfo(**params)
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
