"""License keys (issued with purchases, or imported), their instances (activations), and the
public ``/licenses/*`` calls a merchant's software makes with a key, which need no API key: an
``Authorization`` header sent with them is ignored. Activations go through ``core.licensing``,
which keeps them within each key's limit."""

from flask import g
from peewee import IntegrityError

from core import licensing, payloads
from core.api import schemas
from core.api.wire import TAG_DESCRIPTIONS, ApiError, filtered, owned, paginate, route, scoped
from core.events import emit
from core.jobs import transaction
from core.models import Customer, LicenseKey, LicenseKeyInstance, Product, db, for_update

TAG = "License keys"
INSTANCES = "License key instances"
PUBLIC = "Licenses"
SUBSCRIPTION_KEYS = (
    "A key issued with a subscription follows what pays for it: it is valid while the "
    "subscription is paid. Its expires_at is the subscription's next billing date plus the time "
    "its renewal may take to be charged (the charge wait window, 23 hours by default, and one "
    "hour); each paid renewal moves it on, whatever the product's license_key_duration (which "
    "sets the expiry of keys sold once). Cancelling the subscription now ends the key at once "
    "(status expired), cancelling it at the next billing date ends the key at that date, and so "
    "do a failed renewal (on hold) and the end of the subscription's term; paying the arrears of "
    "a subscription on hold makes the key active again. The expiry of such a key cannot be set "
    "(422 NO_EXPIRY_ON_SUBSCRIPTION_LICENSE_KEYS); disabling it holds through renewals.")
TAG_DESCRIPTIONS[TAG] = "License keys, issued with purchases or imported. " + SUBSCRIPTION_KEYS
TAG_DESCRIPTIONS[PUBLIC] = ("What a merchant's software calls with a key, without an API key: "
                            "activate, validate, deactivate. " + SUBSCRIPTION_KEYS)


@route("POST", "/license_keys", tag=TAG, body=schemas.LicenseKeyCreate, response=schemas.LicenseKey,
       errors=(404, 409))
def create_license_key(body: schemas.LicenseKeyCreate):
    """Import a license key for a customer and product (``source: import``); the key itself
    must not be in use anywhere (409)."""
    customer = scoped(Customer, body.customer_id, "customer")
    product = scoped(Product, body.product_id, "product")
    try:
        with transaction():
            key = LicenseKey(business=g.business_id, mode=g.mode, customer=customer, product=product,
                             key=body.key, source=product.license_source, origin="import",
                             activations_limit=body.activations_limit, expires_at=body.expires_at)
            key.status = licensing.status_now(key)
            with db.atomic():  # a savepoint, so a taken key leaves the transaction usable
                key.save()
            emit("license_key.created", key.business_id, key.mode, customer.id,
                 {**payloads.license_key(key), "payload_type": "LicenseKey"})
    except IntegrityError:
        raise ApiError(409, "LICENSE_KEY_ALREADY_EXISTS",
                       "This license key is already in use: import another one.") from None
    return payloads.license_key(key)


@route("GET", "/license_keys/{id}", tag=TAG, response=schemas.LicenseKey)
def retrieve_license_key(id: str):
    """A license key, with how many instances it is active on."""
    return payloads.license_key(scoped(LicenseKey, id, "license key"))


@route("PATCH", "/license_keys/{id}", tag=TAG, body=schemas.LicenseKeyUpdate,
       response=schemas.LicenseKey)
def update_license_key(id: str, body: schemas.LicenseKeyUpdate):
    """Disable or enable a key, or change its activations limit (``null``: unlimited; never
    below its current instances) or expiry (``null``: none). Only the fields sent change. A
    key its license source revoked stays disabled: enabling it is refused (409). A key issued
    for a subscription follows it (valid while it is paid): its expiry cannot be set (422
    ``NO_EXPIRY_ON_SUBSCRIPTION_LICENSE_KEYS``)."""
    found = scoped(LicenseKey, id, "license key")
    sent = body.model_fields_set
    if "expires_at" in sent and found.subscription_id is not None:
        raise ApiError(422, "NO_EXPIRY_ON_SUBSCRIPTION_LICENSE_KEYS",
                       "This key was issued for a subscription and follows it: it is valid while "
                       "the subscription is paid, and its expiry moves with each renewal.")
    with transaction():
        key = for_update(LicenseKey.select().where(LicenseKey.id == found.id)).get()
        if "activations_limit" in sent:
            if body.activations_limit is not None and body.activations_limit < key.instances_count:
                raise ApiError(422, "ACTIVATION_LIMIT_LESS_THAN_CURRENT_AMOUNT",
                               f"The key is active on {key.instances_count} instance(s): the limit "
                               f"cannot be lower.")
            key.activations_limit = body.activations_limit
        if "expires_at" in sent:
            key.expires_at = body.expires_at
        if body.disabled is False and key.revoked_at is not None:
            raise ApiError(409, "LICENSE_KEY_REVOKED",
                           f"This key was revoked for good by its license source ({key.source}) "
                           f"and cannot be enabled again.")
        if body.disabled is True:
            key.status = "disabled"  # the merchant's own switch: it can be turned back on
        elif body.disabled is False or (key.status != "disabled" and "expires_at" in sent):
            key.status = licensing.status_now(key)
        key.save()
    return payloads.license_key(key)


