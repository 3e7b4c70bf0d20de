"""The sandbox payment provider: test cards, charges, refunds, injected faults, the card form."""

import threading
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from conftest import csrf_token

from core.hookspecs import TransientProviderError
from core.models import PaymentMethod, db, utcnow
from core.plugins import registry
from plugins.sandbox import SandboxProvider, charges, fail_next, ledger
from plugins.sandbox.models import SandboxToken

RETURN_URL = "https://acme.test/account?tab=billing"

CARDS = [
    ("4242 4242 4242 4242", "visa", "4242", "succeeded"),
    ("5555 5555 5555 4444", "mastercard", "4444", "succeeded"),
    ("4000 0000 0000 0002", "visa", "0002", "card_declined"),
    ("4000 0000 0000 9995", "visa", "9995", "insufficient_funds"),
    ("pm_card_visa", "visa", "4242", "succeeded"),
    ("pm_card_mastercard", "mastercard", "4444", "succeeded"),
    ("pm_card_chargeDeclined", "visa", "0002", "card_declined"),
    ("pm_card_insufficientFunds", "visa", "9995", "insufficient_funds"),
]


@pytest.fixture
def provider(app):
    return registry(app).provider("sandbox")


@pytest.fixture
def save_card(provider, customer):
    """Tokenize a test card and save it as the customer's payment method, as the form does."""

    def save(source="pm_card_visa"):
        card = provider.tokenize(customer=customer, source=source)
        return PaymentMethod.create(business=customer.business_id, mode=customer.mode,
                                    customer=customer, provider="sandbox",
                                    provider_token=card.token, brand=card.brand,
                                    last4=card.last4, exp_month=card.exp_month,
                                    exp_year=card.exp_year)

    return save


def charge(provider, method, key="order-1", amount=1500, currency="EUR"):
    return provider.charge(payment_method=method, amount=amount, currency=currency,
                           idempotency_key=key, description="Acme Pro")


def database_text() -> str:
    """Every row of every table, as one string to search."""
    return "\n".join(repr(row) for table in db.get_tables()
                     for row in db.execute_sql(f'SELECT * FROM "{table}"').fetchall())




# --- Registry and tokens ----------------------------------------------------------------------


def test_provider_is_found_through_the_registry(provider):
    assert isinstance(provider, SandboxProvider)
    assert (provider.name, provider.modes) == ("sandbox", ("test",))


@pytest.mark.parametrize(("source", "brand", "last4", "outcome"), CARDS)
def test_tokenizing_each_test_card_and_token(provider, customer, source, brand, last4, outcome):
    card = provider.tokenize(customer=customer, source=source)
    assert card.token.startswith("sbx_tok_")
    assert (card.brand, card.last4) == (brand, last4)
    assert card.exp_year > utcnow().year
    assert SandboxToken.get_by_id(card.token).outcome == outcome


def test_each_tokenization_gives_a_new_token(provider, customer):
    first = provider.tokenize(customer=customer, source="pm_card_visa")
    second = provider.tokenize(customer=customer, source="pm_card_visa")
    assert first.token != second.token


@pytest.mark.parametrize("source", ["4242 4242 4242 4241", "4242", "card", "", "pm_card_amex"])
def test_tokenize_refuses_an_invalid_number_or_unknown_token(provider, customer, source):
    with pytest.raises(ValueError, match="not a valid card number"):
        provider.tokenize(customer=customer, source=source)


def test_tokenize_refuses_a_real_card_number(provider, customer):
    with pytest.raises(ValueError, match="only accepts test cards") as refused:
        provider.tokenize(customer=customer, source="4111 1111 1111 1111")
    assert "4111" not in str(refused.value)


def test_tokenizing_never_stores_the_card_number(provider, customer):
    provider.tokenize(customer=customer, source="4242 4242 4242 4242")
    assert "4242424242424242" not in database_text()


# --- Charges ----------------------------------------------------------------------------------


def test_a_good_card_charge_succeeds_with_a_reference(provider, save_card):
    result = charge(provider, save_card("4242 4242 4242 4242"))
    assert result.succeeded
    assert result.reference.startswith("sbx_ch_")
    assert (result.failure_code, result.failure_message) == (None, None)
    [row] = charges()
    assert (row.amount, row.currency, row.reference, row.description) == (
        1500, "EUR", result.reference, "Acme Pro")


@pytest.mark.parametrize(("source", "code", "message"), [
    ("pm_card_chargeDeclined", "card_declined", "Your card was declined."),
    ("4000 0000 0000 9995", "insufficient_funds", "Your card has insufficient funds."),
])
def test_a_declining_card_gives_a_declined_result(provider, save_card, source, code, message):
    result = charge(provider, save_card(source))
    assert (result.status, result.reference) == ("declined", None)
    assert (result.failure_code, result.failure_message) == (code, message)
    assert charges() == []
    assert [row.status for row in charges(status="declined")] == ["declined"]


