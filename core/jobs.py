"""Background jobs: an RQ queue on ``REDIS_URL``, or the same jobs run in-process without one.

Jobs are module-level functions that take ids, load fresh state and are safe to run twice.
Every enqueue goes through ``enqueue`` so that timeouts, retries, failure retention and stable
job ids are set in one place.
"""

import logging
import threading
import time
from collections.abc import Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from flask import current_app
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Retry, Worker
from rq.exceptions import DuplicateJobError

from core.config import ConfigError
from core.models import db, locked

log = logging.getLogger("portico.jobs")

FAILURE_TTL = int(timedelta(days=30).total_seconds())
DEFAULT_RETRY = (3, [10, 60, 300])


def init_app(app):
    """Connect to Redis when configured, and stop start-up with one line if it cannot be reached."""
    url = app.config["REDIS_URL"]
    queue = None
    if url:
        try:
            connection = Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10)
            connection.ping()
        except (RedisError, ValueError) as error:
            raise ConfigError(f"cannot reach Redis at {url}: {error}") from None
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
                         job_timeout=timeout, failure_ttl=FAILURE_TTL, result_ttl=3600,
                         retry=Retry(max=max_retries, interval=intervals) if max_retries else None)
    except DuplicateJobError:
        log.info("job %s is already queued", job_id)
        return None


_state = threading.local()


@contextmanager
def transaction():
    """A locked write transaction (see ``models.locked``) whose ``later`` jobs are enqueued
    only once it commits, and dropped if it rolls back: no job ever sees uncommitted state,
    and no change is left without the jobs it needs."""
    depth = getattr(_state, "depth", 0)
    if depth == 0:
        _state.pending = []
    _state.depth = depth + 1
    try:
        with locked():
            yield
    except BaseException:
        if depth == 0:
            _state.pending = []
        raise
    finally:
        _state.depth = depth
    if depth == 0:
        pending, _state.pending = _state.pending, []
        for func, args, kwargs in pending:
            try:
                enqueue(func, *args, **kwargs)
            except RedisError:  # the records say what is owed; the sweep queues it again
                log.exception("could not queue %s%r; the sweep will retry", func.__name__, args)


def later(func, *args, **kwargs):
    """Queue ``func(*args)`` (see ``enqueue``) when the enclosing ``transaction`` commits."""
    if getattr(_state, "depth", 0) == 0:
        raise RuntimeError("later() needs an enclosing jobs.transaction()")
    _state.pending.append((func, args, kwargs))


class PorticoWorker(Worker):
    """An RQ worker that runs every job inside the application loaded once at start-up."""

    app = None

    def perform_job(self, job, queue, execution):
        with self.app.app_context():
            try:
                return super().perform_job(job, queue, execution)
            finally:
                if not db.is_closed():
                    db.close()


def run_worker(app, burst=False):
    """Work the queue with the scheduler, forking a child per job from the loaded application."""
    q = queue(app)
    if q is None:
        raise ConfigError("portico worker needs PORTICO_REDIS_URL: without Redis, jobs run in-process")
    from core.plugins import registry

    registry(app).pm.hook.prepare_worker(app=app)
    with app.app_context():
        book_sweep()
    if not db.is_closed():
        db.close()  # a forked child must open its own connection
    PorticoWorker.app = app
    worker = PorticoWorker([q], connection=q.connection)
    return worker.work(burst=burst, with_scheduler=True, logging_level="INFO")


# --- Jobs ----------------------------------------------------------------------------------


def book_sweep():
    """Book the next billing sweep at the next multiple of ``RENEWAL_SWEEP_INTERVAL``; the job
    id names that time slot, so however many workers book it, one sweep runs per slot."""
    interval = current_app.config["RENEWAL_SWEEP_INTERVAL"]
    slot = int(time.time() // interval) + 1
    try:
        queue().enqueue_at(datetime.fromtimestamp(slot * interval, UTC), periodic_sweep,
                           job_id=f"portico-sweep-{slot}", unique=True, job_timeout=interval * 5,
                           failure_ttl=FAILURE_TTL, result_ttl=interval * 2)
    except DuplicateJobError:
        pass


def periodic_sweep():
    """Job: run the billing sweep, then book the next one."""
    from core.billing import sweep

    try:
        log.info("sweep: %s", sweep())
    finally:
        book_sweep()



class LazyLink(Mapping):
    """Notification secrets ``{"link": …}`` whose link is minted on first read, so only the
    notifier that shows it to the customer (e-mail) ever issues a token."""

    def __init__(self, mint):
        self._mint, self._link, self._minted = mint, None, False

    def __getitem__(self, key):
        if key != "link":
            raise KeyError(key)
        if not self._minted:
            self._link, self._minted = self._mint(), True
        return self._link

    def __iter__(self):
        return iter(("link",))

    def __len__(self):
        return 1


def update_payment_method_link(customer_id: str, subscription_id: str) -> str | None:
    """A fresh sign-in link that lands on updating the subscription's payment method."""
    from core.auth import sign_in_link
    from core.models import Customer

    customer = Customer.get_or_none(Customer.id == customer_id)
    if customer is None or customer.blocked_at is not None:
        return None
    path = current_app.url_map.bind("").build("portal.payment_method",
                                              {"subscription_id": subscription_id})
    return sign_in_link(customer, next=path)


def deliver(event_id: str, plugin_name: str):
    """Hand one recorded event to one notifier plugin (each notifier gets its own job).

    A failed subscription payment carries a sign-in link to update the payment method.
    """
    from core.models import Event
    from core.plugins import registry

    event = Event.get_or_none(Event.id == event_id)
    if event is None:
        log.warning("event %s no longer exists; nothing to deliver", event_id)
        return
    notification = event.notification()
    subscription_id = event.data.get("subscription_id")
    if event.type == "payment.failed" and event.customer_id and subscription_id:
        notification.secrets = LazyLink(
            lambda: update_payment_method_link(event.customer_id, subscription_id))
    registry().call_one("notify", plugin_name, notification=notification,
                        app=current_app._get_current_object())


def dispatch(event_id: str):
    """Queue one delivery job per notifier for an event recorded in the outbox."""
    from core.models import Event, utcnow
    from core.plugins import registry

    for name in registry().implementers("notify"):
        enqueue(deliver, event_id, name, job_id=f"deliver-{event_id}-{name}", unique=True)
    Event.update(dispatched_at=utcnow()).where(Event.id == event_id).execute()
