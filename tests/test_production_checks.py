"""What an operator asks of a running install: ``portico check`` before going live, ``/healthz``
and ``/readyz`` while it serves."""

import os
import signal
import subprocess
import time

import pytest
import redis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from click.testing import CliRunner
from conftest import Inbox, free_port

from core.cli import main

STRONG_SECRET = "s" * 12 + "3cr3t-0f-f0rty-ch4racters-long"


class Authenticating(Controller):
    """A real SMTP server (aiosmtpd) that accepts one login, over a plain connection."""

    def __init__(self, username, password):
        def authenticate(server, session, envelope, mechanism, auth_data):
            return AuthResult(success=(auth_data.login, auth_data.password) ==
                              (username.encode(), password.encode()), handled=False)

        super().__init__(Inbox(), hostname="127.0.0.1", port=free_port(),
                         authenticator=authenticate, auth_require_tls=False)


@pytest.fixture
def smtp_server():
    server = Authenticating("portico", "mail-password")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def production_env(cli_env, redis_url, smtp_server):
    """Environment variables of a production install whose every check passes."""
    return {**cli_env, "PORTICO_ENV": "production", "PORTICO_SECRET_KEY": STRONG_SECRET,
            "PORTICO_BASE_URL": "https://portal.example.com", "PORTICO_REDIS_URL": redis_url,
            "PORTICO_SMTP_HOST": "127.0.0.1", "PORTICO_SMTP_PORT": str(smtp_server.port),
            "PORTICO_SMTP_STARTTLS": "false", "PORTICO_SMTP_USERNAME": "portico",
            "PORTICO_SMTP_PASSWORD": "mail-password", "PORTICO_PAYMENT_PROVIDER_LIVE": "stripe",
            "PORTICO_STRIPE_SECRET_KEY": "sk_live_portico",
            "PORTICO_STRIPE_PUBLISHABLE_KEY": "pk_live_portico",
            "PORTICO_STRIPE_WEBHOOK_SECRET": "whsec_portico"}


def portico_check(env):
    result = CliRunner().invoke(main, ["check"], env=env)
    lines = result.output.strip().splitlines()
    return result.exit_code, {line.split(":")[0].split(maxsplit=1)[1]: line for line in lines[:-1]}, lines[-1]


def test_check_passes_a_good_production_configuration(production_env):
    status, lines, summary = portico_check(production_env)
    assert status == 0, lines
    assert set(lines) >= {"secret", "base URL", "database", "migrations", "redis",
                          "live payment provider", "mail", "pdf", "webhooks", "stripe"}
    assert all(line.startswith("ok ") for line in lines.values())
    assert "accepts the login" in lines["mail"]
    assert summary.startswith("all ") and summary.endswith(" checks passed")


def test_check_names_each_failure_of_a_broken_configuration(production_env, fresh_database_url):
    broken = {**production_env, "PORTICO_SECRET_KEY": "short", "PORTICO_BASE_URL": "http://portal.example.com",
              "PORTICO_DATABASE_URL": fresh_database_url(), "PORTICO_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
              "PORTICO_SMTP_PASSWORD": "wrong", "PORTICO_PAYMENT_PROVIDER_LIVE": "",
              "PORTICO_STRIPE_WEBHOOK_SECRET": ""}
    status, lines, summary = portico_check(broken)
    assert status == 1
    assert "too weak" in lines["secret"]
    assert "is not https" in lines["base URL"]
    assert "not applied" in lines["migrations"] and "portico migrate" in lines["migrations"]
    assert "Connection refused" in lines["redis"] or "Error" in lines["redis"]
    assert "no payment provider is configured for live mode" in lines["live payment provider"]
    assert "535" in lines["mail"] or "uthentication" in lines["mail"]
    assert "PORTICO_STRIPE_WEBHOOK_SECRET is not set" in lines["stripe"]
    assert {name for name, line in lines.items() if line.startswith("FAIL")} == {
        "secret", "base URL", "migrations", "redis", "live payment provider", "mail", "stripe",
        "webhooks"}  # the endpoints' table does not exist yet
    assert summary == f"8 of {len(lines)} checks failed"


def test_check_names_an_unreachable_database(production_env):
    status, lines, _ = portico_check({**production_env, "PORTICO_DATABASE_URL": unreachable_database()})
    assert status == 1
    assert lines["database"].startswith("FAIL database:")
    assert lines["migrations"].startswith("FAIL migrations:")


def unreachable_database() -> str:
    """A database URL of this run's kind that nothing answers."""
    if os.environ.get("PORTICO_TEST_DATABASE") == "postgresql":
        return f"postgresql://postgres@127.0.0.1:{free_port()}/portico"
    return "sqlite:////nonexistent-folder/portico.db"


# --- /healthz and /readyz --------------------------------------------------------------------


@pytest.fixture
def redis_server(tmp_path):
    """A Redis server of this test's own, to stop or freeze."""
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                               "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(50):
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            time.sleep(0.1)
    yield server, url
    server.send_signal(signal.SIGCONT)
    server.kill()
    server.wait()


def readiness(app):
    response = app.test_client().get("/readyz")
    return response.status_code, response.json


def test_healthz_answers_while_the_process_runs(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json == {"status": "ok"}


def test_readyz_is_ready_when_database_migrations_and_redis_answer(make_app, redis_url):
    status, body = readiness(make_app({"REDIS_URL": redis_url}))
    assert status == 200 and body["status"] == "ready"
    assert set(body["checks"]) == {"database", "migrations", "redis"}


def test_readyz_fails_when_the_database_is_down(make_app):
    status, body = readiness(make_app({"DATABASE_URL": unreachable_database()}))
    assert status == 503 and body["status"] == "unavailable"
    assert body["checks"]["database"]["ok"] is False


def test_readyz_fails_while_migrations_are_pending(make_app, fresh_database_url):
    status, body = readiness(make_app({"DATABASE_URL": fresh_database_url()}))
    assert status == 503
    assert body["checks"]["database"]["ok"] is True
    assert "core:0001_initial" in body["checks"]["migrations"]["detail"]


def test_readyz_fails_when_redis_is_down(make_app, redis_server):
    server, url = redis_server
    app = make_app({"REDIS_URL": url})
    assert readiness(app)[0] == 200
    server.kill()
    server.wait()
    status, body = readiness(app)
    assert status == 503
    assert body["checks"]["redis"]["ok"] is False and body["checks"]["database"]["ok"] is True


def test_readyz_fails_within_its_deadline_when_redis_hangs(make_app, redis_server):
    server, url = redis_server
    app = make_app({"REDIS_URL": url})
    server.send_signal(signal.SIGSTOP)
    status, body = readiness(app)
    assert status == 503
    assert body["checks"]["redis"]["ok"] is False
