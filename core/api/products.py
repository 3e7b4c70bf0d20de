"""The catalogue: products (a one-time or a recurring price, tax, license-key settings) and the
add-ons sold with them. Deleting either archives it: it is no longer sold, and what was sold
with it stays as it was."""

from flask import g

from core import billing, payloads
from core.api import schemas
from core.api.wire import ApiError, filtered, owned, paginate, route, scoped
from core.models import Addon, Product, ProductAddon, Subscription, db, utcnow

TAG = "Products"
ADDONS = "Addons"


def _check_brand(brand_id: str | None):
    """A brand is a business here: the only one a key may name is its own."""
    if brand_id is not None and brand_id != g.business_id:
        raise ApiError(404, "NOT_FOUND", "No such brand.")


def _price_fields(price) -> dict:
    """The product columns a Dodo price sets."""
    fields = {"price": price.price, "currency": price.currency,
              "tax_inclusive": bool(price.tax_inclusive), "discount": 0}
    if price.type == "one_time_price":
        return {**fields, "is_recurring": False}
    return {**fields, "is_recurring": True,
            "payment_frequency_count": price.payment_frequency_count,
            "payment_frequency_interval": price.payment_frequency_interval,
            "subscription_period_count": price.subscription_period_count,
            "subscription_period_interval": price.subscription_period_interval,
            "trial_period_days": price.trial_period_days or 0,
            "trial_payment_method_optional": bool(price.trial_payment_method_optional)}


def _license_fields(body, sent) -> dict:
    fields = {name: getattr(body, name) for name in ("license_key_activations_limit",
                                                     "license_key_activation_message") if name in sent}
    if "license_key_enabled" in sent:
        fields["license_key_enabled"] = bool(body.license_key_enabled)
    if "license_key_duration" in sent:
        duration = body.license_key_duration
        fields["license_key_duration_count"] = duration.count if duration else None
        fields["license_key_duration_interval"] = duration.interval if duration else None
    return fields


def _addons(ids: list[str], currency: str) -> list[Addon]:
    """The add-ons named, all of this business and mode and in the product's currency."""
    found = {addon.id: addon for addon in owned(Addon).where(Addon.id.in_(ids))}
    for addon_id in ids:
        if addon_id not in found:
            raise ApiError(404, "NOT_FOUND", f"No such add-on: {addon_id}.")
        if found[addon_id].currency != currency:
            raise ApiError(409, "INVALID_REQUEST_PARAMETERS",
                           f"Add-on {addon_id} is priced in {found[addon_id].currency}, the "
                           f"product in {currency}.")
    return list(dict.fromkeys(found[addon_id] for addon_id in ids))


def _addon_ids(product: Product) -> list[str]:
    links = ProductAddon.select(ProductAddon.addon).where(ProductAddon.product == product)
    return sorted(link.addon_id for link in links)


def _show(product: Product) -> dict:
    return payloads.product(product, _addon_ids(product))


@route("POST", "/products", tag=TAG, body=schemas.ProductCreate, response=schemas.Product,
       errors=(404, 409))
def create_product(body: schemas.ProductCreate):
    """Create a product with a one-time or a recurring price."""
    _check_brand(body.brand_id)
    addons = _addons(body.addons or [], body.price.currency)
    with db.atomic():
        product = Product.create(
            business=g.business_id, mode=g.mode, name=body.name, description=body.description,
            tax_category=body.tax_category, tax_rate_bps=body.tax_rate_bps,
            metadata=body.metadata or {}, **_price_fields(body.price),
            **_license_fields(body, body.model_fields_set))
        for addon in addons:
            ProductAddon.create(product=product, addon=addon)
    return _show(product)


@route("GET", "/products/{id}", tag=TAG, response=schemas.Product)
def retrieve_product(id: str):
    """A product, archived or not."""
    return _show(scoped(Product, id, "product"))


@route("PATCH", "/products/{id}", tag=TAG, body=schemas.ProductUpdate, errors=(409,))
def update_product(id: str, body: schemas.ProductUpdate):
    """Change a product; only the fields sent change. Once it has subscriptions, its kind of
    price, currency and billing cycle stay as they are (409); the amount may change. A new
    amount applies to new sales: subscriptions keep the price they record until moved to it
    (``POST /products/{id}/subscriptions/move-to-current-price``)."""
    product = scoped(Product, id, "product")
    sent = body.model_fields_set
    _check_brand(body.brand_id)
    changes = {name: getattr(body, name) for name in ("name", "description", "tax_category",
                                                      "tax_rate_bps") if name in sent}
    if "metadata" in sent:
        changes["metadata"] = body.metadata or {}
    changes.update(_license_fields(body, sent))
    if "price" in sent:
        price = _price_fields(body.price)
        fixed = ("is_recurring", "currency", "payment_frequency_count", "payment_frequency_interval")
        if (any(price.get(name, getattr(product, name)) != getattr(product, name) for name in fixed)
                and Subscription.select().where(Subscription.product == product).exists()):
            raise ApiError(409, "PRODUCT_HAS_SUBSCRIPTIONS",
                           "This product has subscriptions: its kind of price, currency and "
                           "billing cycle cannot change. Create another product instead.")
        changes.update(price)
    currency = changes.get("currency", product.currency)
    addons = _addons(body.addons or [], currency) if "addons" in sent else None
    with db.atomic():
        Product.update(**changes, updated_at=utcnow()).where(Product.id == product.id).execute()
        if addons is not None:
            ProductAddon.delete().where(ProductAddon.product == product).execute()
            for addon in addons:
                ProductAddon.create(product=product, addon=addon)


