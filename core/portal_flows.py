"""Deep links into one portal flow: a portal session limited to one task (update the payment
method of a subscription, or without one the saved payment methods; cancel a subscription,
change its plan, seats or add-ons, confirm one given plan or quantity change, update the
profile), and where the customer goes once it is done (``after_completion``).

The merchant asks for one with the API's portal session (its optional JSON body, which the
Dodo SDK sends with ``extra_body``) or the dashboard's "Share invite". The flow is checked
here once, stored with the sign-in token, then on the customer's ``PortalSession``: while it
is set, the portal serves only that flow's pages (any other answers 404) and shows no
navigation to the rest; once the task is done the flow is ``completed`` and the customer sees
the confirmation, is redirected, or (``portal_homepage``) gets the whole portal.
"""

from flask import url_for

from core import portal_settings
from core.models import Customer, Payment, PortalSession, Product, Subscription
from core.text import web_url

TYPES = ("payment_method_update", "subscription_cancel", "subscription_update",
         "subscription_update_confirm", "customer_update")
AFTER = ("redirect", "hosted_confirmation", "portal_homepage")
FEATURE = {  # the portal setting each flow needs on
    "payment_method_update": lambda s: s["payment_method_update"],
    "subscription_cancel": lambda s: s["cancellation"]["enabled"],
    "subscription_update": lambda s: s["plan_change"]["enabled"],
    "subscription_update_confirm": lambda s: s["plan_change"]["enabled"],
    "customer_update": lambda s: True,
}
# The portal pages (endpoints) each flow may open, besides its confirmation
PAGES = {
    "payment_method_update": {"portal.payment_method", "portal.add_card", "portal.card_added",
                              "portal.payment", "portal.payment_status"},
    "subscription_cancel": {"portal.cancel"},
    "subscription_update": {"portal.plans", "portal.change_plan", "portal.change_seats",
                            "portal.change_addons", "portal.payment", "portal.payment_status"},
    "subscription_update_confirm": {"portal.change_plan", "portal.change_seats", "portal.payment",
                                    "portal.payment_status"},
    "customer_update": {"portal.profile", "portal.change_email", "portal.sign_in_again",
                        "portal.export_my_data"},
}
# ``payment_method_update`` without a subscription: the saved methods, where adding a card or
# choosing the default ends it (as Stripe's flow of that name, which needs no subscription)
SAVED_METHODS = {"portal.payment_methods_page", "portal.add_saved_card", "portal.saved_card_added",
                 "portal.make_default_method", "portal.remove_method"}
ALWAYS = {"portal.flow_done"}


def seat_changes_on(settings: dict) -> bool:
    """The feature a ``subscription_update_confirm`` of the subscription's own plan (a change
    of quantity only) needs on, instead of plan changes: seat changes."""
    return settings["quantity_change"]["enabled"]


