"""Languages: twelve, with Flask-Babel, for every page, e-mail and invoice a customer sees.

The locale is, in order: the signed-in customer's ``preferred_locale``; the choice made with
the language switch (kept in the session, and saved to the customer when signed in); the
browser's ``Accept-Language``; English. Jobs (e-mails, invoice PDFs) render under
``flask_babel.force_locale(customer_locale(customer))``. Catalogs live in ``core/translations``
(``.po`` in the repository, ``.mo`` compiled by the set-up, or here when missing or stale).

Locales are Babel's names (``pt_BR``, ``zh_Hans``); a customer's ``preferred_locale`` keeps
Dodo's language code (``pt``, ``zh``), which ``supported`` maps to ours. Arabic is written
right to left: pages and invoices get ``dir="rtl"`` and mirror through CSS logical properties.
"""

import os
import re
from pathlib import Path

from babel import Locale as BabelLocale
from babel.lists import format_list
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import (
    Blueprint,
    abort,
    g,
    has_app_context,
    has_request_context,
    redirect,
    request,
    session,
    url_for,
)
from flask_babel import Babel, format_date, get_locale, get_translations, gettext, lazy_gettext
from flask_login import current_user
from jinja2 import pass_context
from markupsafe import Markup

from core.models import Customer
from core.text import local_path

# Each language named in itself, for the language switch
LOCALES = {"en": "English", "fr": "Français", "de": "Deutsch", "es": "Español",
           "it": "Italiano", "pt_BR": "Português (Brasil)", "nl": "Nederlands", "pl": "Polski",
           "sv": "Svenska", "ja": "日本語", "zh_Hans": "简体中文", "ar": "العربية"}
BY_LANGUAGE = {locale.split("_")[0]: locale for locale in LOCALES}
TRADITIONAL_CHINESE = {"hant", "tw", "hk", "mo"}  # written with other characters: not zh_Hans
RIGHT_TO_LEFT = {locale for locale in LOCALES
                 if BabelLocale.parse(locale).character_order == "right-to-left"}
DEFAULT_LOCALE = "en"
TRANSLATIONS = Path(__file__).resolve().parent / "translations"
MERCHANT_PAGES = {"dashboard", "api"}  # blueprints in English; every other page is a customer's

bp = Blueprint("i18n", __name__)
babel = Babel()


def supported(locale: str | None) -> str | None:
    """``locale`` (``fr``, ``fr-CA``, ``pt``, ``zh-CN``, ``zh_Hans``) as one of ``LOCALES``,
    or ``None`` (Traditional Chinese is not Simplified Chinese)."""
    parts = (locale or "").replace("-", "_").lower().split("_")
    if parts[0] == "zh" and TRADITIONAL_CHINESE & set(parts[1:]):
        return None
    return BY_LANGUAGE.get(parts[0])


def language_code(locale: str) -> str:
    """What a customer's ``preferred_locale`` keeps: Dodo's language code (``pt_BR`` → ``pt``)."""
    return locale.split("_")[0]


def html_lang(locale: str) -> str:
    """``locale`` as HTML's ``lang`` wants it (BCP 47): ``pt_BR`` → ``pt-BR``."""
    return locale.replace("_", "-")


def text_direction(locale: str) -> str:
    """``rtl`` for a language written right to left (Arabic), else ``ltr``."""
    return "rtl" if locale in RIGHT_TO_LEFT else "ltr"


def customer_locale(customer) -> str:
    """The language to write to ``customer`` in, outside a request (e-mails, PDFs)."""
    return supported(customer.preferred_locale if customer else None) or DEFAULT_LOCALE


def select_locale() -> str:
    """Flask-Babel's locale selector for the current request (see the module docstring)."""
    if not has_request_context():
        return DEFAULT_LOCALE
    user = current_user
    if getattr(user, "is_customer", False) and supported(user.customer.preferred_locale):
        return supported(user.customer.preferred_locale)
    if supported(session.get("locale")):
        return supported(session.get("locale"))
    for language, _quality in request.accept_languages:  # best first
        if supported(language):
            return supported(language)
    return DEFAULT_LOCALE


def current_locale() -> str:
    return str(get_locale() or DEFAULT_LOCALE)


@bp.post("/language")
def choose_language():
    """The language switch: remember the choice, for a signed-in customer in their profile,
    and go back to the page it was made on."""
    locale = supported(request.form.get("locale"))
    if locale is None:
        abort(400, "Unknown language.")
    session["locale"] = locale
    if current_user.is_customer:
        Customer.update(preferred_locale=language_code(locale)).where(
            Customer.id == current_user.customer.id).execute()
    return redirect(local_path(request.form.get("next")) or url_for("portal.home"), 303)


