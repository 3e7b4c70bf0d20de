"""Background jobs: an RQ queue on ``REDIS_URL``, or the same jobs run in-process without one.

Jobs are module-level functions that take ids, load fresh state and are safe to run twice.
Every enqueue goes through ``enqueue`` so that timeouts, retries, failure retention and stable
job ids are set in one place.
"""

import logging
import time
from contextlib import contextmanager
from datetime import timedelta

from flask import current_app, g, has_app_context
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Retry, Worker
from rq.exceptions import DuplicateJobError

from core.config import ConfigError
from core.models import db, disconnect, locked, release

log = logging.getLogger("portico.jobs")

FAILURE_TTL = int(timedelta(days=30).total_seconds())
DEFAULT_RETRY = (3, [10, 60, 300])


def init_app(app, strict=True):
    """Connect to Redis when configured, and stop start-up with one line if it cannot be
    reached (``strict=False`` leaves that to ``portico check``, which reports it)."""
    url = app.config["REDIS_URL"]
    queue = None
    if url:
        try:
            connection = Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10)
            connection.ping()
        except (RedisError, ValueError) as error:
            if strict:
                raise ConfigError(f"cannot reach Redis at {url}: {error}") from None
        else:
            queue = Queue(app.config["QUEUE_NAME"], connection=connection)
    app.extensions["portico.queue"] = queue


def queue(app=None) -> Queue | None:
    """The RQ queue, or ``None`` when jobs run in-process."""
    return (app or current_app).extensions["portico.queue"]


def enqueue(func, *args, job_id=None, retry=DEFAULT_RETRY, timeout=120, unique=False):
    """Run ``func(*args)`` as a job: on the RQ queue, or right away in this process.

    ``job_id`` makes a job stable (one per logical task); with ``unique`` a second enqueue
    of a job still known to Redis is ignored. In-process, a failing job is logged, not raised:
    its own records say what is left to do, and the sweeps pick it up again.
    """
    q = queue()
    if q is None:
        try:
            func(*args)
        except Exception:
            log.exception("in-process job %s%r failed", func.__name__, args)
        return None
    max_retries, intervals = retry
    try:
        return q.enqueue(func, *args, job_id=job_id, unique=unique and job_id is not None,
                         meta={"request_id": g.get("request_id") if has_app_context() else None},
                         job_timeout=timeout, failure_ttl=FAILURE_TTL, result_ttl=3600,
                         retry=Retry(max=max_retries, interval=intervals) if max_retries else None)
    except DuplicateJobError:
        log.info("job %s is already queued", job_id)
        return None


def later(func, *args, **kwargs):
    """Queue ``func(*args)`` (see ``enqueue``) once the outermost transaction really commits,
    through peewee's own after-commit list: inside a nested block it waits for the outermost
    commit, and a rollback drops it (a rolled-back savepoint drops what it queued). Outside
    any transaction there is nothing to wait for: it is queued at once."""

    def send():
        try:
            enqueue(func, *args, **kwargs)
        except RedisError:  # the records say what is owed; the sweep queues it again
            log.exception("could not queue %s%r; the sweep will retry", func.__name__, args)

    db.after_commit(send)


@contextmanager
def transaction():
    """A locked write transaction (``models.locked``), nested as a savepoint inside another.
    A nested block that raises drops the jobs it queued with ``later``, as its rows are."""
    callbacks = db._state.commit_callbacks if db.in_transaction() else None
    mark = len(callbacks) if callbacks is not None else 0
    try:
        with locked():
            yield
    except BaseException:
        if callbacks is not None:
            del callbacks[mark:]
        raise


class PorticoWorker(Worker):
    """An RQ worker that runs every job inside the application loaded once at start-up, under
    the request id of the request that queued it, and logs one line per job."""

    app = None

    def perform_job(self, job, queue, execution):
        started = time.perf_counter()
        with self.app.app_context():
            g.request_id = job.meta.get("request_id")  # on its log lines and the jobs it queues
            try:
                done = super().perform_job(job, queue, execution)
                log.info("job %s %s %s in %.1fms", job.id, job.func_name, "finished" if done else "failed",
                         (time.perf_counter() - started) * 1000)
                return done
            finally:
                release()


def run_worker(app, burst=False, startup=()):
    """Work the queue with the scheduler, forking a child per job from the loaded application;
    each of ``startup`` is called once first, inside the app (e.g. booking the billing sweep)."""
    q = queue(app)
    if q is None:
        raise ConfigError("portico worker needs PORTICO_REDIS_URL: without Redis, jobs run in-process")
    from core.plugins import registry

    registry(app).pm.hook.prepare_worker(app=app)
    with app.app_context():
        for call in startup:
            call()
    disconnect()  # a forked child must open its own connections
    PorticoWorker.app = app
    worker = PorticoWorker([q], connection=q.connection)
    return worker.work(burst=burst, with_scheduler=True, logging_level="INFO")
