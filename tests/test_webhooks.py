"""Webhooks: signed Standard Webhooks deliveries in Dodo's envelope, retried on schedule, every
attempt logged, never to an address inside our own network."""

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import time_machine
from conftest import need_service
from dodopayments import DodoPayments
from dodopayments.types import SubscriptionOnHoldWebhookEvent
from standardwebhooks import Webhook, WebhookVerificationError

from core import billing, events, jobs, payloads
from core.endpoints import check_url, new_secret
from core.hookspecs import Notification
from core.models import Business, Delivery, Event, WebhookEndpoint, utcnow
from plugins import webhooks
from plugins.webhooks import ATTEMPTS, JITTER, SCHEDULE, replay, retry_due, send

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_IP = "93.184.216.34"


# --- A real receiver -----------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict
    body: str


class Receiver:
    """An HTTP(S) server on a free loopback port that records every request and answers with
    the scripted statuses (then ``default``)."""

    def __init__(self, tls=None):
        self.requests, self.script, self.default, self.server_names = [], [], 200, []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
                receiver.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                                  body))
                status, headers = receiver.script.pop(0) if receiver.script else (receiver.default, {})
                self.send_response(status)
                for name, value in {**headers, "content-length": "0"}.items():
                    self.send_header(name, value)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls:
            tls.sni_callback = lambda sock, name, context: self.server_names.append(name)
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_port
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}/hooks"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def answer(self, *responses):
        """Script the next answers: a status, or ``(status, headers)``."""
        self.script += [r if isinstance(r, tuple) else (r, {}) for r in responses]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def app(make_app):
    """The app with deliveries to loopback allowed, so the receiver can be reached."""
    app = make_app({"WEBHOOK_ALLOW_PRIVATE_NETWORKS": True})
    with app.app_context():
        yield app


@pytest.fixture
def endpoint(business, receiver):
    return WebhookEndpoint.create(business=business, mode="test", url=receiver.url, secret=new_secret())


def record(customer, type="subscription.updated", **data):
    return Event.create(business=customer.business_id, mode=customer.mode, customer=customer, type=type,
                        data={"subscription_id": "sub_demo", **data})


def deliver(event):
    """Hand ``event`` to the webhooks notifier, as its delivery job does."""
    events.deliver(event.id, "webhooks")


def attempts(event, endpoint):
    return list(Delivery.select().where((Delivery.event == event) & (Delivery.endpoint == endpoint))
                .order_by(Delivery.attempt))


def retry_when_due(traveller, event, endpoint):
    """Move the clock to the next scheduled attempt and let the sweep's ``retry_due`` make it."""
    traveller.move_to(attempts(event, endpoint)[-1].next_attempt_at)
    assert retry_due() == 1


# --- Signing and envelope ------------------------------------------------------------------


def test_a_delivery_carries_dodos_envelope_and_standard_webhooks_headers(customer, endpoint, receiver):
    event = record(customer, status="active")
    deliver(event)
    [request] = receiver.requests
    assert request.path == "/hooks"
    assert json.loads(request.body) == {"business_id": customer.business_id, "type": "subscription.updated",
                                        "timestamp": payloads.iso(event.created_at), "data": event.data}
    assert request.headers["webhook-id"] == event.id
    assert request.headers["webhook-timestamp"].isdigit()
    assert abs(int(request.headers["webhook-timestamp"]) - utcnow().timestamp()) < 5
    assert request.headers["webhook-signature"].startswith("v1,")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("Portico-Webhooks/")
    [delivery] = attempts(event, endpoint)
    assert (delivery.notifier, delivery.attempt, delivery.status, delivery.response_status) == (
        "webhooks", 1, "succeeded", 200)
    assert delivery.duration_ms >= 0 and delivery.next_attempt_at is None