def formats() -> dict:
    """What the current locale formats with, looked up once per request (kept in ``g``, so
    never shared between requests): ``{"locale": "fr", "translations": …, "memo": {}}``.

    ``memo`` keeps each label, amount or date already formatted under this locale, so a page
    that repeats them on every row formats each once. Keyed by the active locale, so
    ``force_locale`` (an invoice in its customer's language) and ``refresh`` get their own.
    """
    locale = get_locale()
    if not has_app_context():
        return {"locale": str(locale or DEFAULT_LOCALE), "translations": get_translations(), "memo": {}}
    known = g.setdefault("_portico_formats", {})
    found = known.get(locale)
    if found is None:
        found = known[locale] = {"locale": str(locale or DEFAULT_LOCALE),
                                 "translations": get_translations(), "memo": {}}
    return found


def once(kind: str, key, make):
    """``make()``, worked out once per request and locale for ``(kind, key)``."""
    memo = formats()["memo"]
    try:
        return memo[kind, key]
    except KeyError:
        memo[kind, key] = value = make()
        return value


def money(amount, currency) -> str:
    """Jinja filter: minor units of ``currency`` as the current locale writes them."""
    from core.money import format_money

    amount, currency = int(amount), str(currency).upper()
    return once("money", (amount, currency),
                lambda: format_money(amount, currency, formats()["locale"]))


def day(value, style="long") -> str:
    """Jinja filter: a date (a datetime or an ISO 8601 string) in the current locale."""
    from datetime import datetime

    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return once("day", (value, style), lambda: format_date(value, style))


def invoice_line(line: dict) -> str:
    """Jinja filter: an invoice line worded now, in the current locale, from the facts it keeps
    (``kind``, ``product_name``, ``quantity`` or ``plan_quantity``, ``period_start``,
    ``period_end``: ``core.billing.plan_lines``); a line issued before lines kept their facts
    reads as it was written."""
    if line.get("kind") == "discount":
        return gettext("Discount: %(name)s", name=line.get("product_name") or line.get("discount_code"))
    product = line.get("product_name")
    if not product:
        return line.get("description") or ""
    kind, start, end = line.get("kind"), line.get("period_start"), line.get("period_end")
    if kind == "refund":
        return gettext("Refund: %(product)s", product=product)
    if kind == "plan_change":
        quantity = line.get("plan_quantity") or line.get("quantity") or 1
        if end and line.get("from_product_name"):
            return gettext("%(plan)s (was %(old_plan)s), prorated until %(date)s",
                           plan=plan_words(product, quantity, line.get("addons", ())),
                           old_plan=plan_words(line["from_product_name"], line.get("from_quantity", 1),
                                               line.get("from_addons", ())),
                           date=day(end, "medium"))
        if end:
            return gettext("%(product)s × %(quantity)s, prorated until %(date)s", product=product,
                           quantity=quantity, date=day(end, "medium"))
        return gettext("%(product)s × %(quantity)s", product=product, quantity=quantity)
    if start and end:
        return gettext("%(product)s (%(start)s – %(end)s)", product=product,
                       start=day(start, "medium"), end=day(end, "medium"))
    return product


def plan_words(product: str, quantity: int, addons=()) -> str:
    """Jinja filter: a plan with its quantity and add-ons ([{name, quantity}]) in the current
    locale: "Acme Pro × 2 with Storage × 1 and Support × 2"."""
    plan = gettext("%(product)s × %(quantity)s", product=product, quantity=quantity)
    if not addons:
        return plan
    named = [gettext("%(product)s × %(quantity)s", product=item.get("name") or item["addon_id"],
                     quantity=item["quantity"]) for item in addons]
    return gettext("%(plan)s with %(addons)s", plan=plan,
                   addons=format_list(named, locale=current_locale()))


def address_lines(address) -> list[str]:
    """Jinja filter: a billing address as printed lines, its country named in the current
    locale (``core.billing_details.address_lines``)."""
    from core.billing_details import address_lines as lines

    return lines(address, current_locale())


# French elides "de", "le", "la" and "que" before a vowel ("d’Acme", "l’Atelier"); the
# catalog writes them whole before a name it cannot see, and this finishes the job once the
# name is in. An "h" is left alone: whether it elides depends on the word.
_ELISION = {"fr": re.compile(r"\b([dDlL]|[qQ]u)[eaEA] (?=[aeiouàâæéèêëîïôœùûüAEIOUÀÂÆÉÈÊËÎÏÔŒÙÛÜ])")}


def elide(text: str, locale: str | None = None) -> str:
    """``text`` with the elisions its language makes where a name was put in (French:
    "Passer de Acme Team" → "Passer d’Acme Team"). Markup stays Markup."""
    rule = _ELISION.get((locale or current_locale()).split("_")[0])
    if rule is None:
        return text
    elided = rule.sub(lambda match: match[1] + "’", text)
    return Markup(elided) if isinstance(text, Markup) else elided


