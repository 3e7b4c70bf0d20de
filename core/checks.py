"""Production checks: what would break, one line each.

``portico check`` runs every check (the core's below, then each plugin's
``production_checks``) and exits non-zero on any failure; ``/readyz`` runs the ones a load
balancer needs (database, migrations, Redis when configured). A check is a function of the
app that returns a one-line note when all is well and raises with what to fix otherwise. Each
runs in its own thread under a deadline, so a hung service fails its check instead of
hanging the caller.
"""

import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as Timeout
from dataclasses import dataclass
from urllib.parse import urlsplit

from redis import Redis

from core.config import DEV_SECRET
from core.models import db, pending_migrations
from core.plugins import MissingPlugin, registry


class CheckFailed(Exception):
    """A check found something that would break; the message says what and how to fix it."""


@dataclass
class Outcome:
    name: str
    ok: bool
    detail: str

    def __str__(self):
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"


def secret(app):
    value = app.config.get("SECRET_KEY") or ""
    if not value:
        raise CheckFailed("PORTICO_SECRET_KEY is not set")
    if value == DEV_SECRET or len(value) < 32:
        raise CheckFailed("PORTICO_SECRET_KEY is too weak: use a random value of 32+ characters")
    return f"{len(value)} characters"


def base_url(app):
    url = app.config["BASE_URL"]
    if urlsplit(url).scheme != "https":
        raise CheckFailed(f"PORTICO_BASE_URL {url} is not https: e-mailed links would travel in clear")
    return url


def database(app):
    with db.connection_context():
        db.execute_sql("SELECT 1")
    return f"{type(db.obj).__name__} reachable"


def migrations(app):
    with db.connection_context():
        pending = pending_migrations(app)
    if pending:
        raise CheckFailed(f"{len(pending)} migration(s) not applied ({', '.join(pending)}): "
                          f"run portico migrate")
    return "all applied"


def redis(app):
    url = app.config["REDIS_URL"]
    if not url:
        raise CheckFailed("PORTICO_REDIS_URL is not set: jobs would run inside web requests "
                          "and rate limits per process")
    Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping()
    return "reachable"


def live_payment_provider(app):
    try:
        provider = registry(app).provider_for("live")
    except MissingPlugin as error:
        raise CheckFailed(str(error)) from None
    return f"{provider.name} serves live mode"


CORE_CHECKS = {"secret": secret, "base URL": base_url, "database": database,
               "migrations": migrations, "redis": redis,
               "live payment provider": live_payment_provider}


def readiness_checks(app) -> dict:
    """What ``/readyz`` asks: the database, its migrations, and Redis when configured."""
    checks = {"database": database, "migrations": migrations}
    if app.config["REDIS_URL"]:
        checks["redis"] = redis
    return checks


def all_checks(app) -> dict:
    """The core's checks, then each plugin's ``production_checks`` (named ``plugin: check``)."""
    checks = dict(CORE_CHECKS)
    for plugin_name, found in registry(app).call_each("production_checks", app=app):
        for name, check in (found or {}).items():
            checks[f"{plugin_name}: {name}"] = check
    return checks


def run(app, checks: dict, deadline: float) -> list[Outcome]:
    """Run ``checks`` side by side, each given ``deadline`` seconds; one ``Outcome`` per check."""

    def call(check):
        with app.app_context():
            return check(app)

    pool = ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="check")
    futures = {name: pool.submit(call, check) for name, check in checks.items()}
    end = time.monotonic() + deadline
    outcomes = []
    for name, future in futures.items():
        try:
            outcomes.append(Outcome(name, True, future.result(timeout=max(0, end - time.monotonic()))))
        except Timeout:
            outcomes.append(Outcome(name, False, f"no answer within {deadline:g} s"))
        except Exception as error:  # any failure is the check's answer, said in one line
            detail = " ".join(str(error).split()) or type(error).__name__
            outcomes.append(Outcome(name, False, detail))
    pool.shutdown(wait=False, cancel_futures=True)
    return outcomes
