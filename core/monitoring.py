"""What an operator watches: a log line per request, carrying a request id to the jobs it
queues, optionally as JSON lines; and Prometheus metrics at ``/metrics``.

Request id: taken from ``X-Request-ID`` when it looks like one (letters, digits, ``._:-``,
up to 128), made otherwise; kept in ``g.request_id``, echoed in the response's
``X-Request-ID``, put on every log line written while the request runs, and carried by
``core.jobs`` to the jobs it queues (and their log lines).

Metrics come from two sources. HTTP requests (count and latency by endpoint, method and
status) are counted in each process, with prometheus-client's multiprocess mode when
``PROMETHEUS_MULTIPROC_DIR`` is set (gunicorn with several workers). Business facts (charges,
renewals and refunds by outcome, sign-in links sent and used, webhook deliveries by outcome,
the RQ queue's depth and failed jobs) are read from the database and Redis at scrape time,
so every web process, worker and machine reports the same true numbers. ``/metrics`` answers
only a ``Authorization: Bearer <METRICS_TOKEN>`` or an address in ``METRICS_NETWORKS``.
"""

import hmac
import ipaddress
import logging
import os
import re
import secrets
import time
from urllib.parse import quote

from flask import Blueprint, abort, current_app, g, has_app_context, request
from peewee import fn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

log = logging.getLogger("portico.request")
bp = Blueprint("monitoring", __name__)

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

REQUESTS = Counter("portico_http_requests", "HTTP requests answered, by endpoint, method and status.",
                   ["endpoint", "method", "status"], registry=None)
LATENCY = Histogram("portico_http_request_duration_seconds", "Time to answer an HTTP request.",
                    ["endpoint", "method"], registry=None)


# --- Logs -----------------------------------------------------------------------------------


class RequestIdFilter(logging.Filter):
    """Puts the current request id (or ``-``) on every record, as ``record.request_id``."""

    def filter(self, record):
        record.request_id = (g.get("request_id") if has_app_context() else None) or "-"
        return True


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def configure_logging(app):
    """Log INFO and above to stderr, as text or (``LOG_FORMAT = "json"``) JSON lines with the
    request id and tokens redacted. Does nothing when logging is already set up (tests, an
    embedding server that configured the root logger)."""
    from core.auth import RedactTokens  # core.auth → events → jobs → here: import when used

    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    if app.config["LOG_FORMAT"] == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s",
                                           rename_fields={"asctime": "time", "levelname": "level",
                                                          "name": "logger"}))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactTokens())
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _start():
    header = request.headers.get("X-Request-ID", "")
    g.request_id = header if REQUEST_ID.fullmatch(header) else secrets.token_hex(16)
    g.request_started = time.perf_counter()


def _finish(response):
    """Count the request, say it in one log line, and echo its id."""
    from core.auth import RedactTokens

    started = g.get("request_started")
    if started is None:  # a request that failed before ``_start`` ran
        return response
    seconds = time.perf_counter() - started
    endpoint = request.endpoint or "none"
    REQUESTS.labels(endpoint, request.method, str(response.status_code)).inc()
    LATENCY.labels(endpoint, request.method).observe(seconds)
    path = RedactTokens.redact(quote(request.path, safe="/:@!$&'()*+,;=-._~"))
    log.info("%s %s %s %.1fms", request.method, path, response.status_code, seconds * 1000,
             extra={"method": request.method, "path": path, "status": response.status_code,
                    "duration_ms": round(seconds * 1000, 1)})
    response.headers["X-Request-ID"] = g.request_id
    return response


def _forget(_exc):
    """Outside a request (tests keep one application context), the id is no longer current."""
    g.pop("request_id", None)
    g.pop("request_started", None)


# --- Metrics --------------------------------------------------------------------------------