@pass_context
def _gettext(context, string, **variables):
    """Jinja's new-style ``gettext`` (translate, escape, put the values in), then ``elide``."""
    text = formats()["translations"].ugettext(string)
    if context.eval_ctx.autoescape:
        text = Markup(text)
    return elide(text % variables)


def page_numbers_css() -> str:
    """The CSS ``content`` of an invoice's page footer in the current locale:
    ``"Page " counter(page) " of " counter(pages)``, words translated."""
    words = gettext("Page %(page)s of %(pages)s")  # no values: the placeholders stay
    quoted = []
    for part in re.split(r"(%\((?:page|pages)\)s)", words):
        if part in ("%(page)s", "%(pages)s"):
            quoted.append(f"counter({part[2:-2]})")
        elif part:
            quoted.append('"' + part.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return Markup(" ".join(quoted).replace("<", "\\3C "))  # CSS text, never a tag

DECLINES = {  # a charge's failure code (the provider's, or the core's own), in the customer's words
    "card_declined": lazy_gettext("Your card was declined."),
    "generic_decline": lazy_gettext("Your card was declined."),
    "do_not_honor": lazy_gettext("Your card was declined."),
    "insufficient_funds": lazy_gettext("Your card has insufficient funds."),
    "expired_card": lazy_gettext("Your card has expired."),
    "incorrect_cvc": lazy_gettext("Your card's security code is incorrect."),
    "processing_error": lazy_gettext("Your bank could not process the payment. Please try again."),
    "authentication_required": lazy_gettext("Your bank did not confirm the payment."),
    "payment_intent_authentication_failure": lazy_gettext("Your bank did not confirm the payment."),
    "no_payment_method": lazy_gettext("No payment method was available."),
    "provider_unavailable": lazy_gettext("Card payments are not available at the moment."),
    "expired": lazy_gettext("The payment was not completed in time."),
    "withdrawn": lazy_gettext("The payment was stopped because the subscription ended."),
}


def decline_reason(code: str | None) -> str:
    """Jinja filter: why a charge failed, for the customer, in the current locale; never the
    provider's own text, which may be technical or in another language."""
    known = DECLINES.get(code or "")
    return str(known if known is not None else lazy_gettext("The payment was declined."))


def compile_catalogs(folder: Path = TRANSLATIONS) -> list[Path]:
    """Compile each ``.po`` whose ``.mo`` is missing or older (``make`` does this at set-up;
    this keeps a checkout that skipped it from silently showing English)."""
    compiled = []
    for po in folder.glob("*/LC_MESSAGES/*.po"):
        mo = po.with_suffix(".mo")
        if mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime:
            continue
        with po.open("rb") as source:
            catalog = read_po(source, locale=po.parent.parent.name)
        partial = mo.with_suffix(f".{os.getpid()}.tmp")
        with partial.open("wb") as target:
            write_mo(target, catalog)
        os.replace(partial, mo)
        compiled.append(mo)
    return compiled


def _fresh_locale():
    """Choose the locale anew for each request, even when requests share an app context."""
    g.pop("_flask_babel", None)
    g.pop("_portico_formats", None)


def _template_context():
    """``lang`` and ``dir`` for ``<html>``, and the language switch (``locale`` is the current
    one of ``locales``), on the pages customers see."""
    if has_request_context() and request.blueprint in MERCHANT_PAGES:
        return {}
    locale = current_locale()
    return {"lang": html_lang(locale), "dir": text_direction(locale), "locale": locale,
            "locales": LOCALES}


def init_app(app):
    """Babel for ``app``: the selector, the ``money``/``day`` filters, the language switch."""
    compile_catalogs()
    from core.billing_details import load_address_data

    load_address_data(LOCALES)  # once per process, so no request fills a cache
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", str(TRANSLATIONS))
    babel.init_app(app, default_locale=DEFAULT_LOCALE, locale_selector=select_locale)
    app.jinja_env.filters.update(money=money, day=day, address_lines=address_lines,
                                 invoice_line=invoice_line, plan_words=plan_words,
                                 decline_reason=decline_reason)
    app.jinja_env.install_gettext_callables(  # Flask-Babel's, with the look-ups done once
        gettext=lambda s: formats()["translations"].ugettext(s),
        ngettext=lambda s, p, n: formats()["translations"].ungettext(s, p, n),
        pgettext=lambda c, s: formats()["translations"].upgettext(c, s),
        npgettext=lambda c, s, p, n: formats()["translations"].unpgettext(c, s, p, n),
        newstyle=True)
    app.jinja_env.globals["gettext"] = _gettext  # "_" in templates: theirs, then elision
    app.jinja_env.globals["page_numbers_css"] = page_numbers_css
    app.before_request(_fresh_locale)
    app.context_processor(_template_context)
    app.register_blueprint(bp)