class FlowError(Exception):
    """A flow that cannot be made: ``code`` is stable (``NOT_FOUND``, ``INVALID_REQUEST_BODY``,
    ``PORTAL_FEATURE_DISABLED``), ``message`` says what to fix in words a merchant reads in the
    dashboard, and ``field`` names the API's field at fault (``api_message`` puts it first)."""

    def __init__(self, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.code, self.message, self.field = code, message, field

    @property
    def api_message(self) -> str:
        """The message as the API answers it: "flow.quantity: …"."""
        return f"{self.field}: {self.message}" if self.field else self.message


def check(customer: Customer, flow: dict | None, after: dict | None, live: bool) -> dict | None:
    """The flow to store for ``customer`` (``{"type", "subscription_id"?, "product_id"?,
    "quantity"?, "after_completion": {"type", "url"?, "message"?}}``), or ``None`` for the whole
    portal. Raises ``FlowError`` for a subscription or product the customer does not have, a
    flow the business has switched off, or a redirect that is not an absolute http(s) URL
    (https only in live mode, like ``return_url``)."""
    if flow is None:
        if after is not None:
            raise FlowError("INVALID_REQUEST_BODY", "An ending goes with a task.", "after_completion")
        return None
    kind = flow["type"]
    stored = {"type": kind}
    needs_sub = kind != "customer_update" and (kind != "payment_method_update"
                                               or flow.get("subscription_id"))
    if needs_sub:
        if not flow.get("subscription_id"):
            raise FlowError("INVALID_REQUEST_BODY", "Choose the subscription this task is for.",
                            "flow.subscription_id")
        sub = Subscription.get_or_none((Subscription.id == flow["subscription_id"])
                                       & (Subscription.customer == customer))
        if sub is None:
            raise FlowError("NOT_FOUND", "This customer has no such subscription.",
                            "flow.subscription_id")
        stored["subscription_id"] = sub.id
    if kind == "subscription_update_confirm":
        if not flow.get("product_id"):
            raise FlowError("INVALID_REQUEST_BODY", "Choose the plan to confirm.", "flow.product_id")
        product = Product.get_or_none((Product.id == flow["product_id"])
                                      & (Product.business == customer.business_id)
                                      & (Product.mode == customer.mode))
        if product is None:
            raise FlowError("NOT_FOUND", "There is no such product.", "flow.product_id")
        stored["product_id"] = product.id
        stored["quantity"] = flow.get("quantity") or sub.quantity
        stored["same_plan"] = product.id == sub.product_id  # a change of quantity (seats) only
    settings = portal_settings.load(customer.business_id, customer.mode)[0]
    if kind == "subscription_update_confirm":
        _check_change(settings, sub, product, stored["quantity"])
    feature = seat_changes_on if stored.get("same_plan") else FEATURE[kind]
    if not feature(settings):
        raise FlowError("PORTAL_FEATURE_DISABLED", f"This task ({kind}) needs a portal feature "
                        "that is switched off in the customer portal's settings.", "flow.type")
    after = dict(after or {"type": "hosted_confirmation"})
    if after["type"] == "redirect":
        if not web_url(after.get("url"), https_only=live):
            raise FlowError("INVALID_REQUEST_BODY", "The redirect must be a whole https:// address "
                            "(http:// too in test mode).", "after_completion.url")
    stored["after_completion"] = {"type": after["type"], "url": after.get("url"),
                                  "message": after.get("message")}
    return stored


def _check_change(settings: dict, sub: Subscription, product: Product, quantity: int):
    """A confirmation link must lead to a change the portal would offer: a plan the merchant
    lets this subscription move to (or its own), in a quantity within the rule's bounds."""
    if product.id != sub.product_id and not portal_settings.plans_to_switch_to(
            settings, sub).where(Product.id == product.id).exists():
        raise FlowError("INVALID_REQUEST_BODY", f"{product.name} is not a plan this "
                        "subscription may change to.", "flow.product_id")
    (low, high), _when = portal_settings.change_terms(settings, sub.product_id, product.id)
    if not low <= quantity <= high:
        raise FlowError("INVALID_REQUEST_BODY", f"The quantity must be from {low} to {high} "
                        f"on {product.name}.", "flow.quantity")


def start(flow: dict) -> str:
    """The portal page a flow begins on."""
    kind, sub = flow["type"], flow.get("subscription_id")
    if kind == "payment_method_update" and not sub:
        return url_for("portal.payment_methods_page")
    if kind == "payment_method_update":
        return url_for("portal.payment_method", subscription_id=sub)
    if kind == "subscription_cancel":
        return url_for("portal.cancel", subscription_id=sub)
    if kind == "subscription_update":
        return url_for("portal.plans", subscription_id=sub)
    if kind == "subscription_update_confirm" and flow.get("same_plan"):
        return url_for("portal.change_seats", subscription_id=sub, quantity=flow["quantity"])
    if kind == "subscription_update_confirm":
        return url_for("portal.change_plan", subscription_id=sub, product_id=flow["product_id"],
                       quantity=flow["quantity"])
    return url_for("portal.profile")


def allows(flow: dict, endpoint: str, view_args: dict) -> bool:
    """Whether a session limited to ``flow`` may open this portal page: one of its flow's,
    for its subscription (and product), and not once the flow is done."""
    if endpoint in ALWAYS:
        return True
    pages = (SAVED_METHODS if flow["type"] == "payment_method_update"
             and not flow.get("subscription_id") else PAGES[flow["type"]])
    if flow.get("completed") or endpoint not in pages:
        return False
    if "subscription_id" in view_args and view_args["subscription_id"] != flow.get("subscription_id"):
        return False
    if "product_id" in view_args and flow.get("product_id") not in (None, view_args["product_id"]):
        return False
    return True


def paid_for(session: PortalSession) -> bool:
    """Whether the flow's task ended in a charge that succeeded (an upgrade, the amount due of
    an on-hold subscription): a payment of its subscription made since the session began. Such
    a flow ends from the payment's page; any other ends when its form is done."""
    sub_id = session.flow.get("subscription_id")
    return sub_id is not None and Payment.select().where(
        (Payment.subscription == sub_id) & (Payment.customer == session.customer_id)
        & (Payment.status == "succeeded") & (Payment.created_at >= session.created_at)).exists()


def complete(session: PortalSession) -> dict:
    """Mark the session's flow done; with ``portal_homepage`` the session becomes a whole
    portal session. Returns the flow's ``after_completion``."""
    flow = session.flow
    after = flow["after_completion"]
    session.flow = None if after["type"] == "portal_homepage" else {**flow, "completed": True}
    PortalSession.update(flow=session.flow).where(PortalSession.id == session.id).execute()
    return after
