"""The API's wire rules, kept in one place: bearer API keys, rate limits, JSON errors, request
validation, idempotency keys, pagination, and the route table.

Every operation is declared once with ``route``: method, path, the pydantic models of its
query and body, its answer and the errors it may give. The same declaration registers the
Flask view, validates what comes in, and is what ``core.api.openapi`` turns into the OpenAPI
document, so the document cannot drift from the code. Errors are ``{"code", "message"}`` with
Dodo's codes: 400 for bad query parameters, 422 for a bad body (unknown fields named), 404 for
ids of another business or mode exactly as for ids that do not exist.
"""

import re
from dataclasses import dataclass
from datetime import timedelta
from functools import cache, cached_property, wraps
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from pydantic import BaseModel, TypeAdapter, ValidationError
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.http import HTTP_STATUS_CODES

from core import auth, idempotency
from core.api.schemas import IDEMPOTENCY_KEY_CHARS, PATTERN_MESSAGES
from core.billing import BillingError
from core.models import ApiKey, utcnow
from core.web import csrf

bp = Blueprint("api", __name__, url_prefix="/api")
csrf.exempt(bp)

CODES = {400: "INVALID_REQUEST_PARAMETERS", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
         405: "METHOD_NOT_ALLOWED", 409: "CONFLICT", 413: "INVALID_REQUEST_BODY",
         415: "INVALID_REQUEST_BODY", 422: "UNPROCESSABLE_ENTITY", 429: "TOO_MANY_REQUESTS",
         500: "INTERNAL_SERVER_ERROR"}
MAX_BODY = 256 * 1024


class ApiError(HTTPException):
    """An API answer other than success: its status, a stable ``code``, a readable message and
    any ``headers`` it needs beyond the usual ones."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(description=message)
        self.code, self.error_code, self.extra_headers = status, code, headers or {}


def error_response(error: HTTPException):
    """The JSON body of an error: ``{"code", "message"}``, never a traceback. A 409 says
    ``x-should-retry: false`` (the SDK would retry it otherwise), unless the error says
    otherwise; a 429 says when to retry."""
    status = error.code or 500
    code = getattr(error, "error_code", None) or CODES.get(status, "ERROR")
    retry_after = auth.retry_after() if status == 429 else None
    if isinstance(error, ApiError):
        message = error.description
    elif status == 429:
        message = f"Too many requests: retry in {retry_after or 1} second(s)."
    elif status >= 500:
        message = "Something went wrong on our side."
    else:
        message = HTTP_STATUS_CODES.get(status, "Error") + "."
    response = jsonify(code=code, message=message)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="api"'
    if status == 405 and getattr(error, "valid_methods", None):
        response.headers["Allow"] = ", ".join(error.valid_methods)
    if status == 409:
        response.headers["x-should-retry"] = "false"
    if status == 429:
        response.headers["Retry-After"] = str(retry_after or 1)
    response.headers.update(getattr(error, "extra_headers", {}))
    return response


def not_found(what: str = "resource"):
    return ApiError(404, "NOT_FOUND", f"No such {what}.")


# --- Refusals from the billing core ----------------------------------------------------------

REFUSAL_STATUS = {"NOT_FOUND": 404, "LICENSE_KEY_NOT_FOUND": 404, "INACTIVE_LICENSE_KEY": 403,
                  "LICENSE_KEY_LIMIT_REACHED": 422, "REFUND_AMOUNT_INVALID": 422,
                  "PAYMENT_NOT_SUCCEEDED": 422, "INVALID_NEXT_BILLING_DATE": 422,
                  "DISCOUNT_CODE_NOT_FOUND": 422, "DISCOUNT_CODE_EXPIRED": 422,
                  "DISCOUNT_CODE_NOT_STARTED": 422, "DISCOUNT_USAGE_LIMIT_REACHED": 422,
                  "DISCOUNT_NOT_APPLICABLE": 422}


@bp.errorhandler(BillingError)
def refused(error: BillingError):
    """A refusal of ``core.billing`` or ``core.licensing``: its stable code, with the status it
    calls for. A well-formed request that the state of the records it names makes impossible
    (a cancelled subscription, an archived or one-time product) is a 409 conflict; 422 is for
    a body that is wrong in itself."""
    message = error.message[:1].upper() + error.message[1:].rstrip(".") + "."
    return error_response(ApiError(REFUSAL_STATUS.get(error.code, 409), error.code, message))


# --- Who is calling -------------------------------------------------------------------------------


def bearer_token() -> str | None:
    scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
    return raw.strip() if scheme.lower() == "bearer" and raw.strip() else None


def authenticate():
    """Authenticate the call by its bearer API key only (never a cookie, never the query
    string); ``g.business_id`` and ``g.mode`` then scope everything the view touches. Calls
    with an unknown key are limited per IP (``API_KEY_FAILURE_LIMIT_PER_IP``, then 429)."""
    raw = bearer_token()
    key = auth.find_api_key(raw) if raw else None
    if key is None:
        wait = auth.failure_limited("api-key-failure", auth.client_ip(),
                                    current_app.config["API_KEY_FAILURE_LIMIT_PER_IP"])
        if wait:
            raise ApiError(429, "TOO_MANY_REQUESTS", "Too many calls with an invalid API key came "
                           f"from your address: retry in {wait} second(s).")
        raise ApiError(401, "UNAUTHORIZED", "Send a valid API key as 'Authorization: Bearer <key>'.")
    if key.last_used_at is None or key.last_used_at < utcnow() - timedelta(minutes=1):
        ApiKey.update(last_used_at=utcnow()).where(ApiKey.id == key.id).execute()
    g.api_key, g.business_id, g.mode = key, key.business_id, key.mode


def api_key_required(view):
    """Decorate a view that needs a valid API key (see ``authenticate``)."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        authenticate()
        return view(*args, **kwargs)

    return wrapper


