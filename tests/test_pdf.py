"""The built-in WeasyPrint invoice renderer, and the invoice template it prints."""

import base64
import io
import secrets
import socket
import threading
from datetime import UTC, datetime

import pytest
from flask import render_template
from pypdf import PdfReader

from core.hookspecs import hookimpl
from core.models import Business, Customer, Invoice, Payment
from core.money import format_money
from core.plugins import registry
from plugins.pdf import ASSETS_URL, bundled_asset, url_fetcher, warm_up

# A 1×1 PNG, as a business logo is stored: a data: URI, so rendering never fetches anything.
PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
         "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def render_invoice_html(invoice, locale="en"):
    """The invoice template rendered as the core does, with ``money`` for ``locale``."""
    return render_template("invoice/invoice.html", invoice=invoice, locale=locale,
                           money=lambda amount, currency: format_money(amount, currency, locale))


def make_invoice(business: Business, customer: Customer, **changes) -> Invoice:
    """A numbered invoice of a succeeded payment, its contents frozen as the core stores them."""
    payment = Payment.create(business=business, mode=customer.mode, customer=customer,
                             status="succeeded", amount=11880, tax=1980, currency="USD",
                             idempotency_key=secrets.token_hex(16))
    fields = dict(
        business=business, mode=customer.mode, customer=customer, payment=payment, number=42,
        issued_at=datetime(2025, 3, 14, 9, 30, tzinfo=UTC), currency="USD",
        lines=[{"description": "Acme Pro — annual plan", "quantity": 1, "unit_amount": 9000,
                "amount": 9000},
               {"description": "Extra seat", "quantity": 2, "unit_amount": 450, "amount": 900}],
        subtotal=9900, tax=1980, total=11880,
        seller={"name": business.name, "legal_name": business.legal_name,
                "address": business.address, "tax_id": "FR12345678901",
                "support_email": business.support_email, "logo": business.logo},
        buyer={"name": customer.name, "email": customer.email, "tax_id": None,
               "address": {"street": "5 Harbour Road", "city": "Leeds", "state": "",
                           "zipcode": "LS1 4AP", "country": "GB"}},
        payment_details={"method": "Visa •••• 4242", "status": "paid",
                         "paid_at": "2025-03-14T09:29:58+00:00"})
    fields.update(changes)
    return Invoice.create(**fields)


def render(app, invoice, html=None):
    return registry(app).pm.hook.render_invoice(
        invoice=invoice, html=render_invoice_html(invoice) if html is None else html, app=app)


def pdf_text(pdf: bytes) -> str:
    """The PDF's text with all whitespace removed, so line breaks never split a match."""
    reader = PdfReader(io.BytesIO(pdf))
    return "".join("".join(page.extract_text() for page in reader.pages).split())


def squash(text: str) -> str:
    return "".join(text.split())


def embedded_files(pdf: bytes) -> list:
    """Every file the PDF carries: document attachments and file-attachment annotations."""
    reader = PdfReader(io.BytesIO(pdf))
    files = list(reader.attachments)
    for page in reader.pages:
        for annotation in page.get("/Annots") or ():
            if annotation.get_object().get("/Subtype") == "/FileAttachment":
                files.append(annotation.get_object())
    return files