@route("GET", "/license_keys", tag=TAG, query=schemas.LicenseKeyListQuery,
       response=schemas.items(schemas.LicenseKey))
def list_license_keys(query: schemas.LicenseKeyListQuery):
    """License keys, newest first; filter by customer, product, source, status or creation time."""
    rows = filtered(owned(LicenseKey), LicenseKey, query, {
        "customer_id": LicenseKey.customer, "product_id": LicenseKey.product,
        "source": LicenseKey.origin, "status": LicenseKey.status})
    return paginate(query, rows, payloads.license_key, LicenseKey.created_at.desc(),
                    LicenseKey.id.desc())


# --- Instances ---------------------------------------------------------------------------------


def _instances():
    return (LicenseKeyInstance.select().join(LicenseKey)
            .where((LicenseKey.business == g.business_id) & (LicenseKey.mode == g.mode)))


def _instance(instance_id: str) -> LicenseKeyInstance:
    instance = _instances().where(LicenseKeyInstance.id == instance_id).first()
    if instance is None:
        raise ApiError(404, "NOT_FOUND", "No such license key instance.")
    return instance


def _show_instance(instance: LicenseKeyInstance) -> dict:
    return payloads.license_key_instance(instance, g.business_id)


@route("GET", "/license_key_instances/{id}", tag=INSTANCES, response=schemas.LicenseKeyInstance)
def retrieve_license_key_instance(id: str):
    """One activation of a license key."""
    return _show_instance(_instance(id))


@route("PATCH", "/license_key_instances/{id}", tag=INSTANCES, body=schemas.InstanceUpdate,
       response=schemas.LicenseKeyInstance)
def update_license_key_instance(id: str, body: schemas.InstanceUpdate):
    """Rename an activation."""
    instance = _instance(id)
    LicenseKeyInstance.update(name=body.name).where(LicenseKeyInstance.id == instance.id).execute()
    return _show_instance(instance.refresh())


@route("GET", "/license_key_instances", tag=INSTANCES, query=schemas.InstanceListQuery,
       response=schemas.items(schemas.LicenseKeyInstance))
def list_license_key_instances(query: schemas.InstanceListQuery):
    """Activations, newest first; ``license_key_id`` picks one key's."""
    rows = _instances()
    if query.license_key_id is not None:
        rows = rows.where(LicenseKeyInstance.license_key == query.license_key_id)
    return paginate(query, rows, _show_instance, LicenseKeyInstance.created_at.desc(),
                    LicenseKeyInstance.id.desc())


# --- Public: what a merchant's software calls ---------------------------------------------------


@route("POST", "/licenses/activate", tag=PUBLIC, body=schemas.Activate, response=schemas.Activation,
       status=201, errors=(403, 404, 409), public=True)
def activate_license(body: schemas.Activate):
    """Activate a key on an instance (201), within its activations limit (422 past it); 403
    for a disabled or expired key, such as the key of a cancelled subscription."""
    instance = licensing.activate(body.license_key, body.name)
    key = LicenseKey.select(LicenseKey, Customer, Product).join(Customer).switch(LicenseKey) \
        .join(Product).where(LicenseKey.id == instance.license_key_id).get()
    return payloads.license_activation(instance, key)


@route("POST", "/licenses/validate", tag=PUBLIC, body=schemas.Validate, response=schemas.Validity,
       public=True)
def validate_license(body: schemas.Validate):
    """Whether a key may be used now (and, given an instance, on that instance). A key issued
    with a subscription validates while the subscription is paid (see the tag's rule)."""
    valid, _key = licensing.validate(body.license_key, body.license_key_instance_id)
    return {"valid": valid}


@route("POST", "/licenses/deactivate", tag=PUBLIC, body=schemas.Deactivate, errors=(404,),
       public=True)
def deactivate_license(body: schemas.Deactivate):
    """Free an instance of a key, so the key can be activated elsewhere."""
    licensing.deactivate(body.license_key, body.license_key_instance_id)