@route("POST", "/products/{id}/subscriptions/move-to-current-price", tag=TAG,
       body=schemas.PriceMove, response=schemas.PriceMoves)
def move_subscriptions_to_current_price(id: str, body: schemas.PriceMove):
    """Move the product's subscribers to its current price (and its add-ons' current prices).

    A price change applies to new sales only; existing subscriptions keep the price they
    record until this is called. Each subscription whose price differs is told by e-mail
    (and a ``subscription.price_change_scheduled`` webhook) the new amount and the date it
    applies: its first billing date at least ``PRICE_CHANGE_NOTICE_DAYS`` from now (and not
    before ``not_before``). Nothing is charged at the new price before then."""
    product = scoped(Product, id, "product")
    moved = billing.announce_price(product, billing.price_change_notice(), body.not_before)
    return {"items": [{"subscription_id": sub.id, "effective_at": sub.price_change["effective_at"],
                       "amount": sub.price_change["amount"],
                       "previous_amount": sub.price_change["previous_amount"]} for sub in moved]}


@route("GET", "/products", tag=TAG, query=schemas.ProductListQuery,
       response=schemas.items(schemas.ProductListItem))
def list_products(query: schemas.ProductListQuery):
    """Products on sale (or archived ones), newest first; ``recurring`` picks one kind."""
    rows = filtered(owned(Product), Product, query, {"archived": Product.archived,
                                                     "recurring": Product.is_recurring})
    return paginate(query, rows, payloads.product_list_item, Product.created_at.desc(),
                    Product.id.desc())


def _archive(model, record_id: str, what: str, archived: bool):
    record = scoped(model, record_id, what)
    model.update(archived=archived, updated_at=utcnow()).where(model.id == record.id).execute()


@route("DELETE", "/products/{id}", tag=TAG)
def archive_product(id: str):
    """Archive a product: it is no longer sold; its subscriptions carry on."""
    _archive(Product, id, "product", True)


@route("POST", "/products/{id}/unarchive", tag=TAG)
def unarchive_product(id: str):
    """Put an archived product back on sale."""
    _archive(Product, id, "product", False)


# --- Add-ons -------------------------------------------------------------------------------------


@route("POST", "/addons", tag=ADDONS, body=schemas.AddonCreate, response=schemas.Addon)
def create_addon(body: schemas.AddonCreate):
    """Create an add-on, to be offered with recurring products of its currency."""
    addon = Addon.create(business=g.business_id, mode=g.mode, name=body.name,
                         description=body.description, price=body.price, currency=body.currency,
                         tax_category=body.tax_category)
    return payloads.addon(addon)


@route("GET", "/addons/{id}", tag=ADDONS, response=schemas.Addon)
def retrieve_addon(id: str):
    """An add-on."""
    return payloads.addon(scoped(Addon, id, "add-on"))


@route("PATCH", "/addons/{id}", tag=ADDONS, body=schemas.AddonUpdate, response=schemas.Addon)
def update_addon(id: str, body: schemas.AddonUpdate):
    """Change an add-on; only the fields sent change."""
    addon = scoped(Addon, id, "add-on")
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    Addon.update(**changes, updated_at=utcnow()).where(Addon.id == addon.id).execute()
    return payloads.addon(addon.refresh())


@route("GET", "/addons", tag=ADDONS, query=schemas.AddonListQuery,
       response=schemas.items(schemas.Addon))
def list_addons(query: schemas.AddonListQuery):
    """Add-ons on sale (or archived ones), newest first."""
    rows = owned(Addon).where(Addon.archived == query.archived)
    return paginate(query, rows, payloads.addon, Addon.created_at.desc(), Addon.id.desc())


@route("DELETE", "/addons/{id}", tag=ADDONS)
def archive_addon(id: str):
    """Archive an add-on: it can no longer be added to a subscription."""
    _archive(Addon, id, "add-on", True)


@route("POST", "/addons/{id}/unarchive", tag=ADDONS)
def unarchive_addon(id: str):
    """Put an archived add-on back on sale."""
    _archive(Addon, id, "add-on", False)
