"""Webhook endpoints: the merchant's URLs that receive signed events of the key's mode. Only
public addresses are accepted (``core.endpoints.check_url``, the rule deliveries apply too).
Their list uses Dodo's cursor pagination: ``iterator`` and ``limit`` in, ``{data, iterator,
prev_iterator, done}`` out."""

from flask import g

from core import payloads
from core.api import schemas
from core.api.wire import ApiError, owned, route, scoped
from core.endpoints import check_url, new_secret
from core.models import WebhookEndpoint, db, utcnow

TAG = "Webhooks"


def _url(url: str) -> str:
    try:
        check_url(url)
    except ValueError as error:
        raise ApiError(422, "INVALID_WEBHOOK_URL", f"url: {error}.") from None
    return url


@route("POST", "/webhooks", tag=TAG, body=schemas.WebhookCreate, response=schemas.Webhook)
def create_webhook(body: schemas.WebhookCreate):
    """Add an endpoint; it receives every event of this mode, or only ``filter_types``."""
    endpoint = WebhookEndpoint.create(
        business=g.business_id, mode=g.mode, url=_url(body.url), description=body.description or "",
        disabled=bool(body.disabled), filter_types=list(dict.fromkeys(body.filter_types or [])),
        metadata=body.metadata or {}, secret=new_secret())
    return payloads.webhook_endpoint(endpoint)


@route("GET", "/webhooks/{webhook_id}", tag=TAG, response=schemas.Webhook)
def retrieve_webhook(webhook_id: str):
    """An endpoint."""
    return payloads.webhook_endpoint(scoped(WebhookEndpoint, webhook_id, "webhook"))


@route("PATCH", "/webhooks/{webhook_id}", tag=TAG, body=schemas.WebhookUpdate,
       response=schemas.Webhook)
def update_webhook(webhook_id: str, body: schemas.WebhookUpdate):
    """Change an endpoint; only the fields sent change (``disabled: true`` pauses it)."""
    endpoint = scoped(WebhookEndpoint, webhook_id, "webhook")
    sent = body.model_fields_set
    changes = {}
    if "url" in sent:
        changes["url"] = _url(body.url)
    if "description" in sent:
        changes["description"] = body.description or ""
    if "disabled" in sent:
        changes["disabled"] = bool(body.disabled)
    if "filter_types" in sent:
        changes["filter_types"] = list(dict.fromkeys(body.filter_types or []))
    if "metadata" in sent:
        changes["metadata"] = body.metadata or {}
    WebhookEndpoint.update(**changes, updated_at=utcnow()).where(
        WebhookEndpoint.id == endpoint.id).execute()
    return payloads.webhook_endpoint(endpoint.refresh())


@route("DELETE", "/webhooks/{webhook_id}", tag=TAG)
def delete_webhook(webhook_id: str):
    """Remove an endpoint, and its delivery log with it."""
    endpoint = scoped(WebhookEndpoint, webhook_id, "webhook")
    with db.atomic():
        WebhookEndpoint.delete().where(WebhookEndpoint.id == endpoint.id).execute()


@route("GET", "/webhooks/{webhook_id}/secret", tag=TAG, response=schemas.WebhookSecret)
def retrieve_webhook_secret(webhook_id: str):
    """The endpoint's signing secret (``whsec_…``), to verify what it receives."""
    return {"secret": scoped(WebhookEndpoint, webhook_id, "webhook").secret}


# --- Cursor pagination ---------------------------------------------------------------------------
# An iterator names a position in the list, newest first: "next:<id>" (the endpoints after
# that one) or "prev:<id>" (the ones before it).


def _position(iterator: str) -> tuple[str, WebhookEndpoint]:
    direction, _, endpoint_id = iterator.partition(":")
    endpoint = owned(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id).first()
    if endpoint is None:
        raise ApiError(404, "NOT_FOUND", "No such iterator: the endpoint it starts from is gone.")
    return direction, endpoint


def _after(created_at, endpoint_id):
    """Endpoints after this point in the list's order (newest first)."""
    return (WebhookEndpoint.created_at < created_at) | (
        (WebhookEndpoint.created_at == created_at) & (WebhookEndpoint.id < endpoint_id))


def _before(created_at, endpoint_id):
    return (WebhookEndpoint.created_at > created_at) | (
        (WebhookEndpoint.created_at == created_at) & (WebhookEndpoint.id > endpoint_id))


@route("GET", "/webhooks", tag=TAG, query=schemas.WebhookListQuery, response=schemas.Webhooks,
       errors=(404,))
def list_webhooks(query: schemas.WebhookListQuery):
    """Endpoints, newest first, ``limit`` at a time: pass the answer's ``iterator`` for the
    next ones (``done`` when there are none), or its ``prev_iterator`` for the ones before."""
    newest_first = (WebhookEndpoint.created_at.desc(), WebhookEndpoint.id.desc())
    rows = owned(WebhookEndpoint)
    direction = "next"
    if query.iterator:
        direction, start = _position(query.iterator)
        where = _after if direction == "next" else _before
        rows = rows.where(where(start.created_at, start.id))
    if direction == "next":
        found = list(rows.order_by(*newest_first).limit(query.limit + 1))
        page, more_after = found[:query.limit], len(found) > query.limit
    else:
        found = list(rows.order_by(WebhookEndpoint.created_at, WebhookEndpoint.id).limit(query.limit + 1))
        page, more_after = found[:query.limit][::-1], bool(found)
    more_before = bool(page) and owned(WebhookEndpoint).where(
        _before(page[0].created_at, page[0].id)).exists()
    return {"data": [payloads.webhook_endpoint(endpoint) for endpoint in page],
            "iterator": f"next:{page[-1].id}" if page and more_after else None,
            "prev_iterator": f"prev:{page[0].id}" if more_before else None,
            "done": not more_after}