def test_a_test_token_saved_as_is_can_be_charged(provider, customer):
    method = PaymentMethod.create(business=customer.business_id, mode="test", customer=customer,
                                  provider="sandbox", provider_token="pm_card_chargeDeclined")
    assert charge(provider, method).failure_code == "card_declined"


def test_charging_an_unknown_token_is_refused(provider, customer):
    method = PaymentMethod.create(business=customer.business_id, mode="test", customer=customer,
                                  provider="sandbox", provider_token="sbx_tok_gone")
    with pytest.raises(ValueError, match="not a sandbox token"):
        charge(provider, method)


def test_same_idempotency_key_never_charges_twice(provider, save_card):
    method = save_card()
    first = charge(provider, method, key="renewal-42")
    assert charge(provider, method, key="renewal-42") == first
    assert len(charges()) == 1


def test_a_declined_charge_is_also_answered_once_per_key(provider, save_card):
    method = save_card("pm_card_chargeDeclined")
    assert charge(provider, method) == charge(provider, method)
    assert len(ledger()) == 1


def test_concurrent_charges_with_one_key_make_one_ledger_charge(app, provider, save_card):
    method = save_card()
    start = threading.Barrier(20)
    results, errors = [], []

    def pay():
        with app.app_context():  # each thread has its own database connection
            try:
                start.wait()
                results.append(charge(provider, method, key="concurrent"))
            except Exception as error:  # noqa: BLE001 - reported by the assertion below
                errors.append(error)

    threads = [threading.Thread(target=pay) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 20 and len(set(results)) == 1 and results[0].succeeded
    assert len(charges()) == 1


def test_reusing_a_key_for_another_amount_is_refused(provider, save_card):
    method = save_card()
    charge(provider, method, key="order-7", amount=1500)
    with pytest.raises(ValueError, match="already used for a different request"):
        charge(provider, method, key="order-7", amount=2500)


@pytest.mark.parametrize(("amount", "currency"), [
    (0, "EUR"), (-100, "EUR"), (15.0, "EUR"), ("1500", "EUR"), (True, "EUR"),
    (1500, "EURO"), (1500, "E1R"), (1500, ""), (1500, None),
])
def test_charge_refuses_a_bad_amount_or_currency(provider, save_card, amount, currency):
    with pytest.raises(ValueError):
        charge(provider, save_card(), amount=amount, currency=currency)
    assert ledger() == []


# --- Refunds ----------------------------------------------------------------------------------


def refund(provider, reference, key="refund-1", amount=1500, currency="EUR"):
    return provider.refund(reference=reference, amount=amount, currency=currency,
                           idempotency_key=key)


def test_a_refund_succeeds_once_per_key(provider, save_card):
    paid = charge(provider, save_card())
    first = refund(provider, paid.reference, amount=500)
    assert first.status == "succeeded" and first.reference.startswith("sbx_re_")
    assert refund(provider, paid.reference, amount=500) == first
    assert [(row.kind, row.amount) for row in ledger()] == [("charge", 1500), ("refund", 500)]


def test_partial_refunds_may_add_up_to_the_charge(provider, save_card):
    paid = charge(provider, save_card())
    assert refund(provider, paid.reference, key="r1", amount=1000).status == "succeeded"
    assert refund(provider, paid.reference, key="r2", amount=500).status == "succeeded"


def test_refunding_more_than_is_left_is_refused(provider, save_card):
    paid = charge(provider, save_card())
    refund(provider, paid.reference, key="r1", amount=1000)
    refused = refund(provider, paid.reference, key="r2", amount=501)
    assert refused.status == "failed"
    assert refused.failure_message == "Only 500 of the charge is left to refund, not 501."
    assert [row.kind for row in ledger()] == ["charge", "refund"]


def test_concurrent_refunds_never_refund_more_than_the_charge(app, provider, save_card):
    paid = charge(provider, save_card())
    start = threading.Barrier(10)
    statuses = []

    def give_back(key):
        with app.app_context():
            start.wait()
            statuses.append(refund(provider, paid.reference, key=key, amount=500).status)

    threads = [threading.Thread(target=give_back, args=(f"r{n}",)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == ["failed"] * 7 + ["succeeded"] * 3
    assert sum(row.amount for row in ledger() if row.kind == "refund") == 1500


def test_refunding_an_unknown_or_declined_charge_fails(provider, save_card):
    charge(provider, save_card("pm_card_chargeDeclined"))
    assert refund(provider, "sbx_ch_unknown").status == "failed"
    assert refund(provider, None).status == "failed"


def test_refunding_in_another_currency_fails(provider, save_card):
    paid = charge(provider, save_card())
    assert refund(provider, paid.reference, currency="USD").status == "failed"


# --- Injected faults --------------------------------------------------------------------------


def test_fail_next_raises_before_anything_is_charged(provider, save_card):
    method = save_card()
    fail_next()
    with pytest.raises(TransientProviderError):
        charge(provider, method)
    assert ledger() == []
    assert charge(provider, method).succeeded  # the retry goes through
    assert len(charges()) == 1


def test_fail_next_fails_that_many_charges(provider, save_card):
    method = save_card()
    fail_next(times=2)
    for _ in range(2):
        with pytest.raises(TransientProviderError):
            charge(provider, method)
    assert charge(provider, method).succeeded


def test_fail_next_after_commit_charges_then_a_retry_returns_that_charge(provider, save_card):
    method = save_card()
    fail_next(after_commit=True)
    with pytest.raises(TransientProviderError):
        charge(provider, method, key="lost-response")
    [recorded] = charges()
    retried = charge(provider, method, key="lost-response")
    assert retried.succeeded and retried.reference == recorded.reference
    assert len(charges()) == 1


# --- The card form ----------------------------------------------------------------------------


@pytest.fixture
def form_url(provider, customer):
    return provider.setup_url(customer=customer, return_url=RETURN_URL)


def post_card(client, url, number="4242 4242 4242 4242", expiry=None, cvc="123"):
    page = client.get(url)
    expiry = expiry or f"12/{(utcnow().year + 2) % 100:02d}"
    return client.post(url, data={"csrf_token": csrf_token(page.text), "number": number,
                                  "expiry": expiry, "cvc": cvc})


def test_setup_url_points_to_the_card_form(form_url):
    assert urlsplit(form_url).path == "/sandbox/cards/new"
    assert parse_qs(urlsplit(form_url).query)["state"]


def test_card_form_shows_the_fields_and_test_cards(client, form_url):
    page = client.get(form_url)
    assert page.status_code == 200
    for text in ('name="number"', 'name="expiry"', 'name="cvc"', "4242 4242 4242 4242",
                 "4000 0000 0000 0002"):
        assert text in page.text
    assert "<script" not in page.text and "style=" not in page.text


def test_card_form_rejects_a_bad_number_with_a_field_error(client, form_url):
    answer = post_card(client, form_url, number="4242 4242 4242 4241")
    assert answer.status_code == 200
    assert "Enter a valid card number." in answer.text
    assert PaymentMethod.select().count() == 0


def test_card_form_rejects_a_real_card_number(client, form_url):
    answer = post_card(client, form_url, number="4111 1111 1111 1111")
    assert answer.status_code == 200
    assert "only accepts test cards" in answer.text
    assert PaymentMethod.select().count() == 0


@pytest.mark.parametrize(("field", "value", "error"), [
    ("expiry", "01/20", "This card has expired."),
    ("expiry", "13/40", "Enter the expiry as MM/YY."),
    ("cvc", "12", "Enter the 3 or 4 digits on the back of the card."),
])
def test_card_form_checks_expiry_and_cvc(client, form_url, field, value, error):
    answer = post_card(client, form_url, **{field: value})
    assert answer.status_code == 200 and error in answer.text
    assert PaymentMethod.select().count() == 0


def test_card_form_saves_a_good_card_and_returns_with_it(client, form_url, customer):
    answer = post_card(client, form_url, number="5555 5555 5555 4444", expiry="08/39")
    assert answer.status_code == 303
    location = urlsplit(answer.headers["Location"])
    assert location._replace(query="").geturl() == "https://acme.test/account"
    query = parse_qs(location.query)
    assert query["tab"] == ["billing"]
    method = PaymentMethod.get_by_id(query["payment_method"][0])
    assert (method.business_id, method.mode, method.customer_id, method.provider) == (
        customer.business_id, "test", customer.id, "sandbox")
    assert (method.brand, method.last4, method.exp_month, method.exp_year) == (
        "mastercard", "4444", 8, 2039)
    assert method.provider_token.startswith("sbx_tok_")
    assert "5555555555554444" not in database_text()
    assert "5555 5555 5555 4444" not in database_text()


def test_card_form_refuses_a_tampered_state(client, form_url):
    answer = client.get(form_url.replace("state=", "state=x"))
    assert answer.status_code == 400
    assert answer.mimetype == "text/plain" and "invalid or has expired" in answer.text


def test_card_form_refuses_an_expired_state(client, form_url):
    with time_machine.travel(utcnow() + timedelta(hours=1, minutes=1)):
        answer = client.get(form_url)
    assert answer.status_code == 400