@pytest.fixture
def listener():
    """A TCP listener on 127.0.0.1: yields its port and the list of requests it received."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)
    received, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    received.append(conn.recv(4096))
                    conn.sendall(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    received.append(b"")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], received
    stop.set()
    thread.join()
    server.close()


def test_renders_a_pdf(app, business, customer):
    assert render(app, make_invoice(business, customer)).startswith(b"%PDF-")


def test_pdf_shows_number_total_seller_and_buyer(app, business, customer):
    invoice = make_invoice(business, customer)
    text = pdf_text(render(app, invoice))
    assert invoice.display_number == "T-000042"
    for expected in ("T-000042", "$118.80", "$90.00", "$19.80", "Acme Software Ltd",
                     "Ann Example", "ann@example.com", "FR12345678901", "Visa •••• 4242", "Paid"):
        assert squash(expected) in text, expected


def test_pdf_formats_money_for_the_locale(app, business, customer):
    invoice = make_invoice(business, customer, currency="EUR")
    pdf = registry(app).pm.hook.render_invoice(
        invoice=invoice, html=render_invoice_html(invoice, locale="fr"), app=app)
    assert squash("118,80 €") in pdf_text(pdf)


def test_pdf_shows_a_currency_without_decimals(app, business, customer):
    invoice = make_invoice(business, customer, currency="JPY", subtotal=9900, tax=990,
                           total=10890)
    assert "¥10,890" in pdf_text(render(app, invoice))


def test_live_invoice_number_has_no_test_prefix(app, business):
    customer = Customer.create(business=business, mode="live", email="bo@example.com",
                               name="Bo Live")
    text = pdf_text(render(app, make_invoice(business, customer, number=7)))
    assert "000007" in text and "T-000007" not in text


def test_seller_logo_from_a_data_uri_is_embedded(app, business, customer):
    business.logo = PIXEL
    pdf = render(app, make_invoice(business, customer))
    assert len(PdfReader(io.BytesIO(pdf)).pages[0].images) == 1


def test_markup_in_a_customer_name_prints_literally_and_fetches_nothing(
        app, business, listener):
    port, received = listener
    name = (f'<img src="http://127.0.0.1:{port}/x">'
            '<link rel="attachment" href="file:///etc/passwd">')
    customer = Customer.create(business=business, mode="test", email="eve@example.com",
                               name=name)
    pdf = render(app, make_invoice(business, customer))
    assert squash(name) in pdf_text(pdf)
    assert received == []
    assert embedded_files(pdf) == []


def test_raw_html_cannot_reach_the_network_or_local_files(app, business, customer, listener):
    port, received = listener
    origin = f"http://127.0.0.1:{port}"
    html = f"""<!doctype html>
      <link rel="stylesheet" href="{origin}/style.css">
      <link rel="attachment" href="file:///etc/passwd">
      <link rel="attachment" href="../../core/models.py">
      <style>
        @import url("{origin}/import.css");
        @font-face {{ font-family: Remote; src: url("{origin}/font.woff2"); }}
        body {{ font-family: Remote; background: url("{origin}/background.png"); }}
      </style>
      <p>Hello</p>
      <img src="{origin}/image.png"><img src="file:///etc/hostname">
      <object data="{origin}/object"></object><embed src="{origin}/embed">
      <a rel="attachment" href="file:///etc/hostname">attached</a>
      <a rel="attachment" href="{origin}/attached">attached</a>
    """
    pdf = render(app, make_invoice(business, customer), html=html)
    assert pdf.startswith(b"%PDF-")
    assert received == []
    assert embedded_files(pdf) == []


def test_listener_hears_weasyprint_default_fetcher(listener):
    # A control for the two tests above: without our fetcher, the same markup does fetch.
    from weasyprint import HTML

    port, received = listener
    HTML(string=f'<img src="http://127.0.0.1:{port}/x">').write_pdf()
    assert len(received) == 1 and received[0].startswith(b"GET /x ")


def test_fetcher_serves_bundled_assets_and_data_uris():
    fetcher = url_fetcher()
    css = fetcher.fetch(ASSETS_URL + "invoice.css")
    assert css.content_type == "text/css" and b"@page" in css.read()
    data = fetcher.fetch("data:text/plain;base64," + base64.b64encode(b"hi").decode())
    assert data.read() == b"hi"


@pytest.mark.parametrize("url", [
    ASSETS_URL + "../base.html",
    ASSETS_URL + "..%2F..%2Fcore%2Fmodels.py",
    ASSETS_URL + "missing.css",
    "file:///etc/passwd",
    "file://example.com" + ASSETS_URL.removeprefix("file://") + "invoice.css",
    "http://127.0.0.1/invoice.css",
    "https://example.com/invoice.css",
    "ftp://example.com/invoice.css",
])
def test_fetcher_refuses_everything_else(url):
    assert bundled_asset(url) is None
    with pytest.raises(ValueError):
        url_fetcher().fetch(url)


def test_a_third_party_renderer_wins_over_the_built_in(make_app, business, customer):
    class CustomRenderer:
        name = "custom-renderer"

        @hookimpl
        def render_invoice(self, invoice, html, app):
            return b"%PDF-custom"

    app = make_app(plugins=[CustomRenderer()])
    with app.app_context():
        assert render(app, make_invoice(business, customer)) == b"%PDF-custom"


def test_worker_warms_weasyprint_up_before_forking(app, monkeypatch):
    warmed = []
    monkeypatch.setattr("plugins.pdf.warm_up", lambda: warmed.append(True))
    registry(app).pm.hook.prepare_worker(app=app)
    assert warmed == [True]


def test_warm_up_renders_a_tiny_document():
    warm_up()
