"""Wire format of the local API: JSON lines, one request or reply per line (docs/API.md).

Pure functions over bytes and dicts: no sockets, no handlers. Parsing is strict so that a
client bug surfaces as one clear message naming the field, not as a misbehaving daemon, and
so that handlers only ever see parameters of the documented types.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qosd.api.errors import (BAD_JSON, BAD_REQUEST, INTERNAL, TOO_LARGE, UNKNOWN_METHOD,
                             ApiError)

MAX_REQUEST_BYTES = 64 * 1024
MAX_NAME_CHARS = 128
RequestId = int | str | None


@dataclass(frozen=True)
class Field:
    """One parameter's accepted JSON kinds and bounds. `float` fields also accept integers."""

    kind: type
    required: bool = True
    nullable: bool = False
    minimum: float | None = None
    maximum: float | None = None
    min_chars: int = 0
    max_chars: int | None = None


Schema = Mapping[str, Field]


def _name(required: bool = True) -> Field:
    return Field(str, required=required, min_chars=1, max_chars=MAX_NAME_CHARS)


PID_MAX = 4_194_304          # PID_MAX_LIMIT: no Linux pid is above it, whatever pid_max says

METHODS: Mapping[str, Schema] = {
    "status": {},
    "grants": {},
    "register": {"pid": Field(int, required=False, minimum=1, maximum=PID_MAX),
                 "class": _name()},
    "unregister": {"pid": Field(int, required=False, minimum=1, maximum=PID_MAX)},
    "apply_policy": {"yaml": Field(str, max_chars=MAX_REQUEST_BYTES)},
    "telemetry": {
        "job": _name(), "op": _name(),
        "bytes": Field(int, minimum=0), "duration_s": Field(float, minimum=0),
        "chunk_bytes": Field(int, minimum=0), "grant_bps": Field(int, nullable=True, minimum=0),
        "rank": Field(int, minimum=0), "step": Field(int, minimum=0),
        "end_unix_s": Field(float, required=False, minimum=0),
        "world_size": Field(int, required=False, minimum=1),
    },
    "telemetry_recent": {"limit": Field(int, required=False, minimum=1)},
    "flows": {"class": _name(required=False),
              "pid": Field(int, required=False, minimum=1, maximum=PID_MAX)},
    "job_members": {"job": _name(), "members": Field(list), "epoch": Field(int, required=False, minimum=0)},
    "jobs": {},
}


class RequestError(ApiError):
    """A request that cannot be dispatched; carries its id (when readable) for the reply."""

    def __init__(self, code: str, message: str, request_id: RequestId = None) -> None:
        super().__init__(code, message)
        self.request_id = request_id


class MalformedReply(ApiError):
    """A reply line that is not what this document promises: the stream is out of step."""

    def __init__(self, message: str) -> None:
        super().__init__(BAD_JSON, message)


@dataclass(frozen=True)
class Request:
    id: RequestId
    method: str
    params: dict[str, Any]


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _loads(line: bytes) -> Any:
    try:
        return json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise RequestError(BAD_JSON, f"request is not UTF-8: {exc.reason}") from None
    except ValueError as exc:
        raise RequestError(BAD_JSON, f"request is not JSON: {exc}") from None


def parse_request(line: bytes, schemas: Mapping[str, Schema] = METHODS) -> Request:
    """Decode and validate one request line (without or with its trailing newline).

    Raises `RequestError` with code too-large, bad-json, bad-request or unknown-method.
    """
    if len(line.rstrip(b"\r\n")) > MAX_REQUEST_BYTES:
        raise RequestError(TOO_LARGE, f"request exceeds {MAX_REQUEST_BYTES} bytes")
    doc = _loads(line)
    if not isinstance(doc, dict):
        raise RequestError(BAD_REQUEST, f"request must be a JSON object, got {_kind(doc)}")
    request_id = doc.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, (int, str, type(None))):
        raise RequestError(BAD_REQUEST,
                           f"id: expected an integer or string, got {_kind(request_id)}")
    unknown = sorted(set(doc) - {"id", "method", "params"})
    if unknown:
        raise RequestError(BAD_REQUEST, f"{_field(unknown[0])}: unknown key (expected id, method, params)",
                           request_id)
    method = doc.get("method")
    if not isinstance(method, str):
        raise RequestError(BAD_REQUEST, f"method: expected a string, got {_kind(method)}",
                           request_id)
    if method not in schemas:
        raise RequestError(UNKNOWN_METHOD, f"unknown method {method[:MAX_NAME_CHARS]!r}; known: "
                           f"{', '.join(sorted(schemas))}", request_id)
    params = doc.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RequestError(BAD_REQUEST, f"params: expected an object, got {_kind(params)}",
                           request_id)
    problem = validate_params(params, schemas[method])
    if problem is not None:
        raise RequestError(BAD_REQUEST, problem, request_id)
    return Request(request_id, method, params)


