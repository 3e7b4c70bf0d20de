"""Invoice lines worded when the invoice is shown, in the reader's language, from the facts
each line keeps (kind, product, quantity, period); numbers and amounts never change."""

import io

import pytest
from pypdf import PdfReader
from test_pdf import make_invoice

from core.billing import invoice_pdf

RENEWAL = {"description": "Acme Pro (30 Nov 2026 – 30 Dec 2026)", "kind": "renewal",
           "product_name": "Acme Pro", "quantity": 1, "unit_amount": 9000, "amount": 9000,
           "period_start": "2026-11-30T09:00:00Z", "period_end": "2026-12-30T09:00:00Z"}
UPGRADE = {"description": "Acme Team × 1 (prorated to 30 Dec 2026)", "kind": "plan_change",
           "product_name": "Acme Team", "plan_quantity": 1, "quantity": 1, "unit_amount": 900,
           "amount": 900, "period_start": "2026-12-12T10:00:00Z",
           "period_end": "2026-12-30T09:00:00Z"}


def printed(invoice, locale) -> str:
    pdf = invoice_pdf(invoice, locale)
    return " ".join(" ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages).split())


@pytest.mark.parametrize("locale, renewal, upgrade", [
    ("en", "Acme Pro (Nov 30, 2026 – Dec 30, 2026)", "Acme Team × 1, prorated until Dec 30, 2026"),
    ("fr", "Acme Pro (du 30 nov. 2026 au 30 déc. 2026)",
     "Acme Team × 1, au prorata jusqu’au 30 déc. 2026"),
    ("de", "Acme Pro (30.11.2026 – 30.12.2026)", "Acme Team × 1, anteilig bis 30.12.2026"),
])
def test_lines_are_worded_in_the_readers_language_from_their_facts(
        app, business, customer, locale, renewal, upgrade):
    invoice = make_invoice(business, customer, lines=[RENEWAL, UPGRADE])

    text = printed(invoice, locale)
    assert renewal in text and upgrade in text
    assert "prorated to" not in text or locale == "en"


SEATS_AND_ADD_ON = {**UPGRADE, "product_name": "Acme Team", "plan_quantity": 3,
                   "addons": [{"name": "Storage", "quantity": 1}, {"name": "Support", "quantity": 2}],
                   "from_product_name": "Acme Team", "from_quantity": 2, "from_addons": []}


@pytest.mark.parametrize("locale, wording", [
    ("en", "Acme Team × 3 with Storage × 1 and Support × 2 (was Acme Team × 2), "
           "prorated until Dec 30, 2026"),
    ("fr", "Acme Team × 3 avec Storage × 1 et Support × 2 (auparavant Acme Team × 2), "
           "au prorata jusqu’au 30 déc. 2026"),
])
def test_a_change_of_seats_and_add_ons_names_the_plan_it_leaves_and_the_one_it_makes(
        app, business, customer, locale, wording):
    invoice = make_invoice(business, customer, lines=[SEATS_AND_ADD_ON])

    assert wording in printed(invoice, locale)


def test_numbers_and_amounts_are_the_same_in_every_language(app, business, customer):
    invoice = make_invoice(business, customer, lines=[RENEWAL, UPGRADE])

    english, french = printed(invoice, "en"), printed(invoice, "fr")
    assert "T-000042" in english and "T-000042" in french
    assert "$118.80" in english and "118,80 $US" in french


def test_a_line_kept_without_its_facts_reads_as_it_was_written(app, business, customer):
    invoice = make_invoice(business, customer, lines=[
        {"description": "Setup fee", "quantity": 1, "unit_amount": 9900, "amount": 9900}])

    assert "Setup fee" in printed(invoice, "fr")


def test_a_french_customers_renewal_invoice_reads_in_french_end_to_end(
        app, customer, product, subscribe):
    import time_machine

    from core import billing
    from core.models import Invoice, Payment

    customer.preferred_locale = "fr"
    customer.save()
    sub, _ = subscribe(customer, product)
    with time_machine.travel(sub.next_billing_date, tick=False):
        billing.sweep()
    renewal = Payment.get((Payment.subscription == sub) & (Payment.kind == "renewal"))
    invoice = Invoice.get(Invoice.payment == renewal)

    text = printed(invoice, "fr")
    assert "FACTURE" in text and "Pro (du " in text and " au " in text  # "Pro (du 1 déc. … au …)"
    assert " Nov " not in text and " Dec " not in text and "prorated" not in text
