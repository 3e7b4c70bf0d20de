"""Database connections: a pool per process on SQLite and PostgreSQL, sized and recycled by
configuration, and never handed on with a transaction still open."""

import threading
import time

import pytest

from core.models import Business, db, is_sqlite


def with_probe_routes(app):
    """Routes that tell which connection served them, or leave a transaction open."""

    @app.get("/probe/connection")
    def connection():
        """How many requests this connection has served (a temporary table is per connection)."""
        db.execute_sql("CREATE TEMPORARY TABLE IF NOT EXISTS served (n integer)")
        db.execute_sql("INSERT INTO served VALUES (1)")
        return str(db.execute_sql("SELECT count(*) FROM served").fetchone()[0])

    @app.get("/probe/left-open/<how>")
    def left_open(how):
        if how == "atomic":  # a transaction block entered and never left
            db.atomic().__enter__()
        else:  # a BEGIN sent without peewee knowing
            db.execute_sql("BEGIN")
        Business.insert(id="bus_half_done", name="Half done").execute()
        return "left open"

    return app


@pytest.fixture
def web(make_app):
    """A test client on an app of its own (each request pushes and tears down its context)."""

    def build(**config):
        return with_probe_routes(make_app(config)).test_client()

    return build


def other_writer_can_write() -> bool:
    """Whether another connection can write now (an open transaction would hold the lock)."""
    if is_sqlite():
        import sqlite3

        path = db.database
        with sqlite3.connect(path, timeout=1) as other:
            other.execute("UPDATE business SET name = name")
        return True
    import psycopg2

    with psycopg2.connect(dbname=db.database, **db.connect_params) as other, other.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state LIKE 'idle in transaction%%'")
        return cur.fetchone()[0] == 0


def test_requests_in_a_process_reuse_its_connections(web):
    client = web()
    served = [client.get("/probe/connection").text for _ in range(3)]
    assert served == ["1", "2", "3"]


def test_a_connection_older_than_the_recycle_age_is_replaced(web):
    client = web(DATABASE_POOL_RECYCLE=1)
    assert client.get("/probe/connection").text == "1"
    time.sleep(1.2)
    assert client.get("/probe/connection").text == "1"  # a new connection


@pytest.mark.parametrize("how", ["atomic", "raw"])
def test_a_request_that_ends_inside_a_transaction_is_rolled_back_before_the_pool_reuses_it(web, how):
    client = web()
    assert client.get(f"/probe/left-open/{how}").text == "left open"
    assert other_writer_can_write()
    assert client.get("/probe/connection").status_code == 200  # the same connection, clean
    with client.application.app_context():
        assert Business.get_or_none(Business.id == "bus_half_done") is None
        Business.create(name="Acme")  # and it still writes, outside any transaction
    with client.application.app_context():
        assert [b.name for b in Business.select()] == ["Acme"]


def test_the_pool_size_bounds_connections_and_a_request_waits_for_a_free_one(web):
    client = web(DATABASE_POOL_SIZE=1, DATABASE_POOL_WAIT=1)
    held, release = threading.Event(), threading.Event()

    def hold():
        db.connect()
        held.set()
        release.wait(10)
        db.close()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    started = time.monotonic()
    with pytest.raises(Exception, match="Max connections exceeded"):
        client.get("/probe/connection")
    assert time.monotonic() - started >= 0.9  # it waited for the connection
    release.set()
    holder.join()
    assert client.get("/probe/connection").status_code == 200


def test_a_transaction_that_reads_then_writes_outlasts_a_writer_that_commits_in_between(make_app):
    """Two writers meet, as ten retries of one API order do: one reads, then writes, in one
    transaction, while the other writes. Both writes land; neither fails "database is
    locked" (on SQLite, a deferred transaction could not take the write lock after the
    other's commit, and busy_timeout does not wait that out)."""
    make_app()
    acme = Business.create(name="Acme")
    read, failures = threading.Event(), []

    def reads_then_writes():
        try:
            with db.atomic():
                Business.get_by_id(acme.id)
                read.set()
                time.sleep(0.3)  # long enough for the other writer to commit, if it could
                Business.update(name="Acme Ltd").where(Business.id == acme.id).execute()
        except Exception as error:  # noqa: BLE001 - reported below
            failures.append(error)
        finally:
            db.close()

    def writes():
        read.wait(10)
        try:
            Business.create(name="Globex")
        except Exception as error:  # noqa: BLE001 - reported below
            failures.append(error)
        finally:
            db.close()

    threads = [threading.Thread(target=reads_then_writes), threading.Thread(target=writes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert sorted(b.name for b in Business.select()) == ["Acme Ltd", "Globex"]
