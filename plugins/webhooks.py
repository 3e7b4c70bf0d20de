"""The built-in webhooks notifier: every recorded event, signed, to the business's endpoints.

Deliveries follow Standard Webhooks (``webhook-id``, ``webhook-timestamp``,
``webhook-signature`` made with the endpoint's ``whsec_`` secret) and carry Dodo Payments'
envelope ``{business_id, type, timestamp, data}``, so ``standardwebhooks`` and the official
``dodopayments`` SDK verify them. Each endpoint of the event's business and mode that wants its
type gets one job per attempt, and every attempt is a ``Delivery`` row. An attempt fails
unless a 2xx answers within 15 s (a redirect is a failure); it is retried on ``SCHEDULE``
with jitter, or later when the receiver's ``retry-after`` asks; a 410 disables the endpoint.
``retry_due`` queues the attempts that are due but have no job: lost with a worker, or waiting
for the sweep because there is no Redis.

Only public addresses are contacted: the host is resolved once, every address is checked,
and the request goes to a checked address, TLS still verified against the host name.
``WEBHOOK_ALLOW_PRIVATE_NETWORKS`` lifts that for development and tests.
"""

import json
import logging
import random
import time
from datetime import UTC, timedelta
from email.utils import parsedate_to_datetime

import httpx
import peewee as pw
from rq.exceptions import DuplicateJobError
from rq.job import JobStatus
from standardwebhooks import Webhook

from core import jobs
from core.endpoints import check_url
from core.hookspecs import hookimpl
from core.models import Delivery, Event, WebhookEndpoint, db, utcnow
from core.payloads import iso

log = logging.getLogger("portico.webhooks")

NOTIFIER = "webhooks"
# Seconds to wait before attempt n after attempt n-1 failed (Svix's and Dodo's schedule).
SCHEDULE = (0, 5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)
ATTEMPTS = len(SCHEDULE)
JITTER = 0.1  # a retry waits up to 10 % longer, so failed endpoints are not hit in lockstep
TIMEOUT = 15
MAX_RETRY_AFTER = 24 * 3600
LOST_AFTER = timedelta(minutes=5)  # an attempt with no outcome by then died with its worker
JOB_TIMEOUT = 120
USER_AGENT = "Portico-Webhooks/1.0"
VERIFY = True  # how receivers' certificates are checked: certifi's bundle, or an ssl.SSLContext
DONE = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}


@hookimpl
def notify(notification, app):
    """Queue the first attempt of a recorded event to each enabled endpoint of its business and
    mode that wants its type; a message that is not a stored event (a sign-in link) or is for
    the customer alone (``customer_only``: a renewal reminder) is ignored."""
    if notification.customer_only:
        return None
    event = Event.get_or_none((Event.id == notification.id)
                              & (Event.business == notification.business_id)
                              & (Event.mode == notification.mode))
    if event is None:
        return None
    endpoints = WebhookEndpoint.select(WebhookEndpoint.id, WebhookEndpoint.filter_types).where(
        (WebhookEndpoint.business == event.business_id) & (WebhookEndpoint.mode == event.mode)
        & ~WebhookEndpoint.disabled)
    for endpoint in endpoints:
        if not endpoint.filter_types or event.type in endpoint.filter_types:
            _queue(event.id, endpoint.id, 1)
    return None


