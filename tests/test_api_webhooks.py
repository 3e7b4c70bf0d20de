"""Webhook endpoints through the merchant API: public addresses only, a secret each, and Dodo's
cursor-paginated list."""

import pytest
from standardwebhooks import Webhook

from core.models import WebhookEndpoint

PUBLIC_IP = "93.184.216.34"


@pytest.fixture
def public_dns(dns):
    dns["hooks.acme.example"] = PUBLIC_IP
    dns["internal.acme.example"] = "10.0.0.5"
    return dns


def test_an_endpoint_is_created_with_its_own_secret(api, business, public_dns):
    created = api.post("/webhooks", {"url": "https://hooks.acme.example/dodo", "description": "Orders",
                                     "filter_types": ["payment.succeeded", "payment.succeeded"],
                                     "metadata": {"team": "billing"}}).json
    endpoint = WebhookEndpoint.get_by_id(created["id"])
    assert (endpoint.business_id, endpoint.mode, endpoint.url) == (business.id, "test",
                                                                   "https://hooks.acme.example/dodo")
    assert created["filter_types"] == ["payment.succeeded"] and created["metadata"] == {"team": "billing"}
    assert created["disabled"] is False and "secret" not in created
    secret = api.get(f"/webhooks/{created['id']}/secret").json["secret"]
    assert secret == endpoint.secret and Webhook(secret)  # a valid whsec_ secret


def test_an_address_inside_the_network_is_refused(api, public_dns):
    for url in ("https://internal.acme.example/hooks", "http://127.0.0.1:8000/hooks",
                "http://169.254.169.254/latest"):
        answer = api.post("/webhooks", {"url": url})
        assert answer.status_code == 422 and answer.json["code"] == "INVALID_WEBHOOK_URL", url
    assert WebhookEndpoint.select().count() == 0


def test_an_unknown_event_type_is_refused(api, public_dns):
    answer = api.post("/webhooks", {"url": "https://hooks.acme.example/", "filter_types": ["payment.stolen"]})
    assert answer.status_code == 422 and "filter_types" in answer.json["message"]


def test_an_update_changes_only_what_is_sent(api, public_dns):
    created = api.post("/webhooks", {"url": "https://hooks.acme.example/a", "description": "Orders",
                                     "filter_types": ["payment.succeeded"]}).json
    updated = api.patch(f"/webhooks/{created['id']}", {"disabled": True, "filter_types": None}).json
    assert (updated["disabled"], updated["filter_types"], updated["description"]) == (True, [], "Orders")
    inside = api.patch(f"/webhooks/{created['id']}", {"url": "https://internal.acme.example/"})
    assert inside.status_code == 422
    assert api.get(f"/webhooks/{created['id']}").json["url"] == "https://hooks.acme.example/a"


def test_a_deleted_endpoint_is_gone(api, public_dns):
    created = api.post("/webhooks", {"url": "https://hooks.acme.example/a"}).json
    assert api.delete(f"/webhooks/{created['id']}").status_code == 200
    assert api.get(f"/webhooks/{created['id']}").status_code == 404
    assert WebhookEndpoint.select().count() == 0


def test_the_list_pages_forward_and_back_with_iterators(api, public_dns):
    ids = [api.post("/webhooks", {"url": f"https://hooks.acme.example/{n}"}).json["id"] for n in range(5)]
    newest_first = ids[::-1]
    first = api.get("/webhooks?limit=2").json
    assert [w["id"] for w in first["data"]] == newest_first[:2]
    assert first["done"] is False and first["prev_iterator"] is None
    second = api.get(f"/webhooks?limit=2&iterator={first['iterator']}").json
    assert [w["id"] for w in second["data"]] == newest_first[2:4]
    last = api.get(f"/webhooks?limit=2&iterator={second['iterator']}").json
    assert [w["id"] for w in last["data"]] == newest_first[4:] and last["done"] is True
    assert last["iterator"] is None
    back = api.get(f"/webhooks?limit=2&iterator={last['prev_iterator']}").json
    assert [w["id"] for w in back["data"]] == newest_first[2:4]


def test_an_iterator_from_a_deleted_endpoint_is_not_found(api, public_dns):
    ids = [api.post("/webhooks", {"url": f"https://hooks.acme.example/{n}"}).json["id"] for n in range(3)]
    iterator = api.get("/webhooks?limit=1").json["iterator"]
    api.delete(f"/webhooks/{ids[-1]}")
    assert api.get(f"/webhooks?iterator={iterator}").status_code == 404
    assert api.get("/webhooks?iterator=sideways:whk_1").status_code == 400