def rate_limit_key() -> str:
    """What a rate limit counts: the presented API key (as a digest), else the client's address."""
    raw = bearer_token()
    return "key:" + auth.digest(raw)[:32] if raw else "ip:" + auth.client_ip()


def owned(model):
    """The rows of ``model`` in the calling key's business and mode."""
    return model.select().where((model.business == g.business_id) & (model.mode == g.mode))


def scoped(model, record_id: str, what: str):
    """One ``model`` row of the calling key's business and mode, else 404 ``NOT_FOUND``."""
    row = owned(model).where(model.id == record_id).first()
    if row is None:
        raise not_found(what)
    return row


# --- Requests ---------------------------------------------------------------------------------------


def describe(error: ValidationError) -> str:
    """A pydantic error as one readable sentence, unknown fields named first."""
    unknown, problems = [], []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"])
        message = item["msg"]
        if item["type"] == "string_pattern_mismatch":
            message = PATTERN_MESSAGES.get(item["ctx"]["pattern"], message)
        if item["type"] == "extra_forbidden":
            unknown.append(where)
        else:
            problems.append(f"{where}: {message}" if where else message)
    parts = ([f"Unknown field(s): {', '.join(unknown)}"] if unknown else []) + problems[:5]
    return "; ".join(parts) + "."


def unusable_as_text(value: str) -> str:
    """``value`` without NUL characters, which no id or name holds and PostgreSQL cannot
    compare with: a lookup then finds nothing, as for any other unknown value."""
    return value.replace("\x00", "\ufffd")


def parse_query(model: type[BaseModel]) -> BaseModel:
    """The query string as ``model`` (parameters it does not name are ignored), else 400."""
    data = {name: unusable_as_text(request.args[name]) for name in model.model_fields
            if name in request.args}
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ApiError(400, "INVALID_QUERY_PARAMS", describe(error)) from None


@cache
def _adapter(type_) -> TypeAdapter:
    return TypeAdapter(type_)


def parse_body(type_) -> BaseModel:
    """The JSON body as ``type_`` (a model, or a union of models), else 422
    ``INVALID_REQUEST_BODY``. An empty body reads as ``{}`` (the SDK sends one with a JSON
    content type); ``model_fields_set`` then tells an absent field from an explicit ``null``."""
    if (request.content_length or 0) > MAX_BODY:
        raise ApiError(413, "INVALID_REQUEST_BODY", f"The body is larger than {MAX_BODY // 1024} KiB.")
    raw = request.get_data(cache=True)
    try:
        return _adapter(type_).validate_json(raw if raw.strip() else b"{}")
    except ValidationError as error:
        raise ApiError(422, "INVALID_REQUEST_BODY", describe(error)) from None