def test_an_on_hold_delivery_verifies_with_standardwebhooks_and_the_dodo_sdk(on_hold, business, receiver):
    sub = on_hold()
    event = Event.get((Event.type == "subscription.on_hold") & (Event.business == sub.business_id))
    endpoint = WebhookEndpoint.create(business=business, mode="test", url=receiver.url, secret=new_secret())
    deliver(event)
    [request] = receiver.requests

    assert Webhook(endpoint.secret).verify(request.body, request.headers)["data"]["status"] == "on_hold"
    client = DodoPayments(bearer_token="x", base_url="http://127.0.0.1:9/api")
    unwrapped = client.webhooks.unwrap(request.body, headers=request.headers, key=endpoint.secret)
    assert unwrapped.type == "subscription.on_hold" and unwrapped.business_id == sub.business_id
    strict = SubscriptionOnHoldWebhookEvent.model_validate_json(request.body)
    assert strict.data.subscription_id == sub.id and strict.data.customer.email == "ann@example.com"


def test_a_tampered_body_a_wrong_secret_or_a_stale_timestamp_fails_verification(customer, endpoint, receiver):
    deliver(record(customer))
    [request] = receiver.requests
    with pytest.raises(WebhookVerificationError):
        Webhook(endpoint.secret).verify(request.body.replace("sub_demo", "sub_other"), request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(request.body, request.headers)
    with time_machine.travel(utcnow() + timedelta(minutes=6)), pytest.raises(WebhookVerificationError):
        Webhook(endpoint.secret).verify(request.body, request.headers)


def test_new_secrets_are_whsec_and_32_random_bytes():
    import base64

    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_") and first != second
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32


# --- Who gets what -------------------------------------------------------------------------


def test_filter_types_choose_the_events_an_endpoint_gets(customer, business, endpoint, receiver):
    endpoint.filter_types = ["payment.succeeded"]
    endpoint.save()
    deliver(record(customer, type="subscription.updated"))
    assert receiver.requests == []
    deliver(record(customer, type="payment.succeeded"))
    assert [json.loads(r.body)["type"] for r in receiver.requests] == ["payment.succeeded"]


def test_endpoints_of_another_business_or_mode_or_disabled_ones_get_nothing(customer, receiver):
    other = Business.create(name="Globex")
    for business, mode, disabled in [(other, "test", False), (customer.business, "live", False),
                                     (customer.business, "test", True)]:
        WebhookEndpoint.create(business=business, mode=mode, url=receiver.url, secret=new_secret(),
                               disabled=disabled)
    deliver(record(customer))
    assert receiver.requests == [] and Delivery.select().count() == 0


def test_a_message_that_is_not_a_stored_event_is_never_sent(app, customer, endpoint, receiver):
    link = Notification(id="tok_signin", type="customer.sign_in_link", business_id=customer.business_id,
                        mode="test", data={"email": customer.email}, created_at=utcnow(),
                        customer_id=customer.id, secrets={"link": "http://portal.test/session/secret"})
    webhooks.notify(link, app)
    assert receiver.requests == []


# --- Retries -------------------------------------------------------------------------------


def test_a_failed_delivery_is_retried_with_the_same_id_and_a_new_signature(customer, endpoint, receiver):
    receiver.answer(500)
    event = record(customer)
    with time_machine.travel(utcnow(), tick=False) as traveller:
        deliver(event)
        assert retry_due() == 0
        retry_when_due(traveller, event, endpoint)
        Webhook(endpoint.secret).verify(receiver.requests[1].body, receiver.requests[1].headers)
    first, second = (r.headers for r in receiver.requests)
    assert first["webhook-id"] == second["webhook-id"] == event.id
    assert int(second["webhook-timestamp"]) - int(first["webhook-timestamp"]) >= SCHEDULE[1]
    assert first["webhook-signature"] != second["webhook-signature"]
    assert [(d.attempt, d.status, d.response_status, d.error) for d in attempts(event, endpoint)] == [
        (1, "failed", 500, "HTTP 500"), (2, "succeeded", 200, None)]
    assert all(d.next_attempt_at is None for d in attempts(event, endpoint))
    assert retry_due(utcnow() + timedelta(days=7)) == 0


def test_a_redirect_is_a_failure_and_is_not_followed(customer, endpoint, receiver):
    receiver.answer((301, {"location": "http://127.0.0.1:9/elsewhere"}))
    event = record(customer)
    deliver(event)
    assert len(receiver.requests) == 1
    [delivery] = attempts(event, endpoint)
    assert (delivery.status, delivery.response_status) == ("failed", 301)
    assert "redirect" in delivery.error and delivery.next_attempt_at is not None


def test_a_refused_connection_is_a_failure_that_is_retried(customer, business):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    endpoint = WebhookEndpoint.create(business=business, mode="test", url=f"http://127.0.0.1:{port}/",
                                      secret=new_secret())
    event = record(customer)
    deliver(event)
    [delivery] = attempts(event, endpoint)
    assert delivery.status == "failed" and delivery.response_status is None
    assert "ConnectError" in delivery.error and delivery.next_attempt_at is not None


def test_retry_after_is_honoured_when_longer_than_the_schedule(customer, endpoint, receiver):
    start = utcnow().replace(microsecond=0)
    receiver.answer((503, {"retry-after": "120"}),
                    (503, {"retry-after": format_datetime(start + timedelta(hours=2), usegmt=True)}),
                    (503, {"retry-after": "1"}))
    event = record(customer)
    with time_machine.travel(start, tick=False) as traveller:
        deliver(event)
        assert attempts(event, endpoint)[0].next_attempt_at == start + timedelta(seconds=120)
        traveller.move_to(start + timedelta(seconds=60))
        assert retry_due() == 0 and len(receiver.requests) == 1
        retry_when_due(traveller, event, endpoint)
        assert attempts(event, endpoint)[1].next_attempt_at == start + timedelta(hours=2)
        retry_when_due(traveller, event, endpoint)
        delay = attempts(event, endpoint)[2].next_attempt_at - utcnow()
    assert timedelta(seconds=SCHEDULE[3]) <= delay <= timedelta(seconds=SCHEDULE[3] * (1 + JITTER))


def test_a_410_disables_the_endpoint_and_stops_retrying(customer, endpoint, receiver, caplog):
    receiver.answer(410)
    event = record(customer)
    deliver(event)
    [delivery] = attempts(event, endpoint)
    assert (delivery.status, delivery.response_status, delivery.next_attempt_at) == ("failed", 410, None)
    assert endpoint.refresh().disabled
    assert "410" in caplog.text and endpoint.id in caplog.text
    assert retry_due(utcnow() + timedelta(days=7)) == 0
    deliver(record(customer))
    assert len(receiver.requests) == 1


def test_delivery_fails_for_good_after_the_last_scheduled_attempt(customer, endpoint, receiver):
    receiver.default = 500
    event = record(customer)
    with time_machine.travel(utcnow(), tick=False) as traveller:
        deliver(event)
        for attempt in range(1, ATTEMPTS):
            failed = attempts(event, endpoint)[-1]
            delay = (failed.next_attempt_at - utcnow()).total_seconds()
            assert SCHEDULE[attempt] <= delay <= SCHEDULE[attempt] * (1 + JITTER), attempt
            retry_when_due(traveller, event, endpoint)
    made = attempts(event, endpoint)
    assert [d.attempt for d in made] == list(range(1, ATTEMPTS + 1)) == list(range(1, 9))
    assert {d.status for d in made} == {"failed"} and made[-1].next_attempt_at is None
    assert len(receiver.requests) == ATTEMPTS
    assert retry_due(utcnow() + timedelta(days=30)) == 0


def test_a_delivery_that_failed_for_good_can_be_replayed(customer, endpoint, receiver):
    receiver.answer(500)
    event = record(customer)
    deliver(event)
    with pytest.raises(ValueError, match="already"):
        replay(event.id, endpoint.id)
    Delivery.update(next_attempt_at=None).execute()  # as if the schedule had run out
    assert replay(event.id, endpoint.id) == 2
    assert [d.status for d in attempts(event, endpoint)] == ["failed", "succeeded"]
    assert receiver.requests[0].headers["webhook-id"] == receiver.requests[1].headers["webhook-id"]
    with pytest.raises(LookupError):
        replay(event.id, WebhookEndpoint.create(business=Business.create(name="Other"), mode="test",
                                                url=receiver.url, secret=new_secret()).id)


def test_an_attempt_already_made_is_not_sent_again(customer, endpoint, receiver):
    event = record(customer)
    deliver(event)
    send(event.id, endpoint.id, 1)
    deliver(event)
    assert len(receiver.requests) == 1 and len(attempts(event, endpoint)) == 1


def test_an_attempt_whose_worker_died_is_followed_by_the_next_one(customer, endpoint, receiver):
    event = record(customer)
    lost = Delivery.create(event=event, notifier="webhooks", endpoint=endpoint, attempt=1, status="sending",
                           next_attempt_at=utcnow() + webhooks.LOST_AFTER)
    assert retry_due() == 0
    assert retry_due(utcnow() + webhooks.LOST_AFTER) == 1
    assert [(d.attempt, d.status) for d in attempts(event, endpoint)] == [(1, "failed"), (2, "succeeded")]
    assert "interrupted" in lost.refresh().error and len(receiver.requests) == 1


# --- No SSRF -------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/hooks", "http://10.0.0.1/", "http://172.16.5.4/", "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/", "http://[::1]/", "http://[fc00::1]/", "http://[fe80::1]/",
    "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/", "http://224.0.0.1/", "http://localhost:8000/",
])
def test_urls_reaching_a_private_address_are_refused(url):
    with pytest.raises(ValueError, match="not a public address"):
        check_url(url, allow_private=False)


