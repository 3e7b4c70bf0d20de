"""What an operator watches: one log line per request with its id (carried to the jobs it
queues), JSON lines on demand, and Prometheus metrics behind a token or a network."""

import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_webhooks import Receiver

from core.auth import sign_in_link
from core.endpoints import new_secret
from core.models import WebhookEndpoint

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "metrics-token-of-forty-characters-0123456"


def request_lines(caplog):
    return [record for record in caplog.records if record.name == "portico.request"]


def test_each_request_is_logged_once_with_id_method_path_status_and_duration(client, caplog):
    caplog.set_level(logging.INFO)
    response = client.get("/healthz", headers={"X-Request-ID": "req-1234"})
    [line] = request_lines(caplog)
    assert response.headers["X-Request-ID"] == "req-1234"
    assert line.getMessage().startswith("GET /healthz 200 ")
    assert (line.method, line.path, line.status) == ("GET", "/healthz", 200)
    assert line.duration_ms >= 0


def test_a_request_without_a_usable_id_gets_a_fresh_one(client):
    first = client.get("/healthz").headers["X-Request-ID"]
    forged = client.get("/healthz", headers={"X-Request-ID": "bad id; forged"}).headers["X-Request-ID"]
    assert len(first) == 32 and len(forged) == 32 and first != forged


def test_sign_in_tokens_never_reach_the_request_log(app, client, customer, caplog):
    caplog.set_level(logging.INFO)
    link = sign_in_link(customer)
    token = link.rsplit("/", 1)[1]
    client.get(link.replace("http://portal.test", ""))
    [line] = request_lines(caplog)
    assert line.path == "/session/[redacted]"
    assert token not in caplog.text


def test_a_path_with_a_line_break_stays_on_one_log_line(client, caplog):
    caplog.set_level(logging.INFO)
    client.get("/nowhere%0AGET%20/forged")
    [line] = request_lines(caplog)
    assert "\n" not in line.getMessage() and "/nowhere%0AGET%20/forged" in line.getMessage()


def test_the_request_id_follows_a_request_to_its_jobs_log_line(make_app, redis_url, cli_env, customer):
    queue_name = f"test-{uuid.uuid4().hex[:8]}"
    app = make_app({"REDIS_URL": redis_url, "QUEUE_NAME": queue_name, "WTF_CSRF_ENABLED": False})
    response = app.test_client().post(f"/test/login/{customer.business_id}", data={"email": customer.email},
                                      headers={"X-Request-ID": "req-from-the-portal"})
    assert response.status_code == 303  # to the "link sent" page
    env = {**os.environ, **cli_env, "PORTICO_REDIS_URL": redis_url, "PORTICO_QUEUE_NAME": queue_name,
           "PORTICO_LOG_FORMAT": "json"}
    worker = subprocess.run([sys.executable, "-m", "core.cli", "worker", "--burst"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert worker.returncode == 0, worker.stderr
    lines = [json.loads(line) for line in worker.stderr.splitlines() if line.startswith("{")]
    jobs = [line for line in lines if line["logger"] == "portico.jobs" and " finished in " in line["message"]]
    assert [line["request_id"] for line in jobs if "request_sign_in_link" in line["message"]] == [
        "req-from-the-portal"]
    assert {"time", "level", "logger", "message", "request_id"} <= set(jobs[0])


# --- Metrics -------------------------------------------------------------------------------


def scrape(app, **headers) -> dict:
    """``/metrics`` as ``{(name, labels…): value}``."""
    response = app.test_client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}", **headers})
    assert response.status_code == 200, response.text
    return {(sample.name, *sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def test_metrics_count_a_charge_and_a_webhook_delivery(make_app, business, product, subscribe, receiver):
    app = make_app({"METRICS_TOKEN": TOKEN, "WEBHOOK_ALLOW_PRIVATE_NETWORKS": True})
    with app.app_context():
        WebhookEndpoint.create(business=business, mode="test", url=receiver.url, secret=new_secret())
        from core.models import Customer

        customer = Customer.create(business=business, mode="test", email="ann@example.com", name="Ann")
        before = scrape(app)
        subscribe(customer, product)
        after = scrape(app)
    charge = ("portico_charges_total", ("kind", "new"), ("mode", "test"), ("outcome", "succeeded"))
    delivered = ("portico_webhook_deliveries_total", ("outcome", "succeeded"))
    assert before.get(charge, 0) == 0 and after[charge] == 1
    assert after[delivered] - before.get(delivered, 0) == len(receiver.requests) >= 1


def test_metrics_count_requests_by_endpoint_and_status(make_app):
    app = make_app({"METRICS_TOKEN": TOKEN})
    client = app.test_client()
    key = ("portico_http_requests_total", ("endpoint", "web.health"), ("method", "GET"), ("status", "200"))
    before = scrape(app).get(key, 0)
    for _ in range(3):
        client.get("/healthz")
    assert scrape(app)[key] == before + 3


def test_metrics_count_sign_in_links_sent_and_used(make_app, customer, heard):
    app = make_app({"METRICS_TOKEN": TOKEN, "WTF_CSRF_ENABLED": False}, plugins=[heard])
    client = app.test_client()
    client.post(f"/test/login/{customer.business_id}", data={"email": customer.email})
    [link] = heard.links()
    client.post(link.replace("http://portal.test", ""))
    facts = scrape(app)
    assert facts[("portico_sign_in_links_total", ("stage", "sent"))] >= 1
    assert facts[("portico_sign_in_links_total", ("stage", "used"))] == 1


def test_metrics_show_the_queue_depth_and_failed_jobs(make_app, redis_url, customer):
    app = make_app({"METRICS_TOKEN": TOKEN, "REDIS_URL": redis_url,
                    "QUEUE_NAME": f"test-{uuid.uuid4().hex[:8]}"})
    with app.app_context():
        from core import jobs

        jobs.enqueue(print, "queued")
        facts = scrape(app)
        jobs.queue().empty()
    assert facts[("portico_queue_depth",)] == 1
    assert facts[("portico_queue_failed_jobs",)] == 0


def test_metrics_answer_only_the_token_or_a_configured_network(make_app):
    closed = make_app({})
    assert closed.test_client().get("/metrics").status_code == 404
    app = make_app({"METRICS_TOKEN": TOKEN, "METRICS_NETWORKS": ["10.0.0.0/8"]})
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