def send(event_id: str, endpoint_id: str, attempt: int):
    """Job: make attempt ``attempt`` of delivering an event to an endpoint, record it, and
    schedule the next one when it failed. An attempt already made is never made again."""
    event = Event.get_or_none(Event.id == event_id)
    endpoint = WebhookEndpoint.get_or_none(WebhookEndpoint.id == endpoint_id)
    if (event is None or endpoint is None or endpoint.disabled
            or (endpoint.business_id, endpoint.mode) != (event.business_id, event.mode)):
        log.info("webhook %s to %s not sent: event or endpoint gone or disabled", event_id, endpoint_id)
        return None
    delivery = _claim(event, endpoint, attempt)
    if delivery is None:
        return None

    body = json.dumps(envelope(event), separators=(",", ":"))
    status = retry_after = failure = None
    started = time.perf_counter()
    try:
        status, retry_after = _post(endpoint.url, check_url(endpoint.url),
                                    _headers(event.id, endpoint.secret, body), body)
    except (ValueError, httpx.HTTPError) as error:  # refused by check_url, or no HTTP answer
        failure = error
    duration_ms = round((time.perf_counter() - started) * 1000)
    succeeded, gone = failure is None and 200 <= status < 300, status == 410
    error = _reason(status, failure)
    next_attempt_at = None if succeeded or gone else _next_attempt_at(attempt, retry_after)
    with db.atomic():
        Delivery.update(status="succeeded" if succeeded else "failed", response_status=status,
                        error=error, duration_ms=duration_ms,
                        next_attempt_at=next_attempt_at).where(Delivery.id == delivery.id).execute()
        if gone:
            WebhookEndpoint.update(disabled=True, updated_at=utcnow()).where(
                WebhookEndpoint.id == endpoint.id).execute()
    if gone:
        log.warning("webhook endpoint %s answered 410 Gone: disabled", endpoint.id)
    elif next_attempt_at:
        _queue(event.id, endpoint.id, attempt + 1, at=next_attempt_at)
    elif not succeeded:
        log.warning("webhook %s to endpoint %s failed for good at attempt %d: %s",
                    event.id, endpoint.id, attempt, error)
    return "succeeded" if succeeded else "failed"


def retry_due(now=None) -> int:
    """Queue every webhook attempt due by ``now`` (for the sweep): one whose job was lost with
    its worker, or that waited for the sweep because there is no Redis. A job still queued is
    not queued twice. Returns how many attempts were due."""
    now = now or utcnow()
    due = (Delivery.select(Delivery, WebhookEndpoint).join(WebhookEndpoint)
           .where((Delivery.notifier == NOTIFIER) & (Delivery.next_attempt_at <= now)))
    queued = 0
    for delivery in list(due):
        if delivery.status == "sending":  # no outcome: its worker died mid-attempt
            Delivery.update(status="failed", error="interrupted before an answer was recorded").where(
                (Delivery.id == delivery.id) & (Delivery.status == "sending")).execute()
        if delivery.endpoint.disabled or delivery.attempt >= ATTEMPTS:
            Delivery.update(next_attempt_at=None).where(Delivery.id == delivery.id).execute()
        else:
            _queue(delivery.event_id, delivery.endpoint_id, delivery.attempt + 1)
            queued += 1
    return queued


def replay(event_id: str, endpoint_id: str) -> int:
    """Send an event to an endpoint again (the merchant's "resend"), as a fresh attempt after
    the last one; refused while an attempt is under way or scheduled. Returns its number."""
    endpoint = WebhookEndpoint.get_or_none(WebhookEndpoint.id == endpoint_id)
    event = endpoint and Event.get_or_none((Event.id == event_id) & (Event.business == endpoint.business_id)
                                           & (Event.mode == endpoint.mode))
    if not event:
        raise LookupError(f"no event {event_id} for webhook endpoint {endpoint_id}")
    last = (Delivery.select().where((Delivery.event == event_id) & (Delivery.endpoint == endpoint_id))
            .order_by(Delivery.attempt.desc()).first())
    if last is not None and last.next_attempt_at is not None:
        raise ValueError("a delivery attempt is already under way or scheduled")
    attempt = (last.attempt if last else 0) + 1
    _queue(event_id, endpoint_id, attempt)
    return attempt


def envelope(event: Event) -> dict:
    """A delivery's body: Dodo's envelope around the event's data."""
    return {"business_id": event.business_id, "type": event.type,
            "timestamp": iso(event.created_at), "data": event.data}


def _headers(msg_id: str, secret: str, body: str) -> dict:
    """Standard Webhooks headers for one attempt: a stable id, this second, a fresh signature."""
    now = utcnow().replace(microsecond=0)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(secret).sign(msg_id, now, body),
            "content-type": "application/json", "user-agent": USER_AGENT}


def _post(url: str, addresses: list[str], headers: dict, body: str):
    """POST to ``url`` through the first of the checked ``addresses`` that connects, the host
    name kept for the ``Host`` header, SNI and the certificate check; never follows a redirect.
    Returns the status and the ``retry-after`` header, without reading the response body."""
    target = httpx.URL(url)
    headers = {**headers, "host": target.netloc.decode("ascii")}
    sni = {"sni_hostname": target.raw_host.decode("ascii")}
    with httpx.Client(timeout=TIMEOUT, follow_redirects=False, trust_env=False, verify=VERIFY) as client:
        for index, address in enumerate(addresses, 1):
            try:
                with client.stream("POST", target.copy_with(host=address), content=body.encode(),
                                   headers=headers, extensions=sni) as response:
                    return response.status_code, response.headers.get("retry-after")
            except httpx.ConnectError:
                if index == len(addresses):
                    raise