class StoredFacts:
    """A collector reading business facts from the database and Redis at scrape time."""

    def __init__(self, app):
        self.app = app

    def collect(self):
        from core.jobs import queue
        from core.models import AuditLog, Delivery, Event, Payment

        charges = CounterMetricFamily("portico_charges", "Charges settled, by mode, kind (new, "
                                      "renewal, arrears, plan_change) and outcome.",
                                      labels=["mode", "kind", "outcome"])
        renewals = CounterMetricFamily("portico_renewals", "Renewal charges settled, by mode and outcome.",
                                       labels=["mode", "outcome"])
        rows = (Payment.select(Payment.mode, Payment.kind, Payment.status, fn.COUNT(Payment.id))
                .where(Payment.status.in_(("succeeded", "failed")))
                .group_by(Payment.mode, Payment.kind, Payment.status).tuples())
        for mode, kind, outcome, count in rows:
            charges.add_metric([mode, kind, outcome], count)
            if kind == "renewal":
                renewals.add_metric([mode, outcome], count)
        refunds = CounterMetricFamily("portico_refunds", "Refunds settled, by mode and outcome.",
                                      labels=["mode", "outcome"])
        for mode, type_, count in (Event.select(Event.mode, Event.type, fn.COUNT(Event.id))
                                   .where(Event.type.in_(("refund.succeeded", "refund.failed")))
                                   .group_by(Event.mode, Event.type).tuples()):
            refunds.add_metric([mode, type_.split(".")[1]], count)
        links = CounterMetricFamily("portico_sign_in_links", "Sign-in links sent (e-mailed or handed "
                                    "out) and used to sign in.", labels=["stage"])
        stages = {"sign_in_link.requested": "sent", "sign_in_link.sent": "sent",  # outcome ok: to a
                  "sign_in_link.issued": "sent", "sign_in": "used"}  # known customer
        counted = dict.fromkeys(("sent", "used"), 0)
        for event, count in (AuditLog.select(AuditLog.event, fn.COUNT(AuditLog.id))
                             .where(AuditLog.event.in_(list(stages)) & (AuditLog.outcome == "ok"))
                             .group_by(AuditLog.event).tuples()):
            counted[stages[event]] += count
        for stage, count in counted.items():
            links.add_metric([stage], count)
        deliveries = CounterMetricFamily("portico_webhook_deliveries", "Webhook delivery attempts "
                                         "finished, by outcome.", labels=["outcome"])
        for outcome, count in (Delivery.select(Delivery.status, fn.COUNT(Delivery.id))
                               .where((Delivery.notifier == "webhooks")
                                      & Delivery.status.in_(("succeeded", "failed")))
                               .group_by(Delivery.status).tuples()):
            deliveries.add_metric([outcome], count)
        yield from (charges, renewals, refunds, links, deliveries)
        q = queue(self.app)
        if q is not None:
            yield GaugeMetricFamily("portico_queue_depth", "Jobs waiting in the RQ queue.", value=q.count)
            yield GaugeMetricFamily("portico_queue_failed_jobs", "Jobs in the RQ failed registry "
                                    "(kept 30 days).", value=q.failed_job_registry.count)


def _allowed() -> bool:
    """Whether this request may read the metrics: the bearer token, or a listed network."""
    token = current_app.config["METRICS_TOKEN"]
    sent = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
        return True
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(network, strict=False)
               for network in current_app.config["METRICS_NETWORKS"])


@bp.get("/metrics")
def metrics():
    """The Prometheus exposition; 404 when neither ``METRICS_TOKEN`` nor ``METRICS_NETWORKS``
    is set, 401 to anyone else."""
    if not (current_app.config["METRICS_TOKEN"] or current_app.config["METRICS_NETWORKS"]):
        abort(404)
    if not _allowed():
        return ({"code": "UNAUTHORIZED", "message": "metrics need the bearer token or an allowed network"},
                401, {"WWW-Authenticate": "Bearer"})
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(REQUESTS)
        registry.register(LATENCY)
    registry.register(StoredFacts(current_app._get_current_object()))
    return generate_latest(registry), 200, {"Content-Type": CONTENT_TYPE_LATEST,
                                            "Cache-Control": "no-store"}


def init_app(app):
    """Request ids, the request log and the metrics endpoint for ``app``. Register it before
    the other areas, so its ``after_request`` runs last and logs the final status."""
    app.before_request(_start)
    app.after_request(_finish)
    app.teardown_request(_forget)
    app.register_blueprint(bp)