@pytest.mark.parametrize("url, reason", [
    ("file:///etc/passwd", "https://"), ("gopher://example.com/", "https://"), ("ftp://example.com/", "https://"),
    ("http://user:secret@example.com/", "password"), ("http:///nohost", "host"),
])
def test_urls_that_are_not_plain_http_are_refused(url, reason):
    with pytest.raises(ValueError, match=reason):
        check_url(url, allow_private=False)


def test_a_public_host_is_accepted_with_the_addresses_it_resolves_to(dns):
    dns["hooks.example.test"] = PUBLIC_IP
    assert check_url("https://hooks.example.test/dodo", allow_private=False) == [PUBLIC_IP]


def test_private_addresses_are_refused_unless_the_setting_allows_them(make_app):
    assert make_app().config["WEBHOOK_ALLOW_PRIVATE_NETWORKS"] is False
    with make_app().app_context(), pytest.raises(ValueError):
        check_url("http://127.0.0.1:8000/")
    with make_app({"WEBHOOK_ALLOW_PRIVATE_NETWORKS": True}).app_context():
        assert check_url("http://127.0.0.1:8000/") == ["127.0.0.1"]


def test_a_delivery_to_a_private_address_is_refused_when_not_allowed(app, customer, endpoint, receiver):
    app.config["WEBHOOK_ALLOW_PRIVATE_NETWORKS"] = False
    event = record(customer)
    deliver(event)
    assert receiver.requests == []
    [delivery] = attempts(event, endpoint)
    assert delivery.status == "failed" and "not a public address" in delivery.error