def _reason(status: int | None, failure: Exception | None) -> str | None:
    """Why an attempt failed, in a few words for the delivery log; ``None`` when it succeeded."""
    if isinstance(failure, httpx.TimeoutException):
        return f"no answer within {TIMEOUT} s"
    if isinstance(failure, ValueError):
        return str(failure)
    if failure is not None:
        return f"{type(failure).__name__}: {failure}"[:300]
    if 200 <= status < 300:
        return None
    return f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400
                               else " (the endpoint is now disabled)" if status == 410 else "")


def _claim(event: Event, endpoint: WebhookEndpoint, attempt: int):
    """Record attempt ``attempt`` as under way, or return ``None`` when it was already made
    (a unique row per event, endpoint and attempt); the attempt before it is then settled."""
    try:
        with db.atomic():
            delivery = Delivery.create(event=event, notifier=NOTIFIER, endpoint=endpoint, attempt=attempt,
                                       status="sending", next_attempt_at=utcnow() + LOST_AFTER)
            Delivery.update(next_attempt_at=None).where(
                (Delivery.event == event) & (Delivery.endpoint == endpoint) & (Delivery.attempt < attempt)
                & Delivery.next_attempt_at.is_null(False)).execute()
    except pw.IntegrityError:
        log.info("webhook %s to %s: attempt %d was already made", event.id, endpoint.id, attempt)
        return None
    return delivery


def _next_attempt_at(attempt: int, retry_after: str | None):
    """When the attempt after ``attempt`` is due, or ``None`` after the last one: the schedule's
    delay plus jitter, or what the receiver's ``retry-after`` asks when that is longer."""
    if attempt >= ATTEMPTS:
        return None
    delay = SCHEDULE[attempt] * random.uniform(1, 1 + JITTER)
    return utcnow() + timedelta(seconds=max(delay, _retry_after_seconds(retry_after)))


def _retry_after_seconds(value: str | None) -> float:
    """The wait a ``retry-after`` header asks for (seconds, or an HTTP date), at most a day."""
    value = (value or "").strip()
    if not value:
        return 0
    if value.isdecimal():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return 0
        seconds = ((when if when.tzinfo else when.replace(tzinfo=UTC)) - utcnow()).total_seconds()
    return min(max(seconds, 0), MAX_RETRY_AFTER)


def _queue(event_id: str, endpoint_id: str, attempt: int, at=None):
    """Queue an attempt under its stable job id: now, or at ``at`` on Redis (without Redis, a
    later attempt waits on its ``Delivery`` row for ``retry_due``)."""
    job_id = f"webhook-{event_id}-{endpoint_id}-{attempt}"
    queue = jobs.queue()
    if queue is not None:
        old = queue.fetch_job(job_id)
        if old is not None and old.get_status(refresh=False) in DONE:
            old.delete()  # a job that ended without making its attempt must not block a retry
    if at is None:
        jobs.enqueue(send, event_id, endpoint_id, attempt, job_id=job_id, unique=True,
                     retry=(0, None), timeout=JOB_TIMEOUT)
    elif queue is not None:
        try:
            queue.enqueue_at(at, send, event_id, endpoint_id, attempt, job_id=job_id, unique=True,
                             job_timeout=JOB_TIMEOUT, failure_ttl=jobs.FAILURE_TTL, result_ttl=3600)
        except DuplicateJobError:
            log.info("job %s is already scheduled", job_id)


def _check_signing_secrets(app):
    """Every endpoint signs with a ``whsec_`` secret its receiver can verify."""
    unsigned = WebhookEndpoint.select().where(~WebhookEndpoint.secret.startswith("whsec_")).count()
    if unsigned:
        raise RuntimeError(f"{unsigned} webhook endpoint(s) have no whsec_ signing secret")
    return f"{WebhookEndpoint.select().count()} endpoint(s), each with its signing secret"


@hookimpl
def production_checks(app):
    return {"signing secrets": _check_signing_secrets}


@hookimpl
def sweep(app, now):
    """With the billing sweep: queue webhook attempts that are due and have no live job."""
    return {"webhook_retries": retry_due(now)}
