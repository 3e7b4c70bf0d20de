"""Every script a customer's name or address can hold prints on their invoice (the fonts the
set-up installs hold a glyph for each character: no ``.notdef`` box, checked with fontTools in
the fonts embedded in the PDF) and travels intact in their e-mails."""

import io
import re

import pytest
from fontTools.ttLib import TTFont
from pypdf import PdfReader
from test_mail import notification, notify
from test_pdf import make_invoice, pdf_text

from core.billing import invoice_pdf
from core.models import Customer
from plugins.mail import outbox_messages

# A name and an address as a customer of each script would type them.
SCRIPTS = {
    "Latin": ("Zoë Ørsted-Łukasiewicz", "Strøget 1", "København"),
    "Greek": ("Γιώργος Παπαδόπουλος", "Οδός Ερμού 12", "Αθήνα"),
    "Cyrillic": ("Анна Иванова", "ул. Тверская, 7", "Москва"),
    "Arabic": ("محمد العلي", "شارع الملك فهد ١٢", "الرياض"),
    "Hebrew": ("דוד כהן", "רחוב הרצל 5", "תל אביב"),
    "Devanagari": ("अनिल कुमार", "महात्मा गांधी मार्ग", "मुंबई"),
    "Thai": ("สมชาย ใจดี", "ถนนสุขุมวิท", "กรุงเทพมหานคร"),
    "Chinese": ("王小明", "南京东路 100 号", "上海市"),
    "Japanese": ("山田 太郎", "丸の内一丁目", "千代田区"),
    "Korean": ("김민준", "세종대로 110", "서울특별시"),
}


def glyphs_without_outline(pdf: bytes) -> list[tuple[str, int]]:
    """``(font, glyph id)`` of every glyph the PDF draws that its embedded font does not hold:
    ``.notdef`` (id 0) or an id past the font's glyphs, where WeasyPrint puts a character
    no font could draw."""
    reader = PdfReader(io.BytesIO(pdf))
    missing = []
    for page in reader.pages:
        glyph_counts = {}
        for name, font in page["/Resources"]["/Font"].items():
            font = font.get_object()
            descriptor = font["/DescendantFonts"][0].get_object()["/FontDescriptor"].get_object()
            data = (descriptor.get("/FontFile2") or descriptor["/FontFile3"]).get_object().get_data()
            glyph_counts[name] = (str(font["/BaseFont"]), len(TTFont(io.BytesIO(data)).getGlyphOrder()))
        current = None
        # WeasyPrint writes glyph ids as 2-byte hex strings after each font selection.
        for match in re.finditer(rb"/(\S+) [\d.]+ Tf|<([0-9a-fA-F]*)>", page.get_contents().get_data()):
            if match[1]:
                current = glyph_counts["/" + match[1].decode()]
                continue
            raw = bytes.fromhex(match[2].decode())
            for i in range(0, len(raw), 2):
                glyph = int.from_bytes(raw[i:i + 2], "big")
                if glyph == 0 or glyph >= current[1]:
                    missing.append((current[0], glyph))
    return missing


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_invoice_prints_every_glyph_of_a_name_and_address_in(script, app, business, customer, caplog):
    name, street, city = SCRIPTS[script]
    customer.name = name
    invoice = make_invoice(business, customer, buyer={
        "name": name, "email": customer.email, "tax_id": None,
        "address": {"street": street, "city": city, "zipcode": "10001", "country": "FR"}})

    pdf = invoice_pdf(invoice)

    assert glyphs_without_outline(pdf) == []
    assert ".notdef" not in caplog.text
    if script not in ("Arabic", "Hebrew", "Thai", "Devanagari"):  # shaped text extracts unevenly
        assert "".join(name.split()) in pdf_text(pdf)


def test_a_character_no_font_holds_is_found(app, business, customer):
    """The check above sees a missing glyph (a private-use character no font draws)."""
    invoice = make_invoice(business, customer, buyer={"name": "Ann \ue000", "email": customer.email})

    assert glyphs_without_outline(invoice_pdf(invoice)) != []


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_an_email_carries_a_name_in(script, app, business):
    name = SCRIPTS[script][0]
    customer = Customer.create(business=business, mode="test", email="kim@example.com", name=name)
    notify(app, notification(business, customer, link="http://portal.test/session/x"))

    [message] = outbox_messages(app)
    assert message["To"].addresses[0].display_name == name
    assert name in message.get_body(("plain",)).get_content()
    assert name in message.get_body(("html",)).get_content()