def test_a_host_rebound_to_a_private_address_after_registration_is_refused(app, customer, business, receiver,
                                                                           dns):
    app.config["WEBHOOK_ALLOW_PRIVATE_NETWORKS"] = False
    dns["rebind.example.test"] = [PUBLIC_IP, "127.0.0.1"]
    url = f"http://rebind.example.test:{receiver.port}/hooks"
    check_url(url)
    endpoint = WebhookEndpoint.create(business=business, mode="test", url=url, secret=new_secret())
    event = record(customer)
    deliver(event)
    assert receiver.requests == []
    assert "127.0.0.1, which is not a public address" in attempts(event, endpoint)[0].error


def test_a_delivery_connects_to_the_checked_address_and_keeps_the_host_name(customer, business, receiver,
                                                                             dns):
    dns["hooks.example.test"] = ["127.0.0.1", "127.0.0.2"]  # resolving again would miss the receiver
    endpoint = WebhookEndpoint.create(business=business, mode="test", secret=new_secret(),
                                      url=f"http://hooks.example.test:{receiver.port}/hooks")
    deliver(record(customer))
    [request] = receiver.requests
    assert request.headers["host"] == f"hooks.example.test:{receiver.port}"
    Webhook(endpoint.secret).verify(request.body, request.headers)