# --- The route table -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One API operation as declared: what it takes, what it answers, and which errors."""

    method: str
    path: str  # OpenAPI form: /customers/{customer_id}
    view: Any
    tag: str
    response: Any = None  # the type of the JSON answer; None: an empty body
    status: int = 200
    query: type[BaseModel] | None = None
    body: Any = None  # a model, or a union of models
    errors: tuple[int, ...] = ()
    public: bool = False
    media_type: str = "application/json"
    deprecated: bool = False
    idempotent: bool = False  # honours an Idempotency-Key

    @property
    def operation_id(self) -> str:
        return self.view.__name__

    @property
    def doc(self) -> str:
        return (self.view.__doc__ or "").strip()

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    @property
    def error_statuses(self) -> list[int]:
        """Every error status the operation may answer."""
        statuses = set(self.errors) | {429, 500}
        if not self.public:
            statuses.add(401)
        if self.query:
            statuses.add(400)
        if self.body:
            statuses |= {413, 422}
        if self.idempotent:
            statuses |= {400, 409, 422}
        if self.path_params:
            statuses.add(404)
        return sorted(statuses)

    @cached_property
    def adapter(self) -> TypeAdapter | None:
        return TypeAdapter(self.response) if self.response is not None else None


ROUTES: list[Route] = []
TAG_DESCRIPTIONS: dict[str, str] = {}  # tag: what the document says of its operations as a whole


def route(method: str, path: str, *, tag: str, response=None, status: int = 200, query=None,
          body=None, errors=(), public: bool = False, media_type: str = "application/json",
          deprecated: bool = False, idempotent: bool | None = None):
    """Declare an operation and register its view. The view gets the path parameters, plus
    ``query`` and ``body`` as validated models, and returns the JSON answer (a dict), a
    ready ``Response`` (a PDF), or ``None`` for an empty one. Every ``POST`` with an API key
    honours an ``Idempotency-Key`` (see ``idempotently``) unless ``idempotent=False``."""
    if idempotent is None:
        idempotent = method == "POST" and not public

    def register(view):
        spec = Route(method, path, view, tag, response, status, query, body, tuple(errors), public,
                     media_type, deprecated, idempotent)
        ROUTES.append(spec)

        def endpoint(**params):
            params = {name: unusable_as_text(value) for name, value in params.items()}
            if not public:
                authenticate()
            if query is not None:
                params["query"] = parse_query(query)
            if body is not None:
                params["body"] = parse_body(body)
            if idempotent:
                return idempotently(params.get("body"), lambda: _answer(spec, view(**params)))
            return _answer(spec, view(**params))

        endpoint.__name__, endpoint.__doc__ = view.__name__, view.__doc__
        limit = auth.limiter.shared_limit(
            lambda: current_app.config["API_PUBLIC_RATE_LIMIT" if public else "API_RATE_LIMIT"],
            scope="api-public" if public else "api",
            key_func=auth.client_ip if public else rate_limit_key)
        bp.add_url_rule(re.sub(r"{(\w+)}", r"<\1>", path), view.__name__, limit(endpoint),
                        methods=[method])
        return view

    return register


def _answer(spec: Route, result):
    if isinstance(result, Response):
        return result
    if spec.response is None:
        response = Response(status=spec.status)
        del response.headers["Content-Type"]
        return response
    if current_app.testing:  # every test also proves the answer matches the document
        spec.adapter.validate_python(result)
    response = jsonify(result)
    response.status_code = spec.status
    return response


# --- Idempotency keys ------------------------------------------------------------------------------

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_CHARS)


