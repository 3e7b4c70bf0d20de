"""License keys through the merchant API, and the public calls a merchant's software makes with
a key (no API key needed; an Authorization header sent with them is ignored)."""

from datetime import timedelta

import pytest

from core import licensing
from core.models import LicenseKey, LicenseKeyInstance, Product, utcnow


@pytest.fixture
def app(make_app, heard):
    app = make_app(plugins=[heard])
    with app.app_context():
        yield app


@pytest.fixture
def desktop(business):
    return Product.create(business=business, mode="test", name="Desktop", price=4900, currency="EUR",
                          license_key_enabled=True, license_key_activations_limit=2)


@pytest.fixture
def key(api, customer, desktop):
    return api.post("/license_keys", {"customer_id": customer.id, "product_id": desktop.id,
                                      "key": "ACME-1111-2222", "activations_limit": 2}).json


def public(client, path, body, token="Bearer garbage"):
    return client.post(f"/api/licenses/{path}", json=body, headers={"Authorization": token})


def test_an_imported_key_is_listed_as_imported_and_announced(api, key, customer, heard):
    assert (key["key"], key["source"], key["status"], key["instances_count"]) == (
        "ACME-1111-2222", "import", "active", 0)
    imported = api.get(f"/license_keys?customer_id={customer.id}&source=import").json["items"]
    assert [k["id"] for k in imported] == [key["id"]]
    assert api.get("/license_keys?source=auto").json["items"] == []
    [event] = heard.of_type("license_key.created")
    assert event.data["id"] == key["id"] and event.data["payload_type"] == "LicenseKey"


def test_a_key_already_in_use_cannot_be_imported(api, key, customer, desktop):
    answer = api.post("/license_keys", {"customer_id": customer.id, "product_id": desktop.id,
                                        "key": "ACME-1111-2222"})
    assert answer.status_code == 409 and LicenseKey.select().count() == 1


def test_the_public_calls_activate_validate_and_deactivate(client, api, key):
    activated = public(client, "activate", {"license_key": key["key"], "name": "laptop"})
    assert activated.status_code == 201
    instance = activated.json
    assert (instance["license_key_id"], instance["name"], instance["product"]["name"]) == (
        key["id"], "laptop", "Desktop")
    valid = public(client, "validate", {"license_key": key["key"], "license_key_instance_id": instance["id"]})
    assert valid.json == {"valid": True}
    assert api.get(f"/license_keys/{key['id']}").json["instances_count"] == 1
    deactivated = public(client, "deactivate", {"license_key": key["key"],
                                                "license_key_instance_id": instance["id"]})
    assert deactivated.status_code == 200 and deactivated.data == b""
    assert LicenseKeyInstance.select().count() == 0
    assert public(client, "validate", {"license_key": key["key"],
                                       "license_key_instance_id": instance["id"]}).json == {"valid": False}


def test_activations_stop_at_the_limit(client, key):
    for name in ("laptop", "desktop"):
        assert public(client, "activate", {"license_key": key["key"], "name": name}).status_code == 201
    third = public(client, "activate", {"license_key": key["key"], "name": "phone"})
    assert third.status_code == 422 and third.json["code"] == "LICENSE_KEY_LIMIT_REACHED"


def test_an_unknown_key_is_not_found_and_not_valid(client):
    answer = public(client, "activate", {"license_key": "NOPE", "name": "laptop"}, token="")
    assert answer.status_code == 404 and answer.json["code"] == "LICENSE_KEY_NOT_FOUND"
    assert public(client, "validate", {"license_key": "NOPE"}).json == {"valid": False}


def test_a_disabled_key_is_refused_and_can_be_enabled_again(client, api, key):
    assert api.patch(f"/license_keys/{key['id']}", {"disabled": True}).json["status"] == "disabled"
    refused = public(client, "activate", {"license_key": key["key"], "name": "laptop"})
    assert refused.status_code == 403 and refused.json["code"] == "INACTIVE_LICENSE_KEY"
    assert api.patch(f"/license_keys/{key['id']}", {"disabled": False}).json["status"] == "active"
    assert public(client, "activate", {"license_key": key["key"], "name": "laptop"}).status_code == 201


def test_a_key_revoked_by_its_source_stays_revoked(app, client, api, key):
    from core.plugins import registry

    row = LicenseKey.get_by_id(key["id"])
    registry(app).license_source(row.source).revoke(license_key=row)
    answer = api.patch(f"/license_keys/{key['id']}", {"disabled": False})
    assert answer.status_code == 409 and answer.json["code"] == "LICENSE_KEY_REVOKED"
    assert LicenseKey.get_by_id(key["id"]).status == "disabled"
    assert api.patch(f"/license_keys/{key['id']}", {"expires_at": None}).json["status"] == "disabled"
    assert public(client, "validate", {"license_key": key["key"]}).json["valid"] is False


def test_the_limit_cannot_drop_below_the_instances_and_null_removes_it(api, key):
    licensing.activate(key["key"], "laptop")
    licensing.activate(key["key"], "desktop")
    lower = api.patch(f"/license_keys/{key['id']}", {"activations_limit": 1})
    assert lower.status_code == 422 and lower.json["code"] == "ACTIVATION_LIMIT_LESS_THAN_CURRENT_AMOUNT"
    unlimited = api.patch(f"/license_keys/{key['id']}", {"activations_limit": None}).json
    assert unlimited["activations_limit"] is None
    assert api.patch(f"/license_keys/{key['id']}", {"disabled": True}).json["activations_limit"] is None


def test_an_expiry_in_the_past_expires_the_key_and_null_removes_it(api, key):
    past = (utcnow() - timedelta(days=1)).isoformat()
    assert api.patch(f"/license_keys/{key['id']}", {"expires_at": past}).json["status"] == "expired"
    cleared = api.patch(f"/license_keys/{key['id']}", {"expires_at": None}).json
    assert (cleared["status"], cleared["expires_at"]) == ("active", None)


def test_instances_are_listed_by_key_and_renamed(api, key):
    first = licensing.activate(key["key"], "laptop")
    second = licensing.activate(key["key"], "desktop")
    listed = api.get(f"/license_key_instances?license_key_id={key['id']}").json["items"]
    assert [i["id"] for i in listed] == [second.id, first.id]
    renamed = api.patch(f"/license_key_instances/{first.id}", {"name": "work laptop"}).json
    assert renamed["name"] == "work laptop" and first.refresh().name == "work laptop"
    assert api.get(f"/license_key_instances/{first.id}").json["license_key_id"] == key["id"]