@pytest.fixture
def certificate(tmp_path):
    """A self-signed certificate for ``hooks.example.test`` and its key."""
    if shutil.which("openssl") is None:
        need_service("the openssl command is not installed (make test installs it)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=hooks.example.test",
                    "-addext", "subjectAltName=DNS:hooks.example.test",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_https_deliveries_check_the_certificate_against_the_host_name(customer, business, certificate, dns,
                                                                       monkeypatch):
    cert, key = certificate
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    monkeypatch.setattr(webhooks, "VERIFY", ssl.create_default_context(cafile=str(cert)))
    receiver = Receiver(tls=server_tls)
    try:
        dns["hooks.example.test"] = dns["impostor.example.test"] = "127.0.0.1"
        good, bad = (WebhookEndpoint.create(business=business, mode="test", secret=new_secret(),
                                            url=f"https://{name}:{receiver.port}/hooks")
                     for name in ("hooks.example.test", "impostor.example.test"))
        event = record(customer)
        deliver(event)
    finally:
        receiver.close()
    assert [r.headers["host"] for r in receiver.requests] == [f"hooks.example.test:{receiver.port}"]
    assert "hooks.example.test" in receiver.server_names
    assert attempts(event, good)[0].status == "succeeded"
    assert attempts(event, bad)[0].status == "failed"


# --- End to end ----------------------------------------------------------------------------


def emit_update(customer):
    return billing.emit("subscription.updated", customer.business_id, customer.mode, customer.id,
                        {"subscription_id": "sub_demo", "status": "active"})


def test_an_event_emitted_in_a_committed_transaction_reaches_the_receiver(customer, endpoint, receiver):
    with jobs.transaction():
        event = emit_update(customer)
    [request] = receiver.requests
    assert request.headers["webhook-id"] == event.id
    assert Webhook(endpoint.secret).verify(request.body, request.headers)["type"] == "subscription.updated"


def test_a_rolled_back_transaction_delivers_nothing(customer, endpoint, receiver):
    with pytest.raises(RuntimeError), jobs.transaction():
        emit_update(customer)
        raise RuntimeError("boom")
    assert receiver.requests == [] and Event.select().count() == 0 and Delivery.select().count() == 0


def test_a_real_worker_delivers_an_emitted_event(make_app, redis_url, cli_env, customer, endpoint, receiver):
    queue_name = f"test-{uuid.uuid4().hex[:8]}"
    with make_app({"REDIS_URL": redis_url, "QUEUE_NAME": queue_name}).app_context():
        with jobs.transaction():
            event = emit_update(customer)
        assert receiver.requests == [] and jobs.queue().count == 1
        env = {**os.environ, **cli_env, "PORTICO_REDIS_URL": redis_url, "PORTICO_QUEUE_NAME": queue_name,
               "PORTICO_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "1"}
        worker = subprocess.run([sys.executable, "-m", "core.cli", "worker", "--burst"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=120)
        assert worker.returncode == 0, worker.stderr
        assert len(jobs.queue().failed_job_registry) == 0, worker.stderr
    [request] = receiver.requests
    Webhook(endpoint.secret).verify(request.body, request.headers)
    assert request.headers["webhook-id"] == event.id
    assert [d.status for d in attempts(event, endpoint)] == ["succeeded"]


def test_on_redis_a_retry_is_scheduled_for_its_time_and_queued_once(make_app, redis_url, customer, endpoint,
                                                                    receiver):
    receiver.answer(500)
    event = record(customer)
    app = make_app({"REDIS_URL": redis_url, "QUEUE_NAME": f"test-{uuid.uuid4().hex[:8]}",
                    "WEBHOOK_ALLOW_PRIVATE_NETWORKS": True})
    with app.app_context():
        queue = jobs.queue()
        send(event.id, endpoint.id, 1)
        due = attempts(event, endpoint)[0].next_attempt_at
        job_id = f"webhook-{event.id}-{endpoint.id}-2"
        scheduled = queue.scheduled_job_registry
        assert scheduled.get_job_ids() == [job_id]
        assert abs(scheduled.get_scheduled_time(job_id).timestamp() - due.timestamp()) < 1
        assert retry_due(due) == 1  # the sweep finds it due, but its job is still known: not queued twice
        assert queue.count + len(scheduled) == 1
        queue.empty()
        scheduled.remove(job_id, delete_job=True)
