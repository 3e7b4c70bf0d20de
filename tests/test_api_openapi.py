"""The OpenAPI document at ``/api/openapi.json``: generated from the route table, complete, and
true — Schemathesis, with its default checks, finds no server error and no answer that
departs from it."""

import re
import socket
import threading
import uuid

import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.engine import Status, events, from_schema
from werkzeug.serving import make_server

from core import auth
from core.api import ROUTES
from core.api.schemas import IDEMPOTENCY
from core.models import Business

PUBLIC_IP = "93.184.216.34"


@pytest.fixture
def document(client):
    return client.get("/api/openapi.json").json


def test_the_document_is_openapi_3_1_and_lists_every_route(document):
    assert document["openapi"] == "3.1.0"
    listed = {(method.upper(), path) for path, operations in document["paths"].items()
              for method in operations}
    assert listed == {(spec.method, spec.path) for spec in ROUTES}
    assert len(listed) >= 45


def test_every_operation_documents_its_errors_with_the_error_schema(document):
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            assert {"429", "500"} <= statuses, (method, path)
            assert ("401" in statuses) == (not path.startswith("/licenses/")), (method, path)
            if "{" in path:
                assert "404" in statuses, (method, path)
            if "requestBody" in operation:
                assert "422" in statuses, (method, path)
            for status, answer in operation["responses"].items():
                if status >= "400":
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}


def test_request_bodies_refuse_fields_they_do_not_name(document):
    schemas = document["components"]["schemas"]
    for name in ("CustomerCreate", "ProductCreate", "SubscriptionCreate", "WebhookCreate",
                 "LicenseKeyUpdate"):
        assert schemas[name]["additionalProperties"] is False


def test_the_public_license_calls_need_no_key(document):
    for path in ("/licenses/activate", "/licenses/validate", "/licenses/deactivate"):
        assert document["paths"][path]["post"]["security"] == []
    assert document["security"] == [{"apiKey": []}]
    assert document["paths"]["/licenses/activate"]["post"]["responses"].keys() >= {"201"}


def test_every_post_with_an_api_key_documents_its_idempotency_key(document):
    session = "/customers/{customer_id}/customer-portal/session"
    for path, operations in document["paths"].items():
        post = operations.get("post")
        if post is None or path.startswith("/licenses/"):
            continue
        headers = [p["name"] for p in post["parameters"] if p["in"] == "header"]
        assert headers == ([] if path == session else ["Idempotency-Key"]), path
        if path != session:
            assert {"409", "422"} <= set(post["responses"]), path
            assert "Idempotent-Replayed" in post["responses"]["200"]["headers"], path
    assert "Idempotency-Key`` is not honoured" in document["paths"][session]["post"]["description"]
    field = document["components"]["schemas"]["WebhookCreate"]["properties"]["idempotency_key"]
    assert "Idempotency-Key header" in field["description"]


def test_the_license_sections_state_that_a_subscriptions_key_follows_it(document):
    tags = {tag["name"]: tag.get("description", "") for tag in document["tags"]}
    for tag in ("License keys", "Licenses"):
        assert "valid while the subscription is paid" in tags[tag], tag
        assert "cancelling it at the next billing date ends the key at that date" in tags[tag], tag


def test_the_invoice_is_documented_as_a_pdf(document):
    answer = document["paths"]["/invoices/payments/{payment_id}"]["get"]["responses"]["200"]
    assert answer["content"] == {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}


# --- Schemathesis --------------------------------------------------------------------------------


