"""Copy that reads right: future renewals read as future, French elides before a name, a
name cannot be blank, and signed-out and error pages speak the customer's language."""

import pytest
from conftest import csrf_token
from flask import render_template_string
from flask_babel import force_locale
from test_portal import post, sign_in, text

from core.i18n import elide
from core.models import Customer, Product


@pytest.fixture
def app(make_app, heard):
    app = make_app(plugins=[heard])
    with app.app_context():
        yield app


@pytest.fixture
def camille(client, customer):
    """A French customer, signed in."""
    Customer.update(preferred_locale="fr").where(Customer.id == customer.id).execute()
    sign_in(client, customer)
    return client


def test_a_renewal_to_come_reads_as_future_in_french(camille, customer, product, subscribe):
    subscribe(customer, product)
    assert "Se renouvelle le" in text(camille.get("/portal/"))
    assert "Renouvelé" not in text(camille.get("/portal/subscriptions"))


def test_french_elides_de_before_a_product_name_that_starts_with_a_vowel(
        camille, customer, business, subscribe):
    acme = Product.create(business=business, mode="test", name="Acme Team", price=1500,
                          currency="EUR", is_recurring=True)
    atelier = Product.create(business=business, mode="test", name="Atelier", price=4500,
                             currency="EUR", is_recurring=True)
    sub, _ = subscribe(customer, acme)

    page = text(camille.get(f"/portal/subscriptions/{sub.id}/plan/{atelier.id}"))
    assert "Passer d’Acme Team à Atelier" in page


@pytest.mark.parametrize("words, french", [
    ("Passer de Acme à Zed", "Passer d’Acme à Zed"),
    ("Passer de Zed à Acme", "Passer de Zed à Acme"),
    ("le abonnement de Hélène", "l’abonnement de Hélène"),  # an h is left as written
])
def test_elision_in_french_only_before_a_vowel(app, words, french):
    assert elide(words, "fr") == french
    assert elide(words, "en") == words


def test_elision_keeps_names_escaped(app):
    with app.test_request_context(), force_locale("fr"):
        html = render_template_string('{{ _("Change from %(old)s to %(new)s", old=old, new="Z") }}',
                                      old="<b>Acme</b>")
    assert "&lt;b&gt;Acme&lt;/b&gt;" in html and "<b>" not in html


def test_a_blank_name_is_refused_and_the_old_one_kept(client, customer):
    sign_in(client, customer)
    answer = post(client, "/portal/profile", {"name": "   ", "locale": "en"})
    assert answer.status_code == 400 and "Enter your name." in text(answer)
    assert customer.refresh().name == "Ann Example"


def test_signing_out_everywhere_is_said_in_the_customers_language_and_brand(camille, business):
    page = camille.get("/portal/profile").text
    answer = camille.post("/logout/everywhere", data={"csrf_token": csrf_token(page)},
                          follow_redirects=True)
    words = text(answer)
    assert business.name in words and "Vous êtes déconnecté" in words
    assert "You are signed out" not in words


def test_a_missing_portal_page_is_in_the_customers_language(camille):
    answer = camille.get("/portal/subscriptions/sub_doesnotexist")
    assert answer.status_code == 404
    assert 'lang="fr"' in answer.text and "Page not found" not in answer.text