def _idempotency_key(body) -> str | None:
    """The request's idempotency key: its ``Idempotency-Key`` header, or the body's
    ``idempotency_key`` field where the operation has one (Dodo's, on webhook endpoints)."""
    header = request.headers.get(IDEMPOTENCY_HEADER)
    field = getattr(body, "idempotency_key", None)
    if header is not None and not IDEMPOTENCY_KEY.fullmatch(header):
        raise ApiError(400, "INVALID_IDEMPOTENCY_KEY", f"The {IDEMPOTENCY_HEADER} header must be 1 "
                       "to 255 visible ASCII characters, such as a UUID.")
    if header is not None and field is not None and header != field:
        raise ApiError(422, "INVALID_REQUEST_BODY", f"idempotency_key differs from the "
                       f"{IDEMPOTENCY_HEADER} header: send one key, or the same in both.")
    return header if header is not None else field


def idempotently(body, work) -> Response:
    """Answer with ``work()`` once per idempotency key (``core.idempotency``), else at once.

    With a key, in the calling API key's business and mode: the first request claims it, does
    the work and its answer is kept 24 hours; the same request again (same method, path and
    body) gets that answer replayed, status and body, with ``Idempotent-Replayed: true``, and
    nothing is done again. Another request with the key is refused (422
    ``IDEMPOTENCY_KEY_REUSED``), and one that comes while the first still runs gets 409
    ``IDEMPOTENCY_KEY_IN_USE`` (retry: ``x-should-retry: true``, ``Retry-After``). A request
    refused with a 4xx changed nothing: its key is freed, so the corrected request may use
    it. A server error is kept like an answer: the work may have been done."""
    key = _idempotency_key(body)
    if key is None:
        return work()
    sent = body.model_dump(mode="json", exclude_unset=True) if body is not None else None
    digest = idempotency.fingerprint(request.method, request.path, sent)
    record, claimed = idempotency.claim(g.business_id, g.mode, key, digest)
    if not claimed:
        return _replay(record, digest)
    try:
        response = work()
    except Exception as error:
        if isinstance(error, BillingError) or (isinstance(error, HTTPException)
                                               and (error.code or 500) < 500):
            idempotency.release(record)
        else:
            idempotency.remember(record, 500,
                                 error_response(InternalServerError()).get_data(as_text=True))
        raise
    idempotency.remember(record, response.status_code, response.get_data(as_text=True))
    return response


def _replay(record, digest: str) -> Response:
    """The answer to a request whose idempotency key was claimed before (see ``idempotently``)."""
    if record.fingerprint != digest:
        raise ApiError(422, "IDEMPOTENCY_KEY_REUSED",
                       f"This {IDEMPOTENCY_HEADER} was used in the last 24 hours for another "
                       "request (another method, path or body): use a new key for a new request.")
    if record.response_status is None:
        raise ApiError(409, "IDEMPOTENCY_KEY_IN_USE",
                       f"A request with this {IDEMPOTENCY_HEADER} is still being processed: "
                       "retry in a moment to get its answer.",
                       headers={"x-should-retry": "true", "Retry-After": "1"})
    response = Response(record.response_body, status=record.response_status)
    if record.response_body:
        response.mimetype = "application/json"
    else:
        del response.headers["Content-Type"]
    response.headers["Idempotent-Replayed"] = "true"
    return response


def filtered(rows, model, query, columns: dict):
    """``rows`` narrowed by a list's query: each of ``columns`` (parameter name → column) equal
    to its parameter when given, ``created_at_gte``/``_lte`` bounds, and no rows at all for a
    ``brand_id`` other than the key's business (its one brand)."""
    for name, column in columns.items():
        if getattr(query, name) is not None:
            rows = rows.where(column == getattr(query, name))
    if getattr(query, "created_at_gte", None):
        rows = rows.where(model.created_at >= query.created_at_gte)
    if getattr(query, "created_at_lte", None):
        rows = rows.where(model.created_at <= query.created_at_lte)
    if getattr(query, "brand_id", None) not in (None, g.business_id):
        rows = rows.where(False)
    return rows


def paginate(query, select, serialize, *order) -> dict:
    """One page of ``select`` as ``{"items": [...]}``: ``page_number`` from 0, ``page_size``
    rows, a stable order; past the end, an empty list."""
    rows = (select.order_by(*order).offset(query.page_number * query.page_size)
            .limit(query.page_size))
    return {"items": [serialize(row) for row in rows]}
