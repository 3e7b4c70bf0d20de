"""The customer portal's configuration for the key's business and mode (Portico's own
resource, not Dodo's): which features customers have, how they cancel, where a plan may
change to. The dashboard's Settings → Customer portal edits the same settings."""

from flask import g

from core import portal_settings, retention
from core.api import schemas
from core.api.wire import ApiError, owned, route
from core.models import Discount, Product

TAG = "Customer portal"


def _check_offer(discount: Discount | None, discount_id: str):
    """A retention offer must be a discount of the business that can still be given: not
    expired, not used up (one not started yet is fine: it is offered from its start)."""
    if discount is None:
        raise ApiError(422, "INVALID_REQUEST_BODY",
                       f"cancellation.retention_discount_id: no such discount: {discount_id}.")
    if not retention.offerable(discount):
        raise ApiError(422, "INVALID_REQUEST_BODY",
                       f"cancellation.retention_discount_id: the discount {discount.code} has "
                       "expired or is used up, so it could never be offered.")


def _answer(settings: dict, updated_at) -> dict:
    return {"business_id": g.business_id, "mode": g.mode,
            "updated_at": updated_at.isoformat() if updated_at else None, **settings}


@route("GET", "/customer-portal/configuration", tag=TAG, response=schemas.PortalConfiguration)
def retrieve_portal_configuration():
    """The portal's settings: each feature on or off, cancellation, plan-change rules."""
    return _answer(*portal_settings.load(g.business_id, g.mode))


@route("PATCH", "/customer-portal/configuration", tag=TAG, body=schemas.PortalConfigurationUpdate,
       response=schemas.PortalConfiguration)
def update_portal_configuration(body: schemas.PortalConfigurationUpdate):
    """Change the portal's settings: only what is sent changes (objects are merged, the list
    of product rules is replaced whole). Customers see the change on the next page they open."""
    changes = body.model_dump(exclude_unset=True)
    if body.plan_change is not None and body.plan_change.products is not None:
        changes["plan_change"]["products"] = [rule.model_dump() for rule in body.plan_change.products]
    cancellation = portal_settings.merged(portal_settings.load(g.business_id, g.mode)[0],
                                          changes)["cancellation"]
    if cancellation["reason_required"] and not cancellation["reasons"]:
        raise ApiError(422, "INVALID_REQUEST_BODY",
                       "cancellation.reason_required needs at least one reason to choose from.")
    if len(set(cancellation["reasons"])) != len(cancellation["reasons"]):
        raise ApiError(422, "INVALID_REQUEST_BODY", "cancellation.reasons names a reason twice.")
    offer = (changes.get("cancellation") or {}).get("retention_discount_id")
    if offer:
        _check_offer(owned(Discount).where(Discount.id == offer).first(), offer)
    rules = (changes.get("plan_change") or {}).get("products")
    if rules is not None:
        _check_rules(rules)
    portal_settings.save(g.business_id, g.mode, changes)
    return _answer(*portal_settings.load(g.business_id, g.mode))


def _check_rules(rules: list[dict]):
    """Plan change rules must name subscription products of the business in this mode, one
    rule per product, each switching to other subscription products, ``max_quantity`` not
    below ``min_quantity`` (422 ``INVALID_REQUEST_BODY`` naming what is wrong)."""
    def refuse(message):
        raise ApiError(422, "INVALID_REQUEST_BODY", f"plan_change.products: {message}")

    named = ({rule["product_id"] for rule in rules}
             | {pid for rule in rules for pid in rule["switch_to"] or ()})
    recurring = {p.id: p.is_recurring for p in owned(Product).where(Product.id.in_(list(named)))}
    if named - recurring.keys():
        raise ApiError(422, "INVALID_REQUEST_BODY",
                       f"No such product: {', '.join(sorted(named - recurring.keys()))}.")
    one_time = sorted(pid for pid in named if not recurring[pid])
    if one_time:
        refuse(f"{', '.join(one_time)} is not a subscription product.")
    seen = set()
    for rule in rules:
        product_id = rule["product_id"]
        if product_id in seen:
            refuse(f"{product_id} has two rules.")
        seen.add(product_id)
        if product_id in (rule["switch_to"] or ()):
            refuse(f"{product_id} cannot switch to itself (its seats and add-ons change on "
                   f"their own).")
        if rule["max_quantity"] is not None and rule["max_quantity"] < rule["min_quantity"]:
            refuse(f"max_quantity of {product_id} is below its min_quantity.")
