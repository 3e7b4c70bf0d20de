"""Twelve languages: every catalog complete, no template text outside a translation call, and
for a customer of each language the overview, billing history and invoice PDF in their words
and date format (Arabic right to left), with a screenshot of the overview at 360 px."""

import io
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from babel.dates import format_date
from babel.messages.pofile import read_po
from babel.support import Translations
from conftest import csrf_token
from jinja2 import Environment
from pypdf import PdfReader

from core import auth
from core.i18n import LOCALES, TRANSLATIONS, language_code
from core.models import Customer, Invoice

ROOT = Path(__file__).resolve().parent.parent

# Pages, e-mails and invoices a customer sees, the plugins' own pages included
CUSTOMER_TEMPLATES = ["templates/portal", "templates/signin", "templates/email", "templates/invoice",
                      "templates/base.html", "templates/branded.html", "templates/error.html",
                      "plugins/sandbox/templates", "plugins/stripe/portico_stripe/templates"]
NOT_WORDS = {"Portico", "PDF"}  # the product's name, and a file type every language writes so

# The word for "invoice" as a customer of each country reads it: a check that does not come
# from the catalogs themselves
INVOICE_WORD = {"en": "Invoice", "fr": "Facture", "de": "Rechnung", "es": "Factura",
                "it": "Fattura", "pt_BR": "Fatura", "nl": "Factuur", "pl": "Faktura",
                "sv": "Faktura", "ja": "請求書", "zh_Hans": "发票", "ar": "فاتورة"}


def extracted_messages(tmp_path) -> set:
    """The messages of the code and templates, extracted now as the README says."""
    pot = tmp_path / "messages.pot"
    subprocess.run([str(Path(sys.executable).parent / "pybabel"), "-q", "extract", "-F", "babel.cfg",
                    "-k", "lazy_gettext", "-o", str(pot), "."], cwd=ROOT, check=True)
    with pot.open("rb") as source:
        return {message.id for message in read_po(source) if message.id}


