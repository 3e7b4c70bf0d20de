"""The API's wire rules, the same for every operation: JSON errors with Dodo's codes, strict
bodies, page-number pagination in a stable order, and a rate limit per API key."""

import pytest

from core import auth
from core.models import Customer, utcnow


def test_unknown_fields_in_a_body_are_refused_naming_them(api):
    answer = api.post("/customers", {"email": "ann@example.com", "name": "Ann", "colour": "red",
                                     "nickname": "A"})
    assert answer.status_code == 422
    assert answer.json == {"code": "INVALID_REQUEST_BODY",
                           "message": "Unknown field(s): colour, nickname."}
    assert Customer.select().count() == 0


def test_a_body_that_is_not_a_json_object_is_refused(api):
    for raw in (b"{not json", b"[1, 2]", b'"text"'):
        answer = api("POST", "/customers", data=raw, headers={"Content-Type": "application/json"})
        assert answer.status_code == 422 and answer.json["code"] == "INVALID_REQUEST_BODY", raw


def test_a_wrong_type_is_refused_never_coerced(api):
    answer = api.post("/customers", {"email": "ann@example.com", "name": 42})
    assert answer.status_code == 422 and answer.json["message"].startswith("name:")


def test_a_bad_query_parameter_is_refused(api):
    for query in ("page_size=101", "page_size=0", "page_number=-1", "page_number=one",
                  "created_at_gte=yesterday", "created_at_gte=1700000000"):
        answer = api.get("/customers?" + query)
        assert answer.status_code == 400 and answer.json["code"] == "INVALID_QUERY_PARAMS", query


def test_pages_count_from_zero_and_are_empty_past_the_end(api, business):
    for n in range(5):
        Customer.create(business=business, mode="test", email=f"c{n}@example.com", name=f"C{n}")

    def emails(query):
        return [c["email"] for c in api.get("/customers?" + query).json["items"]]

    assert emails("page_size=2") == emails("page_number=0&page_size=2")
    assert emails("page_size=2") == ["c4@example.com", "c3@example.com"]
    assert emails("page_number=2&page_size=2") == ["c0@example.com"]
    assert api.get("/customers?page_number=3&page_size=2").json == {"items": []}
    assert len(emails("")) == 5  # ten to a page by default


def test_records_made_at_the_same_instant_keep_one_order(api, business):
    now = utcnow()
    made = [Customer.create(business=business, mode="test", email=f"c{n}@example.com", name="Twin",
                            created_at=now) for n in range(4)]
    pages = [api.get(f"/customers?page_number={n}&page_size=1").json["items"][0]["customer_id"]
             for n in range(4)]
    assert pages == sorted((c.id for c in made), reverse=True)


def test_an_unknown_id_is_not_found_in_dodos_words(api):
    answer = api.get("/subscriptions/sub_missing")
    assert answer.status_code == 404
    assert answer.json == {"code": "NOT_FOUND", "message": "No such subscription."}


def test_a_method_a_path_does_not_have_is_refused_with_the_allowed_ones(api, customer):
    answer = api.delete(f"/customers/{customer.id}")
    assert answer.status_code == 405 and answer.json["code"] == "METHOD_NOT_ALLOWED"
    assert set(answer.headers["Allow"].split(", ")) >= {"GET", "PATCH"}


def test_calls_beyond_the_rate_limit_wait_with_retry_after(make_app, business):
    app = make_app({"API_RATE_LIMIT": "3 per minute"})
    with app.app_context():
        client = app.test_client()
        first, second = (auth.create_api_key(business, "test")[1] for _ in range(2))

        def call(key):
            return client.get("/api/customers", headers={"Authorization": f"Bearer {key}"})

        assert [call(first).status_code for _ in range(3)] == [200, 200, 200]
        refused = call(first)
        assert refused.status_code == 429 and refused.json["code"] == "TOO_MANY_REQUESTS"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert call(second).status_code == 200  # each key has its own allowance


def test_an_unexpected_failure_answers_a_bare_500(make_app, business, monkeypatch):
    app = make_app({"PROPAGATE_EXCEPTIONS": False})
    with app.app_context():
        from core.api import customers

        def broken(*args, **kwargs):
            raise RuntimeError("database exploded at /srv/portico/secret.py")

        monkeypatch.setattr(customers.payloads, "customer", broken)
        customer = Customer.create(business=business, mode="test", email="ann@example.com", name="Ann")
        key = auth.create_api_key(business, "test")[1]
        answer = app.test_client().get(f"/api/customers/{customer.id}",
                                       headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 500
    assert answer.json == {"code": "INTERNAL_SERVER_ERROR", "message": "Something went wrong on our side."}


@pytest.mark.parametrize("path", ["/api/openapi.json", "/api/customers"])
def test_api_answers_are_never_cached(client, api, path):
    assert api.get(path.removeprefix("/api")).headers["Cache-Control"] == "no-store"


def test_guessing_api_keys_is_limited_per_address(client, business, customer):
    """Every guess is a different key, so the limit per key never applies: the failures from
    one address count together."""
    import secrets

    statuses = [client.get("/api/customers", headers={
        "Authorization": f"Bearer pk_test_{secrets.token_urlsafe(32)}"}).status_code
        for _ in range(150)]
    assert statuses[:20] == [401] * 20 and statuses[20:] == [429] * 130
    answer = client.get("/api/customers", headers={"Authorization": "Bearer pk_test_guess"})
    assert answer.json["code"] == "TOO_MANY_REQUESTS" and int(answer.headers["Retry-After"]) > 0
    _, key = auth.create_api_key(business, "test")
    valid = client.get("/api/customers", headers={"Authorization": f"Bearer {key}"})
    assert valid.status_code == 200  # a valid key from the same address still works