@pytest.fixture
def fuzzed_app(make_app, monkeypatch):
    """The app for Schemathesis: no rate limit in its way, no deliveries to the webhook URLs it
    invents, and every host name it invents resolving to a public address, as the API requires."""
    resolve = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host == "127.0.0.1":  # the server under test
            return resolve(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_IP, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    app = make_app({"API_RATE_LIMIT": "100000 per second",
                    "API_KEY_FAILURE_LIMIT_PER_IP": "100000 per second",
                    "DISABLED_PLUGINS": ["webhooks", "mail"]})
    with app.app_context():
        yield app


# E-mail addresses as the API takes them (no reserved domains such as .test or .invalid)
EMAILS = st.from_regex(r"[a-z0-9]{1,12}([._+-][a-z0-9]{1,8})?@[a-z0-9]{1,12}\.(com|org|net|fr|io)",
                       fullmatch=True)


def failures_of(schema) -> list[str]:
    """Run Schemathesis and describe each distinct failure: operation, check, request."""
    found = {}
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info:
                        failure = check.failure_info.failure
                        found.setdefault((failure.operation, failure.title),
                                         f"{failure.message}\n{check.failure_info.code_sample}")
        elif isinstance(event, events.NonFatalError | events.FatalError):
            found.setdefault(("error", str(event)), str(getattr(event, "info", event)))
    return [f"{operation}: {title}\n{detail}" for (operation, title), detail in found.items()]


def fresh_idempotency_keys(context, case, kwargs):
    """Give each call a fresh valid idempotency key: Schemathesis reuses the values it makes,
    and a key reused for another body is rightly refused (422). Invalid keys stay as made."""
    key, valid = str(uuid.uuid4()), re.compile(IDEMPOTENCY).fullmatch
    if case.headers and valid(case.headers.get("Idempotency-Key") or ""):
        case.headers["Idempotency-Key"] = key
    if isinstance(case.body, dict) and valid(str(case.body.get("idempotency_key") or "")):
        case.body["idempotency_key"] = key


def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_document(fuzzed_app):
    business = Business.create(name="Acme Software")
    key = auth.create_api_key(business, "test")[1]
    server = make_server("127.0.0.1", 0, fuzzed_app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    schemathesis.openapi.format("email", EMAILS)
    config = schemathesis.Config.from_dict({
        "headers": {"Authorization": f"Bearer {key}"},
        "seed": 7,  # reproducible in CI; change it locally to explore other inputs
        "generation": {"max-examples": 10},
        # boundary values of every parameter are tried as invalid input; valid input is fuzzed
        "phases": {"coverage": {"generation": {"mode": "negative"}}},
        # Dodo's DELETE of a product or add-on archives it: it stays readable, as archived;
        # and a PATCH naming add-ons that do not exist answers 404 for them, not for the product
        "operations": [{"include-path-regex": r"^/(products|addons)/\{id\}",
                        "checks": {"use_after_free": {"enabled": False},
                                   "ensure_resource_availability": {"enabled": False}}},
                       # a tax ID is checked against its country's format, which no JSON
                       # Schema can say: a schema-valid one may be refused (422 INVALID_TAX_ID)
                       {"include-path-regex": r"^/(customers|subscriptions)",
                        "include-method": "POST|PATCH",
                        "checks": {"positive_data_acceptance": {"enabled": False}}},
                       # a percentage is at most 10000 basis points where a flat amount is
                       # not, and a discount starts before it expires: no one field's schema
                       # says either
                       {"include-path-regex": r"^/discounts",
                        "include-method": "POST|PATCH",
                        "checks": {"positive_data_acceptance": {"enabled": False}}},
                       # the portal's plan-change rules name products, which must exist, and
                       # a required reason needs reasons to choose from: no schema says either
                       {"include-path-regex": r"^/customer-portal/configuration",
                        "include-method": "PATCH",
                        "checks": {"positive_data_acceptance": {"enabled": False}}}],
    })
    try:
        schema = schemathesis.openapi.from_url(
            f"http://127.0.0.1:{server.server_port}/api/openapi.json", config=config)
        schemathesis.hook("before_call")(fresh_idempotency_keys)
        assert failures_of(schema) == []
    finally:
        schemathesis.hooks.unregister(fresh_idempotency_keys)
        server.shutdown()
