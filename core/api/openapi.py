"""The OpenAPI 3.1 document of the API, generated from the route table (``wire.ROUTES``) and the
pydantic models that validate requests and describe answers: every path, parameter, body,
answer and error, so it cannot say something the code does not do."""

from functools import cache
from importlib.metadata import PackageNotFoundError, version

from pydantic import BaseModel, TypeAdapter
from werkzeug.http import HTTP_STATUS_CODES

from core.api import schemas
from core.api.wire import ROUTES, TAG_DESCRIPTIONS, Route

REF = "#/components/schemas/{model}"
ERROR_HEADERS = {
    409: {"x-should-retry": {"description": "false: repeating the call cannot succeed; true only "
                                            "for IDEMPOTENCY_KEY_IN_USE, which Retry-After "
                                            "then comes with.",
                             "schema": {"type": "string", "enum": ["false", "true"]}},
          "Retry-After": {"description": "Seconds to wait before sending the request again "
                                         "(IDEMPOTENCY_KEY_IN_USE).",
                          "schema": {"type": "string", "pattern": "^[0-9]+$"}}},
    429: {"Retry-After": {"description": "Seconds to wait before calling again.",
                          "schema": {"type": "string", "pattern": "^[0-9]+$"}}},
    401: {"WWW-Authenticate": {"description": "How to authenticate.", "schema": {"type": "string"}}},
}


class _Components:
    """Collects the named schemas that the document's ``$ref``s point at."""

    def __init__(self):
        self.schemas: dict[str, dict] = {}

    def schema(self, type_, mode: str = "validation") -> dict:
        """The JSON Schema of ``type_``: a ``$ref`` for a model, inline otherwise."""
        found = TypeAdapter(type_).json_schema(ref_template=REF, mode=mode)
        self.schemas.update(found.pop("$defs", {}))
        if isinstance(type_, type) and issubclass(type_, BaseModel):
            self.schemas[type_.__name__] = found
            return {"$ref": REF.format(model=type_.__name__)}
        return found


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "Makes the call safe to retry: the same call (method, path and body) with the "
                   "same key within 24 hours, in this business and mode, is done once and its "
                   "first answer replayed, status and body, with `Idempotent-Replayed: true`. "
                   "Another call with a key already used is refused (422 IDEMPOTENCY_KEY_REUSED); "
                   "one sent while the first still runs gets 409 IDEMPOTENCY_KEY_IN_USE, to retry. "
                   "A call refused with a 4xx frees its key. With the dodopayments SDK: "
                   "extra_headers={\"Idempotency-Key\": key}.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": schemas.IDEMPOTENCY},
}
REPLAYED = {"Idempotent-Replayed": {"description": "true when this is the kept answer of an "
                                                  "earlier call with the same Idempotency-Key.",
                                   "schema": {"type": "string", "enum": ["true"]}}}


def _parameters(spec: Route, components: _Components) -> list[dict]:
    parameters = [{"name": name, "in": "path", "required": True,
                   "schema": {"type": "string", "minLength": 1, "maxLength": 64}}
                  for name in spec.path_params]
    if spec.idempotent:
        parameters.append(IDEMPOTENCY_KEY)
    if spec.query is not None:
        schema = spec.query.model_json_schema(ref_template=REF)
        components.schemas.update(schema.pop("$defs", {}))
        for name, field in spec.query.model_fields.items():
            parameters.append({"name": name, "in": "query", "required": False,
                               "description": field.description or "",
                               "schema": schema["properties"][name]})
    return parameters


def _success(spec: Route, components: _Components) -> dict:
    answer = {"description": HTTP_STATUS_CODES[spec.status]}
    if spec.media_type == "application/pdf":
        answer["content"] = {spec.media_type: {"schema": {"type": "string", "format": "binary"}}}
    elif spec.response is not None:
        answer["content"] = {spec.media_type: {"schema": components.schema(spec.response)}}
    else:
        answer["description"] += ": done, with an empty body"
    if spec.idempotent:
        answer["headers"] = REPLAYED
    return answer


def _error(status: int) -> dict:
    answer = {"description": HTTP_STATUS_CODES[status],
              "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}}}
    if status in ERROR_HEADERS:
        answer["headers"] = ERROR_HEADERS[status]
    return answer


def _operation(spec: Route, components: _Components) -> dict:
    summary, _, description = spec.doc.partition("\n")
    operation = {"operationId": spec.operation_id, "tags": [spec.tag],
                 "summary": summary.strip().rstrip("."), "description": " ".join(description.split()),
                 "parameters": _parameters(spec, components),
                 "responses": {str(spec.status): _success(spec, components),
                               **{str(status): _error(status) for status in spec.error_statuses}}}
    if spec.body is not None:
        required = not (isinstance(spec.body, type) and issubclass(spec.body, BaseModel)
                        and not any(f.is_required() for f in spec.body.model_fields.values()))
        operation["requestBody"] = {"required": required, "content": {
            "application/json": {"schema": components.schema(spec.body)}}}
    if spec.public:
        operation["security"] = []
    if spec.deprecated:
        operation["deprecated"] = True
    return operation


def _allows_null(node: dict) -> bool:
    kinds = node.get("type")
    return (kinds == "null" or (isinstance(kinds, list) and "null" in kinds)
            or any(isinstance(option, dict) and _allows_null(option)
                   for option in node.get("anyOf", []) + node.get("oneOf", [])))


def _tidy(node):
    """Drop pydantic's ``default: null`` from fields that may be left out but never be null,
    so the document does not offer a value the API refuses."""
    if isinstance(node, dict):
        if "default" in node and node["default"] is None and not _allows_null(node):
            del node["default"]
        for value in node.values():
            _tidy(value)
    elif isinstance(node, list):
        for value in node:
            _tidy(value)
    return node


def _version() -> str:
    try:
        return version("portico")
    except PackageNotFoundError:
        return "0"


@cache
def document() -> dict:
    """The whole OpenAPI 3.1 document (built once per process)."""
    components = _Components()
    components.schema(schemas.Error)
    paths: dict[str, dict] = {}
    for spec in ROUTES:
        paths.setdefault(spec.path, {})[spec.method.lower()] = _operation(spec, components)
    return _tidy({
        "openapi": "3.1.0",
        "info": {"title": "Portico merchant API", "version": _version(),
                 "description": "The Dodo Payments API, as far as Portico holds the resources: "
                                "the official dodopayments SDK works with base_url <host>/api. "
                                "Money is in minor units; errors are {code, message}."},
        "servers": [{"url": "/api"}],
        "security": [{"apiKey": []}],
        "tags": [{"name": tag, **({"description": TAG_DESCRIPTIONS[tag]} if tag in TAG_DESCRIPTIONS
                                  else {})}
                 for tag in dict.fromkeys(spec.tag for spec in ROUTES)],
        "paths": paths,
        "components": {"schemas": dict(sorted(components.schemas.items())),
                       "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer",
                                                      "description": "An API key: it picks the "
                                                                     "business and the mode."}}},
    })
