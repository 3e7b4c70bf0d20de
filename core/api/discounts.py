"""Discount codes, as Dodo's ``discounts`` resource: create, retrieve (by id or by code),
update, list and delete. A percentage ``amount`` is in basis points, a flat one in minor units
of the subscription's currency. Subscriptions get one with ``discount_code`` at creation;
``core.billing`` applies it to their charges."""

from flask import g
from peewee import fn

from core import billing, payloads, retention
from core.api import schemas
from core.api.wire import ApiError, owned, paginate, route, scoped
from core.models import Discount, Product, utcnow

TAG = "Discounts"


def _check(fields: dict):
    """Refuse what no discount may be: a percentage above 100 %, an end before its start, or
    products this business and mode do not have."""
    if fields.get("type") == "percentage" and fields.get("amount", 0) > 10000:
        raise ApiError(422, "INVALID_REQUEST_BODY",
                       "amount: a percentage is in basis points, at most 10000 (100 %).")
    if fields.get("starts_at") and fields.get("expires_at") and fields["starts_at"] >= fields["expires_at"]:
        raise ApiError(422, "INVALID_REQUEST_BODY", "starts_at must be before expires_at.")
    wanted = set(fields.get("restricted_to") or ())
    if wanted:
        found = {row.id for row in owned(Product).where(Product.id.in_(list(wanted)))}
        if wanted - found:
            raise ApiError(404, "NOT_FOUND", "No such product: " + ", ".join(sorted(wanted - found)) + ".")


FIELDS = ("amount", "type", "code", "name", "expires_at", "starts_at", "subscription_cycles",
          "usage_limit", "restricted_to", "preserve_on_plan_change", "metadata")


@route("POST", "/discounts", tag=TAG, body=schemas.DiscountCreate, response=schemas.Discount,
       errors=(404, 409, 422))
def create_discount(body: schemas.DiscountCreate):
    """Create a discount code: a percentage or a flat amount off a subscription's charges, for
    some cycles or all, until an expiry, for a number of subscriptions, for some products."""
    fields = {name: getattr(body, name) for name in FIELDS}
    _check(fields)
    fields["restricted_to"] = sorted(set(fields["restricted_to"] or ()))
    fields["metadata"] = fields["metadata"] or {}
    return payloads.discount(billing.save_discount(Discount(business=g.business_id, mode=g.mode, **fields)))


@route("GET", "/discounts/{discount_id}", tag=TAG, response=schemas.Discount)
def retrieve_discount(discount_id: str):
    """A discount."""
    return payloads.discount(scoped(Discount, discount_id, "discount"))


@route("GET", "/discounts/code/{code}", tag=TAG, response=schemas.Discount)
def retrieve_discount_by_code(code: str):
    """The discount with this code (any case)."""
    found = owned(Discount).where(Discount.code == code.upper()).first()
    if found is None:
        raise ApiError(404, "NOT_FOUND", "No such discount.")
    return payloads.discount(found)


@route("PATCH", "/discounts/{discount_id}", tag=TAG, body=schemas.DiscountUpdate,
       response=schemas.Discount, errors=(409, 422))
def update_discount(discount_id: str, body: schemas.DiscountUpdate):
    """Change a discount; only the fields sent change. Subscriptions already given it keep it
    as it was."""
    discount = scoped(Discount, discount_id, "discount")
    sent = body.model_fields_set & set(FIELDS)
    for name in ("amount", "type", "code", "preserve_on_plan_change"):
        if name in sent and getattr(body, name) is None:
            raise ApiError(422, "INVALID_REQUEST_BODY", f"{name}: a discount always has one.")
    fields = {name: getattr(discount, name) for name in FIELDS}
    fields.update({name: getattr(body, name) for name in sent})
    _check(fields)
    fields["restricted_to"] = sorted(set(fields["restricted_to"] or ()))
    fields["metadata"] = fields["metadata"] or {}
    for name, value in fields.items():
        setattr(discount, name, value)
    return payloads.discount(billing.save_discount(discount))


@route("GET", "/discounts", tag=TAG, query=schemas.DiscountListQuery,
       response=schemas.items(schemas.Discount))
def list_discounts(query: schemas.DiscountListQuery):
    """Discounts, newest first; filter by code, type, product or whether redeemable now."""
    rows = owned(Discount)
    if query.code:
        rows = rows.where(Discount.code.contains(query.code.upper()))
    if query.discount_type:
        rows = rows.where(Discount.type == query.discount_type)
    if query.product_id:  # restricted_to is JSON text: an id inside quotes, or no restriction
        rows = rows.where((fn.LENGTH(Discount.restricted_to) <= 2)
                          | Discount.restricted_to.cast("TEXT").contains(f'"{query.product_id}"'))
    if query.active is not None:
        now = utcnow()
        redeemable = ((Discount.starts_at.is_null() | (Discount.starts_at <= now))
                      & (Discount.expires_at.is_null() | (Discount.expires_at > now))
                      & (Discount.usage_limit.is_null() | (Discount.times_used < Discount.usage_limit)))
        rows = rows.where(redeemable if query.active else ~redeemable)
    return paginate(query, rows, payloads.discount, Discount.created_at.desc(), Discount.id.desc())


@route("DELETE", "/discounts/{discount_id}", tag=TAG)
def delete_discount(discount_id: str):
    """Delete a discount: its code can no longer be used, nor is it the portal's retention
    offer any more. Subscriptions given it keep it for the cycles they have left."""
    discount = scoped(Discount, discount_id, "discount")
    Discount.delete().where(Discount.id == discount.id).execute()
    retention.forget(discount)