def validate_params(params: Mapping[str, Any], schema: Schema) -> str | None:
    """The first problem with `params` as `params.FIELD: message`, or None when they fit."""
    for key in sorted(params):
        if key not in schema:
            allowed = ", ".join(sorted(schema)) or "none"
            return f"params.{_field(key)}: unknown parameter (expected: {allowed})"
    for key, spec in schema.items():
        if key not in params:
            if spec.required:
                return f"params.{key}: missing"
            continue
        problem = _check(params[key], spec)
        if problem is not None:
            return f"params.{key}: {problem}"
    return None


def _check(value: Any, spec: Field) -> str | None:
    if value is None:
        return None if spec.nullable else f"expected {_want(spec.kind)}, got null"
    if isinstance(value, bool) or not _is_kind(value, spec.kind):
        return f"expected {_want(spec.kind)}, got {_kind(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return "must be finite"
    if spec.minimum is not None and value < spec.minimum:
        return f"must be >= {spec.minimum:g}, got {_short(value)}"
    if spec.maximum is not None and value > spec.maximum:
        return f"must be <= {spec.maximum:g}, got {_short(value)}"
    if isinstance(value, str):
        if len(value) < spec.min_chars:
            return "must not be empty"
        if spec.max_chars is not None and len(value) > spec.max_chars:
            return f"longer than {spec.max_chars} characters"
    return None


def _field(name: str) -> str:
    """A client's key as it may appear in a one-line message: printable, bounded."""
    if name.isidentifier() and len(name) <= MAX_NAME_CHARS:
        return name
    return repr(name[:MAX_NAME_CHARS])


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_kind(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "a boolean",
               dict: "an object", list: "an array", type(None): "null"}


def _want(kind: type) -> str:
    return _KIND_NAMES.get(kind, kind.__name__)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return "a number"
    return _KIND_NAMES.get(type(value), type(value).__name__)


def _dump(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8") + b"\n"


def encode_result(request_id: RequestId, result: Mapping[str, Any]) -> bytes:
    """A success reply line; raises `ApiError(internal)` if the result is not plain JSON."""
    if not isinstance(result, Mapping):
        raise ApiError(INTERNAL, f"handler returned {_kind(result)}, not an object")
    try:
        return _dump({"id": request_id, "result": dict(result)})
    except (TypeError, ValueError) as exc:
        raise ApiError(INTERNAL, f"result is not JSON-serialisable: {exc}") from None


def encode_error(request_id: RequestId, code: str, message: str) -> bytes:
    return _dump({"id": request_id, "error": {"code": code, "message": message}})


def encode_request(request_id: RequestId, method: str, params: Mapping[str, Any]) -> bytes:
    return _dump({"id": request_id, "method": method, "params": dict(params)})


def decode_reply(line: bytes) -> tuple[RequestId, dict[str, Any] | ApiError]:
    """The id of a reply line and its result, or the `ApiError` it carries.

    Raises `MalformedReply` when the line is not a reply at all.
    """
    try:
        doc = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedReply(f"reply is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MalformedReply("reply is not a JSON object")
    error = doc.get("error")
    if isinstance(error, dict):
        return doc.get("id"), ApiError(str(error.get("code", INTERNAL)),
                                       str(error.get("message", "")))
    result = doc.get("result")
    if not isinstance(result, dict):
        raise MalformedReply("reply has neither result nor error")
    return doc.get("id"), result


def parse_reply(line: bytes) -> tuple[RequestId, dict[str, Any]]:
    """The (id, result) of a reply line; an error reply raises `ApiError` with its code."""
    reply_id, outcome = decode_reply(line)
    if isinstance(outcome, ApiError):
        raise outcome
    return reply_id, outcome