@pytest.mark.parametrize("locale", [locale for locale in LOCALES if locale != "en"])
def test_the_catalog_translates_every_message_and_leaves_none_fuzzy(locale, tmp_path):
    with (TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po").open("rb") as source:
        catalog = read_po(source, locale=locale)
    translated = {message.id for message in catalog if message.id and not message.fuzzy
                  and all(message.string if isinstance(message.string, tuple) else [message.string])}

    missing = [str(message) for message in extracted_messages(tmp_path) - translated]
    assert missing == []


@pytest.mark.parametrize("locale", [locale for locale in LOCALES if locale != "en"])
def test_each_translation_reads_once_and_keeps_its_placeholders(locale):
    with (TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po").open("rb") as source:
        catalog = read_po(source, locale=locale)
    wrong = []
    for message in catalog:
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        wanted = set(re.findall(r"%\((\w+)\)", ids[-1]))
        for string in strings:
            half = len(string) // 2
            if string and (string[:half] == string[half:] or set(re.findall(r"%\((\w+)\)", string))
                           - wanted - {"num"}):
                wrong.append(ids[0])
    assert wrong == []


def template_files():
    for name in CUSTOMER_TEMPLATES:
        path = ROOT / name
        yield from [path] if path.is_file() else sorted(
            file for file in path.rglob("*") if file.suffix in (".html", ".txt"))


def words_outside_translation(path: Path) -> list[str]:
    """The words a template writes itself: its text outside tags, Jinja expressions and
    blocks, which therefore no translation call covers."""
    env = Environment(extensions=["jinja2.ext.i18n"])
    text = []
    for _line, kind, value in env.lex(path.read_text()):
        text.append(value if kind == "data" else "\x00")
    html = "".join(text)
    html = re.sub(r"<!--.*?-->|<(style|script)\b.*?</\1>", " ", html, flags=re.S)
    html = re.sub(r"<[^>]*>", " ", html)
    html = re.sub(r"&#?\w+;", " ", html)
    return [word for word in re.findall(r"[^\W\d_]{2,}", html) if word not in NOT_WORDS]


@pytest.mark.parametrize("path", list(template_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_customer_template_writes_no_text_outside_a_translation_call(path):
    assert words_outside_translation(path) == []


def test_the_template_check_finds_text_left_untranslated(tmp_path):
    template = tmp_path / "page.html"
    template.write_text('<h1 class="title">{{ _("Hello") }}</h1><p>Welcome back, {{ name }}</p>')
    assert words_outside_translation(template) == ["Welcome", "back"]


# --- A customer of each language --------------------------------------------------------------


@pytest.fixture
def app(make_app, heard):
    app = make_app(plugins=[heard])
    with app.app_context():
        yield app


def words(text: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", text).split())


def sign_in(client, customer):
    path = urlsplit(auth.sign_in_link(customer)).path
    client.post(path, data={"csrf_token": csrf_token(client.get(path).text)})


@pytest.fixture
def customer_of(business, product, subscribe):
    """A subscribed customer writing ``locale``, with an invoice; returns (customer, sub, invoice)."""

    def make(locale):
        customer = Customer.create(business=business, mode="test", email=f"{locale}@example.com",
                                   name="Kim Lee", preferred_locale=language_code(locale),
                                   billing_address={"country": "DE", "city": "Berlin"})
        sub, payment = subscribe(customer, product)
        return customer, sub, Invoice.get(Invoice.payment == payment)

    return make


@pytest.mark.parametrize("locale", list(LOCALES))
def test_overview_billing_history_and_invoice_are_in_the_customers_language(
        locale, client, customer_of):
    customer, sub, invoice = customer_of(locale)
    translate = Translations.load(str(TRANSLATIONS), [locale]).gettext
    sign_in(client, customer)

    overview = client.get("/portal/").text
    assert f'lang="{locale.replace("_", "-")}"' in overview
    assert f'dir="{"rtl" if locale == "ar" else "ltr"}"' in overview
    assert translate("Subscriptions") in words(overview)
    assert format_date(sub.next_billing_date, "long", locale=locale) in words(overview)

    history = words(client.get("/portal/billing").text)
    assert translate("Billing history") in history
    assert format_date(invoice.issued_at, "medium", locale=locale) in history

    pdf = client.get(f"/portal/invoices/{invoice.id}.pdf").data
    (ROOT / "test-output").mkdir(exist_ok=True)
    (ROOT / "test-output" / f"invoice-{locale}.pdf").write_bytes(pdf)
    # pypdf reads a subset font with a custom encoding as two-byte codes (NULs between the
    # digits); poppler's pdftotext shows those pages intact, so the NULs are pypdf's, not ours
    printed = "".join("".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
                      .replace("\x00", "").split())
    assert INVOICE_WORD[locale].casefold() in printed.casefold()
    if locale != "ar":  # pypdf gives right-to-left runs in visual order
        assert "".join(format_date(invoice.issued_at, "long", locale=locale).split()) in printed
        assert "".join(translate("Bill to").split()).casefold() in printed.casefold()


def test_a_customer_who_switches_language_downloads_the_invoice_in_the_new_one(client, customer_of):
    customer, _, invoice = customer_of("en")
    sign_in(client, customer)
    english = client.get(f"/portal/invoices/{invoice.id}.pdf").data
    page = client.get("/portal/billing").text
    client.post("/language", data={"locale": "de", "next": "/portal/billing",
                                   "csrf_token": csrf_token(page)})
    german = client.get(f"/portal/invoices/{invoice.id}.pdf").data

    text = {language: "".join(PdfReader(io.BytesIO(pdf)).pages[0].extract_text().split())
            for language, pdf in (("en", english), ("de", german))}
    assert "INVOICE" in text["en"] and "RECHNUNG" in text["de"]
    assert invoice.display_number in text["de"] and "18,00" in text["de"]
    assert sorted(row.locale for row in invoice.pdfs) == ["de", "en"]
    assert "Seite1von1" in text["de"] and "Page1of1" in text["en"]
    assert client.get(f"/portal/invoices/{invoice.id}.pdf").data == german  # kept, not re-rendered


@pytest.mark.browser
@pytest.mark.parametrize("locale", list(LOCALES))
def test_the_overview_at_360_px_in_each_language(locale, served, page, customer_of):
    customer, _, _ = customer_of(locale)
    page.set_viewport_size({"width": 360, "height": 800})
    page.goto(auth.sign_in_link(customer))
    page.locator("form[data-continue] button").click()
    page.wait_for_url(f"{served}/portal/")
    page.screenshot_as(f"overview-{locale}", width=360)

    # nothing spills sideways, and Arabic reads from the right: the brand sits on the right
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    brand = page.locator(".brand").bounding_box()
    assert (brand["x"] > 180) == (locale == "ar")
    if locale == "ar":
        page.screenshot_as("overview-ar", width=1280)
